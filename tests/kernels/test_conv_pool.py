"""conv_pool: the fused CPU kernel against the composed NumPy references and finite
differences, over every activation it fuses, both dtypes, odd shapes and both thread paths."""

from __future__ import annotations

import numpy as np
import pytest

from gpunn.errors import ConfigError
from gpunn.testing import assert_matches

FUSED = ["sigmoid", "tanh", "relu", "linear", "step"]
# (N, C, H, W, F, K, pool): the book's two layers, batch 1, odd sizes that leave a remainder
# row and column for the pool to drop, a 1x1 kernel, a pool of 3 and one of 1.
SHAPES = [
    (2, 1, 12, 12, 3, 5, 2),
    (3, 4, 8, 8, 5, 5, 2),
    (1, 2, 9, 7, 3, 3, 2),
    (2, 3, 6, 10, 4, 1, 3),
    (1, 1, 5, 5, 2, 2, 1),
]


def _arrays(rng, dtype, n, c, h, w, f, k):
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = (rng.standard_normal((f, c, k, k)) / k).astype(dtype)
    b = rng.standard_normal(f).astype(dtype) * 0.1
    return x, wt, b


@pytest.mark.parametrize("activation", FUSED)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_composed_reference(backend, oracle, threads, layout, chunks, activation, shape,
                                    dtype):
    n, c, h, w, f, k, pool = shape
    rng = np.random.default_rng(hash((activation, shape)) % 2**32)
    x, wt, b = _arrays(rng, dtype, n, c, h, w, f, k)
    ref = oracle.reference("conv_pool")
    a_ref, cache_ref = ref.forward(x, wt, b, pool, activation)
    kernel = backend.kernel("conv_pool")
    a, cache = kernel.forward(backend.asarray(x, dtype=None), backend.asarray(wt, dtype=None),
                              backend.asarray(b, dtype=None), pool, activation)
    tol = oracle.tolerance(dtype)
    assert a.dtype == dtype and a.shape == a_ref.shape == (n, f, (h - k + 1) // pool,
                                                           (w - k + 1) // pool)
    assert_matches(f"conv_pool {activation} forward", a, a_ref, **tol)
    grad = rng.standard_normal(a_ref.shape).astype(dtype)
    got = kernel.backward(backend.asarray(grad, dtype=None), cache)
    want = ref.backward(grad, cache_ref)
    for name, g, r in zip(("dx", "dw", "db"), got, want, strict=True):
        assert g.dtype == dtype, name
        assert_matches(f"conv_pool {activation} {name}", g, r, **tol)


@pytest.mark.parametrize("activation", FUSED)
def test_backward_without_dx_and_twice(backend, oracle, layout, chunks, activation):
    """need_dx=False gives the same dw, db; a second backward on one cache gives the same."""
    rng = np.random.default_rng(3)
    x, wt, b = _arrays(rng, np.float64, 2, 2, 9, 9, 3, 3)
    kernel = backend.kernel("conv_pool")
    a, cache = kernel.forward(*(backend.asarray(v, dtype=None) for v in (x, wt, b)), 2,
                              activation)
    grad = backend.asarray(rng.standard_normal(a.shape), dtype=None)
    dx, dw, db = kernel.backward(grad, cache)
    none, dw2, db2 = kernel.backward(grad, cache, need_dx=False)
    assert none is None
    assert_matches("dw", dw2, dw, **oracle.tolerance(np.float64))
    assert_matches("db", db2, db, **oracle.tolerance(np.float64))


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "linear"])
def test_gradients_match_finite_differences(backend, impl, oracle, layout, activation):
    rng = np.random.default_rng(0)
    # distinct conv outputs per window keep the max (and relu's kink) away from the steps
    x, wt, b = _arrays(rng, np.float64, 2, 2, 7, 7, 2, 3)
    op = impl("conv_pool")
    arrays = [backend.asarray(v, dtype=None) for v in (x, wt, b)]
    a, cache = op.forward(*arrays, 2, activation)
    g = rng.standard_normal(a.shape)

    def loss():
        out, _ = op.forward(*(backend.asarray(v, dtype=None) for v in (x, wt, b)), 2, activation)
        return float((backend.to_numpy(out) * g).sum())

    grads = op.backward(backend.asarray(g, dtype=None), cache)
    for name, v, got in zip(("dx", "dw", "db"), (x, wt, b), grads, strict=True):
        assert_matches(f"conv_pool {name}", got, oracle.numerical_gradient(loss, v),
                       rtol=1e-5, atol=1e-7)


def test_unfused_activation_runs_composed(oracle, layout):
    """softmax is not fused; the kernel hands it to the composed ops rather than refusing."""
    from gpunn.kernels import lookup

    kernel = lookup("conv_pool", "numba")
    assert not kernel.fused("softmax") and all(kernel.fused(a) for a in FUSED)
    x, wt, b = _arrays(np.random.default_rng(1), np.float64, 2, 1, 6, 6, 3, 3)
    a, _ = kernel.forward(x, wt, b, 2, "softmax")
    a_ref, _ = oracle.reference("conv_pool").forward(x, wt, b, 2, "softmax")
    assert_matches("conv_pool softmax forward", a, a_ref)


@pytest.mark.parametrize("pool, message", [(0, "pool to be an integer >= 1"),
                                           (9, "cannot pool 9x9 windows")])
def test_bad_pool_says_what_came(backend, impl, pool, message):
    x = np.zeros((1, 1, 8, 8))
    with pytest.raises(ConfigError, match=message):
        impl("conv_pool").forward(*(backend.asarray(v, dtype=None) for v in
                                    (x, np.zeros((1, 1, 3, 3)), np.zeros(1))), pool, "relu")


def test_grad_of_wrong_shape_is_refused(backend, impl):
    x = np.zeros((1, 1, 8, 8))
    op = impl("conv_pool")
    a, cache = op.forward(*(backend.asarray(v, dtype=None) for v in
                            (x, np.zeros((2, 1, 3, 3)), np.zeros(2))), 2, "relu")
    with pytest.raises(ConfigError, match=r"received .*shape=\(1, 2, 2, 2\)"):
        op.backward(backend.asarray(np.zeros((1, 2, 2, 2)), dtype=None), cache)
