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
