"""dense_sgd (Numba) against its oracle: the network's own update_mini_batch, chunk by chunk."""

from __future__ import annotations

import numpy as np
import pytest

from gpunn import Network
from gpunn.errors import ConfigError
from gpunn.kernels.dense import DENSE_SGD as REFERENCE
from gpunn.kernels.dense_numba import DENSE_SGD, _bind_sgemm
from gpunn.testing import assert_matches

pytestmark = pytest.mark.skipif(not _bind_sgemm(),
                                reason="NumPy carries no ILP64 cblas_sgemm for the kernel")

SIZES = [12, 7, 5, 3]
CHUNK, MINI_BATCH = 40, 7  # 40 = 5 * 7 + 5: the last mini-batch is partial
N = 1000
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


def _chunk(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((CHUNK, SIZES[0]), dtype=np.float32)
    Y = np.eye(SIZES[-1], dtype=np.float32)[rng.integers(0, SIZES[-1], CHUNK)]
    return X, Y


def _net(cost, activation, output):
    return Network(SIZES, cost=cost, activation=activation, output_activation=output,
                   seed=3, backend="cpu")


@pytest.mark.parametrize("regularisation", list(REGULARISATION))
@pytest.mark.parametrize("cost, output", OUTPUTS)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "linear"])
def test_matches_update_mini_batch(activation, cost, output, regularisation):
    lmbda, l1, momentum = REGULARISATION[regularisation]
    eta = 0.05 if "linear" in (activation, output) else 0.5  # linear layers diverge at 0.5
    ref, net = _net(cost, activation, output), _net(cost, activation, output)
    assert DENSE_SGD.supports(net, dropout=0.0)
    ref_state, state = REFERENCE.prepare(ref, momentum), DENSE_SGD.prepare(net, momentum)
    for seed in range(2):  # two chunks: velocities and weights carry over between calls
        X, Y = _chunk(seed)
        REFERENCE.run(ref_state, X, Y, MINI_BATCH, eta, lmbda, l1, N, momentum)
        DENSE_SGD.run(state, X, Y, MINI_BATCH, eta, lmbda, l1, N, momentum)
    for i, (layer, ref_layer) in enumerate(zip(net.layers, ref.layers, strict=True)):
        assert_matches(f"dense_sgd w[{i}]", layer.w, ref_layer.w)
        assert_matches(f"dense_sgd b[{i}]", layer.b, ref_layer.b)
        if momentum:
            assert_matches(f"dense_sgd velocity w[{i}]", net.velocities[i][0],
                           ref.velocities[i][0])


def test_single_layer_and_full_mini_batch():
    """No hidden layer, and a mini-batch as large as the chunk."""
    ref = Network([12, 3], cost="cross-entropy", seed=1, backend="cpu")
    net = Network([12, 3], cost="cross-entropy", seed=1, backend="cpu")
    X, Y = _chunk()
    REFERENCE.run(REFERENCE.prepare(ref, 0.0), X, Y, CHUNK, 1.0, 0.0, 0.0, N, 0.0)
    DENSE_SGD.run(DENSE_SGD.prepare(net, 0.0), X, Y, CHUNK, 1.0, 0.0, 0.0, N, 0.0)
    assert_matches("dense_sgd w", net.layers[0].w, ref.layers[0].w)
    assert_matches("dense_sgd b", net.layers[0].b, ref.layers[0].b)


def test_refuses_what_it_cannot_train():
    assert not DENSE_SGD.supports(_net("quadratic", "sigmoid", "sigmoid"), dropout=0.5)
    assert not DENSE_SGD.supports(Network(SIZES, dropout=0.5, seed=0, backend="cpu"), 0.5)
    assert not DENSE_SGD.supports(Network(SIZES, activation="step", seed=0, backend="cpu"), 0.0)
    assert not DENSE_SGD.supports(Network(SIZES, dtype=np.float64, seed=0, backend="cpu"), 0.0)
    assert REFERENCE.supports(Network(SIZES, dropout=0.5, seed=0, backend="cpu"), 0.5)


def test_refuses_a_chunk_of_the_wrong_shape():
    net = _net("quadratic", "sigmoid", "sigmoid")
    X, Y = _chunk()
    with pytest.raises(ConfigError, match=r"Xc of shape \(c, 12\)"):
        DENSE_SGD.run(DENSE_SGD.prepare(net, 0.0), X[:, :5], Y, MINI_BATCH, 0.5, 0, 0, N, 0)
