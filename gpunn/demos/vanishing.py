"""Chapter 5's unstable gradients: the speed of learning of each hidden layer.

The book measures a layer's speed of learning by ‖δ^l‖, the length of the vector
∂C/∂b^l_j = δ^l_j, for the mean cost over the first 1,000 MNIST training images, in
``network2`` networks [784, 30, ..., 30, 10]: sigmoid neurons, cross-entropy cost, weights
N(0, 1/n_in) and biases N(0, 1) (``fig/generate_gradient.py`` in the book's repository). It finds
each hidden layer learning several times slower than the one after it:

    [784, 30, 30, 10]           0.07   0.31
    [784, 30, 30, 30, 10]       0.012  0.060  0.283
    [784, 30, 30, 30, 30, 10]   0.003  0.017  0.070  0.285

Those are one random network each; :func:`speeds_at_init` averages over seeds. The book then
trains each network (one mini-batch of all 1,000 images per epoch, η = 0.1, λ = 5) and plots
the speeds per epoch: :func:`track_speeds`.
"""

from __future__ import annotations

import numpy as np

from gpunn.errors import ConfigError

__all__ = ["BOOK_SPEEDS", "book_sizes", "layer_speeds", "speeds_at_init", "track_speeds"]

#: hidden layers -> the book's ‖δ^l‖ for each hidden layer, input side first
BOOK_SPEEDS = {
    2: (0.07, 0.31),
    3: (0.012, 0.060, 0.283),
    4: (0.003, 0.017, 0.070, 0.285),
}
BOOK_COST = "cross-entropy"  # network2's default, which the book used here


def book_sizes(hidden_layers: int, width: int = 30) -> list[int]:
    """[784, 30, ..., 30, 10] with ``hidden_layers`` hidden layers of ``width`` neurons."""
    if hidden_layers < 1:
        raise ConfigError(f"hidden_layers must be >= 1; received {hidden_layers}")
    return [784] + [width] * hidden_layers + [10]


def layer_speeds(net, X, y) -> list[float]:
    """‖∂C/∂b^l‖ = ‖δ^l‖ of each hidden layer, input side first, for the mean cost over (X, y).

    X: (N, n_in) on the network's backend (or NumPy, moved there); y: labels (N,) or
    targets (N, n_out). One float per hidden layer (the output layer is left out).
    """
    be = net.backend
    nabla_b, _ = net.backprop(be.asarray(X), be.xp.asarray(y))
    return [float(be.xp.sqrt((g * g).sum())) for g in nabla_b[:-1]]


def speeds_at_init(sizes, X, y, seeds=range(5), cost: str = BOOK_COST, backend="cpu"):
    """Mean over ``seeds`` of :func:`layer_speeds` of fresh networks ``sizes``.

    Returns ``(mean, per_seed)``: a list of one float per hidden layer, and the (S, L) array
    of every seed's speeds.
    """
    from gpunn.network import Network

    seeds = list(seeds)
    if not seeds:
        raise ConfigError("speeds_at_init needs at least one seed")
    per_seed = np.array([
        layer_speeds(Network(sizes, cost=cost, seed=seed, backend=backend), X, y)
        for seed in seeds
    ])
    return per_seed.mean(axis=0).tolist(), per_seed


def track_speeds(net, X, y, epochs: int, eta: float = 0.1, lmbda: float = 5.0,
                 mini_batch_size: int | None = None, on_epoch=None,
                 should_stop=None) -> list[list[float]]:
    """The book's training run: :func:`layer_speeds` before each of ``epochs`` epochs of SGD
    on (X, y) and after the last. Returns ``epochs + 1`` rows, one float per hidden layer
    (fewer when ``should_stop()``, polled after each epoch, stops the run early).

    The book trains with mini-batches of the whole set (1,000 images), η = 0.1 and λ = 5.
    ``on_epoch(epoch, speeds)`` is called after each row is measured.
    """
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ConfigError(f"epochs must be an integer >= 0; received {epochs!r}")
    X, y = np.asarray(X), np.asarray(y)
    rows = [layer_speeds(net, X, y)]
    if on_epoch is not None:
        on_epoch(0, rows[0])

    def measure(record):
        rows.append(layer_speeds(net, X, y))
        if on_epoch is not None:
            on_epoch(record["epoch"], rows[-1])

    if epochs:
        net.sgd((X, y), epochs, mini_batch_size or len(X), eta, lmbda=lmbda,
                monitor_evaluation_accuracy=False, on_epoch=measure, should_stop=should_stop)
    return rows
