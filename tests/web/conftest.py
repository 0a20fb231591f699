"""Small trained networks and a small MNIST-shaped dataset for the page's tests.

No real dataset: ten crude 'digits' (a bar at a label-dependent height, with noise), enough
for a network to learn in a second and to get some images wrong.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpunn import Network
from gpunn.data import Dataset, Split
from gpunn.layers import Conv2D, ConvPool, Flatten, FullyConnected, MaxPool, Softmax


def bar_digits(n, seed):
    """(n, 784) float32 in [0, 1] and (n,) int64 labels: label k is a bar at rows 2k..2k+3."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 10, n)
    X = np.zeros((n, 28, 28), np.float32)
    for i, label in enumerate(y):
        X[i, 2 + 2 * label:5 + 2 * label, 4:24] = 1.0
    X = np.clip(X + 0.3 * r.random(X.shape, dtype=np.float32), 0, 1)
    return X.reshape(n, 784), y.astype(np.int64)


@pytest.fixture(scope="session")
def bars():
    """A Dataset of bar digits: 600 training, 100 validation, 200 test images."""
    splits = [Split(*bar_digits(n, seed), scale=1.0) for n, seed in ((600, 0), (100, 1),
                                                                      (200, 2))]
    return Dataset("mnist", "bar digits (tests)", *splits,
                   classes=tuple(str(d) for d in range(10)))


@pytest.fixture(scope="session")
def fc_net(bars):
    """784-16-16-10 sigmoid, trained two epochs: about 90%, so it gets some wrong."""
    net = Network([784, 16, 16, 10], cost="cross-entropy", seed=1, backend="cpu")
    net.sgd(bars.train, 2, 10, 1.0)
    return net


@pytest.fixture(scope="session")
def conv_net(bars):
    """Chapter 6's shape, small: ConvPool(1, 4, 5, 2, relu), FullyConnected, Softmax."""
    net = Network([ConvPool(1, 4, 5, 2, "relu"), FullyConnected(4 * 12 * 12, 20, "relu"),
                   Softmax(20, 10)], cost="log-likelihood", input_shape=(1, 28, 28), seed=1,
                  backend="cpu")
    net.sgd(bars.train, 1, 10, 0.1)
    return net


@pytest.fixture(scope="session")
def odd_net(bars):
    """Every other path of the page: Conv2D with stride and padding, tanh, MaxPool, Flatten,
    network3's dropout scaled at evaluation, a sigmoid output layer."""
    net = Network([Conv2D(1, 3, 3, stride=2, padding=1, activation="tanh"), MaxPool(2),
                   Flatten(), FullyConnected(3 * 7 * 7, 12, "relu", dropout=0.5,
                                             dropout_mode="scale-at-eval"),
                   FullyConnected(12, 10, "sigmoid")],
                  cost="cross-entropy", input_shape=(1, 28, 28), seed=2, backend="cpu")
    net.sgd(bars.train, 2, 10, 0.5)
    return net
