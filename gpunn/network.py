"""The book's network: feedforward and backpropagation (chapters 1–6).

A :class:`Network` is a stack of layers on one backend. ``Network([784, 30, 10])`` builds
chapter 1's network of sigmoid neurons; the keyword arguments turn on each chapter-3
improvement. Examples are rows: ``X`` has shape (N, n_in) and ``feedforward`` returns
(N, n_out); the weights keep the book's shape (n_out, n_in), so z = X Wᵀ + b.

Backpropagation runs over the whole mini-batch at once (no per-example loop). Training is
:meth:`Network.sgd`, the book's ``network2.SGD`` signature over the one training loop
(:func:`gpunn.train.fit`) and the one optimiser (:class:`gpunn.optim.SGD`); it returns a
:class:`History` and reports through callbacks; it never prints.
"""

from __future__ import annotations

import numpy as np

from gpunn import backend as backend_module
from gpunn import costs
from gpunn.errors import ConfigError
from gpunn.layers import FullyConnected, Layer, _check_dropout
from gpunn.optim import SGD
from gpunn.train import ON_NAN, History, Schedule, as_split, evaluate, fit

__all__ = ["Network", "History", "as_split", "ON_NAN"]


class Network:
    """A network of layers: ``Network([784, 30, 10])`` or ``Network([ConvPool(...), ...])``.

    Args:
        sizes: neurons per layer, input first, e.g. ``[784, 30, 10]`` (the book's fully
            connected network), or a list of layers from :mod:`gpunn.layers` (network3's
            style: ``[ConvPool(1, 20), FullyConnected(2880, 100), Softmax(100, 10)]``;
            ``layers=`` says the same by keyword).
        cost: "quadratic" (chapter 1), "cross-entropy" or "log-likelihood" (softmax output).
        activation: hidden-layer activation for a size list: "sigmoid", "tanh", "relu",
            "linear" or "step".
        output_activation: for a size list; defaults to the cost's partner (sigmoid, or
            softmax for log-likelihood).
        init: "default" (weights N(0, 1/n_in)), "large" (N(0, 1), chapter 1) or "network3".
        dropout: for a size list, the probability of dropping each hidden unit in training.
        seed: seeds initialisation, shuffling and dropout; the same seed gives the same
            weights on CPU and GPU, and bit-identical training on the CPU.
        backend: a :class:`gpunn.backend.Backend` or a device string ("auto", "cpu", "cuda").
        dtype: float32 (default) or float64 (for gradient checks).
        input_shape: per-example input shape, e.g. (1, 28, 28); needed when the first layer
            is convolutional (flat rows of 784 pixels are reshaped to it).
    """

    def __init__(self, sizes=None, cost="quadratic", activation="sigmoid",
                 output_activation=None, init="default", dropout=0.0, seed=None,
                 backend="auto", dtype=np.float32, input_shape=None, *, layers=None):
        self.backend = (backend if isinstance(backend, backend_module.Backend)
                        else backend_module.select(backend))
        self.xp = self.backend.xp
        self.dtype = np.dtype(dtype)
        self.cost = costs.get(cost)
        self.init = init
        self.seed = seed
        # how the network was trained, as recorded in the file it was loaded from ({} if new)
        self.training = {}
        if (sizes is None) == (layers is None):
            raise ConfigError("give a Network either sizes (e.g. [784, 30, 10]) or layers")
        layers = list(sizes if layers is None else layers)
        if layers and all(isinstance(s, (int, np.integer)) for s in layers):
            self.sizes = [int(s) for s in layers]
            if len(self.sizes) < 2 or min(self.sizes) < 1:
                raise ConfigError(f"sizes must list at least two layer sizes, each >= 1; "
                                  f"received {self.sizes}")
            output_activation = output_activation or self.cost.default_output
            last = len(self.sizes) - 2
            _check_dropout(dropout)
            self.layers = [
                FullyConnected(n_in, n_out, activation if i < last else output_activation,
                               dropout if i > 0 else 0.0)
                for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:]))
            ]
        elif layers and all(isinstance(layer, Layer) for layer in layers):
            self.sizes = None
            self.layers = layers
        else:
            raise ConfigError("a Network is built from layer sizes (e.g. [784, 30, 10]) or a "
                              f"list of gpunn.layers layers; received {layers!r}")
        if input_shape is None:
            n_in = getattr(self.layers[0], "n_in", None)
            if n_in is None:
                raise ConfigError(
                    f"a network that starts with {self.layers[0]!r} needs input_shape="
                    f"(C, H, W), e.g. input_shape=(1, 28, 28) for MNIST"
                )
            input_shape = (n_in,)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.n_in = int(np.prod(self.input_shape))
        self.rng = self.backend.rng(seed)
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.build(shape, self.backend, self.rng, init, self.dtype)
            layer.output_shape = shape
        self.output_shape = shape
        if len(shape) != 1:
            raise ConfigError(f"the last layer must give one vector per example (N, n_out); "
                              f"{self.layers[-1]!r} gives {shape}")
        self.n_out = shape[0]
        out = self.layers[-1]
        self.cost.check_output(out.activation if hasattr(out, "activation") else None)
        # log-likelihood on a softmax layer: the fused softmax-cross-entropy kernel
        self._fused = (self.cost.name == "log-likelihood"
                       and isinstance(out, FullyConnected))
        self._eye = self.xp.eye(self.n_out, dtype=self.dtype)
        self.velocities = None

    # -- the book's attributes -------------------------------------------------------------
    @property
    def weights(self) -> list:
        """``weights[l]`` of every layer with parameters; (n_out, n_in) as in the book."""
        return [layer.w for layer in self.layers if layer.param_groups()]

    @property
    def biases(self) -> list:
        return [layer.b for layer in self.layers if layer.param_groups()]

    @property
    def num_layers(self) -> int:
        return len(self.layers) + 1

    @property
    def num_params(self) -> int:
        return sum(layer.num_params for layer in self.layers)

    @property
    def dropout(self) -> float:
        """The largest dropout probability of any layer (0 when none drops)."""
        return max(layer.dropout for layer in self.layers)

    def config(self) -> dict:
        """The architecture, enough to rebuild the network (see ``gpunn.load``)."""
        config = {
            "layers": [layer.config() for layer in self.layers],
            "input_shape": list(self.input_shape),
            "cost": self.cost.name,
            "init": self.init,
            "seed": self.seed,
        }
        if self.sizes is not None:
            config["sizes"] = self.sizes
        return config

    def __repr__(self) -> str:
        what = self.sizes if self.sizes is not None else f"{len(self.layers)} layers"
        return (f"Network({what}, cost={self.cost.name!r}, "
                f"backend={self.backend.name!r}, params={self.num_params:,})")

    def summary(self) -> list[dict]:
        """One row per layer: its description, output shape and parameter counts."""
        rows = []
        for layer in self.layers:
            groups = layer.param_groups()
            weights = sum(int(np.prod(p.shape)) for p, _, decays in groups if decays)
            biases = sum(int(np.prod(p.shape)) for p, _, decays in groups if not decays)
            rows.append({"layer": repr(layer), "output_shape": layer.output_shape,
                         "weights": weights, "biases": biases})
        return rows

    # -- forward and backward --------------------------------------------------------------
    def inputs(self, X):
        """``X`` as the network takes it: an array (N, *input_shape) of its dtype on its
        device, from (N, n_in), (N, *input_shape) or a single example."""
        backend_module.check_same_module(self.xp, X, where="Network")
        X = self.xp.asarray(X, dtype=self.dtype)
        if X.ndim == 1 or X.shape == self.input_shape:
            X = X[None]
        n = X.shape[0]
        if int(np.prod(X.shape[1:])) != self.n_in or (X.ndim > 2
                                                      and X.shape[1:] != self.input_shape):
            want = ", ".join(map(str, self.input_shape))
            raise ConfigError(f"the network expects X of shape (N, {self.n_in}) or "
                              f"(N, {want}); received X.shape={tuple(X.shape)}")
        return X.reshape((n,) + self.input_shape)

    def feedforward(self, X, train: bool = False):
        """Output activations (N, n_out) for inputs X of shape (N, n_in)."""
        a = self.inputs(X)
        for layer in self.layers:
            a = layer.forward(a, train, self.rng)
        return a

    def activations(self, X, train: bool = False) -> list:
        """Every layer's output for inputs X, first layer to last: a list of arrays (N, ...)
        whose last is :meth:`feedforward`'s result (the book's ``activations`` without x)."""
        a, out = self.inputs(X), []
        for layer in self.layers:
            a = layer.forward(a, train, self.rng)
            out.append(a)
        return out

    def targets(self, y):
        """One-hot rows for integer labels (N,), or y itself when already (N, n_out)."""
        y = self.xp.asarray(y)
        if y.ndim == 1:
            return self._eye[y]
        return y.astype(self.dtype, copy=False)

    def train_batch(self, X, y, want_cost: bool = False, label_flag=None):
        """Forward then backward over one mini-batch: every layer's gradients (``nabla_w``,
        ``nabla_b``) become those of the mean cost. ``X`` (m, ...) on the device, ``y``
        labels (m,) or one-hot targets (m, n_out). Returns ``(outputs, cost)``: the output
        activations (m, n_out) and, with ``want_cost``, the mean cost of the batch before
        any update (for a softmax output a 0-d array on the device, read when wanted; else
        a float); else None. ``label_flag`` (``gpunn.kernels.checks.label_flag``): where the
        GPU softmax records a label out of range instead of waiting to check it."""
        m = X.shape[0]
        a = X
        for layer in self.layers[:-1]:
            a = layer.forward(a, True, self.rng)
        out, cost = self.layers[-1], None
        if self._fused:
            # softmax + log-likelihood from the logits in one kernel: δ = (p − onehot)/m
            sxe = self.backend.kernel("softmax_cross_entropy")
            labels = self.xp.asarray(y)
            labels = labels if labels.ndim == 1 else labels.argmax(axis=1)
            z = out.forward(a, True, self.rng, activate=False)
            cost, a = sxe.forward(z, labels, label_flag)
            delta = sxe.backward(a, labels, scale=1.0)
        else:
            Y = self.targets(y)
            a = out.forward(a, True, self.rng)
            delta = self.cost.delta(out._z, a, Y, out.activation)
            delta *= delta.dtype.type(1.0 / m)
            if want_cost:
                cost = self.cost.fn(a, Y, z=out.logits)
        grad = out.backward_delta(delta, need_grad_input=len(self.layers) > 1)
        for i in range(len(self.layers) - 2, -1, -1):
            grad = self.layers[i].backward(grad, need_grad_input=i > 0)
        return a, cost

    def backprop(self, X, y):
        """Gradient of the mean cost over the mini-batch (no regularisation term).

        X: (m, n_in); y: labels (m,) or one-hot targets (m, n_out). Returns
        ``(nabla_b, nabla_w)`` shaped like ``biases`` and ``weights`` (BP1–BP4, whole batch).
        Dropout, if set, is applied as in training.
        """
        self.train_batch(self.inputs(X), y)
        layers = [layer for layer in self.layers if layer.param_groups()]
        return [layer.nabla_b for layer in layers], [layer.nabla_w for layer in layers]

    def gradients(self, X, y, lmbda: float = 0.0, l1: float = 0.0, n: int | None = None):
        """Gradient of the regularised cost C = mean cost + (λ/2n)Σw² + (λ₁/n)Σ|w|.

        ``n`` is the training-set size (defaults to the batch size). This is the gradient
        that :meth:`update_mini_batch` descends; biases are not regularised.
        """
        nabla_b, nabla_w = self.backprop(X, y)
        n = n or len(X)
        nabla_w = [gw + (lmbda / n) * w + (l1 / n) * self.xp.sign(w)
                   for gw, w in zip(nabla_w, self.weights)]
        return nabla_b, nabla_w

    # -- training ---------------------------------------------------------------------------
    def init_velocities(self) -> None:
        """Momentum buffers, one per parameter, zero (kept across ``sgd`` calls)."""
        if self.velocities is None:
            self.velocities = SGD(1.0).init_velocities(self.layers, self.xp)

    def update_mini_batch(self, X, Y, eta: float, lmbda: float = 0.0, n: int = 1,
                          l1: float = 0.0, momentum: float = 0.0) -> None:
        """One SGD step on mini-batch (X, Y) (labels or one-hot); ``n`` is the training-set
        size: w ← w − η(∇C + (λ/n)w + (λ₁/n)sgn w), b ← b − η∇C; with momentum μ,
        v ← μv − η(...), w ← w + v (see :class:`gpunn.optim.SGD`)."""
        optimizer = SGD(eta, lmbda, n, l1, momentum)
        optimizer.velocities = self.velocities
        self.train_batch(self.inputs(X), Y)
        optimizer.step(self.layers, self.xp)
        self.velocities = optimizer.velocities

    def sgd(self, training_data, epochs: int, mini_batch_size: int, eta: float,
            lmbda: float = 0.0, evaluation_data=None, *, l1: float = 0.0,
            momentum: float = 0.0, monitor_evaluation_cost: bool = False,
            monitor_evaluation_accuracy: bool = True, monitor_training_cost: bool = False,
            monitor_training_accuracy: bool = False, early_stopping_n: int = 0,
            schedule_n: int = 0, schedule_floor: float = 1 / 128,
            on_epoch=None, on_progress=None, regularisation_n: int | None = None,
            resume: dict | None = None, on_checkpoint=None, checkpoint_every: int = 0,
            should_stop=None, on_nan: str = "stop", comm=None) -> History:
        """Mini-batch stochastic gradient descent, as in the book's ``network2.SGD``.

        training_data / evaluation_data: a ``gpunn.data`` Split or a pair (X, y).
        early_stopping_n: stop when evaluation accuracy has not improved in that many epochs.
        schedule_n: halve η whenever evaluation accuracy has not improved in that many
            epochs; stop when η falls below ``schedule_floor`` times its first value.
        on_epoch(record): called after each epoch with the epoch's record (a dict).
        on_progress(done, total): called as examples of the epoch are processed.
        regularisation_n: the n in the L2/L1 terms λ/n (default: the training-set size;
            network3 uses the number of mini-batches).
        on_checkpoint, checkpoint_every, resume, should_stop, on_nan, comm: see
            :func:`gpunn.train.fit` (a resumed run is bit-identical on the CPU).

        The momentum buffers are kept on the network across calls (``velocities``).
        """
        train = as_split(training_data)
        optimizer = SGD(eta, lmbda, regularisation_n or max(len(train), 1), l1, momentum)
        optimizer.velocities = self.velocities
        if not monitor_evaluation_accuracy and not early_stopping_n and not schedule_n:
            evaluation_data = None if not monitor_evaluation_cost else evaluation_data
        try:
            return fit(self, train, epochs, mini_batch_size, optimizer,
                       evaluation_data=evaluation_data,
                       schedule=Schedule.book(schedule_n, schedule_floor, early_stopping_n),
                       monitor_evaluation_cost=monitor_evaluation_cost,
                       monitor_training_cost=monitor_training_cost,
                       monitor_training_accuracy=monitor_training_accuracy,
                       on_epoch=on_epoch, on_progress=on_progress, on_checkpoint=on_checkpoint,
                       checkpoint_every=checkpoint_every, should_stop=should_stop,
                       on_nan=on_nan, resume=resume, comm=comm)
        finally:
            self.velocities = optimizer.velocities

    # -- evaluation -------------------------------------------------------------------------
    def accuracy(self, data) -> float:
        """Fraction of ``data`` (a Split or (X, y)) classified correctly."""
        return evaluate(self, data)["accuracy"]

    def total_cost(self, data, lmbda: float = 0.0, n: int | None = None) -> float:
        """Mean cost over ``data`` plus the L2 term (λ/2n)Σw² when ``lmbda`` is given."""
        data = as_split(data)
        optimizer = SGD(1.0, lmbda, n or max(len(data), 1))
        return evaluate(self, data, cost=True, optimizer=optimizer)["cost"]

    def predict(self, X):
        """Most active output neuron for each row of X: labels (N,) on the backend."""
        return self.feedforward(X).argmax(axis=1)
