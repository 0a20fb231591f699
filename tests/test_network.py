"""The fully connected network against oracles: the book's per-example algorithm, finite
differences, and the update rules written out by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gpunn import backend as backend_module
from gpunn.errors import ConfigError
from gpunn.gradcheck import GradientCheckError, gradcheck
from gpunn.network import Network
from gpunn.testing import assert_matches


def _data(n=23, n_in=6, n_out=4, seed=0, dtype=np.float64):
    r = np.random.default_rng(seed)
    return r.random((n, n_in)).astype(dtype), r.integers(0, n_out, n)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _book_backprop(weights, biases, x, y):
    """network.py's backprop for one example (column vectors), quadratic cost, sigmoid."""
    activation, activations, zs = x[:, None], [x[:, None]], []
    for w, b in zip(weights, biases):
        z = w @ activation + b[:, None]
        zs.append(z)
        activation = _sigmoid(z)
        activations.append(activation)
    delta = (activations[-1] - y[:, None]) * _sigmoid(zs[-1]) * (1 - _sigmoid(zs[-1]))
    nabla_b, nabla_w = [None] * len(weights), [None] * len(weights)
    nabla_b[-1], nabla_w[-1] = delta[:, 0], delta @ activations[-2].T
    for l in range(2, len(weights) + 1):
        sp = _sigmoid(zs[-l]) * (1 - _sigmoid(zs[-l]))
        delta = (weights[-l + 1].T @ delta) * sp
        nabla_b[-l], nabla_w[-l] = delta[:, 0], delta @ activations[-l - 1].T
    return nabla_b, nabla_w


def test_3b1b_network_has_13002_parameters():
    net = Network([784, 16, 16, 10], backend="cpu", seed=0)
    assert net.num_params == 13_002
    assert [w.shape for w in net.weights] == [(16, 784), (16, 16), (10, 16)]
    assert [b.shape for b in net.biases] == [(16,), (16,), (10,)]


def test_feedforward_matches_the_books_per_example_loop():
    X, _ = _data()
    net = Network([6, 5, 4], backend="cpu", seed=3, dtype=np.float64)
    out = net.feedforward(X)
    for i in range(len(X)):
        a = X[i]
        for w, b in zip(net.weights, net.biases):
            a = _sigmoid(w @ a + b)
        assert_matches(f"feedforward row {i}", out[i], a)


def test_activations_are_every_layers_output_as_the_book_computes_them():
    X, _ = _data()
    net = Network([6, 5, 3, 4], backend="cpu", seed=3, dtype=np.float64)
    layers = net.activations(X)
    assert len(layers) == 3
    a = X
    for k, (w, b) in enumerate(zip(net.weights, net.biases)):
        a = _sigmoid(a @ w.T + b)
        assert_matches(f"activations[{k}]", layers[k], a)
    assert_matches("activations[-1] vs feedforward", layers[-1], net.feedforward(X))


def test_inputs_shapes_one_example_or_a_batch_and_refuses_the_wrong_size():
    X, _ = _data(n=4, dtype=np.float32)
    net = Network([6, 5, 4], backend="cpu", seed=3, dtype=np.float64)
    assert net.inputs(X).shape == (4, 6) and net.inputs(X).dtype == np.float64
    assert net.inputs(X[0]).shape == (1, 6)
    with pytest.raises(ConfigError,
                       match=r"expects X of shape \(N, 6\).*received X.shape=\(4, 5\)"):
        net.inputs(X[:, :5])


def test_matrix_backprop_equals_the_mean_of_the_books_per_example_backprop():
    X, y = _data()
    net = Network([6, 5, 3, 4], backend="cpu", seed=2, dtype=np.float64)
    nabla_b, nabla_w = net.backprop(X, y)
    eye = np.eye(4)
    per = [_book_backprop(net.weights, net.biases, X[i], eye[y[i]]) for i in range(len(X))]
    for l in range(3):
        assert_matches(f"nabla_b[{l}]", nabla_b[l], np.mean([p[0][l] for p in per], axis=0))
        assert_matches(f"nabla_w[{l}]", nabla_w[l], np.mean([p[1][l] for p in per], axis=0))


COSTS = ["quadratic", "cross-entropy", "log-likelihood"]
ACTIVATIONS = ["sigmoid", "tanh", "relu", "linear"]
REGULARISERS = [{}, {"lmbda": 3.0}, {"l1": 2.0}, {"dropout": 0.3}]


@pytest.mark.parametrize("cost,activation,reg", list(itertools.product(
    COSTS, ACTIVATIONS, REGULARISERS)), ids=lambda v: str(v))
def test_gradient_check_every_combination(cost, activation, reg):
    X, y = _data(n=9, n_in=5, n_out=3)
    net = Network([5, 4, 4, 3], cost=cost, activation=activation, seed=7, backend="cpu",
                  dtype=np.float64, dropout=reg.get("dropout", 0.0))
    worst = gradcheck(net, X, y, lmbda=reg.get("lmbda", 0.0), l1=reg.get("l1", 0.0), n=40)
    assert worst < 1e-6


def test_gradient_check_catches_a_wrong_gradient():
    X, y = _data(n=5, n_in=4, n_out=3)
    net = Network([4, 3, 3], backend="cpu", dtype=np.float64, seed=1)
    real = net.gradients

    def broken(*args, **kwargs):
        nabla_b, nabla_w = real(*args, **kwargs)
        nabla_w[0] = nabla_w[0] * 1.01
        return nabla_b, nabla_w

    net.gradients = broken
    with pytest.raises(GradientCheckError, match=r"weights\[0\].*backprop=.*finite difference="):
        gradcheck(net, X, y)


@pytest.mark.parametrize("reg", [{}, {"lmbda": 5.0}, {"l1": 1.0}, {"lmbda": 2.0, "l1": 1.0}])
def test_update_mini_batch_descends_the_regularised_gradient(reg):
    X, y = _data(n=10)
    net = Network([6, 5, 4], cost="cross-entropy", backend="cpu", seed=4, dtype=np.float64)
    before = [w.copy() for w in net.weights], [b.copy() for b in net.biases]
    nabla_b, nabla_w = net.gradients(X, y, n=1000, **reg)
    net.update_mini_batch(X, net.targets(y), eta=0.5, n=1000, **reg)
    for l in range(2):
        assert_matches(f"w[{l}]", net.weights[l], before[0][l] - 0.5 * nabla_w[l])
        assert_matches(f"b[{l}]", net.biases[l], before[1][l] - 0.5 * nabla_b[l])


def test_momentum_follows_v_mu_v_minus_eta_g():
    X, y = _data(n=8)
    net = Network([6, 5, 4], backend="cpu", seed=5, dtype=np.float64)
    ref = Network([6, 5, 4], backend="cpu", seed=5, dtype=np.float64)
    net.velocities = [(np.zeros_like(w), np.zeros_like(b)) for w, b in
                      zip(net.weights, net.biases)]
    v = [np.zeros_like(w) for w in ref.weights]
    for _ in range(3):
        # biases follow the same rule; the weights are the part the formula pins down here
        ref.layers[0].b, ref.layers[1].b = net.biases[0].copy(), net.biases[1].copy()
        _, gw = ref.gradients(X, y, lmbda=1.0, n=100)
        for l in range(2):
            v[l] = 0.9 * v[l] - 0.3 * gw[l]
            ref.layers[l].w = ref.layers[l].w + v[l]
        net.update_mini_batch(X, net.targets(y), 0.3, lmbda=1.0, n=100, momentum=0.9)
    for l in range(2):
        assert_matches(f"w[{l}] with momentum", net.weights[l], ref.weights[l], rtol=1e-6)


def _blobs(n=600, n_in=20, k=4, seed=0):
    """Separable classes around random centres: a task any working net learns."""
    r = np.random.default_rng(seed)
    centres = r.random((k, n_in)).astype(np.float32)
    y = r.integers(0, k, n)
    X = np.clip(centres[y] + 0.08 * r.standard_normal((n, n_in)), 0, 1).astype(np.float32)
    return X, y


@pytest.mark.parametrize("cost", COSTS)
def test_sgd_learns_and_reports_history(cost):
    X, y = _blobs()
    net = Network([20, 12, 4], cost=cost, seed=0, backend="cpu", init="default")
    seen = []
    history = net.sgd((X[:500], y[:500]), 5, 10, 1.0 if cost != "quadratic" else 3.0,
                      evaluation_data=(X[500:], y[500:]), monitor_evaluation_cost=True,
                      monitor_training_accuracy=True, on_epoch=seen.append)
    assert len(history) == 5 and seen == history.epochs
    assert history[-1]["evaluation_accuracy"] >= 0.95
    assert history[-1]["evaluation_cost"] < history[0]["evaluation_cost"] * 1.5
    assert {"epoch", "seconds", "eta", "training_accuracy"} <= set(history[-1])


def test_training_is_bit_identical_run_to_run_and_seed_dependent():
    X, y = _blobs()

    def run(seed):
        net = Network([20, 9, 4], seed=seed, backend="cpu", dropout=0.2)
        net.sgd((X, y), 2, 7, 2.0, lmbda=1.0, momentum=0.5)
        return [np.array(w) for w in net.weights]

    a, b, c = run(11), run(11), run(12)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))


def test_early_stopping_and_schedule_stop_with_a_reason():
    X, y = _blobs(n=200)
    net = Network([20, 5, 4], seed=0, backend="cpu")
    # eta so small nothing improves after the first epoch: early stopping triggers
    h = net.sgd((X, y), 50, 10, 1e-9, evaluation_data=(X, y), early_stopping_n=3)
    assert len(h) == 4 and h.stop_reason.startswith("early stopping")
    net = Network([20, 5, 4], seed=0, backend="cpu")
    h = net.sgd((X, y), 100, 10, 1e-9, evaluation_data=(X, y), schedule_n=1)
    assert h.stop_reason.startswith("eta schedule")
    etas = h.series("eta")
    assert etas[0] == 1e-9 and etas[-1] < etas[0] / 64


def test_dropout_masks_are_inverted_and_independent_per_layer():
    """Hidden units are dropped (as inputs of the layer above, network3's p_dropout); the
    input pixels never are."""
    net = Network([50, 400, 400, 3], seed=0, backend="cpu", dropout=0.5)
    X = np.ones((64, 50), np.float32)
    net.feedforward(X, train=True)
    m1, m2 = net.layers[1]._mask, net.layers[2]._mask
    assert set(np.unique(m1)) == {0.0, 2.0}
    assert abs(m1.mean() - 1.0) < 0.05  # inverted: expectation is kept
    assert not np.array_equal(m1, m2[:, :400])
    assert net.layers[0]._mask is None  # never on the input pixels
    out1, out2 = net.feedforward(X), net.feedforward(X)
    assert np.array_equal(out1, out2)  # evaluation is deterministic


def test_overfits_a_1000_image_subset_to_full_training_accuracy(mnist_small):
    """Chapter 3's overfitting experiment: 1,000 images, 784-30-10, cross-entropy."""
    X, y = mnist_small
    net = Network([784, 30, 10], cost="cross-entropy", seed=1, backend="cpu", init="large")
    best = 0.0
    for _ in range(30):
        net.sgd((X, y), 10, 10, 0.5)
        best = net.accuracy((X, y))
        if best == 1.0:
            break
    assert best == 1.0


@pytest.fixture
def gpu(backend):
    """The CuPy backend only: for tests that compare the GPU with the CPU, which on the NumPy
    backend would compare the CPU with itself and could not fail."""
    if backend.name != "cupy":
        pytest.skip("compares the GPU with the CPU; the NumPy backend is the CPU")
    return backend


def test_same_seed_gives_same_initial_weights_on_cpu_and_gpu(gpu):
    cpu = Network([784, 30, 10], seed=42, backend="cpu")
    other = Network([784, 30, 10], seed=42, backend=gpu)
    for a, b in zip(cpu.weights + cpu.biases, other.weights + other.biases):
        assert np.array_equal(a, gpu.to_numpy(b))


def test_training_step_on_the_gpu_matches_the_cpu(gpu):
    X, y = _blobs(n=40)
    ref = Network([20, 6, 4], seed=3, backend="cpu", cost="log-likelihood")
    net = Network([20, 6, 4], seed=3, backend=gpu, cost="log-likelihood")
    ref.sgd((X, y), 1, 8, 0.5)
    net.sgd((X, y), 1, 8, 0.5)
    for l in range(2):
        assert_matches(f"w[{l}] after an epoch", net.weights[l], ref.weights[l],
                       rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    ({"sizes": [784]}, "at least two"),
    ({"sizes": [784, 0, 10]}, "at least two"),
    ({"sizes": [4, 3], "cost": "hinge"}, "cost must be one of"),
    ({"sizes": [4, 3, 2], "activation": "swish"}, "activation must be one of"),
    ({"sizes": [4, 3], "cost": "cross-entropy", "output_activation": "relu"}, "sigmoid"),
    ({"sizes": [4, 3], "cost": "log-likelihood", "output_activation": "sigmoid"}, "softmax"),
    ({"sizes": [4, 3, 2], "dropout": 1.0}, "dropout must be in"),
    ({"sizes": [4, 3], "init": "xavier"}, "init must be one of"),
])
def test_bad_configuration_is_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Network(backend="cpu", **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"epochs": 1, "mini_batch_size": 0, "eta": 1.0}, "mini_batch_size must be"),
    ({"epochs": 1, "mini_batch_size": 5, "eta": -1.0}, "eta must be"),
    ({"epochs": 1, "mini_batch_size": 5, "eta": float("nan")}, "eta must be"),
    ({"epochs": 1, "mini_batch_size": 5, "eta": 1.0, "momentum": 1.0}, "momentum"),
    ({"epochs": 1, "mini_batch_size": 5, "eta": 1.0, "early_stopping_n": 2}, "evaluation"),
])
def test_bad_training_settings_are_refused(kwargs, match):
    X, y = _blobs(n=20)
    net = Network([20, 4], backend="cpu")
    with pytest.raises(ConfigError, match=match):
        net.sgd((X, y), **kwargs)


def test_wrong_input_shape_names_both_shapes():
    net = Network([784, 30, 10], backend="cpu")
    with pytest.raises(ConfigError, match=r"\(N, 784\); received X.shape=\(5, 28\)"):
        net.feedforward(np.zeros((5, 28), np.float32))


def test_mixing_arrays_of_two_backends_is_refused(monkeypatch):
    class FakeCupyArray:  # what a CuPy array looks like to the type check
        __module__ = "cupy._core.core"

    net = Network([4, 3], backend="cpu")
    with pytest.raises(backend_module.MixedArrayError, match="received a cupy array"):
        net.feedforward(FakeCupyArray())
