"""The CuPy kernels, CUDA sources and Python glue alike, run on the CPU against the NumPy
references (see cuda_on_cpu.py): GPU code exercised without a GPU, in the default run."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from gpunn.testing import assert_matches

_spec = importlib.util.spec_from_file_location(
    "cuda_on_cpu", Path(__file__).with_name("cuda_on_cpu.py"))
cuda_on_cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cuda_on_cpu)

pytestmark = pytest.mark.skipif(cuda_on_cpu.compiler() is None,
                                reason="needs a host C++ compiler (g++) for the CUDA sources")


@pytest.fixture
def gpu_modules(monkeypatch):
    """The ``*_cupy`` kernel modules, imported against the CPU stand-in for CuPy."""
    cuda_on_cpu.install(monkeypatch)
    return {name: importlib.import_module(f"gpunn.kernels.{name}_cupy")
            for name in ("conv", "pool", "softmax_xent")}


def _reference(op):
    from gpunn.kernels import registry

    return registry.lookup(op, "numpy")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,f,k,stride,pad", [
    ((2, 3, 7, 6), 4, 3, 1, 0),
    ((1, 2, 9, 9), 3, 5, 2, 2),
    ((2, 1, 8, 8), 2, 3, 3, 1),
])
def test_conv2d_cuda_matches_reference(gpu_modules, dtype, shape, f, k, stride, pad):
    r = np.random.default_rng(0)
    x = r.standard_normal(shape).astype(dtype)
    w = r.standard_normal((f, shape[1], k, k)).astype(dtype)
    b = r.standard_normal(f).astype(dtype)
    gpu, ref = gpu_modules["conv"].conv2d, _reference("conv2d")
    out, cache = gpu.forward(x, w, b, stride, pad)
    ref_out, ref_cache = ref.forward(x, w, b, stride, pad)
    assert_matches("conv2d forward (CUDA on CPU)", out, ref_out)
    dout = r.standard_normal(out.shape).astype(dtype)
    for name, got, want in zip(("dx", "dw", "db"), gpu.backward(dout, cache),
                               ref.backward(dout, ref_cache), strict=True):
        assert_matches(f"conv2d {name} (CUDA on CPU)", got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,kernel,stride", [((2, 3, 8, 8), 2, None),
                                                 ((1, 2, 9, 9), 3, 2),
                                                 ((2, 1, 7, 10), 3, 1)])
def test_max_pool2d_cuda_matches_reference(gpu_modules, dtype, shape, kernel, stride):
    r = np.random.default_rng(1)
    x = r.standard_normal(shape).astype(dtype)
    gpu, ref = gpu_modules["pool"].max_pool2d, _reference("max_pool2d")
    out, cache = gpu.forward(x, kernel, stride)
    ref_out, ref_cache = ref.forward(x, kernel, stride)
    assert_matches("max_pool2d forward (CUDA on CPU)", out, ref_out)
    dout = r.standard_normal(out.shape).astype(dtype)
    assert_matches("max_pool2d dx (CUDA on CPU)", gpu.backward(dout, cache),
                   ref.backward(dout, ref_cache))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,k", [(3, 10), (2, 300), (4, 1)])
def test_softmax_cross_entropy_cuda_matches_reference(gpu_modules, dtype, n, k):
    r = np.random.default_rng(2)
    logits = (r.standard_normal((n, k)) * 30).astype(dtype)
    logits[0, 0] = 1e4  # stays finite: the max is subtracted first
    labels = r.integers(0, k, n)
    gpu, ref = gpu_modules["softmax_xent"].softmax_cross_entropy, _reference(
        "softmax_cross_entropy")
    loss, probs = gpu.forward(logits, labels)
    ref_loss, ref_probs = ref.forward(logits, labels)
    assert np.isfinite(loss) and abs(loss - ref_loss) <= 1e-4 * max(1.0, abs(ref_loss))
    assert_matches("softmax probs (CUDA on CPU)", probs, ref_probs)
    assert_matches("softmax dlogits (CUDA on CPU)", gpu.backward(probs, labels, 2.0),
                   ref.backward(ref_probs, labels, 2.0))


def test_softmax_cross_entropy_cuda_reports_a_bad_label(gpu_modules):
    from gpunn.errors import ConfigError

    gpu = gpu_modules["softmax_xent"].softmax_cross_entropy
    with pytest.raises(ConfigError):
        gpu.forward(np.zeros((2, 3), np.float32), np.array([0, 3]))


CLAMP = """typedef float real;
extern "C" __global__ void clamp_log(const real* p, real* out, real floor, int n)
{
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = log(max(p[i], floor));
}
"""


@pytest.mark.parametrize("floor,finite", [(1e-45, False), (np.finfo(np.float32).tiny, True)])
def test_harness_flushes_denormals_as_cupy_compiles(floor, finite):
    # A clamp at a denormal vanishes under -ftz=true (max.ftz.f32): log(0) = -inf on the GPU,
    # so it must here too; a clamp at finfo.tiny, the smallest normal, holds.
    p = np.array([0.0, 1e-42, 0.5], np.float32)  # 1e-42 is denormal in float32
    for flush, want_finite in ((True, finite), (False, True)):
        out = np.empty_like(p)
        cuda_on_cpu.RawModule(CLAMP, flush_denormals=flush).get_function("clamp_log")(
            (1,), (4,), (p, out, floor, len(p)))
        assert np.isfinite(out).all() == want_finite, (
            f"flush_denormals={flush}, floor={floor}: log(max(p, floor)) = {out}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_cuda_with_underflowing_probabilities(gpu_modules, dtype):
    # exp(-95) and exp(-720) are denormal in float32 and float64: flushed to 0 on the GPU; the
    # loss comes from log-sum-exp, so it stays finite and right for the label they belong to
    spread = 95.0 if dtype == np.float32 else 720.0
    logits = np.array([[0.0, -spread, 1.0], [-spread, 0.0, 0.0]], dtype)
    labels = np.array([1, 0])
    gpu = gpu_modules["softmax_xent"].softmax_cross_entropy
    loss, probs = gpu.forward(logits, labels)
    ref_loss, ref_probs = _reference("softmax_cross_entropy").forward(logits, labels)
    assert np.isfinite(float(loss)) and abs(float(loss) - ref_loss) <= 1e-4 * abs(ref_loss)
    assert np.isfinite(probs).all()
    if dtype == np.float32:  # -ftz flushes float only; the harness flushes doubles too
        assert probs[0, 1] == 0 and probs[1, 0] == 0
    assert_matches("softmax probs (CUDA on CPU, flushed)", probs, ref_probs)


@pytest.fixture
def strict_gpu(monkeypatch):
    """The stand-in with device arrays that count host reads and refuse host arrays where
    CuPy does; returns ``(cupy, softmax_xent_cupy)``."""
    cuda_on_cpu.install(monkeypatch, strict=True)
    import cupy

    return cupy, importlib.import_module("gpunn.kernels.softmax_xent_cupy")


def test_softmax_cross_entropy_cuda_step_never_waits_and_takes_host_labels(strict_gpu):
    from gpunn.errors import ConfigError
    from gpunn.kernels import checks

    cupy, module = strict_gpu
    xent = module.softmax_cross_entropy
    r = np.random.default_rng(3)
    host_logits, labels = r.standard_normal((5, 4)).astype(np.float32), r.integers(0, 4, 5)
    logits, flag = cupy.asarray(host_logits), checks.label_flag(cupy)
    before = cuda_on_cpu.DeviceArray.syncs
    loss, probs = xent.forward(logits, labels, flag)  # host labels, as the stand-in took them
    dlogits = xent.backward(probs, labels)
    total = loss * 5 + loss  # what a step does with it: arithmetic on the device
    assert cuda_on_cpu.DeviceArray.syncs == before, "forward/backward waited for the GPU"
    assert isinstance(total, cuda_on_cpu.DeviceArray) and total.shape == ()
    ref_loss, ref_probs = _reference("softmax_cross_entropy").forward(host_logits, labels)
    assert abs(float(loss) - ref_loss) <= 1e-5 * ref_loss
    assert_matches("dlogits (host labels)", dlogits.get(),
                   _reference("softmax_cross_entropy").backward(ref_probs, labels))
    # a bad label is recorded, not raised, until the caller reads the flag once
    before = cuda_on_cpu.DeviceArray.syncs
    xent.forward(logits, np.array([0, 1, 7, 2, 3]), flag)
    xent.forward(logits, labels, flag)  # a good batch after it keeps the bad label
    assert cuda_on_cpu.DeviceArray.syncs == before
    with pytest.raises(ConfigError, match=r"labels in \[0, K\)=\[0, 4\); received label 7"):
        checks.raise_for_label_flag(cupy.asnumpy(flag), 4)
    with pytest.raises(ConfigError, match="received label -1"):  # no flag: it waits, raises
        xent.forward(logits, np.array([0, 1, -1, 2, 3]))


def test_a_kernel_function_is_looked_up_once_per_source_dtype_and_kernel(gpu_modules,
                                                                         monkeypatch):
    from gpunn.kernels import cupy_module

    looked_up = []
    real = cuda_on_cpu.RawModule.get_function
    monkeypatch.setattr(cuda_on_cpu.RawModule, "get_function",
                        lambda self, name: looked_up.append(name) or real(self, name))
    first = cupy_module.function("pool", np.float32, "max_pool_forward")
    for _ in range(3):
        assert cupy_module.function("pool", np.float32, "max_pool_forward") is first
    cupy_module.function("pool", np.float64, "max_pool_forward")
    assert looked_up == ["max_pool_forward", "max_pool_forward"]


def test_conv2d_cuda_backward_takes_a_float64_dout_for_a_float32_forward(gpu_modules):
    r = np.random.default_rng(5)
    x = r.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = np.zeros(4, np.float32)
    gpu, ref = gpu_modules["conv"].conv2d, _reference("conv2d")
    out, cache = gpu.forward(x, w, b, 1, 1)
    _, ref_cache = ref.forward(x, w, b, 1, 1)
    dout = r.standard_normal(out.shape)  # float64, as a float64 cost would hand back
    dx, dw, _ = gpu.backward(dout, cache)
    ref_dx, ref_dw, _ = ref.backward(dout.astype(np.float32), ref_cache)
    assert dx.dtype == np.float32 and dw.dtype == np.float32
    assert_matches("conv2d dx from a float64 dout (CUDA on CPU)", dx, ref_dx)
    assert_matches("conv2d dw from a float64 dout (CUDA on CPU)", dw, ref_dw)
