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
# Parts of a forward sum of dense_sgd, one thread each: a warp's worth.
DENSE_SPLIT = 32

# The smallest kernel: gpunn.backend compiles it before choosing CuPy, since compiling needs
# NVRTC and, on CuPy 14, the CUDA headers, which a driver-only machine may lack.
PROBE = 'extern "C" __global__ void gpunn_probe(float* x) { x[threadIdx.x] += 1.0f; }'

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
// log(sum exp(z - max)) + max - z[label] (log space: no probability is clamped, so nothing
// depends on denormals, which -ftz flushes). A label outside [0, K) sets the flag
// bad = {1, label} (checks.label_flag), read by the host once per chunk.
extern "C" __global__ void softmax_xent_forward(
    const real* logits, const long long* labels, real* probs, double* row_loss,
    long long* bad, int N, int K)
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
            bad[1] = label;  // rows race: some bad label is kept, and the flag set after it
            bad[0] = 1;
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

DENSE_SGD = r"""
// Activation codes (as in dense_numba) and cost codes.
#define SIGMOID 0
#define TANH 1
#define RELU 2
#define LINEAR 3
#define SOFTMAX 4
#define QUADRATIC 0
// A forward sum is split into at most SPLIT parts, one thread each (a warp per sum).
#define SPLIT @SPLIT@

__device__ real activate(int code, real z)
{
    if (code == SIGMOID) return (real)1 / ((real)1 + exp(-z));  // e^-z = inf gives 0, not NaN
    if (code == TANH) return tanh(z);
    if (code == RELU) return z > 0 ? z : (real)0;
    return z;
}

// σ'(z) from a = σ(z); for relu z > 0 exactly when a > 0.
__device__ real prime(int code, real a)
{
    if (code == SIGMOID) return a * ((real)1 - a);
    if (code == TANH) return (real)1 - a * a;
    if (code == RELU) return a > 0 ? (real)1 : (real)0;
    return (real)1;
}

// One step of parameter p along grad; with momentum through its velocity v.
__device__ void sgd_step(real* p, real* v, real grad, real eta, real momentum)
{
    if (momentum != 0) {
        *v = momentum * *v - eta * grad;
        *p += *v;
    } else {
        *p -= eta * grad;
    }
}

// Where layer l's rows start in acts and deltas: mini_batch_size rows of each layer's
// outputs, layer after layer.
__device__ long long layer_offset(const int* sizes, int l, int mini_batch_size)
{
    long long offset = 0;
    for (int k = 1; k <= l; ++k) offset += (long long)mini_batch_size * sizes[k];
    return offset;
}

// Records layer l's arrays in the table dense_sgd reads: w, b, vw, vb at 4l .. 4l + 3.
extern "C" __global__ void dense_sgd_layer(
    real** table, int l, real* w, real* b, real* vw, real* vb)
{
    table[4 * l] = w;
    table[4 * l + 1] = b;
    table[4 * l + 2] = vw;
    table[4 * l + 3] = vb;
}

// Every mini-batch of X (c, sizes[0]) / Y (c, sizes[depth]), in order, in ONE block: its
// threads share each phase and meet at __syncthreads() between phases. Layer l maps
// sizes[l] inputs to sizes[l + 1] outputs with activation codes[l]; its arrays are in table.
// Scratch: acts and deltas (see layer_offset), parts (mini_batch_size * n_out * SPLIT for
// the widest layer).
extern "C" __global__ void dense_sgd(
    const real* X, const real* Y, real** table, const int* sizes, const int* codes,
    int depth, int cost, int c, int mini_batch_size, real* acts, real* deltas, real* parts,
    real eta, real lmbda_n, real l1_n, real momentum)
{
    const int tid = threadIdx.x, threads = blockDim.x;
    for (int k0 = 0; k0 < c; k0 += mini_batch_size) {
        const int m = min(mini_batch_size, c - k0);
        const real* x = X + (long long)k0 * sizes[0];

        // Forward: a_l = σ(a_{l-1} W_lᵀ + b_l). Each output o = (example i, neuron j) is a sum
        // of n_in products, split into `split` parts (k = s, s + split, ...), one thread each:
        // neighbouring threads read neighbouring k of one row of a and one row of W (whole
        // cache lines), and there are split times more threads at work. Then one thread per
        // output adds its parts.
        for (int l = 0; l < depth; ++l) {
            const int n_in = sizes[l], n_out = sizes[l + 1], code = codes[l];
            const int outputs = m * n_out, split = min(SPLIT, n_in);
            const real* in = l ? acts + layer_offset(sizes, l - 1, mini_batch_size) : x;
            real* out = acts + layer_offset(sizes, l, mini_batch_size);
            const real* w = table[4 * l];
            const real* b = table[4 * l + 1];
            for (int t = tid; t < outputs * split; t += threads) {
                const int s = t % split, o = t / split, i = o / n_out, j = o % n_out;
                real sum = 0;
                for (int k = s; k < n_in; k += split) sum += in[i * n_in + k] * w[j * n_in + k];
                parts[s * outputs + o] = sum;
            }
            __syncthreads();
            for (int o = tid; o < outputs; o += threads) {
                real z = b[o % n_out];
                for (int s = 0; s < split; ++s) z += parts[s * outputs + o];
                out[o] = code == SOFTMAX ? z : activate(code, z);
            }
            __syncthreads();
        }
        const int L = depth - 1, n_L = sizes[depth], output = codes[L];
        real* a_L = acts + layer_offset(sizes, L, mini_batch_size);
        if (output == SOFTMAX) {  // one thread per example; the row's maximum keeps exp finite
            for (int i = tid; i < m; i += threads) {
                real* row = a_L + i * n_L;
                real top = row[0], total = 0;
                for (int j = 1; j < n_L; ++j) top = max(top, row[j]);
                for (int j = 0; j < n_L; ++j) {
                    row[j] = exp(row[j] - top);
                    total += row[j];
                }
                for (int j = 0; j < n_L; ++j) row[j] /= total;
            }
            __syncthreads();
        }

        // δ^L = a − y, times σ'(z) for the quadratic cost (BP1; σ'(z) cancels for
        // cross-entropy and log-likelihood).
        real* d_L = deltas + layer_offset(sizes, L, mini_batch_size);
        for (int t = tid; t < m * n_L; t += threads) {
            const real e = a_L[t] - Y[(long long)k0 * n_L + t];
            d_L[t] = cost == QUADRATIC ? e * prime(output, a_L[t]) : e;
        }
        __syncthreads();

        // BP2, top down, with every W before its update:
        // δ_{l-1} = (δ_l W_l) ⊙ σ'(a_{l-1}), one thread per (example i, input k).
        for (int l = L; l > 0; --l) {
            const int n_in = sizes[l], n_out = sizes[l + 1], code = codes[l - 1];
            const real* d = deltas + layer_offset(sizes, l, mini_batch_size);
            const real* a = acts + layer_offset(sizes, l - 1, mini_batch_size);
            real* below = deltas + layer_offset(sizes, l - 1, mini_batch_size);
            const real* w = table[4 * l];
            for (int t = tid; t < m * n_in; t += threads) {
                const int i = t / n_in, k = t % n_in;
                real s = 0;
                for (int j = 0; j < n_out; ++j) s += d[i * n_out + j] * w[j * n_in + k];
                below[t] = s * prime(code, a[t]);
            }
            __syncthreads();
        }

        // Update, every layer in one phase (each thread owns its weights and biases):
        //   w ← w − η((λ/n) w + (λ₁/n) sgn w + (1/m) Σ_i δ_i a_iᵀ),  b ← b − η (1/m) Σ_i δ_i
        // with momentum μ the step goes through v: v ← μ v − η(...), w ← w + v.
        for (int l = 0; l < depth; ++l) {
            const int n_in = sizes[l], n_out = sizes[l + 1];
            const real* in = l ? acts + layer_offset(sizes, l - 1, mini_batch_size) : x;
            const real* d = deltas + layer_offset(sizes, l, mini_batch_size);
            real* w = table[4 * l];
            real* b = table[4 * l + 1];
            real* vw = table[4 * l + 2];
            real* vb = table[4 * l + 3];
            for (int t = tid; t < n_out * n_in; t += threads) {  // w_jk, neighbours along k
                const int j = t / n_in, k = t % n_in;
                real g = 0;  // Σ_i δ_ij a_ik
                for (int i = 0; i < m; ++i) g += d[i * n_out + j] * in[i * n_in + k];
                const real sgn = (real)(w[t] > 0) - (real)(w[t] < 0);
                sgd_step(w + t, vw + t, lmbda_n * w[t] + l1_n * sgn + g / m, eta, momentum);
            }
            for (int j = tid; j < n_out; j += threads) {  // b_j
                real g = 0;  // Σ_i δ_ij
                for (int i = 0; i < m; ++i) g += d[i * n_out + j];
                sgd_step(b + j, vb + j, g / m, eta, momentum);
            }
        }
        __syncthreads();
    }
}
""".replace("@SPLIT@", str(DENSE_SPLIT))

SOURCES = {"conv": CONV, "pool": POOL, "softmax_xent": SOFTMAX_XENT,
           "dense_sgd": DENSE_SGD}


def source(name: str, dtype) -> str:
    """The CUDA source ``name`` (a key of ``SOURCES``) for ``dtype``."""
    return f"typedef {_CTYPES[np.dtype(dtype)]} real;\n" + SOURCES[name]
