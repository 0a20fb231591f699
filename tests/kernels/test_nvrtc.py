"""The CUDA sources compile under NVRTC for sm_80 and sm_90, without a GPU or CuPy."""

from __future__ import annotations

import numpy as np
import pytest

from gpunn.kernels import cuda_sources, nvrtc


@pytest.fixture(scope="module")
def nvrtc_library():
    try:
        return nvrtc.library()
    except nvrtc.NvrtcError as exc:
        pytest.skip(f"NVRTC not installed ({exc}); pip install gpunn[dev] installs it")


@pytest.mark.parametrize("name", sorted(cuda_sources.SOURCES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("arch", ["compute_80", "compute_90", "sm_80", "sm_90"])
def test_source_compiles(nvrtc_library, name, dtype, arch):
    code = nvrtc.compile(cuda_sources.source(name, dtype), arch, name=f"{name}.cu")
    kernels = {
        "conv": ("im2col", "col2im"),
        "pool": ("max_pool_forward", "max_pool_backward"),
        "softmax_xent": ("softmax_xent_forward", "softmax_xent_backward"),
        "dense_sgd": ("dense_sgd_layer", "dense_sgd"),
    }[name]
    for kernel in kernels:  # extern "C": the names CuPy's get_function looks up
        assert kernel.encode() in code, f"{kernel} missing from the {arch} output of {name}"


def test_compiles_with_cupys_exact_options_flush_to_zero_included(nvrtc_library):
    # CuPy adds -ftz=true to every kernel: a clamp at a denormal becomes max.ftz and vanishes
    assert nvrtc.CUPY_COMPILE == ("-std=c++17", "-ftz=true")
    clamp = ('extern "C" __global__ void clamp(const float* p, float* out) '
             '{ out[0] = log(fmaxf(p[0], 1e-45f)); }')
    assert b"max.ftz.f32" in nvrtc.compile(clamp, "compute_90")
    assert b"max.ftz.f32" not in nvrtc.compile(clamp, "compute_90", options=nvrtc.CUPY_OPTIONS)


def test_backend_probe_kernel_compiles(nvrtc_library):
    assert b"gpunn_probe" in nvrtc.compile(cuda_sources.PROBE, "compute_80")


def test_failure_reports_the_log(nvrtc_library):
    broken = 'extern "C" __global__ void f(float* x) { x[0] = INFINITY; }'
    with pytest.raises(nvrtc.NvrtcError, match=r'(?s)compute_90.*identifier "INFINITY"'):
        nvrtc.compile(broken, "compute_90")


def test_version(nvrtc_library):
    assert nvrtc.version() >= (12, 0)
