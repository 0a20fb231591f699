"""The training loop: its steps agree with each other and with an independent reference,
the schedules do what they say, and the kernels stay below the library."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import numpy as np
import pytest

import gpunn
from gpunn.errors import ConfigError
from gpunn.kernels.dense import DENSE_SGD as REFERENCE
from gpunn.layers import FullyConnected, Softmax
from gpunn.optim import SGD
from gpunn.testing import assert_matches
from gpunn.train import FusedDenseStep, History, LayerStep, Schedule, _Run, choose_step

HIDDEN = ["sigmoid", "tanh", "relu", "linear"]
OUTPUTS = [("quadratic", "sigmoid"), ("cross-entropy", "sigmoid"), ("quadratic", "linear"),
           ("log-likelihood", "softmax")]


def _stack(first, second, cost, output, seed=3, dtype=np.float32):
    last = Softmax(5, 3) if output == "softmax" else FullyConnected(5, 3, output)
    net = gpunn.Network([FullyConnected(12, 7, first), FullyConnected(7, 5, second), last],
                        cost=cost, seed=seed, backend="cpu", dtype=dtype)
    if output == "softmax":  # Softmax starts at zero: give it weights that exercise it
        r = np.random.default_rng(seed)
        net.layers[-1].w[...] = r.standard_normal((3, 5)) / 3
    return net


def _chunk(n=40, seed=0):
    r = np.random.default_rng(seed)
    return r.random((n, 12), dtype=np.float32), r.integers(0, 3, n)


@pytest.mark.parametrize("momentum", [0.0, 0.5])
@pytest.mark.parametrize("cost, output", OUTPUTS)
@pytest.mark.parametrize("first, second", list(itertools.product(HIDDEN, HIDDEN)))
def test_fused_step_equals_the_layer_step(first, second, cost, output, momentum):
    """Every pair of hidden activations: one chunk of 40 in mini-batches of 7 (the last one
    partial), the fused dense step against backpropagation through the layers."""
    eta = 0.05 if "linear" in (first, second, output) else 0.5
    fused_net, layer_net = (_stack(first, second, cost, output) for _ in range(2))
    fused_opt, layer_opt = (SGD(eta, lmbda=2.0, n=100, l1=0.5, momentum=momentum)
                            for _ in range(2))
    assert FusedDenseStep.applies(fused_net)
    fused, by_layer = FusedDenseStep(fused_net, fused_opt), LayerStep(layer_net, layer_opt)
    for seed in range(2):
        X, y = _chunk(seed=seed)
        fused.run(X, y, 7)
        by_layer.run(X, y, 7)
    for i, (a, b) in enumerate(zip(fused_net.layers, layer_net.layers)):
        assert_matches(f"{first}/{second}/{output} w[{i}]", a.w, b.w, rtol=1e-5, atol=1e-5)
        assert_matches(f"{first}/{second}/{output} b[{i}]", a.b, b.b, rtol=1e-5, atol=1e-5)


def _formed_gradients(monkeypatch):
    """Make every layer's step form ∂C/∂W first (the step before the weight_update kernel)."""
    monkeypatch.setattr(FullyConnected, "descend", lambda self, eta, decay=1.0: False)


@pytest.mark.parametrize("lmbda", [0.0, 2.0])
@pytest.mark.parametrize("dropout", [0.0, 0.5])
@pytest.mark.parametrize("cost, output", OUTPUTS)
@pytest.mark.parametrize("first, second", list(itertools.product(HIDDEN, HIDDEN)))
def test_the_weight_update_kernel_steps_as_the_formed_gradient_does(
        first, second, cost, output, dropout, lmbda, monkeypatch):
    """Every pair of hidden activations, with and without dropout and L2: the layer step,
    whose fully connected layers add −ηδᵀx to W in one product, against the same step
    forming ∂C/∂W first. One chunk of 40 in mini-batches of 7 (the last one partial)."""
    eta = 0.05 if "linear" in (first, second, output) else 0.5
    nets = [_stack(first, second, cost, output) for _ in range(2)]
    for net in nets:
        for layer in net.layers[1:]:
            layer.dropout = dropout
    X, y = _chunk()
    LayerStep(nets[0], SGD(eta, lmbda=lmbda, n=100)).run(X, y, 7)
    assert all(layer.nabla_w is None for layer in nets[0].layers)  # never formed
    with monkeypatch.context() as patch:
        _formed_gradients(patch)
        LayerStep(nets[1], SGD(eta, lmbda=lmbda, n=100)).run(X, y, 7)
    assert all(layer.nabla_w is not None for layer in nets[1].layers)
    for i, (a, b) in enumerate(zip(*(net.layers for net in nets))):
        assert_matches(f"{first}/{second}/{output} w[{i}]", a.w, b.w, rtol=1e-5, atol=1e-6)
        assert_matches(f"{first}/{second}/{output} b[{i}]", a.b, b.b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_conv_net_with_dropout_steps_as_with_formed_gradients(dtype, monkeypatch):
    """network3's layers (conv-pool, FC with dropout, softmax) in float32 (the kernel) and
    float64 (the reference); reading ∂C/∂W between backward and step forms it, and the step
    then uses it."""
    from gpunn.layers import ConvPool

    def net():
        return gpunn.Network([ConvPool(1, 3, 3, 2, "relu"), FullyConnected(27, 11, "relu", 0.5),
                              Softmax(11, 4, 0.5)], cost="log-likelihood",
                             input_shape=(1, 8, 8), seed=2, backend="cpu", dtype=dtype)
    r = np.random.default_rng(0)
    X, y = r.random((23, 1, 8, 8)).astype(dtype), r.integers(0, 4, 23)
    kernel, formed, read = net(), net(), net()
    softmax_w = r.standard_normal((4, 11)) / 3  # Softmax starts at zero
    for each in (kernel, formed, read):
        each.layers[-1].w[...] = softmax_w
    LayerStep(kernel, SGD(0.1, lmbda=1.0, n=50)).run(X, y, 5)
    with monkeypatch.context() as patch:
        _formed_gradients(patch)
        LayerStep(formed, SGD(0.1, lmbda=1.0, n=50)).run(X, y, 5)
    opt = SGD(0.1, lmbda=1.0, n=50)
    for k in range(0, 23, 5):
        read.train_batch(X[k:k + 5], y[k:k + 5])
        grads = [layer.nabla_w.copy() for layer in read.layers]  # forms ∂C/∂W
        before = [layer.w.copy() for layer in read.layers]
        opt.step(read.layers, read.xp)
        for layer, w, g in zip(read.layers[1:], before[1:], grads[1:]):
            want = w * dtype(1 - 0.1 * 1.0 / 50) - dtype(0.1) * g
            assert_matches("a step after reading the gradient", layer.w, want, rtol=1e-6,
                           atol=1e-7)
    for i in range(3):
        for other in (formed, read):
            assert_matches(f"{np.dtype(dtype).name} w[{i}]", kernel.layers[i].w,
                           other.layers[i].w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("first, second", [("tanh", "sigmoid"), ("relu", "tanh"),
                                           ("sigmoid", "relu"), ("relu", "relu")])
def test_mixed_activation_stacks_train_like_an_independent_reference(first, second):
    """The stack that once trained wrongly on the fast path (tanh then sigmoid, softmax out),
    five full-batch steps through Network.sgd, against the float64 NumPy reference."""
    net = gpunn.Network([FullyConnected(12, 9, first), FullyConnected(9, 7, second),
                         Softmax(7, 3)], cost="log-likelihood", seed=1, backend="cpu")
    assert isinstance(choose_step(net, SGD(0.5)), FusedDenseStep)
    weights = [w.astype(np.float64) for w in net.weights]
    biases = [b.astype(np.float64) for b in net.biases]
    X, y = _chunk(30)
    state = REFERENCE.prepare(weights, biases, [first, second, "softmax"], "log-likelihood")
    for _ in range(5):
        net.sgd((X, y), 1, 30, 0.5)  # one epoch = one full-batch step (shuffling is moot)
        REFERENCE.run(state, X.astype(np.float64), np.eye(3)[y], 30, 0.5, 0.0, 0.0, 30, 0.0)
    for i in range(3):
        assert_matches(f"w[{i}]", net.weights[i], weights[i].astype(np.float32),
                       rtol=1e-4, atol=1e-5)


def test_the_fused_step_is_not_chosen_where_it_does_not_apply():
    dropout = gpunn.Network([12, 7, 3], dropout=0.5, seed=0, backend="cpu")
    step = gpunn.Network([12, 7, 3], activation="step", seed=0, backend="cpu")
    wide = gpunn.Network([12, 7, 3], dtype=np.float64, seed=0, backend="cpu")
    for net in (dropout, step, wide):
        assert isinstance(choose_step(net, SGD(0.5)), LayerStep)
    plain = gpunn.Network([12, 7, 3], seed=0, backend="cpu")
    assert isinstance(choose_step(plain, SGD(0.5)), FusedDenseStep)
    assert isinstance(choose_step(plain, SGD(0.5), track=True), LayerStep)


def test_sgd_rejects_bad_hyperparameters():
    for kwargs, message in [({"eta": 0.0}, "eta must be > 0"), ({"eta": float("nan")}, "eta"),
                            ({"eta": 1.0, "momentum": 1.0}, "momentum"),
                            ({"eta": 1.0, "lmbda": -1.0}, "lmbda"),
                            ({"eta": 1.0, "n": 0}, "n \\(the training-set size\\)")]:
        with pytest.raises(ConfigError, match=message):
            SGD(**kwargs)


def test_sgd_keeps_a_numpy_eta_from_making_float64_temporaries():
    net = gpunn.Network([4, 3], seed=0, backend="cpu")
    opt = SGD(np.float64(0.5))
    assert type(opt.eta) is float
    X, y = np.ones((2, 4), np.float32), np.array([0, 1])
    net.train_batch(X, y)
    opt.step(net.layers, np)
    assert net.weights[0].dtype == np.float32


@pytest.mark.parametrize("schedule, accuracies, etas, stop", [
    (Schedule("step", every=2, factor=10.0), [0.5] * 5, [1, 0.1, 0.1, 0.01, 0.01], None),
    (Schedule("plateau", patience=2, factor=10.0), [0.5, 0.6, 0.6, 0.6, 0.7],
     [1, 1, 1, 0.1, 0.1], None),
    (Schedule.book(1, floor=1 / 4), [0.5, 0.4, 0.4, 0.4], [1, 0.5, 0.25, 0.125], 4),
    (Schedule.book(early_stopping_n=2), [0.5, 0.6, 0.6, 0.6], [1, 1, 1, 1], 4),
])
def test_schedules(schedule, accuracies, etas, stop):
    """``etas``: η for the next epoch, decided after each epoch; ``stop``: the epoch after
    which training stops (None: never)."""
    run = _Run(History(), 1.0, 1.0)
    seen = []
    for epoch, acc in enumerate(accuracies, start=1):
        reason = schedule.after_epoch(run, epoch, acc)
        seen.append(run.eta)
        if reason:
            assert epoch == stop, reason
            break
    else:
        assert stop is None
    assert seen == pytest.approx(etas[:len(seen)])


def test_kernels_import_nothing_above_them():
    """kernels/ holds ops on arrays: no layer, network, loop or optimiser (nor anything else
    of gpunn but its errors, its backend and the elementwise activations, ops themselves)."""
    allowed = ("gpunn.kernels", "gpunn.errors", "gpunn.backend", "gpunn.activations")
    root = Path(gpunn.__file__).resolve().parent.parent / "kernels"
    assert root.is_dir(), root
    bad = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                # `from gpunn import layers` imports gpunn.layers
                names = ([f"gpunn.{a.name}" for a in node.names] if node.module == "gpunn"
                         else [node.module])
            else:
                names = []
            bad += [f"{path.name}: {name}" for name in names
                    if name.split(".")[0] == "gpunn"
                    and not any(name == a or name.startswith(a + ".") for a in allowed)]
    assert not bad, f"kernels import above themselves: {bad}"


@pytest.mark.parametrize("first, second", [("tanh", "sigmoid"), ("relu", "tanh")])
def test_mixed_activation_stacks_train_like_pytorch(first, second):
    """The measurement that found the bug: five full-batch steps against torch's autograd."""
    torch = pytest.importorskip("torch")
    fns = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}
    net = gpunn.Network([FullyConnected(12, 9, first), FullyConnected(9, 7, second),
                         Softmax(7, 3)], cost="log-likelihood", seed=1, backend="cpu")
    ws = [torch.tensor(p.copy(), requires_grad=True) for p in net.weights + net.biases]
    X, y = _chunk(60)
    for _ in range(5):
        net.sgd((X, y), 1, 60, 0.5)
        a = torch.tensor(X)
        for i in range(3):
            z = a @ ws[i].T + ws[3 + i]
            a = z if i == 2 else fns[(first, second)[i]](z)
        loss = torch.nn.functional.cross_entropy(a, torch.tensor(y))
        grads = torch.autograd.grad(loss, ws)
        with torch.no_grad():
            for p, g in zip(ws, grads):
                p -= 0.5 * g
    for i, w in enumerate(net.weights):
        assert_matches(f"w[{i}] vs torch", w, ws[i].detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cost, output", [("cross-entropy", "sigmoid"),
                                          ("log-likelihood", "softmax")])
def test_saturated_outputs_report_the_true_cost_without_warnings(cost, output):
    """Outputs driven to exactly 0 and 1 in float32 (z = ±60): the cost the loop reports is
    the true one, from the logits, with no warning and no false divergence."""
    import warnings

    last = Softmax(5, 3) if output == "softmax" else FullyConnected(5, 3, "sigmoid")
    net = gpunn.Network([FullyConnected(4, 5, "sigmoid"), last], cost=cost, seed=0,
                        backend="cpu")
    net.layers[0].w[...], net.layers[0].b[...] = 0.0, 10.0   # hidden a = σ(10) ≈ 1
    net.layers[1].w[...] = np.array([[12.0] * 5, [-12.0] * 5, [-12.0] * 5])  # z = ±60
    net.layers[1].b[...] = 0.0
    X, y = np.zeros((6, 4), np.float32), np.array([1, 1, 1, 0, 0, 2])
    a = net.feedforward(X)
    assert (a == 1).any() or (a == 0).any()  # really saturated, as float32 rounds
    z = np.array([60.0, -60.0, -60.0])
    Y = np.eye(3)[y]
    if cost == "cross-entropy":  # Σ softplus(z) − y·z, per example, in float64
        expect = (np.logaddexp(0, z) * np.ones_like(Y) - Y * z).sum(axis=1).mean()
    else:  # logsumexp(z) − z_y
        expect = (np.log(np.exp(z - z.max()).sum()) + z.max() - z[y]).mean()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = net.sgd((X, y), 1, 6, 1e-9, evaluation_data=(X, y),
                          monitor_evaluation_cost=True)
    assert history.stop_reason == "completed"
    assert history[0]["evaluation_cost"] == pytest.approx(expect, rel=1e-3)


def test_a_bad_label_recorded_on_the_device_stops_after_the_chunk_with_weights_kept(
        monkeypatch):
    # On a GPU the softmax records a bad label in the step's flag instead of waiting; the
    # loop reads it with its one finiteness check per chunk and leaves the chunk undone.
    net = gpunn.Network([4, 3], cost="log-likelihood", seed=0, backend="cpu")
    xent = net.backend.kernel("softmax_cross_entropy")
    real = xent.forward

    def recording(logits, labels, flag=None):  # what the CUDA kernel does with label 7
        flag[...] = (1, 7)
        return real(logits, labels % 3, flag)

    monkeypatch.setattr(type(net.backend), "kernel_backend", property(lambda self: "cupy"))
    monkeypatch.setattr(xent, "forward", recording)
    step = LayerStep(net, SGD(0.1), track=True)
    assert step.label_flag is not None and not step.label_flag.any()
    r = np.random.default_rng(0)
    X, y = r.random((20, 4)).astype(np.float32), r.integers(0, 3, 20)
    before = [w.copy() for w in net.weights]
    with pytest.raises(ConfigError, match=r"labels in \[0, K\)=\[0, 3\); received label 7"):
        gpunn.train.fit(net, (X, y), 1, 10, SGD(0.1), track_training=True)
    assert all(np.array_equal(a, b) for a, b in zip(net.weights, before))


def test_tracked_sums_and_top1_counts_are_read_once_an_epoch():
    # LayerStep returns device sums (0-d arrays, not Python numbers it had to wait for)
    net = gpunn.Network([4, 3], cost="log-likelihood", seed=0, backend="cpu")
    r = np.random.default_rng(1)
    X, y = r.random((20, 4)).astype(np.float32), r.integers(0, 3, 20)
    cost_sum, correct = LayerStep(net, SGD(0.1), track=True).run(X, y, 10)
    assert type(cost_sum) is np.float64 and type(correct) is np.int64, (cost_sum, correct)


class _DeviceArray:
    """A CuPy array as NumPy sees it: ``get()`` copies to the host, and ``np.asarray`` refuses
    (CuPy's words), so code that converts implicitly fails as on a GPU."""

    __module__ = "cupy._core.core"

    def __init__(self, a):
        self._a = a
        self.shape, self.ndim, self.dtype = a.shape, a.ndim, a.dtype

    def get(self):
        return self._a.copy()

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use "
                        "`.get()` to construct a NumPy array explicitly.")

    def __len__(self):
        return len(self._a)


def test_cupy_arrays_as_training_and_evaluation_data():
    r = np.random.default_rng(2)
    X, y = r.random((30, 4)).astype(np.float32), r.integers(0, 3, 30)
    results = []
    for data in ((X, y), (_DeviceArray(X), _DeviceArray(y))):
        net = gpunn.Network([4, 3], cost="log-likelihood", seed=0, backend="cpu")
        history = gpunn.train.fit(net, data, 2, 5, SGD(0.1), evaluation_data=data,
                                  monitor_evaluation_cost=True)
        results.append((history.series("evaluation_cost"), [w.copy() for w in net.weights]))
    assert results[0][0] == results[1][0]
    assert all(np.array_equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_eta_is_a_python_float_however_it_is_given():
    # NEP 50: a NumPy float64 eta times float32 gradients makes float64 temporaries
    opt = SGD(np.float64(0.5), lmbda=np.float64(0.1), momentum=np.float32(0.5))
    assert type(opt.eta) is float and type(opt.lmbda) is float and type(opt.momentum) is float
    opt.eta = np.float64(0.25)  # as a schedule or a callback might set it
    assert type(opt.eta) is float and opt.eta == 0.25
    opt = SGD(np.float64(1.0))
    opt.eta = np.float64(0.25)
    net = gpunn.Network([4, 3], cost="log-likelihood", seed=0, backend="cpu")
    r = np.random.default_rng(3)
    net.train_batch(net.backend.asarray(r.random((5, 4))), r.integers(0, 3, 5))
    grads = [layer.nabla_w.copy() for layer in net.layers]
    w = [layer.w.copy() for layer in net.layers]
    opt.step(net.layers, net.xp)
    for layer, w0, g in zip(net.layers, w, grads):
        assert layer.w.dtype == np.float32
        assert np.array_equal(layer.w, w0 - np.float32(0.25) * g)  # float32 arithmetic


def test_a_layer_step_on_the_gpu_stand_in_never_waits_for_the_gpu(monkeypatch):
    # The CuPy kernels and the loop's step on the CPU stand-in for CuPy, whose arrays count
    # every host read: loss, bad-label flag, top-1 counts and dropout masks stay on the device.
    import importlib.util
    import types

    from gpunn.backend import Backend
    from gpunn.kernels import registry

    path = Path(__file__).parent / "kernels" / "cuda_on_cpu.py"
    spec = importlib.util.spec_from_file_location("cuda_on_cpu", path)
    cuda_on_cpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cuda_on_cpu)
    if cuda_on_cpu.compiler() is None:
        pytest.skip("needs a host C++ compiler (g++) for the CUDA sources")
    cuda_on_cpu.install(monkeypatch, strict=True)
    monkeypatch.setattr(registry, "_LOADED", {})  # stand-in kernels stay in this test
    import cupy

    cupy.__getattr__ = lambda name: getattr(np, name)  # the rest of xp: NumPy's
    seeds = []

    class RandomState:  # cuRAND's, drawing on the "device"
        def __init__(self, seed, method):
            seeds.append(seed)
            self.gen = np.random.default_rng(seed)

        def random_sample(self, size, dtype):
            return self.gen.random(size, dtype=dtype).view(cuda_on_cpu.DeviceArray)

    cupy.random = types.SimpleNamespace(RandomState=RandomState)
    cupy.cuda.curand = types.SimpleNamespace(CURAND_RNG_PSEUDO_PHILOX4_32_10=104)
    gpu = Backend("cupy", cupy, "cuda:0")
    net = gpunn.Network([FullyConnected(6, 5, dropout=0.5), Softmax(5, 3)],
                        cost="log-likelihood", seed=0, backend=gpu)
    r = np.random.default_rng(0)
    X, y = gpu.asarray(r.random((8, 6))), cupy.asarray(r.integers(0, 3, 8))
    before = cuda_on_cpu.DeviceArray.syncs
    cost_sum, correct = LayerStep(net, SGD(0.1), track=True).run(X, y, 4)
    assert cuda_on_cpu.DeviceArray.syncs == before, "a step waited for the GPU"
    assert isinstance(cost_sum, cuda_on_cpu.DeviceArray) and cost_sum.shape == ()
    assert isinstance(correct, cuda_on_cpu.DeviceArray) and 0 <= int(correct) <= 8
    assert len(seeds) == 2  # one device draw of dropout per mini-batch, seeded from the host
    assert np.isfinite(float(cost_sum))
