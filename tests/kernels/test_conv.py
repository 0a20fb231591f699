"""conv2d: the backend's kernel against the NumPy reference, finite differences and PyTorch."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gpunn.errors import ConfigError
from gpunn.testing import assert_matches

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _arrays(rng, dtype, n, c, h, w, f, kh, kw):
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((f, c, kh, kw)).astype(dtype)
    b = rng.standard_normal(f).astype(dtype)
    return x, wt, b


@SETTINGS
@given(
    n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
    f=st.integers(1, 4), kh=st.integers(1, 5), kw=st.integers(1, 5),
    stride=st.integers(1, 4), padding=st.integers(0, 3),
    dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16),
)
def test_matches_reference(backend, oracle, threads, layout, chunks, n, c, h, w, f, kh, kw, stride,
                           padding, dtype, seed):
    assume(kh <= h + 2 * padding and kw <= w + 2 * padding)
    x, wt, b = _arrays(np.random.default_rng(seed), dtype, n, c, h, w, f, kh, kw)
    ref = oracle.reference("conv2d")
    out_ref, cache_ref = ref.forward(x, wt, b, stride, padding)
    kernel = backend.kernel("conv2d")
    out, cache = kernel.forward(
        backend.asarray(x, dtype=None), backend.asarray(wt, dtype=None),
        backend.asarray(b, dtype=None), stride, padding,
    )
    tol = oracle.tolerance(dtype)
    assert_matches("conv2d forward", out, out_ref, **tol)
    dout = np.random.default_rng(seed + 1).standard_normal(out_ref.shape).astype(dtype)
    grads = kernel.backward(backend.asarray(dout, dtype=None), cache)
    wants = ref.backward(dout, cache_ref)
    for name, got, want in zip(("dx", "dw", "db"), grads, wants, strict=True):
        assert_matches(f"conv2d {name}", got, want, **tol)


@pytest.mark.parametrize(
    "shape, stride, padding",
    [((2, 2, 6, 5, 3, 3, 3), 1, 0), ((2, 2, 7, 7, 3, 3, 2), 2, 1), ((1, 3, 9, 9, 2, 5, 5), 4, 2)],
)
def test_gradients_match_finite_differences(backend, impl, oracle, layout, shape, stride,
                                            padding):
    rng = np.random.default_rng(0)
    x, wt, b = _arrays(rng, np.float64, *shape)
    conv = impl("conv2d")
    arrays = [backend.asarray(a, dtype=None) for a in (x, wt, b)]
    out, cache = conv.forward(*arrays, stride, padding)
    g = rng.standard_normal(out.shape)

    def loss():  # sum(out * g), whose gradient with respect to out is g
        arrays = [backend.asarray(a, dtype=None) for a in (x, wt, b)]
        out, _ = conv.forward(*arrays, stride, padding)
        return float((backend.to_numpy(out) * g).sum())

    grads = conv.backward(backend.asarray(g, dtype=None), cache)
    for name, a, got in zip(("dx", "dw", "db"), (x, wt, b), grads, strict=True):
        want = oracle.numerical_gradient(loss, a)
        assert_matches(f"conv2d {name}", got, want, rtol=1e-6, atol=1e-7)


def test_backward_can_skip_dx(backend):
    x, wt, b = _arrays(np.random.default_rng(0), np.float32, 2, 1, 8, 8, 3, 5, 5)
    conv = backend.kernel("conv2d")
    out, cache = conv.forward(*(backend.asarray(a) for a in (x, wt, b)))
    dx, dw, db = conv.backward(backend.xp.ones_like(out), cache, need_dx=False)
    assert dx is None and dw.shape == wt.shape and db.shape == b.shape


def test_interleaved_and_repeated_backward_match_reference(backend, oracle, chunks):
    # Kernels may reuse scratch between calls: two forwards of one shape before either
    # backward, then a second backward on the same cache, must still give each its own grads
    # (whether forward kept the batch's cols or backward rebuilds them chunk by chunk).
    ref, conv = oracle.reference("conv2d"), backend.kernel("conv2d")
    rng = np.random.default_rng(3)
    tol = oracle.tolerance(np.float32)
    runs = []
    for _ in range(2):
        x, wt, b = _arrays(rng, np.float32, 3, 4, 9, 8, 5, 3, 3)
        out, cache = conv.forward(*(backend.asarray(a) for a in (x, wt, b)), 1, 1)
        dout = rng.standard_normal(out.shape).astype(np.float32)
        runs.append((cache, dout, ref.backward(dout, ref.forward(x, wt, b, 1, 1)[1])))
    for cache, dout, wants in runs + runs[:1]:
        grads = conv.backward(backend.asarray(dout), cache)
        for name, got, want in zip(("dx", "dw", "db"), grads, wants, strict=True):
            assert_matches(f"conv2d {name}", got, want, **tol)


@pytest.mark.parametrize("layout_name", ["pixels", "taps"])
@pytest.mark.parametrize("threads_n", [1, 2])
def test_uneven_chunks_match_reference(oracle, monkeypatch, layout_name, threads_n):
    # 5 examples in chunks of 2: the last chunk is shorter than the work buffers it uses,
    # and the weight gradient adds three chunks' products
    import numba

    from gpunn.kernels import conv_numba

    n, c, h, f, k = 5, 3, 9, 4, 3
    monkeypatch.setattr(conv_numba, "WHOLE_BYTES", 0)
    monkeypatch.setattr(conv_numba, "CHUNK_BYTES", 2 * (h - k + 3) ** 2 * c * k * k * 4)
    kernel = conv_numba.Conv2dNumba(layout_name)
    before = numba.get_num_threads()
    numba.set_num_threads(threads_n)
    try:
        x, wt, b = _arrays(np.random.default_rng(7), np.float32, n, c, h, h, f, k, k)
        ref = oracle.reference("conv2d")
        out_ref, cache_ref = ref.forward(x, wt, b, 1, 1)
        out, cache = kernel.forward(x, wt, b, 1, 1)
        assert conv_numba._Geometry(kernel.layout_for(x.shape, wt.shape, 1, 1, x.dtype), x,
                                    wt.shape, 1, 1, h, h).step == 2
        tol = oracle.tolerance(np.float32)
        assert_matches("conv2d forward", out, out_ref, **tol)
        dout = np.random.default_rng(8).standard_normal(out.shape).astype(np.float32)
        for name, got, want in zip(("dx", "dw", "db"), kernel.backward(dout, cache),
                                   ref.backward(dout, cache_ref), strict=True):
            assert_matches(f"conv2d {name}", got, want, **tol)
    finally:
        numba.set_num_threads(before)


def test_skipping_dx_leaves_dw_and_db(backend, oracle):
    x, wt, b = _arrays(np.random.default_rng(4), np.float32, 4, 1, 12, 12, 6, 5, 5)
    conv, ref = backend.kernel("conv2d"), oracle.reference("conv2d")
    out, cache = conv.forward(*(backend.asarray(a) for a in (x, wt, b)), 2, 2)
    out_ref, cache_ref = ref.forward(x, wt, b, 2, 2)
    dout = np.random.default_rng(5).standard_normal(out_ref.shape).astype(np.float32)
    _, dw, db = conv.backward(backend.asarray(dout), cache, need_dx=False)
    _, dw_ref, db_ref = ref.backward(dout, cache_ref, need_dx=False)
    assert_matches("conv2d dw", dw, dw_ref, **oracle.tolerance(np.float32))
    assert_matches("conv2d db", db, db_ref, **oracle.tolerance(np.float32))


@pytest.mark.parametrize("n, c, size, f, k, padding", [(10, 20, 12, 40, 5, 0),
                                                       (2, 64, 15, 64, 5, 2)])
def test_network_shapes_match_reference(backend, oracle, n, c, size, f, k, padding):
    # The benchmarked shapes (network3 conv2, AlexNet-style 64->64) at full channel counts;
    # float32 sums of up to 1,600 products of O(1) values round to ~1e-4 absolute.
    x, wt, b = _arrays(np.random.default_rng(6), np.float32, n, c, size, size, f, k, k)
    ref, conv = oracle.reference("conv2d"), backend.kernel("conv2d")
    out_ref, cache_ref = ref.forward(x, wt, b, 1, padding)
    out, cache = conv.forward(*(backend.asarray(a) for a in (x, wt, b)), 1, padding)
    tol = oracle.tolerance(np.float32)
    assert_matches("conv2d forward", out, out_ref, **tol)
    dout = np.random.default_rng(7).standard_normal(out_ref.shape).astype(np.float32)
    grads = conv.backward(backend.asarray(dout), cache)
    for name, got, want in zip(("dx", "dw", "db"), grads, ref.backward(dout, cache_ref),
                               strict=True):
        assert_matches(f"conv2d {name}", got, want, rtol=tol["rtol"], atol=1e-3)


def test_reference_matches_torch(oracle):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, wt, b = _arrays(np.random.default_rng(1), np.float64, 3, 3, 13, 11, 4, 5, 3)
    ref = oracle.reference("conv2d")
    for stride, padding in ((1, 0), (2, 1), (4, 2)):
        out, cache = ref.forward(x, wt, b, stride, padding)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, wt, b))
        tout = F.conv2d(tx, tw, tb, stride=stride, padding=padding)
        assert_matches("conv2d forward vs torch", out, tout.detach().numpy())
        g = np.random.default_rng(2).standard_normal(out.shape)
        tout.backward(torch.tensor(g))
        grads = ref.backward(g, cache)
        for name, got, t in zip(("dx", "dw", "db"), grads, (tx, tw, tb), strict=True):
            assert_matches(f"conv2d {name} vs torch", got, t.grad.numpy())


def test_numba_compiles_once_per_dtype(threads, layout):
    from gpunn.kernels import conv_numba, conv_numba_pixels, conv_numba_taps

    for shape in ((2, 1, 8, 8), (3, 2, 10, 7)):
        x = np.ones(shape, np.float32)
        out, cache = conv_numba.conv2d.forward(x, np.ones((2, shape[1], 3, 3), np.float32),
                                               np.zeros(2, np.float32), 2, 1)
        conv_numba.conv2d.backward(out, cache)
    suffix = "_par" if threads > 1 else ""
    module, names = ((conv_numba_pixels, ("im2col", "col2im", "transpose", "transpose_sum"))
                     if layout == "pixels" else
                     (conv_numba_taps, ("im2col", "col2im", "planes_out", "planes_in")))
    for name in names:
        fn = getattr(module, name + suffix)
        assert len([s for s in fn.signatures if s[0].dtype.name == "float32"]) == 1, name


BAD = [
    ((28, 28), (20, 1, 5, 5), (20,), np.float32, "expects x of shape (N, C, H, W); "
     "received x.shape=(28, 28)"),
    ((2, 1, 28, 28), (20, 5, 5), (20,), np.float32, "expects w of shape (F, C, KH, KW); "
     "received w.shape=(20, 5, 5)"),
    ((2, 3, 28, 28), (20, 1, 5, 5), (20,), np.float32, "received w.shape=(20, 1, 5, 5)"),
    ((2, 1, 28, 28), (20, 1, 5, 5), (1, 20), np.float32, "received b.shape=(1, 20)"),
    ((2, 1, 28, 28), (20, 1, 5, 5), (20,), np.int64, "received x.dtype=int64"),
    ((2, 1, 3, 3), (20, 1, 5, 5), (20,), np.float32, "larger than the padded input"),
]


@pytest.mark.parametrize("x_shape, w_shape, b_shape, dtype, message", BAD)
def test_bad_arguments_name_expected_and_received(backend, impl, x_shape, w_shape, b_shape,
                                                   dtype, message):
    x, wt, b = (backend.xp.zeros(s, dtype=dtype) for s in (x_shape, w_shape, b_shape))
    with pytest.raises(ConfigError, match=re.escape(message)):
        impl("conv2d").forward(x, wt, b)


def test_bad_stride_padding_dtypes_and_dout(backend, impl):
    xp, conv = backend.xp, impl("conv2d")
    x, wt, b = xp.zeros((1, 1, 6, 6)), xp.zeros((2, 1, 3, 3)), xp.zeros(2)
    with pytest.raises(ConfigError, match="stride to be an integer >= 1; received 0"):
        conv.forward(x, wt, b, stride=0)
    with pytest.raises(ConfigError, match="padding to be an integer >= 0; received -1"):
        conv.forward(x, wt, b, padding=-1)
    with pytest.raises(ConfigError, match="one dtype for all its arrays"):
        conv.forward(x.astype(xp.float32), wt, b)
    out, cache = conv.forward(x, wt, b)
    with pytest.raises(ConfigError, match=r"dout of shape \(N, F, OH, OW\)=\(1, 2, 4, 4\)"):
        conv.backward(xp.zeros((1, 2, 4, 3)), cache)
