"""Chapter 5's unstable gradients: earlier hidden layers learn more slowly.

Uses the first 1,000 MNIST images where the book's file is at hand (the ``mnist_small``
fixture), else synthetic images; the ordering holds for both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gpunn
from gpunn.demos import vanishing

BOOK_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist.pkl.gz"


@pytest.mark.parametrize("hidden_layers", [2, 3, 4])
def test_speeds_increase_towards_the_output(mnist_small, hidden_layers):
    X, y = mnist_small
    speeds, per_seed = vanishing.speeds_at_init(vanishing.book_sizes(hidden_layers), X, y,
                                                seeds=range(3))
    assert len(speeds) == hidden_layers and per_seed.shape == (3, hidden_layers)
    assert all(a < b for a, b in zip(speeds, speeds[1:])), speeds
    # several times slower per layer, as in the book (about 4-5x)
    assert speeds[-1] / speeds[0] > 2.5 ** (hidden_layers - 1), speeds


def test_layer_speeds_match_a_numpy_backprop(backend, mnist_small):
    # oracle: the book's equations BP1-BP3 written out in float64 NumPy
    X, y = mnist_small[0][:200].astype(np.float64), mnist_small[1][:200]
    net = gpunn.Network([784, 30, 30, 10], cost="cross-entropy", seed=4, backend=backend)
    W = [backend.to_numpy(w).astype(np.float64) for w in net.weights]
    B = [backend.to_numpy(b).astype(np.float64) for b in net.biases]
    acts, zs = [X], []
    for w, b in zip(W, B):
        zs.append(acts[-1] @ w.T + b)
        acts.append(1 / (1 + np.exp(-zs[-1])))
    delta = acts[-1] - np.eye(10)[y]  # cross-entropy with sigmoid outputs (BP1)
    expected = []
    for l in (1, 0):
        s = acts[l + 1]
        delta = (delta @ W[l + 1]) * s * (1 - s)  # BP2
        expected.insert(0, np.linalg.norm(delta.mean(axis=0)))  # BP3, mean over examples
    got = vanishing.layer_speeds(net, backend.asarray(X), y)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_track_speeds_measures_before_and_after_each_epoch(mnist_small):
    X, y = mnist_small[0][:300], mnist_small[1][:300]
    net = gpunn.Network(vanishing.book_sizes(2), cost="cross-entropy", seed=0, backend="cpu")
    seen = []
    rows = vanishing.track_speeds(net, X, y, epochs=3, on_epoch=lambda e, s: seen.append(e))
    assert seen == [0, 1, 2, 3] and len(rows) == 4 and all(len(r) == 2 for r in rows)
    assert rows[0] == pytest.approx(vanishing.layer_speeds(
        gpunn.Network(vanishing.book_sizes(2), cost="cross-entropy", seed=0, backend="cpu"),
        X, y))
    assert rows[-1] != rows[0]  # the network trained


def test_the_books_figures_are_reproduced_on_mnist():
    if not BOOK_MNIST.exists():
        pytest.skip(f"the book's MNIST file is not at {BOOK_MNIST}")
    from gpunn.data import load_mnist

    train = load_mnist(BOOK_MNIST).train
    X, y = train.x(np.arange(1000)), train.labels[:1000]
    for k, book in vanishing.BOOK_SPEEDS.items():
        speeds, _ = vanishing.speeds_at_init(vanishing.book_sizes(k), X, y, seeds=range(5))
        for ours, theirs in zip(speeds, book):
            assert theirs / 2 <= ours <= theirs * 2, (k, speeds, book)
        ratio, book_ratio = speeds[0] / speeds[-1], book[0] / book[-1]
        assert book_ratio / 3 <= ratio <= book_ratio * 3, (k, speeds, book)
