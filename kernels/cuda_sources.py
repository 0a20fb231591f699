"""CUDA C sources of the GPU kernels, as strings: compiled by CuPy (NVRTC) on first use.

They live apart from the ``*_cupy`` modules so that tests can compile them with NVRTC
(:mod:`gpunn.kernels.nvrtc`) on a machine without a GPU or CuPy. Each source is written over
a scalar type ``real``; :func:`source` prepends ``typedef float real;`` or ``double``.

NVRTC is stricter than nvcc: no standard headers, no ``INFINITY`` macro. Hence maxima start
from the row's or window's first element, never from minus infinity. Index arithmetic is
64-bit (``long long``) with grid-stride loops, so any grid size covers any array.
Shape letters as in :mod:`gpunn.kernels.checks`.
"""

from __future__ import annotations

import numpy as np

_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

# Block size of the softmax kernel (one block per row); a power of two.
SOFTMAX_THREADS = 128

CONV = r"""
// cols (C*KH*KW, N*OH*OW) from x (N, C, H, W), zero outside the input (padding).
extern "C" __global__ void im2col(
    const real* x, real* cols, int N, int C, int H, int W, int KH, int KW,
    int stride, int pad, int OH, int OW)
{
    const long long ncols = (long long)N * OH * OW;
    const long long total = (long long)C * KH * KW * ncols;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long r = t / ncols, col = t % ncols;
        const int n = (int)(col / (OH * OW)), p = (int)(col % (OH * OW));
        const int y = p / OW, xo = p % OW;
        const int c = (int)(r / (KH * KW)), i = (int)(r / KW % KH), j = (int)(r % KW);
        const int h = y * stride + i - pad, w = xo * stride + j - pad;
        cols[t] = (h >= 0 && h < H && w >= 0 && w < W)
            ? x[(((long long)n * C + c) * H + h) * W + w] : (real)0;
    }
}

// dx (N, C, H, W) from dcols (C*KH*KW, N*OH*OW): each input pixel gathers the columns that
// read it, so no atomics are needed and the sum is deterministic.
extern "C" __global__ void col2im(
    const real* dcols, real* dx, int N, int C, int H, int W, int KH, int KW,
    int stride, int pad, int OH, int OW)
{
    const long long ncols = (long long)N * OH * OW;
    const long long total = (long long)N * C * H * W;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int w = (int)(t % W), h = (int)(t / W % H);
        const int c = (int)(t / ((long long)H * W) % C), n = (int)(t / ((long long)C * H * W));
        real acc = 0;
        for (int i = 0; i < KH; ++i) {
            const int hy = h + pad - i;
            if (hy < 0 || hy % stride != 0 || hy / stride >= OH) continue;
            for (int j = 0; j < KW; ++j) {
                const int wx = w + pad - j;
                if (wx < 0 || wx % stride != 0 || wx / stride >= OW) continue;
                const long long r = ((long long)c * KH + i) * KW + j;
                acc += dcols[r * ncols + ((long long)n * OH + hy / stride) * OW + wx / stride];
            }
        }
        dx[t] = acc;
    }
}
"""

POOL = r"""
// out, argmax (N, C, OH, OW) from x (N, C, H, W); argmax is the flat index h*W + w in the
// plane of the window's first maximum (row-major), as in the NumPy reference.
extern "C" __global__ void max_pool_forward(
    const real* x, real* out, int* argmax, int N, int C, int H, int W,
    int kernel, int stride, int OH, int OW)
{
    const long long total = (long long)N * C * OH * OW;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int xo = (int)(t % OW), y = (int)(t / OW % OH);
        const long long plane = t / ((long long)OH * OW);
        const real* src = x + plane * H * W;
        const int y0 = y * stride, x0 = xo * stride;
        int at = y0 * W + x0;
        real best = src[at];
        for (int i = 0; i < kernel; ++i) {
            for (int j = 0; j < kernel; ++j) {
                const int k = (y0 + i) * W + x0 + j;
                if (src[k] > best) { best = src[k]; at = k; }
            }
        }
        out[t] = best;
        argmax[t] = at;
    }
}

// dx (N, C, H, W): each input pixel gathers dout of the windows whose argmax it is.
extern "C" __global__ void max_pool_backward(
    const real* dout, const int* argmax, real* dx, int N, int C, int H, int W,
    int kernel, int stride, int OH, int OW)
{
    const long long total = (long long)N * C * H * W;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const int w = (int)(t % W), h = (int)(t / W % H);
        const long long plane = t / ((long long)H * W);
        const int here = h * W + w;
        // Windows y with y*stride <= h < y*stride + kernel.
        const int y_lo = h >= kernel ? (h - kernel) / stride + 1 : 0;
        const int y_hi = min(h / stride, OH - 1);
        const int x_lo = w >= kernel ? (w - kernel) / stride + 1 : 0;
        const int x_hi = min(w / stride, OW - 1);
        real acc = 0;
        for (int y = y_lo; y <= y_hi; ++y) {
            for (int xo = x_lo; xo <= x_hi; ++xo) {
                const long long o = (plane * OH + y) * OW + xo;
                if (argmax[o] == here) acc += dout[o];
            }
        }
        dx[t] = acc;
    }
}
"""

SOFTMAX_XENT = r"""
#define THREADS @THREADS@

// One block per row of logits (N, K): probs (N, K) and the row's loss
// log(sum exp(z - max)) + max - z[label]. bad[0] is set to row+1 for a label outside [0, K).
extern "C" __global__ void softmax_xent_forward(
    const real* logits, const long long* labels, real* probs, double* row_loss, int* bad,
    int N, int K)
{
    __shared__ double partial[THREADS];
    const int n = blockIdx.x, tid = threadIdx.x;
    if (n >= N) return;
    const real* z = logits + (long long)n * K;
    real* p = probs + (long long)n * K;

    real m = z[0];
    for (int k = tid; k < K; k += THREADS) m = z[k] > m ? z[k] : m;
    partial[tid] = m;
    __syncthreads();
    for (int half = THREADS / 2; half > 0; half /= 2) {
        if (tid < half && partial[tid + half] > partial[tid]) partial[tid] = partial[tid + half];
        __syncthreads();
    }
    m = (real)partial[0];
    __syncthreads();

    double s = 0;
    for (int k = tid; k < K; k += THREADS) {
        const real e = exp(z[k] - m);
        p[k] = e;
        s += e;
    }
    partial[tid] = s;
    __syncthreads();
    for (int half = THREADS / 2; half > 0; half /= 2) {
        if (tid < half) partial[tid] += partial[tid + half];
        __syncthreads();
    }
    s = partial[0];
    const real inv = (real)(1.0 / s);
    for (int k = tid; k < K; k += THREADS) p[k] *= inv;

    if (tid == 0) {
        const long long label = labels[n];
        if (label < 0 || label >= K) {
            bad[0] = n + 1;
            row_loss[n] = 0;
        } else {
            row_loss[n] = log(s) + (double)m - (double)z[label];
        }
    }
}

// dlogits = factor * (probs - onehot(labels)), factor = scale / N.
extern "C" __global__ void softmax_xent_backward(
    const real* probs, const long long* labels, real* dlogits, real factor, int N, int K)
{
    const long long total = (long long)N * K;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        const long long n = t / K, k = t % K;
        dlogits[t] = factor * (probs[t] - (labels[n] == k ? (real)1 : (real)0));
    }
}
""".replace("@THREADS@", str(SOFTMAX_THREADS))

SOURCES = {"conv": CONV, "pool": POOL, "softmax_xent": SOFTMAX_XENT}


def source(name: str, dtype) -> str:
    """The CUDA source ``name`` ("conv", "pool", "softmax_xent") for ``dtype``."""
    return f"typedef {_CTYPES[np.dtype(dtype)]} real;\n" + SOURCES[name]
