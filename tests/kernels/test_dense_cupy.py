"""dense_sgd (CuPy) against its oracle, the NumPy reference, without a GPU: the real module
and its CUDA source run on the CPU stand-in for CuPy (cuda_on_cpu.py), one host thread per
CUDA thread. The cross product of test_dense_numba: every ordered pair of hidden
activations, every output and cost, every regulariser, over two chunks whose last mini-batch
is partial. Blocks are small (the threads are real threads on a small machine), and smaller
than a layer, so each thread loops over several sums."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

from gpunn.errors import ConfigError
from gpunn.kernels.dense import DENSE_SGD as REFERENCE
from gpunn.kernels.dense import HIDDEN, OUTPUTS
from gpunn.testing import assert_matches

_spec = importlib.util.spec_from_file_location(
    "cuda_on_cpu", Path(__file__).with_name("cuda_on_cpu.py"))
cuda_on_cpu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cuda_on_cpu)

pytestmark = pytest.mark.skipif(cuda_on_cpu.compiler() is None,
                                reason="needs a host C++ compiler (g++) for the CUDA sources")

SIZES = [12, 7, 5, 3]  # two hidden layers, so every ordered pair of activations is tried
CHUNK, MINI_BATCH = 40, 7  # 40 = 5 * 7 + 5: the last mini-batch is partial
N = 1000
THREADS = 5  # fewer than any layer's sums, and dividing none of them
REGULARISATION = {  # name -> (lmbda, l1, momentum), as in test_dense_numba
    "plain": (0.0, 0.0, 0.0),
    "l2": (5.0, 0.0, 0.0),
    "l1": (0.0, 3.0, 0.0),
    "l2+l1": (5.0, 3.0, 0.0),
    "momentum": (0.0, 0.0, 0.9),
    "momentum+l2+l1": (5.0, 3.0, 0.5),
}


@pytest.fixture
def dense_cupy(monkeypatch):
    """gpunn.kernels.dense_cupy, imported against the CPU stand-in for CuPy."""
    cuda_on_cpu.install(monkeypatch)
    return importlib.import_module("gpunn.kernels.dense_cupy")


def _chunk(seed=0, n_in=SIZES[0], n_out=SIZES[-1], dtype=np.float32, size=CHUNK):
    rng = np.random.default_rng(seed)
    X = rng.random((size, n_in)).astype(dtype)
    Y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, size)]
    return X, Y


def _arrays(sizes=SIZES, seed=3, dtype=np.float32):
    rng = np.random.default_rng(seed)
    weights = [(rng.standard_normal((b, a)) / np.sqrt(a)).astype(dtype)
               for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.standard_normal(b).astype(dtype) for b in sizes[1:]]
    return weights, biases


def _train_both(kernel, activations, cost, regularisation, sizes=SIZES, dtype=np.float32,
                mini_batch=MINI_BATCH, chunks=2):
    """Train the same arrays with ``kernel`` and the reference; compare every array."""
    lmbda, l1, momentum = REGULARISATION[regularisation]
    # linear layers diverge at 0.5 (see test_dense_numba)
    eta = 0.02 if "linear" in activations else 0.5
    weights, biases = _arrays(sizes, dtype=dtype)
    vel = [np.zeros_like(w) for w in weights], [np.zeros_like(b) for b in biases]
    ref = ([a.copy() for a in weights], [a.copy() for a in biases],
           [a.copy() for a in vel[0]], [a.copy() for a in vel[1]])
    assert kernel.supports(weights, biases, activations, cost)
    state = kernel.prepare(weights, biases, activations, cost, *vel)
    ref_state = REFERENCE.prepare(ref[0], ref[1], activations, cost, ref[2], ref[3])
    for seed in range(chunks):  # velocities and weights carry over between calls
        X, Y = _chunk(seed, sizes[0], sizes[-1], dtype)
        REFERENCE.run(ref_state, X, Y, mini_batch, eta, lmbda, l1, N, momentum)
        kernel.run(state, X, Y, mini_batch, eta, lmbda, l1, N, momentum)
    for i in range(len(weights)):
        assert_matches(f"dense_sgd (CUDA on CPU) w[{i}]", weights[i], ref[0][i])
        assert_matches(f"dense_sgd (CUDA on CPU) b[{i}]", biases[i], ref[1][i])
        assert_matches(f"dense_sgd (CUDA on CPU) velocity w[{i}]", vel[0][i], ref[2][i])
        assert_matches(f"dense_sgd (CUDA on CPU) velocity b[{i}]", vel[1][i], ref[3][i])


@pytest.mark.parametrize("regularisation", list(REGULARISATION))
@pytest.mark.parametrize("cost, output", sorted(OUTPUTS))
@pytest.mark.parametrize("first, second", list(itertools.product(HIDDEN, HIDDEN)))
def test_matches_the_reference(dense_cupy, first, second, cost, output, regularisation):
    _train_both(dense_cupy.DenseSGDCupy(threads=THREADS), [first, second, output], cost,
                regularisation)


@pytest.mark.parametrize("regularisation", ["plain", "momentum+l2+l1"])
@pytest.mark.parametrize("cost, output", [("log-likelihood", "softmax"),
                                          ("quadratic", "tanh")])
def test_float64_matches_the_reference(dense_cupy, cost, output, regularisation):
    _train_both(dense_cupy.DenseSGDCupy(threads=THREADS), ["relu", "sigmoid", output], cost,
                regularisation, dtype=np.float64)


def test_the_registered_block_size(dense_cupy):
    """The block of 1,024 threads the GPU runs: more threads than sums, most of them idle."""
    assert dense_cupy.DENSE_SGD.threads is None and dense_cupy.THREADS == 1024
    _train_both(dense_cupy.DENSE_SGD, ["tanh", "softmax"], "log-likelihood", "momentum+l2+l1",
                sizes=[9, 6, 4], mini_batch=10, chunks=1)


@pytest.mark.parametrize("threads", [1, 64])
def test_single_layer_one_thread_and_a_mini_batch_the_size_of_the_chunk(dense_cupy, threads):
    _train_both(dense_cupy.DenseSGDCupy(threads=threads), ["sigmoid"], "cross-entropy", "l2",
                sizes=[12, 3], mini_batch=CHUNK)


def test_is_registered_for_cupy(dense_cupy):
    from gpunn.kernels import available

    assert "cupy" in available()["dense_sgd"]
    assert dense_cupy.DENSE_SGD.backend == "cupy"


def test_refuses_what_it_cannot_train(dense_cupy):
    kernel = dense_cupy.DENSE_SGD
    weights, biases = _arrays()
    assert not kernel.supports(weights, biases, ["step", "sigmoid", "sigmoid"], "quadratic")
    assert not kernel.supports(weights, biases, ["sigmoid", "sigmoid", "tanh"],
                               "cross-entropy")
    w16, b16 = _arrays(dtype=np.float16)
    assert not kernel.supports(w16, b16, ["sigmoid"] * 3, "quadratic")
    with pytest.raises(ConfigError, match="one weight, bias and activation per layer"):
        kernel.prepare(weights, biases, ["sigmoid"], "quadratic")
    with pytest.raises(ConfigError, match=r"one dtype.*float64"):
        kernel.prepare(weights, biases, ["sigmoid"] * 3, "quadratic",
                       [w.astype(np.float64) for w in weights], biases)


def test_refuses_a_chunk_of_the_wrong_shape_and_momentum_without_velocities(dense_cupy):
    kernel = dense_cupy.DENSE_SGD
    weights, biases = _arrays()
    X, Y = _chunk()
    state = kernel.prepare(weights, biases, ["sigmoid"] * 3, "quadratic")
    with pytest.raises(ConfigError, match=r"Xc of shape \(c, 12\).*received Xc.shape=\(40, 5\)"):
        kernel.run(state, X[:, :5], Y, MINI_BATCH, 0.5, 0, 0, N, 0)
    with pytest.raises(ConfigError, match="needs vel_w and vel_b"):
        kernel.run(state, X, Y, MINI_BATCH, 0.5, 0, 0, N, 0.9)


def test_softmax_of_large_logits_stays_finite(dense_cupy):
    """Logits in the hundreds: e^z overflows float32 unless the row's maximum comes off."""
    kernel = dense_cupy.DenseSGDCupy(threads=THREADS)
    weights, biases = _arrays([12, 4])
    weights[0] *= 300
    ref_w, ref_b = [weights[0].copy()], [biases[0].copy()]
    X, Y = _chunk(n_out=4)
    kernel.run(kernel.prepare(weights, biases, ["softmax"], "log-likelihood"), X, Y,
               MINI_BATCH, 0.1, 0.0, 0.0, N, 0.0)
    REFERENCE.run(REFERENCE.prepare(ref_w, ref_b, ["softmax"], "log-likelihood"), X, Y,
                  MINI_BATCH, 0.1, 0.0, 0.0, N, 0.0)
    assert np.isfinite(weights[0]).all(), "softmax overflowed: NaN weights"
    assert_matches("dense_sgd (CUDA on CPU) w, large logits", weights[0], ref_w[0])
    assert_matches("dense_sgd (CUDA on CPU) b, large logits", biases[0], ref_b[0])


def test_run_never_waits_for_the_gpu(monkeypatch):
    """With device arrays that count host reads (and refuse host arrays where CuPy does),
    a chunk of SGD steps reads nothing back."""
    cuda_on_cpu.install(monkeypatch, strict=True)
    import cupy

    kernel = importlib.import_module("gpunn.kernels.dense_cupy").DenseSGDCupy(threads=THREADS)
    host_w, host_b = _arrays()
    weights, biases = [cupy.asarray(w) for w in host_w], [cupy.asarray(b) for b in host_b]
    vel_w, vel_b = [cupy.zeros_like(w) for w in weights], [cupy.zeros_like(b) for b in biases]
    activations = ["relu", "tanh", "softmax"]
    assert kernel.supports(weights, biases, activations, "log-likelihood")
    state = kernel.prepare(weights, biases, activations, "log-likelihood", vel_w, vel_b)
    ref_state = REFERENCE.prepare(host_w, host_b, activations, "log-likelihood",
                                  [np.zeros_like(w) for w in host_w],
                                  [np.zeros_like(b) for b in host_b])
    before = cuda_on_cpu.DeviceArray.syncs
    for seed in range(2):
        X, Y = _chunk(seed)
        kernel.run(state, cupy.asarray(X), cupy.asarray(Y), MINI_BATCH, 0.5, 5.0, 3.0, N, 0.5)
        REFERENCE.run(ref_state, X, Y, MINI_BATCH, 0.5, 5.0, 3.0, N, 0.5)
    assert cuda_on_cpu.DeviceArray.syncs == before, "dense_sgd run waited for the GPU"
    for i in range(3):
        assert_matches(f"dense_sgd (strict stand-in) w[{i}]", weights[i].get(), host_w[i])


def test_leaves_wide_stacks_to_the_layer_by_layer_step(dense_cupy):
    limit = dense_cupy.MAX_WEIGHTS
    fits = [np.zeros((100, 784), np.float32), np.zeros((10, 100), np.float32)]
    wide = [np.zeros((1000, 784), np.float32), np.zeros((10, 1000), np.float32)]
    assert sum(w.size for w in fits) <= limit < sum(w.size for w in wide)
    for weights, takes in ((fits, True), (wide, False)):
        biases = [np.zeros(w.shape[0], np.float32) for w in weights]
        assert dense_cupy.DENSE_SGD.supports(weights, biases, ["sigmoid"] * 2,
                                             "quadratic") is takes


def test_the_training_loop_takes_it_on_cupy(dense_cupy, monkeypatch):
    """On a CuPy backend the loop's fused step runs this kernel and equals the layer step.
    (A backend named cupy over NumPy arrays: the stand-in's arrays are NumPy's.)"""
    import gpunn
    from gpunn.backend import Backend
    from gpunn.kernels import registry
    from gpunn.optim import SGD
    from gpunn.train import FusedDenseStep, LayerStep, choose_step

    monkeypatch.setattr(registry, "_LOADED", {})  # nothing of the stand-in outlives the test
    on_gpu = gpunn.Network([12, 7, 3], seed=0, backend=Backend("cupy", np, "cuda:0"))
    on_cpu = gpunn.Network([12, 7, 3], seed=0, backend="cpu")
    fused = choose_step(on_gpu, SGD(0.5, lmbda=2.0, n=100, l1=0.5, momentum=0.5))
    assert isinstance(fused, FusedDenseStep) and fused.kernel.backend == "cupy"
    by_layer = LayerStep(on_cpu, SGD(0.5, lmbda=2.0, n=100, l1=0.5, momentum=0.5))
    for seed in range(2):
        X, Y = _chunk(seed)
        fused.run(X, Y.argmax(axis=1), MINI_BATCH)
        by_layer.run(X, Y.argmax(axis=1), MINI_BATCH)
    for i, (a, b) in enumerate(zip(on_gpu.layers, on_cpu.layers)):
        assert_matches(f"fused step on cupy w[{i}]", a.w, b.w, rtol=1e-5, atol=1e-5)
        assert_matches(f"fused step on cupy b[{i}]", a.b, b.b, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("regularisation", ["plain", "momentum+l2+l1"])
@pytest.mark.parametrize("cost, output", sorted(OUTPUTS))
def test_on_a_gpu(cost, output, regularisation):
    """The registered kernel on real CuPy arrays, in its default block, against the reference
    on the host (``pytest -m gpu`` on a GPU machine; skipped elsewhere)."""
    from gpunn import backend

    try:
        be = backend.select("cuda")
    except backend.BackendUnavailable as exc:
        pytest.skip(f"no CUDA GPU with CuPy on this machine ({exc.cause})")
    kernel = be.kernel("dense_sgd")
    assert kernel.backend == "cupy"
    lmbda, l1, momentum = REGULARISATION[regularisation]
    activations = ["relu", "tanh", output]
    eta = 0.02 if output == "linear" else 0.5
    host_w, host_b = _arrays()
    weights, biases = [be.asarray(w) for w in host_w], [be.asarray(b) for b in host_b]
    vel = [be.xp.zeros_like(w) for w in weights], [be.xp.zeros_like(b) for b in biases]
    state = kernel.prepare(weights, biases, activations, cost, *vel)
    ref_state = REFERENCE.prepare(host_w, host_b, activations, cost,
                                  [np.zeros_like(w) for w in host_w],
                                  [np.zeros_like(b) for b in host_b])
    for seed in range(2):
        X, Y = _chunk(seed)
        kernel.run(state, be.asarray(X), be.asarray(Y), MINI_BATCH, eta, lmbda, l1, N, momentum)
        REFERENCE.run(ref_state, X, Y, MINI_BATCH, eta, lmbda, l1, N, momentum)
    for i in range(3):
        assert_matches(f"dense_sgd (GPU) w[{i}]", be.to_numpy(weights[i]), host_w[i])
        assert_matches(f"dense_sgd (GPU) b[{i}]", be.to_numpy(biases[i]), host_b[i])


def test_the_training_loop_on_cupy_records_a_bad_label(dense_cupy, monkeypatch):
    """CuPy's indexing would wrap label 7 of 3 classes silently; the step records it in its
    flag (read by the loop once a chunk, as for the layer-by-layer step) and trains on
    labels clipped into range, without waiting for the GPU."""
    import gpunn
    from gpunn.backend import Backend
    from gpunn.kernels import checks, registry
    from gpunn.optim import SGD
    from gpunn.train import choose_step

    monkeypatch.setattr(registry, "_LOADED", {})
    net = gpunn.Network([12, 7, 3], seed=0, backend=Backend("cupy", np, "cuda:0"))
    step = choose_step(net, SGD(0.5))
    X, Y = _chunk()
    labels = Y.argmax(axis=1)
    step.run(X, labels, MINI_BATCH)
    checks.raise_for_label_flag(step.label_flag, 3)  # all in range: nothing recorded
    labels[[5, 9]] = 7, -1
    step.run(X, labels, MINI_BATCH)
    step.run(X, Y.argmax(axis=1), MINI_BATCH)  # a later good chunk keeps the first bad label
    with pytest.raises(ConfigError, match=r"labels in \[0, K\)=\[0, 3\); received label 7"):
        checks.raise_for_label_flag(step.label_flag, 3)


def test_the_fused_step_never_waits_for_the_gpu(monkeypatch):
    """The loop's fused step on the strict stand-in (arrays that count host reads): the
    targets, the bad-label flag and the kernel stay on the device."""
    import gpunn
    from gpunn.backend import Backend
    from gpunn.kernels import registry
    from gpunn.optim import SGD
    from gpunn.train import FusedDenseStep, choose_step

    cuda_on_cpu.install(monkeypatch, strict=True)
    monkeypatch.setattr(registry, "_LOADED", {})
    import cupy

    cupy.__getattr__ = lambda name: getattr(np, name)  # the rest of xp: NumPy's
    cupy.eye = lambda *args, **kwargs: np.eye(*args, **kwargs).view(cuda_on_cpu.DeviceArray)
    gpu = Backend("cupy", cupy, "cuda:0")
    net = gpunn.Network([12, 7, 3], seed=0, backend=gpu)  # its one-hot rows: cupy.eye
    step = choose_step(net, SGD(0.5, momentum=0.5, n=N))
    assert isinstance(step, FusedDenseStep) and step.kernel.backend == "cupy"
    X, Y = _chunk()
    labels = Y.argmax(axis=1)
    labels[3] = 9
    before = cuda_on_cpu.DeviceArray.syncs
    step.run(gpu.asarray(X), cupy.asarray(labels), MINI_BATCH)
    assert cuda_on_cpu.DeviceArray.syncs == before, "the fused step waited for the GPU"
    assert step.label_flag.get().tolist() == [1, 9]
