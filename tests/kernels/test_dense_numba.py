"""dense_sgd (Numba) against its oracle, the NumPy reference on the same arrays, over every
hidden activation in every position, every output and cost, every regulariser, and both
orientations of the forward product (narrow and wide layers)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gpunn.errors import ConfigError
from gpunn.kernels import choice, dense_numba
from gpunn.kernels.dense import DENSE_SGD as REFERENCE
from gpunn.kernels.dense_numba import DENSE_SGD, ORIENTATIONS, DenseSGDNumba, _bind_sgemm
from gpunn.testing import assert_matches

pytestmark = pytest.mark.skipif(not _bind_sgemm(),
                                reason="NumPy carries no ILP64 cblas_sgemm for the kernel")

SIZES = [12, 7, 5, 3]  # two hidden layers, so every ordered pair of activations is tried
CHUNK, MINI_BATCH = 40, 7  # 40 = 5 * 7 + 5: the last mini-batch is partial
N = 1000
HIDDEN = ["sigmoid", "tanh", "relu", "linear"]
OUTPUTS = [  # (cost, output activation)
    ("quadratic", "sigmoid"),
    ("quadratic", "tanh"),
    ("quadratic", "relu"),
    ("quadratic", "linear"),
    ("cross-entropy", "sigmoid"),
    ("log-likelihood", "softmax"),
]
REGULARISATION = {  # name -> (lmbda, l1, momentum)
    "plain": (0.0, 0.0, 0.0),
    "l2": (5.0, 0.0, 0.0),
    "l1": (0.0, 3.0, 0.0),
    "l2+l1": (5.0, 3.0, 0.0),
    "momentum": (0.0, 0.0, 0.9),
    "momentum+l2+l1": (5.0, 3.0, 0.5),
}


def _chunk(seed=0, n_in=SIZES[0], n_out=SIZES[-1]):
    rng = np.random.default_rng(seed)
    X = rng.random((CHUNK, n_in), dtype=np.float32)
    Y = np.eye(n_out, dtype=np.float32)[rng.integers(0, n_out, CHUNK)]
    return X, Y


def _arrays(sizes=SIZES, seed=3, dtype=np.float32):
    rng = np.random.default_rng(seed)
    weights = [(rng.standard_normal((b, a)) / np.sqrt(a)).astype(dtype)
               for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.standard_normal(b).astype(dtype) for b in sizes[1:]]
    return weights, biases


def _copy(arrays):
    return [a.copy() for a in arrays]


@pytest.mark.parametrize("regularisation", list(REGULARISATION))
@pytest.mark.parametrize("cost, output", OUTPUTS)
@pytest.mark.parametrize("first, second", list(itertools.product(HIDDEN, HIDDEN)))
def test_matches_the_reference(first, second, cost, output, regularisation):
    lmbda, l1, momentum = REGULARISATION[regularisation]
    activations = [first, second, output]
    # linear layers diverge at 0.5, and at 0.05 with momentum 0.9 two float32 runs drift
    # apart chaotically (each ~0.05 from float64), so a comparison would test nothing
    eta = 0.02 if "linear" in activations else 0.5
    weights, biases = _arrays()
    ref_w, ref_b = _copy(weights), _copy(biases)
    vel = [np.zeros_like(w) for w in weights], [np.zeros_like(b) for b in biases]
    ref_vel = _copy(vel[0]), _copy(vel[1])
    assert DENSE_SGD.supports(weights, biases, activations, cost)
    state = DENSE_SGD.prepare(weights, biases, activations, cost, *vel)
    ref_state = REFERENCE.prepare(ref_w, ref_b, activations, cost, *ref_vel)
    for seed in range(2):  # two chunks: velocities and weights carry over between calls
        X, Y = _chunk(seed)
        REFERENCE.run(ref_state, X, Y, MINI_BATCH, eta, lmbda, l1, N, momentum)
        DENSE_SGD.run(state, X, Y, MINI_BATCH, eta, lmbda, l1, N, momentum)
    for i in range(3):
        assert_matches(f"dense_sgd w[{i}]", weights[i], ref_w[i])
        assert_matches(f"dense_sgd b[{i}]", biases[i], ref_b[i])
        if momentum:
            assert_matches(f"dense_sgd velocity w[{i}]", vel[0][i], ref_vel[0][i])


def _train_both(kernel, sizes, activations, cost, mini_batch_size, eta=0.5, chunks=2,
                regularisation=(0.0, 0.0, 0.0)):
    """Train copies of one stack with ``kernel`` and the reference; both (weights, biases)."""
    lmbda, l1, momentum = regularisation
    weights, biases = _arrays(sizes)
    ref_w, ref_b = _copy(weights), _copy(biases)
    vel = [np.zeros_like(w) for w in weights], [np.zeros_like(b) for b in biases]
    ref_vel = _copy(vel[0]), _copy(vel[1])
    state = kernel.prepare(weights, biases, activations, cost, *vel)
    ref_state = REFERENCE.prepare(ref_w, ref_b, activations, cost, *ref_vel)
    for seed in range(chunks):
        X, Y = _chunk(seed, sizes[0], sizes[-1])
        REFERENCE.run(ref_state, X, Y, mini_batch_size, eta, lmbda, l1, N, momentum)
        kernel.run(state, X, Y, mini_batch_size, eta, lmbda, l1, N, momentum)
    return (weights, biases), (ref_w, ref_b)


# (W xᵀ)ᵀ forced on every layer, small ones included, across the same cross product
@pytest.mark.parametrize("cost, output", OUTPUTS)
@pytest.mark.parametrize("first, second", list(itertools.product(HIDDEN, HIDDEN)))
def test_the_flipped_forward_matches_the_reference(first, second, cost, output):
    activations = [first, second, output]
    eta = 0.02 if "linear" in activations else 0.5
    (w, b), (ref_w, ref_b) = _train_both(DenseSGDNumba(ORIENTATIONS[1]), SIZES, activations,
                                         cost, MINI_BATCH, eta, regularisation=(5.0, 3.0, 0.5))
    for i in range(3):
        assert_matches(f"dense_sgd flipped w[{i}]", w[i], ref_w[i])
        assert_matches(f"dense_sgd flipped b[{i}]", b[i], ref_b[i])


# wide layers (n_out >= 64: one sgemm over all rows), a W large enough for linear to measure,
# and mini-batches of 1, of 12 (the chunk's last partial: 40 = 3 * 12 + 4) and of the chunk
@pytest.mark.parametrize("orientation", [*ORIENTATIONS, None])
@pytest.mark.parametrize("mini_batch_size", [1, 12, 40])
@pytest.mark.parametrize("sizes, activations, cost", [
    ([300, 256, 70, 10], ["relu", "tanh", "softmax"], "log-likelihood"),
    ([65, 1100, 10], ["sigmoid", "sigmoid"], "cross-entropy"),
])
def test_wide_layers_match_the_reference_in_each_orientation(store, orientation,
                                                            mini_batch_size, sizes,
                                                            activations, cost):
    (w, b), (ref_w, ref_b) = _train_both(DenseSGDNumba(orientation), sizes, activations, cost,
                                         mini_batch_size, eta=0.1)
    for i in range(len(w)):
        assert_matches(f"dense_sgd {orientation} w[{i}]", w[i], ref_w[i])
        assert_matches(f"dense_sgd {orientation} b[{i}]", b[i], ref_b[i])


def test_the_orientation_is_linears_measured_choice_per_layer(store, monkeypatch):
    keys = []

    def choose(key, candidates, repeat=3):
        keys.append(key)
        return ORIENTATIONS[1]

    monkeypatch.setattr(choice, "choose", choose)
    monkeypatch.setattr(dense_numba, "LINEAR", dense_numba.LinearNumba())
    kernel = DenseSGDNumba()
    weights, biases = _arrays([300, 256, 70, 10])  # only 300-256 has 2^16 weights or more
    state = kernel.prepare(weights, biases, ["relu", "relu", "softmax"], "log-likelihood")
    assert kernel.flips(state, 10).tolist() == [1, 0, 0]
    assert kernel.flips(state, 10).tolist() == [1, 0, 0]
    assert kernel.flips(state, 65).tolist() == [0, 0, 0]  # more rows than linear measures
    assert len(keys) == 1 and keys[0].startswith("linear 10x300 @ 256x300.T float32")


def test_an_unknown_orientation_is_refused():
    with pytest.raises(ConfigError, match=r"orientation must be one of .* received 'NT'"):
        DenseSGDNumba("NT")


def test_single_layer_and_full_mini_batch():
    """No hidden layer, and a mini-batch as large as the chunk."""
    weights, biases = _arrays([12, 3])
    ref_w, ref_b = _copy(weights), _copy(biases)
    X, Y = _chunk()
    REFERENCE.run(REFERENCE.prepare(ref_w, ref_b, ["sigmoid"], "cross-entropy"), X, Y, CHUNK,
                  1.0, 0.0, 0.0, N, 0.0)
    DENSE_SGD.run(DENSE_SGD.prepare(weights, biases, ["sigmoid"], "cross-entropy"), X, Y,
                  CHUNK, 1.0, 0.0, 0.0, N, 0.0)
    assert_matches("dense_sgd w", weights[0], ref_w[0])
    assert_matches("dense_sgd b", biases[0], ref_b[0])


def test_the_reference_is_the_books_step_in_float64():
    """One step of the reference against the four equations written out by hand."""
    w, b = _arrays([4, 3, 2], seed=1, dtype=np.float64)
    X, Y = _chunk(0, 4, 2)
    X, Y = X[:5].astype(np.float64), Y[:5].astype(np.float64)
    z1 = X @ w[0].T + b[0]
    a1 = np.tanh(z1)
    a2 = 1 / (1 + np.exp(-(a1 @ w[1].T + b[1])))
    d2 = a2 - Y  # cross-entropy: σ'(z) cancels (BP1)
    d1 = (d2 @ w[1]) * (1 - a1 ** 2)  # BP2
    expect_w = [w[0] - 0.5 * d1.T @ X / 5, w[1] - 0.5 * d2.T @ a1 / 5]  # BP4
    expect_b = [b[0] - 0.5 * d1.sum(0) / 5, b[1] - 0.5 * d2.sum(0) / 5]  # BP3
    REFERENCE.run(REFERENCE.prepare(w, b, ["tanh", "sigmoid"], "cross-entropy"), X, Y, 5,
                  0.5, 0.0, 0.0, N, 0.0)
    for i in range(2):
        assert_matches(f"w[{i}]", w[i], expect_w[i])
        assert_matches(f"b[{i}]", b[i], expect_b[i])


def test_refuses_what_it_cannot_train():
    weights, biases = _arrays()
    assert not DENSE_SGD.supports(weights, biases, ["step", "sigmoid", "sigmoid"], "quadratic")
    assert not DENSE_SGD.supports(weights, biases, ["softmax", "sigmoid", "softmax"],
                                  "log-likelihood")
    assert not DENSE_SGD.supports(weights, biases, ["sigmoid", "sigmoid", "tanh"],
                                  "cross-entropy")
    assert not DENSE_SGD.supports(weights, biases, ["sigmoid", "sigmoid"], "quadratic")
    w64, b64 = _arrays(dtype=np.float64)
    assert not DENSE_SGD.supports(w64, b64, ["sigmoid"] * 3, "quadratic")
    assert REFERENCE.supports(w64, b64, ["sigmoid"] * 3, "quadratic")
    with pytest.raises(ConfigError, match="one weight, bias and activation per layer"):
        DENSE_SGD.prepare(weights, biases, ["sigmoid"], "quadratic")


def test_refuses_a_chunk_of_the_wrong_shape():
    weights, biases = _arrays()
    X, Y = _chunk()
    state = DENSE_SGD.prepare(weights, biases, ["sigmoid"] * 3, "quadratic")
    with pytest.raises(ConfigError, match=r"Xc of shape \(c, 12\)"):
        DENSE_SGD.run(state, X[:, :5], Y, MINI_BATCH, 0.5, 0, 0, N, 0)
