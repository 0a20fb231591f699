"""weight_update (Numba: one sgemm) against its oracle, the NumPy reference, which does what
the optimiser did with a formed gradient: W ← βW, then W − (η δᵀx)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gpunn.errors import ConfigError
from gpunn.kernels.dense import WEIGHT_UPDATE as REFERENCE
from gpunn.kernels.dense_numba import WEIGHT_UPDATE, _bind_sgemm
from gpunn.testing import assert_matches

pytestmark = pytest.mark.skipif(not _bind_sgemm(),
                                reason="NumPy carries no ILP64 cblas_sgemm for the kernel")

SHAPES = [(1, 1), (7, 13), (64, 100), (65, 3), (10, 1000)]  # (n_out, n_in)
BATCHES = [1, 3, 10, 33]


def _operands(n_out, n_in, m, seed=0):
    r = np.random.default_rng(seed)
    w = r.standard_normal((n_out, n_in)).astype(np.float32)
    delta = (r.standard_normal((m, n_out)) / m).astype(np.float32)
    x = r.random((m, n_in), dtype=np.float32)
    return w, delta, x


@pytest.mark.parametrize("n_out, n_in", SHAPES)
@pytest.mark.parametrize("m", BATCHES)
@pytest.mark.parametrize("beta", [1.0, 0.97])
@pytest.mark.parametrize("layouts", list(itertools.product(["c", "f", "strided"], repeat=2)))
def test_matches_the_reference(oracle, n_out, n_in, m, beta, layouts):
    w, delta, x = _operands(n_out, n_in, m)
    got, want = w.copy(), w.copy()
    d, xs = oracle.laid_out(delta, layouts[0]), oracle.laid_out(x, layouts[1])
    assert WEIGHT_UPDATE.supports(got, d, xs)
    WEIGHT_UPDATE(got, d, xs, 0.3, beta)
    REFERENCE(want, delta, x, 0.3, beta)
    assert_matches(f"weight_update {n_out}x{n_in} m={m} beta={beta} {layouts}", got, want,
                   rtol=1e-5, atol=1e-6)
    # and both against the formula in float64
    exact = beta * w.astype(np.float64) - 0.3 * delta.T.astype(np.float64) @ x
    assert_matches("weight_update against float64", got.astype(np.float64), exact,
                   rtol=1e-5, atol=1e-5)
    assert not np.array_equal(got, w)  # it did update W


def test_the_reference_is_what_the_optimiser_did_with_a_formed_gradient():
    w, delta, x = _operands(64, 100, 10, seed=1)
    for dtype in (np.float32, np.float64):
        got, want = w.astype(dtype), w.astype(dtype)
        d, xs = delta.astype(dtype), x.astype(dtype)
        REFERENCE(got, d, xs, 0.3, 0.99)
        grad = d.T @ xs
        want *= dtype(0.99)
        grad *= dtype(0.3)
        want -= grad
        assert np.array_equal(got, want)


def test_supports_float32_numpy_with_a_contiguous_writable_w():
    w, delta, x = _operands(7, 13, 3)
    assert WEIGHT_UPDATE.supports(w, delta, x)
    assert not WEIGHT_UPDATE.supports(w.astype(np.float64), delta, x)
    assert not WEIGHT_UPDATE.supports(w, delta.astype(np.float64), x)
    assert not WEIGHT_UPDATE.supports(np.asfortranarray(w), delta, x)
    frozen = w.copy()
    frozen.flags.writeable = False
    assert not WEIGHT_UPDATE.supports(frozen, delta, x)
    with pytest.raises(ConfigError, match=r"float32.*received ndarray float64.*supports"):
        WEIGHT_UPDATE(w.astype(np.float64), delta, x, 0.1)


@pytest.mark.parametrize("impl", [WEIGHT_UPDATE, REFERENCE], ids=["numba", "reference"])
def test_operands_that_do_not_fit_are_refused_naming_the_shapes(impl):
    w, delta, x = _operands(7, 13, 3)
    before = w.copy()
    for d, xs in ((delta[:, :6], x), (delta, x[:, :12]), (delta[:2], x), (delta[0], x)):
        with pytest.raises(ConfigError, match=r"W \(n_out, n_in\).*W.shape=\(7, 13\)"):
            impl(w, d, xs, 0.1)
    assert np.array_equal(w, before)  # nothing half-written
