"""dense_sgd on the GPU: a whole chunk of SGD steps of a fully connected network, one launch.

Layer by layer, a mini-batch of 10 through a 784-30-10 network costs ~33 kernel launches on
CuPy, each doing microseconds of work: the step is launch-bound. Here one launch of the CUDA
kernel ``dense_sgd`` (source ``cuda_sources.DENSE_SGD``) runs every mini-batch of a chunk
(~1,000 examples), in order, as the book's step::

    forward:   a_l = σ(a_{l-1} W_lᵀ + b_l)                  up to 32 threads per sum
    BP1:       δ^L = a^L − y  (times σ'(z^L) for the quadratic cost)
    BP2:       δ_{l-1} = (δ_l W_l) ⊙ σ'(a_{l-1})            with W before its update
    update:    w ← w − η((λ/n) w + (λ₁/n) sgn w + (1/m) Σ δ aᵀ),  b ← b − (η/m) Σ δ
    momentum:  v ← μ v − η(...),  w ← w + v                  (the same term through v)

exactly :mod:`gpunn.kernels.dense`'s math, which is its oracle (same interface).

Layout: ONE block of up to 1,024 threads does all of it, meeting at ``__syncthreads()``
between phases (3 per layer and mini-batch, and one more for a softmax output). For the
small nets this is for a phase is a few hundred to a few tens of thousands of independent
sums (784-30-10: 300 forward sums of 784 products, 23,860 weight and bias updates of 10
products), a few rounds of one block, and a barrier costs far less than the launch each
phase would take otherwise. A forward sum is split into ``DENSE_SPLIT`` (32) interleaved
parts, one thread each, so that neighbouring threads read neighbouring elements of a row of
``a`` and of ``W``; a second pass adds the parts. The updates run one thread per weight,
neighbours on neighbouring weights. Activations, deltas and parts live in global scratch
(allocated once per mini-batch size), served by the SM's L1 and L2 caches: no shared memory,
so any width fits. The layer arrays reach the kernel through a device table of pointers,
written once per ``prepare`` by the one-thread kernel ``dense_sgd_layer``. ``run`` launches
the kernel and never waits for the GPU.

Leaves out, because it would not pay or not fit this layout: stacks of more than
:data:`MAX_WEIGHTS` weights (one block runs on one SM; wider nets are left to cuBLAS layer
by layer), dropout, and step or softmax hidden layers (the training loop keeps those on its
layer-by-layer step). float32 and float64; the block is 1,024 threads or as many as the
compiled kernel's registers allow (CuPy's ``max_threads_per_block``). No GPU has timed it
yet: ``benchmarks/gpu_check.sh`` does, beside the CPU's fused step.
"""

from __future__ import annotations

import cupy
import numpy as np

from gpunn.errors import ConfigError
from gpunn.kernels.cuda_sources import DENSE_SPLIT
from gpunn.kernels.cupy_module import function
from gpunn.kernels.dense import check_stack

# The codes of the CUDA source's #defines (those of dense_numba too).
_CODES = {"sigmoid": 0, "tanh": 1, "relu": 2, "linear": 3, "softmax": 4}
_COSTS = {"quadratic": 0, "cross-entropy": 1, "log-likelihood": 2}

#: Threads of the one block, or fewer where the compiled kernel's registers allow fewer
#: (``max_threads_per_block``; ptxas gives the float64 kernel 64-72 registers a thread).
THREADS = 1024
#: The dtypes it trains.
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: The most weights it takes: the book's 784-100-10 (79,400) fits, 784-1000-10 does not. One
#: block runs on one SM; beyond this each phase is many rounds of its threads, and the
#: layer-by-layer step (cuBLAS on every SM) is the safer choice until a GPU has measured both.
MAX_WEIGHTS = 100_000


class _State:
    """What :meth:`DenseSGDCupy.run` needs, built once per training run."""

    def __init__(self, weights, biases, activations, cost, vel_w, vel_b):
        self.dtype = weights[0].dtype
        self.sizes = [weights[0].shape[1]] + [w.shape[0] for w in weights]
        self.depth = len(weights)
        self.cost = _COSTS[cost]
        # the table points at these arrays: keep them alive (they are updated in place)
        self.arrays = (tuple(weights), tuple(biases), vel_w, vel_b)
        self.momentum_ready = vel_w is not None
        self.device_sizes = cupy.asarray(np.array(self.sizes, dtype=np.int32))
        self.device_codes = cupy.asarray(np.array([_CODES[a] for a in activations], np.int32))
        self.table = cupy.zeros(4 * self.depth, dtype=cupy.int64)
        record = function("dense_sgd", self.dtype, "dense_sgd_layer")
        for l, (w, b) in enumerate(zip(weights, biases)):
            vw, vb = (w, b) if vel_w is None else (vel_w[l], vel_b[l])  # never read then
            record((1,), (1,), (self.table, np.int32(l), w, b, vw, vb))
        self.capacity = 0
        self.acts = self.deltas = self.parts = None

    def scratch(self, mini_batch_size):
        """acts and deltas (every layer's rows) and the parts of the forward sums."""
        if mini_batch_size > self.capacity:
            rows = mini_batch_size * sum(self.sizes[1:])
            parts = mini_batch_size * max(n_out * min(DENSE_SPLIT, n_in)
                                          for n_in, n_out in zip(self.sizes, self.sizes[1:]))
            self.capacity = mini_batch_size
            self.acts = cupy.empty(rows, dtype=self.dtype)
            self.deltas = cupy.empty(rows, dtype=self.dtype)
            self.parts = cupy.empty(parts, dtype=self.dtype)
        return self.acts, self.deltas, self.parts


class DenseSGDCupy:
    """Whole-chunk SGD for small fully connected stacks on CuPy, one launch per chunk."""

    backend = "cupy"

    def __init__(self, threads=None):
        """``threads``: the block size (default :data:`THREADS`, or what the kernel allows)."""
        self.threads = threads

    def supports(self, weights, biases, activations, cost) -> bool:
        """True when this kernel can train the stack; otherwise use the layer-by-layer step."""
        try:
            check_stack(weights, biases, activations, cost)
        except ConfigError:
            return False
        dtype = weights[0].dtype
        return dtype in DTYPES and sum(w.size for w in weights) <= MAX_WEIGHTS and all(
            isinstance(p, cupy.ndarray) and p.dtype == dtype and p.flags.c_contiguous
            for p in (*weights, *biases))

    def prepare(self, weights, biases, activations, cost, vel_w=None, vel_b=None) -> _State:
        """The state :meth:`run` updates in place: these very arrays (and velocities)."""
        check_stack(weights, biases, activations, cost)
        arrays = [*weights, *biases, *(vel_w or ()), *(vel_b or ())]
        if not self.supports(weights, biases, activations, cost) or not all(
                isinstance(p, cupy.ndarray) and p.dtype == weights[0].dtype
                and p.flags.c_contiguous for p in arrays):
            raise ConfigError(
                "dense_sgd (cupy) trains C-contiguous CuPy arrays of one dtype, float32 or "
                f"float64; received {sorted({f'{type(p).__name__} {p.dtype}' for p in arrays})}"
                "; check supports(...) first and use the layer-by-layer step otherwise")
        return _State(weights, biases, activations, cost, vel_w, vel_b)

    def run(self, state, Xc, Yc, mini_batch_size, eta, lmbda, l1, n, momentum) -> None:
        """SGD over ``Xc (c, n_in)`` / one-hot ``Yc (c, n_out)`` in mini-batches, in order."""
        c = Xc.shape[0]
        if (Xc.shape != (c, state.sizes[0]) or Yc.shape != (c, state.sizes[-1])
                or mini_batch_size < 1):  # the kernel would read past the arrays: refuse
            raise ConfigError(
                f"dense_sgd expects Xc of shape (c, {state.sizes[0]}), Yc of shape "
                f"(c, {state.sizes[-1]}) and mini_batch_size >= 1; received "
                f"Xc.shape={Xc.shape}, Yc.shape={Yc.shape}, mini_batch_size={mini_batch_size}")
        if momentum and not state.momentum_ready:
            raise ConfigError("dense_sgd with momentum needs vel_w and vel_b in prepare(...)")
        if c == 0:
            return
        acts, deltas, parts = state.scratch(int(mini_batch_size))
        real = state.dtype.type
        kernel = function("dense_sgd", state.dtype, "dense_sgd")
        threads = self.threads or min(THREADS, kernel.max_threads_per_block)
        kernel((1,), (threads,), (
            cupy.ascontiguousarray(Xc, dtype=state.dtype),
            cupy.ascontiguousarray(Yc, dtype=state.dtype),
            state.table, state.device_sizes, state.device_codes, np.int32(state.depth),
            np.int32(state.cost), np.int32(c), np.int32(mini_batch_size), acts, deltas,
            parts, real(eta), real(lmbda / n), real(l1 / n), real(momentum)))


DENSE_SGD = DenseSGDCupy()
