"""linear (x Wᵀ in the faster BLAS orientation) against its oracle, the NumPy reference, for
both orientations, every dtype and layout of x, and odd shapes; and the measured choice."""

from __future__ import annotations

import numpy as np
import pytest

from gpunn import backend as backend_module
from gpunn.errors import ConfigError
from gpunn.kernels import choice, dense_numba
from gpunn.kernels.dense import LINEAR as REFERENCE
from gpunn.kernels.dense_numba import ORIENTATIONS, LinearNumba
from gpunn.layers import FullyConnected, Softmax
from gpunn.testing import assert_matches

SHAPES = [(1, 1), (7, 13), (300, 256), (1000, 640)]  # (n_out, n_in); the last two: measured
ROWS = [1, 3, 10, 64, 65]


def _operands(m, n_out, n_in, dtype, seed=0):
    r = np.random.default_rng(seed)
    return (r.standard_normal((m, n_in)).astype(dtype),
            (r.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("n_out, n_in", SHAPES)
@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("how", ["c", "f", "strided"])
def test_each_orientation_matches_the_reference(oracle, orientation, n_out, n_in, m, dtype, how):
    x, w = _operands(m, n_out, n_in, dtype)
    got = LinearNumba(orientation)(oracle.laid_out(x, how), w)
    want = REFERENCE(x, w)
    assert_matches(f"linear {orientation} {m}x{n_in} @ {n_out}x{n_in}.T {how}", got, want,
                   **oracle.tolerance(dtype))
    assert got.flags.c_contiguous  # what the layer's bias add and σ expect
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    assert_matches("linear against float64", got.astype(np.float64), exact,
                   rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4)


@pytest.mark.parametrize("m, n_out, n_in, measured", [
    (10, 1000, 640, True), (64, 256, 256, True),  # few rows, a W of 2^16 entries or more
    (65, 1000, 640, False), (10, 30, 784, False), (10, 255, 256, False)])
def test_only_few_rows_and_a_wide_w_are_measured(store, oracle, monkeypatch, m, n_out, n_in,
                                                 measured):
    keys = []

    def choose(key, candidates, repeat=3):
        keys.append(key)
        for run in candidates.values():  # each candidate is the product itself
            assert_matches(key, run(), REFERENCE(x, w), **oracle.tolerance(np.float32))
        return ORIENTATIONS[1]

    monkeypatch.setattr(choice, "choose", choose)
    x, w = _operands(m, n_out, n_in, np.float32)
    linear = LinearNumba()
    for _ in range(3):
        assert_matches("linear", linear(x, w), REFERENCE(x, w), **oracle.tolerance(np.float32))
    threads = backend_module.num_threads()
    assert keys == ([f"linear {m}x{n_in} @ {n_out}x{n_in}.T float32 | {threads} threads"]
                    if measured else [])  # measured once, then remembered


def test_the_choice_is_kept_on_disk_by_shape(store):
    x, w = _operands(10, 1000, 640, np.float32)
    LinearNumba()(x, w)
    assert "linear 10x640 @ 1000x640.T float32" in store.read_text()
    LinearNumba()(x[:3], w)
    assert "linear 3x640 @ 1000x640.T float32" in store.read_text()


def test_mixed_dtypes_run_x_wt_unmeasured(store, oracle):
    x, w = _operands(10, 1000, 640, np.float32)
    got = LinearNumba()(x.astype(np.float64), w)
    assert got.dtype == np.float64
    assert_matches("mixed dtypes", got, x.astype(np.float64) @ w.T, **oracle.tolerance(np.float64))
    assert not store.exists()  # nothing measured


def test_an_unknown_orientation_is_refused():
    with pytest.raises(ConfigError, match=r"orientation must be one of .* received 'NT'"):
        LinearNumba("NT")


def test_the_cpu_backend_serves_the_chooser_and_the_reference_elsewhere():
    assert backend_module.select("cpu").kernel("linear") is dense_numba.LINEAR
    assert backend_module.select("cpu").kernel("linear", reference=True) is REFERENCE


# The layer with each orientation forced, across what a fully connected layer takes: every
# activation, dropout in both modes, train and evaluation, float32 and float64, odd widths.
@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("activation, dropout, mode",
                         [(a, 0.0, "inverted") for a in ("sigmoid", "tanh", "relu", "linear")]
                         + [("relu", 0.5, "inverted"), ("sigmoid", 0.3, "scale-at-eval"),
                            ("softmax", 0.5, "scale-at-eval"), ("softmax", 0.0, "inverted")])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_layer_forward_and_backward_in_either_orientation(monkeypatch, oracle, orientation,
                                                            activation, dropout, mode,
                                                            train, dtype):
    monkeypatch.setattr(dense_numba.LINEAR, "orientation", orientation)
    be = backend_module.select("cpu")
    layer = (Softmax(513, 129, dropout, mode) if activation == "softmax"
             else FullyConnected(513, 129, activation, dropout, mode))
    layer.build((513,), be, backend_module.HostRNG(be, 3), dtype=dtype)
    x, w = _operands(10, 129, 513, dtype, seed=1)
    layer.w[...] = w  # the softmax layer starts at zero
    a = layer.forward(x, train=train, rng=backend_module.HostRNG(be, 4))
    # the reference: the layer's formula in NumPy, with the same dropout draw
    xin, mask = x, np.ones_like(x)
    if dropout and train:
        keep = 1 - dropout
        drawn = backend_module.HostRNG(be, 4).device_random(x.shape, dtype=x.dtype) < keep
        mask = drawn * (dtype(1 / keep) if mode == "inverted" else dtype(1))
        xin = x * mask
    elif dropout and mode == "scale-at-eval":
        xin = x * dtype(1 - dropout)
    z = xin @ w.T + layer.b
    assert_matches(f"{activation} z ({orientation})", layer.logits, z, **oracle.tolerance(dtype))
    assert_matches(f"{activation} a ({orientation})", a, layer.activation.fn(z),
                   **oracle.tolerance(dtype))
    delta = np.random.default_rng(2).standard_normal(a.shape).astype(dtype)
    grad = layer.backward_delta(delta)
    assert_matches(f"{activation} dx ({orientation})", grad, (delta @ w) * mask,
                   **oracle.tolerance(dtype))
    assert_matches(f"{activation} dW ({orientation})", layer.nabla_w, delta.T @ xin,
                   **oracle.tolerance(dtype))
