"""Convolutional networks (chapter 6): the layers inside a Network against finite
differences, shape chaining, learning, and saving."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn.errors import ConfigError
from gpunn.gradcheck import gradcheck
from gpunn.layers import Conv2D, ConvPool, Flatten, FullyConnected, MaxPool, Softmax
from gpunn.network import Network
from gpunn.testing import assert_matches


def _images(n=6, c=1, size=8, k=3, seed=0):
    r = np.random.default_rng(seed)
    return r.random((n, c * size * size)), r.integers(0, k, n)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("reg", [{}, {"lmbda": 2.0}, {"dropout": 0.25}])
def test_gradient_check_conv_pool_fc_softmax(activation, reg):
    X, y = _images()
    net = Network([ConvPool(1, 3, kernel_size=3, pool=2, activation=activation),
                   FullyConnected(27, 5, activation, dropout=reg.get("dropout", 0.0)),
                   Softmax(5, 3, dropout=reg.get("dropout", 0.0))],
                  cost="log-likelihood", input_shape=(1, 8, 8), seed=3, backend="cpu",
                  dtype=np.float64, init="default")
    # softmax starts at zero (network3): perturb so every path carries gradient
    net.layers[-1].w[...] = net.rng.normal(0, 0.5, net.layers[-1].w.shape, dtype=np.float64)
    gradcheck(net, X, y, n=20, **{k: v for k, v in reg.items() if k != "dropout"})


@pytest.mark.parametrize("cost", ["quadratic", "cross-entropy", "log-likelihood"])
def test_gradient_check_conv2d_stride_padding_and_overlapping_pool(cost):
    X, y = _images(n=4, c=2, size=9)
    out = (Softmax(8, 3) if cost == "log-likelihood"
           else FullyConnected(8, 3, "sigmoid"))
    net = Network([Conv2D(2, 4, kernel_size=3, stride=2, padding=1, activation="tanh"),
                   MaxPool(3, 2), Flatten(), FullyConnected(16, 8, "relu"), out],
                  cost=cost, input_shape=(2, 9, 9), seed=1, backend="cpu", dtype=np.float64)
    if cost == "log-likelihood":
        net.layers[-1].w[...] = net.rng.normal(0, 0.5, (3, 8), dtype=np.float64)
    gradcheck(net, X, y, l1=1.0, n=10)


ELEMENTWISE = ["sigmoid", "tanh", "relu", "linear"]


@pytest.mark.parametrize("first", ELEMENTWISE)
@pytest.mark.parametrize("second", ELEMENTWISE)
def test_gradient_check_every_activation_in_every_conv_position(first, second):
    """Conv2D keeps only a and takes σ' from it; ConvPool's fused kernel likewise: every
    activation in either position, against finite differences."""
    X, y = _images(n=4, c=1, size=9)
    net = Network([Conv2D(1, 3, kernel_size=3, padding=1, activation=first),
                   ConvPool(3, 2, kernel_size=2, pool=2, activation=second),
                   Flatten(), Softmax(32, 3)],
                  cost="log-likelihood", input_shape=(1, 9, 9), seed=2, backend="cpu",
                  dtype=np.float64)
    net.layers[-1].w[...] = net.rng.normal(0, 0.5, (3, 32), dtype=np.float64)
    gradcheck(net, X, y, n=12)


def test_shapes_that_do_not_chain_fail_naming_both():
    with pytest.raises(ConfigError, match=r"expects 641 inputs.*\(40, 4, 4\) = 640"):
        Network([ConvPool(1, 20), ConvPool(20, 40), FullyConnected(641, 100),
                 Softmax(100, 10)], cost="log-likelihood", input_shape=(1, 28, 28),
                backend="cpu")
    with pytest.raises(ConfigError, match=r"C=3.*\(1, 28, 28\)"):
        Network([Conv2D(3, 8), Flatten(), Softmax(8 * 24 * 24, 10)],
                cost="log-likelihood", input_shape=(1, 28, 28), backend="cpu")
    with pytest.raises(ConfigError, match="needs input_shape"):
        Network([ConvPool(1, 20), Softmax(2880, 10)], cost="log-likelihood", backend="cpu")


def test_book_two_conv_pool_net_has_the_books_parameter_count():
    net = Network([ConvPool(1, 20, 5, 2), ConvPool(20, 40, 5, 2), FullyConnected(640, 100),
                   Softmax(100, 10)], cost="log-likelihood", input_shape=(1, 28, 28),
                  backend="cpu")
    assert net.num_params == (20 * 1 * 5 * 5 + 20 + 40 * 20 * 5 * 5 + 40 + 640 * 100 + 100
                              + 100 * 10 + 10)
    assert [r["output_shape"] for r in net.summary()] == [(20, 12, 12), (40, 4, 4), (100,),
                                                          (10,)]


def test_a_tiny_conv_net_overfits_a_small_batch():
    r = np.random.default_rng(0)
    X = r.random((20, 1, 10, 10)).astype(np.float32)
    y = r.integers(0, 4, 20)
    net = Network([Conv2D(1, 6, 3, activation="relu"), MaxPool(2), Flatten(),
                   Softmax(6 * 4 * 4, 4)], cost="log-likelihood", input_shape=(1, 10, 10),
                  seed=0, backend="cpu")
    net.sgd((X.reshape(20, -1), y), 150, 5, 0.1)
    assert net.accuracy((X.reshape(20, -1), y)) == 1.0


def test_conv_net_saves_and_loads(tmp_path, backend):
    net = Network([ConvPool(1, 2, 3, 2, "relu"), FullyConnected(18, 4, "relu", dropout=0.5),
                   Softmax(4, 3)], cost="log-likelihood", input_shape=(1, 8, 8), seed=2,
                  backend=backend)
    path = gpunn.save(net, tmp_path / "conv.npz")
    back = gpunn.load(path, backend="cpu")
    assert back.config() == net.config()
    X, _ = _images(n=3)
    assert_matches("loaded conv net output", back.feedforward(X.astype(np.float32)),
                   backend.to_numpy(net.feedforward(backend.asarray(X))))


def test_fused_softmax_kernel_matches_the_plain_softmax_delta():
    X, y = _images(n=7)
    net = Network([Flatten(), FullyConnected(64, 6, "tanh"), Softmax(6, 3)],
                  cost="log-likelihood", input_shape=(1, 8, 8), seed=0, backend="cpu",
                  dtype=np.float64)
    net.layers[-1].w[...] = net.rng.normal(0, 0.5, (3, 6), dtype=np.float64)
    nabla_b, nabla_w = net.backprop(X, y)
    a = net.feedforward(X)
    delta = (a - np.eye(3)[y]) / len(y)  # the book's δ^L = a − y, averaged
    assert_matches("softmax nabla_b", nabla_b[-1], delta.sum(axis=0))
    assert_matches("softmax nabla_w", nabla_w[-1], delta.T @ net.layers[1]._a)
