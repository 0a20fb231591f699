"""dense_sgd on the CPU: one Numba call trains a fully connected network on a whole chunk.

At mini-batch 10 the NumPy loop spends most of its time in the ~36 NumPy calls each step
makes, not in arithmetic. Here one ``@njit`` function runs every mini-batch of a chunk
(~1,000 examples): per layer one BLAS sgemm forward, a hand-written loop that adds the bias
and applies the activation (and, at the output, forms δ^L), and backward one sgemm for the
error of the layer below and one that *is* the weight update::

    forward:   a_l = σ(a_{l-1} W_lᵀ + b_l)                 a: (m, n_l), one row per example
    backward:  δ_{l-1}ᵀ = (W_lᵀ δ_lᵀ) ⊙ σ'(a_{l-1})        δᵀ: (n_l, m), kept transposed
    update:    W_l ← β W_l − (η/m) δ_lᵀ a_{l-1}            β = 1 − ηλ/n (sgemm's alpha, beta)
    momentum:  V_l ← μ V_l − η((λ/n) W_l + (λ₁/n) sgn W_l) − (η/m) δ_lᵀ a_{l-1};  W_l += V_l

so there is no gradient array and no separate decay pass (L1 adds one elementwise pass over
W; momentum adds ``W += V`` and, with L2 or L1, one pass over V). δ is kept transposed and
the products run at most 32 rows at a time, the layouts OpenBLAS runs fastest (see _ROWS).
Departures from the NumPy path, within float32 rounding: sigmoid is 1/(1 + e^{-z}) here
(libm ``expf`` costs a third of ``tanhf``), and sums run in a different order.

Numba's own ``np.dot`` needs SciPy, which gpunn does not depend on; the sgemm is NumPy's
bundled OpenBLAS (ILP64 ``scipy_cblas_sgemm64_``), bound by name through llvmlite so the
compiled function caches on disk. Where NumPy carries no such BLAS, :meth:`supports` says
False and the network keeps the NumPy path (:mod:`gpunn.kernels.dense`, the oracle).

Each layer has its own activation (one code per layer), so a stack that mixes them trains
as the layer-by-layer step does. Leaves out: dropout, step or softmax hidden layers, float64
(the training loop keeps those on its layer-by-layer step). Same interface as
:mod:`gpunn.kernels.dense`, which is its oracle.

Also here, for that layer-by-layer step: ``weight_update`` (one layer's W ← βW − ηδᵀx as one
sgemm) and ``linear`` (a layer's x Wᵀ in the faster of two BLAS orientations).
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os

import numpy as np
from numba import njit, types

from gpunn.errors import ConfigError
from gpunn.kernels.dense import check_stack, check_update

# Activation and cost codes passed to the kernel.
# IDENTITY is the "linear" activation: LINEAR names the registry's linear op (below).
SIGMOID, TANH, RELU, IDENTITY, SOFTMAX = 0, 1, 2, 3, 4
QUADRATIC, CROSS_ENTROPY, LOG_LIKELIHOOD = 0, 1, 2
_ACTIVATIONS = {"sigmoid": SIGMOID, "tanh": TANH, "relu": RELU, "linear": IDENTITY}
_CODES = {**_ACTIVATIONS, "softmax": SOFTMAX}
_COSTS = {"quadratic": QUADRATIC, "cross-entropy": CROSS_ENTROPY,
          "log-likelihood": LOG_LIKELIHOOD}

# ---------------------------------------------------------------------------------------------
# BLAS: cblas_sgemm with 64-bit integers, row-major. Pointers travel as int64 (``_ptr(a)``).
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_SGEMM_SYMBOL = "gpunn_cblas_sgemm64"
_SGEMM_NAMES = ("scipy_cblas_sgemm64_", "cblas_sgemm64_")
_i32, _i64, _f32 = types.int32, types.int64, types.float32
_sgemm = types.ExternalFunction(_SGEMM_SYMBOL, types.void(
    _i32, _i32, _i32, _i64, _i64, _i64, _f32, _i64, _i64, _i64, _i64, _f32, _i64, _i64))
_bound = None


def _bind_sgemm() -> bool:
    """Find NumPy's ILP64 cblas_sgemm and bind it to the kernel's symbol; True if found."""
    global _bound
    if _bound is None:
        import llvmlite.binding as llvm

        _bound = False
        umath = np._core._multiarray_umath.__file__
        libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
        for path in [umath] + sorted(glob.glob(os.path.join(libs, "*openblas*"))):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for name in _SGEMM_NAMES:
                fn = getattr(lib, name, None)
                if fn is not None:
                    llvm.add_symbol(_SGEMM_SYMBOL, ctypes.cast(fn, ctypes.c_void_p).value)
                    _bound = True
                    return True
    return _bound


# OpenBLAS runs these thin products much faster a few rows at a time (784-30 layer, 100 rows,
# one thread: forward 71 µs in one call, 39 µs in blocks of 32; weight update 45 vs 34 µs).
# Wider layers (784-100: each block would re-read the whole W) run best in one call.
_ROWS = 32
_WIDE = 64
_F32 = 4  # bytes per float32, for pointer arithmetic


# ---------------------------------------------------------------------------------------------
@njit(cache=True)
def _ptr(a):
    return np.int64(a.ctypes.data)


@njit(cache=True)
def _activate(code, z):
    if code == SIGMOID:  # 1/(1 + e^-z): e^-z may overflow to inf, giving 0, never NaN
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-z))
    if code == TANH:
        return np.tanh(z)
    if code == RELU:
        return z if z > 0 else np.float32(0.0)
    return z


@njit(cache=True)
def _prime(code, a):
    """σ'(z) from a = σ(z); for relu z > 0 exactly when a > 0."""
    if code == SIGMOID:
        return a * (np.float32(1.0) - a)
    if code == TANH:
        return np.float32(1.0) - a * a
    if code == RELU:
        return np.float32(1.0) if a > 0 else np.float32(0.0)
    return np.float32(1.0)


@njit(cache=True)
def _sign(w):
    return np.float32(w > 0) - np.float32(w < 0)  # branch-free, so the loops vectorise


@njit(cache=True)
def _forward(x, w, b, a, m, code, flip, t):
    """a (m, n_out) = σ(x (m, n_in) Wᵀ + b) in the flat buffer ``a``; ``x`` is a pointer.

    With ``flip``, x Wᵀ is formed as (W xᵀ)ᵀ (``linear``'s second orientation) in the flat
    scratch ``t`` (n_out, m) and transposed into ``a``."""
    n_out, n_in = w.shape
    if flip:
        _sgemm(_ROW_MAJOR, _NO_TRANS, _TRANS, n_out, m, n_in, np.float32(1.0), _ptr(w), n_in,
               x, n_in, np.float32(0.0), _ptr(t), m)
        for i in range(m):
            for j in range(n_out):
                a[i * n_out + j] = t[j * m + i]
    else:
        rows = _ROWS if n_out < _WIDE else m
        for r in range(0, m, rows):
            _sgemm(_ROW_MAJOR, _NO_TRANS, _TRANS, min(rows, m - r), n_out, n_in,
                   np.float32(1.0), x + r * n_in * _F32, n_in, _ptr(w), n_in, np.float32(0.0),
                   _ptr(a) + r * n_out * _F32, n_out)
    for i in range(m):
        row = a[i * n_out:(i + 1) * n_out]
        if code == SOFTMAX:  # subtract the row's maximum so exp cannot overflow
            top = row[0] + b[0]
            for j in range(n_out):
                row[j] += b[j]
                top = max(top, row[j])
            total = np.float32(0.0)
            for j in range(n_out):
                row[j] = np.exp(row[j] - top)
                total += row[j]
            for j in range(n_out):
                row[j] /= total
        else:
            for j in range(n_out):
                row[j] = _activate(code, row[j] + b[j])


@njit(cache=True)
def _update(w, b, vw, vb, delta, x, m, eta, lmbda, l1, n, momentum):
    """W, b (and velocities) one step along δᵀ (n_out, m) and the layer's input x (m, n_in),
    given as a pointer."""
    n_out, n_in = w.shape
    step, mu, beta = np.float32(eta / m), np.float32(momentum), np.float32(1.0)
    if momentum:
        if lmbda or l1:
            l2_step, l1_step = np.float32(eta * lmbda / n), np.float32(eta * l1 / n)
            for j in range(n_out):
                for i in range(n_in):
                    vw[j, i] = mu * vw[j, i] - (l2_step * w[j, i] + l1_step * _sign(w[j, i]))
        else:
            beta = mu
        target = vw
    else:
        decay = np.float32(1.0 - eta * lmbda / n)
        if l1:
            l1_step = np.float32(eta * l1 / n)
            for j in range(n_out):
                for i in range(n_in):
                    w[j, i] = decay * w[j, i] - l1_step * _sign(w[j, i])
        else:
            beta = decay
        target = w
    rows = _ROWS if n_out < _WIDE else m
    for r in range(0, m, rows):  # target = beta target - (η/m) Σ_r δᵀ[:, r] x[r]
        _sgemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, n_out, n_in, min(rows, m - r), -step,
               _ptr(delta) + r * _F32, m, x + r * n_in * _F32, n_in,
               beta if r == 0 else np.float32(1.0), _ptr(target), n_in)
    if momentum:
        for j in range(n_out):
            for i in range(n_in):
                w[j, i] += vw[j, i]
    for j in range(n_out):
        grad = np.float32(0.0)
        for i in range(m):
            grad += delta[j * m + i]
        if momentum:
            vb[j] = mu * vb[j] - step * grad
            b[j] += vb[j]
        else:
            b[j] -= step * grad


@njit(cache=True)
def _sgd_chunk(X, Y, weights, biases, vel_w, vel_b, acts, deltas, mini_batch_size,
               eta, lmbda, l1, n, momentum, codes, cost, flips):
    """Every mini-batch of X (c, n_in) / Y (c, n_out), in order; see the module docstring.

    acts[li] and deltas[li] are flat scratch of at least mini_batch_size * n_out(li) floats;
    codes[li] is layer li's activation; flips[li] 1 where its x Wᵀ runs as (W xᵀ)ᵀ, formed
    in deltas[li] (free until backward reaches the layer).
    """
    depth = len(weights)  # layer li maps the activations of li - 1 (x for li = 0) to acts[li]
    for k in range(0, X.shape[0], mini_batch_size):
        m = min(mini_batch_size, X.shape[0] - k)
        x, y = _ptr(X) + k * X.shape[1] * _F32, Y[k:k + m]
        for li in range(depth):
            _forward(x if li == 0 else _ptr(acts[li - 1]), weights[li], biases[li], acts[li], m,
                     codes[li], flips[li], deltas[li])
        # δ^L, transposed: a − y, times σ'(z) for the quadratic cost (BP1)
        a, d, output = acts[depth - 1], deltas[depth - 1], codes[depth - 1]
        n_out = y.shape[1]
        for i in range(m):
            for j in range(n_out):
                e = a[i * n_out + j] - y[i, j]
                d[j * m + i] = e * _prime(output, a[i * n_out + j]) if cost == QUADRATIC else e
        for li in range(depth - 1, -1, -1):
            w = weights[li]
            n_out, n_in = w.shape
            if li > 0:  # δ_{li-1}ᵀ = (Wᵀ δᵀ) ⊙ σ'(a_{li-1}), with W before its update (BP2)
                below, a = deltas[li - 1], acts[li - 1]
                _sgemm(_ROW_MAJOR, _TRANS, _NO_TRANS, n_in, m, n_out, np.float32(1.0),
                       _ptr(w), n_in, _ptr(deltas[li]), m, np.float32(0.0), _ptr(below), m)
                code = codes[li - 1]  # a local: read once, so the loop can be unswitched
                for j in range(n_in):
                    for i in range(m):
                        below[j * m + i] *= _prime(code, a[i * n_in + j])
            _update(w, biases[li], vel_w[li], vel_b[li], deltas[li],
                    x if li == 0 else _ptr(acts[li - 1]), m, eta, lmbda, l1, n, momentum)


# ---------------------------------------------------------------------------------------------
# x Wᵀ for a few rows and a wide W: OpenBLAS can run (x Wᵀ)ᵀ = W xᵀ up to twice as fast as
# x Wᵀ (one thread, m=10: 640-1000 0.33 vs 0.58 ms, 1000-1000 0.58 vs 0.92 ms; RESULTS.md)
# and slower on other shapes, so the orientation is measured per shape (kernels.choice).
CHOOSE_ROWS = 64  # more rows than this: x Wᵀ as it is (the two run alike or it wins)
CHOOSE_WEIGHTS = 1 << 16  # a smaller W costs microseconds either way: not worth a lookup
ORIENTATIONS = ("x @ W.T", "(W @ x.T).T")


def _check_orientation(orientation):
    if orientation is not None and orientation not in ORIENTATIONS:
        raise ConfigError(f"orientation must be one of {ORIENTATIONS} or None; received "
                          f"{orientation!r}")
    return orientation


# ---------------------------------------------------------------------------------------------
class _State:
    """What :meth:`DenseSGDNumba.run` needs, built once per training run."""

    def __init__(self, weights, biases, activations, cost, vel_w, vel_b):
        self.n_in = weights[0].shape[1]
        self.sizes = [w.shape[0] for w in weights]
        self.weights, self.biases = tuple(weights), tuple(biases)
        # never read without momentum; the kernel wants tuples of the right type
        self.vel_w = self.weights if vel_w is None else tuple(vel_w)
        self.vel_b = self.biases if vel_b is None else tuple(vel_b)
        self.codes = np.array([_CODES[a] for a in activations], dtype=np.int64)
        self.cost = _COSTS[cost]
        self.capacity = 0
        self.acts = self.deltas = None
        self.flips = {}  # mini-batch size -> per layer, 1 where x Wᵀ runs as (W xᵀ)ᵀ

    def scratch(self, mini_batch_size):
        if mini_batch_size > self.capacity:
            self.capacity = mini_batch_size
            self.acts = tuple([np.empty(mini_batch_size * s, np.float32)
                               for s in self.sizes])
            self.deltas = tuple([np.empty(mini_batch_size * s, np.float32)
                                 for s in self.sizes])
        return self.acts, self.deltas


class DenseSGDNumba:
    """Whole-chunk SGD for float32 fully connected stacks, one compiled call per chunk.

    Each layer's x Wᵀ runs in the orientation ``linear`` measured for its shape at this
    mini-batch size (:meth:`LinearNumba.orientation_for`): 784-1000-10 at m=10 trains an
    epoch in 3.02 s that way and in 4.07 s with x Wᵀ throughout (one thread, RESULTS.md).
    ``orientation`` fixes one of :data:`ORIENTATIONS` for every layer instead (tests,
    benchmarks).
    """

    backend = "numba"

    def __init__(self, orientation: str | None = None):
        self.orientation = _check_orientation(orientation)

    def supports(self, weights, biases, activations, cost) -> bool:
        """True when this kernel can train the stack; otherwise use the layer-by-layer step."""
        try:
            check_stack(weights, biases, activations, cost)
        except ConfigError:
            return False
        return _bind_sgemm() and all(
            isinstance(p, np.ndarray) and p.dtype == np.float32 and p.flags.c_contiguous
            for p in (*weights, *biases))

    def prepare(self, weights, biases, activations, cost, vel_w=None, vel_b=None) -> _State:
        """Tuples of the given arrays (updated in place, so they stay valid).

        Tuples, not numba.typed.List: a typed List compiles its methods at first use (half a
        second and ~55 MB of LLVM each process); a homogeneous tuple costs nothing.
        """
        if not self.supports(weights, biases, activations, cost):
            check_stack(weights, biases, activations, cost)  # the reason, if it is the stack
            raise ConfigError("dense_sgd (numba) trains C-contiguous float32 NumPy arrays with "
                              "NumPy's bundled ILP64 OpenBLAS (scipy_cblas_sgemm64_); check "
                              "supports(...) first and use the NumPy path")
        return _State(weights, biases, activations, cost, vel_w, vel_b)

    def run(self, state, Xc, Yc, mini_batch_size, eta, lmbda, l1, n, momentum) -> None:
        """SGD over ``Xc (c, n_in)`` / one-hot ``Yc (c, n_out)`` in mini-batches, in order."""
        c = Xc.shape[0]
        if Xc.shape != (c, state.n_in) or Yc.shape != (c, state.sizes[-1]) or mini_batch_size < 1:
            # BLAS would read past the arrays: refuse rather than crash
            raise ConfigError(
                f"dense_sgd expects Xc of shape (c, {state.n_in}), Yc of shape "
                f"(c, {state.sizes[-1]}) and mini_batch_size >= 1; received "
                f"Xc.shape={Xc.shape}, Yc.shape={Yc.shape}, mini_batch_size={mini_batch_size}")
        if momentum and state.vel_w is state.weights:
            raise ConfigError("dense_sgd with momentum needs vel_w and vel_b in prepare(...)")
        acts, deltas = state.scratch(int(mini_batch_size))
        flips = self.flips(state, int(mini_batch_size))
        _sgd_chunk(np.ascontiguousarray(Xc, dtype=np.float32),
                   np.ascontiguousarray(Yc, dtype=np.float32),
                   state.weights, state.biases, state.vel_w, state.vel_b, acts, deltas,
                   int(mini_batch_size), float(eta), float(lmbda), float(l1), float(n),
                   float(momentum), state.codes, state.cost, flips)

    def flips(self, state, mini_batch_size: int) -> np.ndarray:
        """Per layer of ``state``, 1 where its x Wᵀ runs as (W xᵀ)ᵀ at this mini-batch size
        (measured once per shape by ``linear``, or the fixed ``orientation``)."""
        flips = state.flips.get(mini_batch_size)
        if flips is None:
            linear = LINEAR if self.orientation is None else LinearNumba(self.orientation)
            flips = state.flips[mini_batch_size] = np.array(
                [linear.orientation_for(np.zeros((mini_batch_size, w.shape[1]), np.float32), w)
                 == ORIENTATIONS[1] for w in state.weights], dtype=np.int64)
        return flips


DENSE_SGD = DenseSGDNumba()


# ---------------------------------------------------------------------------------------------
@njit(cache=True)
def _descend(w, delta, x, alpha, beta):
    """W (n_out, n_in) ← β W − α δᵀ x for δ (m, n_out), x (m, n_in): one sgemm."""
    m, n_out = delta.shape
    _sgemm(_ROW_MAJOR, _TRANS, _NO_TRANS, n_out, x.shape[1], m, -alpha, _ptr(delta), n_out,
           _ptr(x), x.shape[1], beta, _ptr(w), x.shape[1])


class WeightUpdateNumba:
    """weight_update on the CPU: W ← β W − α δᵀx as one sgemm (its alpha and beta).

    The layer-by-layer step formed the gradient δᵀx in a new array, scaled it by η and
    subtracted it: three passes over an array the size of W besides the one over W itself.
    Here BLAS adds the product into W as it forms it. At mini-batch 10 a 1000 x 1000 layer's
    update took 0.94 ms that way and takes 0.28 ms this way (one thread). Same interface as
    :class:`gpunn.kernels.dense.WeightUpdateReference`, its oracle; it differs from it by
    float32 rounding (the sums run in BLAS's order and η multiplies them once, not each).
    """

    backend = "numba"

    def supports(self, w, delta, x) -> bool:
        """True for float32 NumPy arrays with W C-contiguous, where NumPy's bundled BLAS is
        found; else use the reference."""
        return (all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in (w, delta, x))
                and w.flags.c_contiguous and w.flags.writeable and _bind_sgemm())

    def __call__(self, w, delta, x, alpha: float, beta: float = 1.0) -> None:
        check_update(w, delta, x)
        if not self.supports(w, delta, x):
            raise ConfigError(
                f"weight_update (numba) updates a writable C-contiguous float32 NumPy W with "
                f"float32 delta and x, using NumPy's bundled ILP64 OpenBLAS; received "
                f"{type(w).__name__} {getattr(w, 'dtype', '?')}, delta "
                f"{getattr(delta, 'dtype', '?')}, x {getattr(x, 'dtype', '?')}: check "
                f"supports(...) first and use the reference")
        _descend(w, np.ascontiguousarray(delta), np.ascontiguousarray(x), np.float32(alpha),
                 np.float32(beta))


WEIGHT_UPDATE = WeightUpdateNumba()


# ---------------------------------------------------------------------------------------------
def _linear_run(name, x, w):
    if name == ORIENTATIONS[0]:
        return x @ w.T
    return np.ascontiguousarray((w @ x.T).T)  # C order, as the other gives


class LinearNumba:
    """linear on the CPU: x Wᵀ in whichever of two BLAS orientations runs faster here.

    For a NumPy x of at most :data:`CHOOSE_ROWS` rows and a W of at least
    :data:`CHOOSE_WEIGHTS` entries, ``x @ W.T`` and ``(W @ x.T).T`` are timed once per shape,
    dtype and thread count (:func:`gpunn.kernels.choice.choose`, kept on disk) and the faster
    runs from then on; any other call is ``x @ W.T``. ``orientation`` fixes one of
    :data:`ORIENTATIONS` instead (tests, benchmarks). The result is C-ordered either way and
    equals :class:`gpunn.kernels.dense.LinearReference`, its oracle, within float rounding
    (BLAS sums in another order). Nothing here is Numba: it is the CPU's entry in the registry.
    """

    backend = "numba"

    def __init__(self, orientation: str | None = None):
        self.orientation = _check_orientation(orientation)
        self._chosen: dict[tuple, str] = {}

    def __call__(self, x, w):
        return _linear_run(self.orientation_for(x, w), x, w)

    def orientation_for(self, x, w) -> str:
        """The orientation of :data:`ORIENTATIONS` a call with these NumPy arrays, x (m,
        n_in) and W (n_out, n_in), runs: the fixed one, else the measured one (timing both
        first, where this shape has not been measured)."""
        if self.orientation is not None:
            return self.orientation
        m, (n_out, n_in) = x.shape[0], w.shape
        if m > CHOOSE_ROWS or n_out * n_in < CHOOSE_WEIGHTS or x.dtype != w.dtype:
            return ORIENTATIONS[0]
        from gpunn.backend import num_threads

        key = (m, n_in, n_out, x.dtype.str, num_threads())
        name = self._chosen.get(key)
        if name is None:
            from gpunn.kernels import choice

            label = f"linear {m}x{n_in} @ {n_out}x{n_in}.T {x.dtype} | {key[-1]} threads"
            name = self._chosen[key] = choice.choose(
                label, {o: functools.partial(_linear_run, o, x, w) for o in ORIENTATIONS})
        return name


LINEAR = LinearNumba()
