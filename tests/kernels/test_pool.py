"""max_pool2d: the backend's kernel against the NumPy reference, finite differences and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gpunn.errors import ConfigError
from gpunn.testing import assert_matches

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _distinct(rng, shape, dtype=np.float64):
    """Values at least 0.01 apart, so the argmax is unique and finite differences are clean."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.01).astype(dtype)


def _check_against_reference(backend, oracle, rng, x, kernel, stride):
    """Forward and dx of the backend's kernel against the NumPy reference on ``x``."""
    ref = oracle.reference("max_pool2d")
    out_ref, cache_ref = ref.forward(x, kernel, stride)
    pool = backend.kernel("max_pool2d")
    out, cache = pool.forward(backend.asarray(x, dtype=None), kernel, stride)
    assert_matches("max_pool2d forward", out, out_ref)
    dout = rng.standard_normal(out_ref.shape).astype(x.dtype)
    dx = pool.backward(backend.asarray(dout, dtype=None), cache)
    assert_matches("max_pool2d dx", dx, ref.backward(dout, cache_ref),
                   **oracle.tolerance(x.dtype))


@SETTINGS
@given(
    n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 10), w=st.integers(1, 10),
    kernel=st.integers(1, 4), stride=st.one_of(st.none(), st.integers(1, 4)),
    ties=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_matches_reference(backend, oracle, threads, n, c, h, w, kernel, stride, ties, dtype,
                           seed):
    assume(kernel <= min(h, w))
    rng = np.random.default_rng(seed)
    # With ties (few distinct values) the first maximum in row-major order must win.
    x = (rng.integers(0, 3, (n, c, h, w)) if ties else rng.standard_normal((n, c, h, w)))
    x = x.astype(dtype)
    _check_against_reference(backend, oracle, rng, x, kernel, stride)


@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2)], ids=["book-2x2", "KSH-3x3s2"])
@pytest.mark.parametrize("shape", [(1, 1, 3, 3), (2, 3, 9, 8), (3, 2, 16, 17), (1, 5, 31, 31)])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unrolled_pools_match_reference(backend, oracle, threads, kernel, stride, shape, ties,
                                        dtype):
    """The unrolled 2x2/2 and 3x3/2 loops, odd sizes included, with ties (first max wins)."""
    rng = np.random.default_rng(sum(shape))
    x = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    _check_against_reference(backend, oracle, rng, x, kernel, stride)


@pytest.mark.parametrize("kernel, stride, size", [(2, 2, 8), (3, 2, 9), (3, 1, 6), (2, 3, 7)])
def test_gradient_matches_finite_differences(backend, impl, oracle, kernel, stride, size):
    rng = np.random.default_rng(0)
    x = _distinct(rng, (2, 2, size, size))
    pool = impl("max_pool2d")
    out, cache = pool.forward(backend.asarray(x, dtype=None), kernel, stride)
    g = rng.standard_normal(out.shape)

    def loss():
        out, _ = pool.forward(backend.asarray(x, dtype=None), kernel, stride)
        return float((backend.to_numpy(out) * g).sum())

    dx = pool.backward(backend.asarray(g, dtype=None), cache)
    assert_matches("max_pool2d dx", dx, oracle.numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)


def test_book_pooling_by_hand(backend, impl):
    x = backend.asarray([[[[1, 2, 0, 0], [3, 4, 0, 5], [0, 0, 0, 0], [7, 0, 0, 6]]]])
    out, cache = impl("max_pool2d").forward(x, 2)
    assert_matches("2x2 pooling", out, np.array([[[[4, 5], [7, 6]]]], np.float32))
    dx = impl("max_pool2d").backward(backend.xp.ones_like(out), cache)
    want = np.zeros((1, 1, 4, 4), np.float32)
    want[0, 0, 1, 1] = want[0, 0, 1, 3] = want[0, 0, 3, 0] = want[0, 0, 3, 3] = 1
    assert_matches("2x2 pooling dx", dx, want)


def test_overlapping_windows_add_gradients(backend, impl):
    x = np.zeros((1, 1, 5, 5), np.float32)
    x[0, 0, 2, 2] = 9  # the centre belongs to all four 3x3 stride-2 windows
    out, cache = impl("max_pool2d").forward(backend.asarray(x), 3, 2)
    dx = impl("max_pool2d").backward(backend.xp.ones_like(out), cache)
    assert float(backend.to_numpy(dx)[0, 0, 2, 2]) == 4.0


def test_reference_matches_torch(oracle):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 13, 12))
    ref = oracle.reference("max_pool2d")
    for kernel, stride in ((2, 2), (3, 2), (3, 3)):
        out, cache = ref.forward(x, kernel, stride)
        tx = torch.tensor(x, requires_grad=True)
        tout = torch.nn.functional.max_pool2d(tx, kernel, stride)
        assert_matches("max_pool2d forward vs torch", out, tout.detach().numpy())
        g = rng.standard_normal(out.shape)
        tout.backward(torch.tensor(g))
        assert_matches("max_pool2d dx vs torch", ref.backward(g, cache), tx.grad.numpy())


def test_bad_arguments_name_expected_and_received(backend, impl):
    xp, pool = backend.xp, impl("max_pool2d")
    with pytest.raises(ConfigError, match=r"received x.shape=\(28, 28\)"):
        pool.forward(xp.zeros((28, 28)))
    with pytest.raises(ConfigError, match="received x.dtype=int32"):
        pool.forward(xp.zeros((1, 1, 4, 4), dtype=xp.int32))
    with pytest.raises(ConfigError, match="kernel=5 is larger than the input"):
        pool.forward(xp.zeros((1, 1, 4, 4)), 5)
    with pytest.raises(ConfigError, match="stride to be an integer >= 1; received 0"):
        pool.forward(xp.zeros((1, 1, 4, 4)), 2, 0)
    out, cache = pool.forward(xp.zeros((1, 1, 4, 4)))
    with pytest.raises(ConfigError, match=r"dout of shape \(N, C, OH, OW\)=\(1, 1, 2, 2\)"):
        pool.backward(xp.zeros((1, 1, 4, 4)), cache)
