"""The book's network: feedforward, backpropagation and mini-batch SGD (chapters 1–3).

A :class:`Network` is a stack of layers on one backend. ``Network([784, 30, 10])`` builds
chapter 1's network of sigmoid neurons; the keyword arguments turn on each chapter-3
improvement. Examples are rows: ``X`` has shape (N, n_in) and ``feedforward`` returns
(N, n_out); the weights keep the book's shape (n_out, n_in), so z = X Wᵀ + b.

The training loop (:meth:`Network.sgd`) follows ``network2.py``: shuffle, split into
mini-batches, backpropagate the whole mini-batch at once (no per-example loop), update with
L2/L1 weight decay and optional momentum, and monitor cost and accuracy per epoch. It returns
a :class:`History` and reports through callbacks; it never prints.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from gpunn import backend as backend_module
from gpunn import costs
from gpunn.errors import ConfigError, TrainingDiverged
from gpunn.layers import FullyConnected, Layer, _check_dropout

__all__ = ["Network", "History"]

# Examples converted to float32 and moved to the device at a time: large enough to amortise
# the conversion, small enough to keep memory flat (1,000 MNIST images = 3 MB).
CHUNK = 1000
EVAL_BATCH = 2000  # bounded memory: 2,000 images at a time (6 MB for MNIST)
ON_NAN = ("stop", "skip-batch", "halve-eta")  # what sgd does about a non-finite weight


@dataclass
class History:
    """What :meth:`Network.sgd` did: one record per epoch, and why it stopped."""

    epochs: list = field(default_factory=list)
    stop_reason: str = "completed"

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, i):
        return self.epochs[i]

    def series(self, key: str) -> list:
        """The values of ``key`` (e.g. "evaluation_accuracy") over the epochs."""
        return [e.get(key) for e in self.epochs]

    def to_dict(self) -> dict:
        return {"epochs": list(self.epochs), "stop_reason": self.stop_reason}


class _Arrays:
    """Adapts an (X, y) pair of arrays to the Split interface used by training."""

    def __init__(self, X, y):
        self._X = np.asarray(X)
        self.labels = np.asarray(y)
        if self.labels.ndim == 2:  # one-hot targets, as in the book's training_data
            self.labels = self.labels.argmax(axis=1)
        if self._X.ndim != 2 or len(self._X) != len(self.labels):
            raise ConfigError(
                f"data must be X of shape (N, n_in) with N labels; received "
                f"X.shape={self._X.shape} and {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def x(self, idx=None, dtype=np.float32):
        X = self._X if idx is None else self._X[idx]
        return X.astype(dtype, copy=False)


def as_split(data):
    """A training/evaluation set as an object with ``x(idx)``, ``labels`` and ``len``."""
    if hasattr(data, "x") and hasattr(data, "labels"):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return _Arrays(*data)
    raise ConfigError(
        "data must be a gpunn.data Split or a pair (X, y) with X of shape (N, n_in) and y "
        f"labels of shape (N,); received {type(data).__name__}"
    )


class Network:
    """A network of layers: ``Network([784, 30, 10])`` or ``Network([ConvPool(...), ...])``.

    Args:
        sizes: neurons per layer, input first, e.g. ``[784, 30, 10]`` (the book's fully
            connected network), or a list of layers from :mod:`gpunn.layers` (network3's
            style: ``[ConvPool(1, 20), FullyConnected(2880, 100), Softmax(100, 10)]``;
            ``layers=`` says the same by keyword).
        cost: "quadratic" (chapter 1), "cross-entropy" or "log-likelihood" (softmax output).
        activation: hidden-layer activation for a size list: "sigmoid", "tanh", "relu",
            "linear" or "step".
        output_activation: for a size list; defaults to the cost's partner (sigmoid, or
            softmax for log-likelihood).
        init: "default" (weights N(0, 1/n_in)), "large" (N(0, 1), chapter 1) or "network3".
        dropout: for a size list, the probability of dropping each hidden unit in training.
        seed: seeds initialisation, shuffling and dropout; the same seed gives the same
            weights on CPU and GPU, and bit-identical training on the CPU.
        backend: a :class:`gpunn.backend.Backend` or a device string ("auto", "cpu", "cuda").
        dtype: float32 (default) or float64 (for gradient checks).
        input_shape: per-example input shape, e.g. (1, 28, 28); needed when the first layer
            is convolutional (flat rows of 784 pixels are reshaped to it).
    """

    def __init__(self, sizes=None, cost="quadratic", activation="sigmoid",
                 output_activation=None, init="default", dropout=0.0, seed=None,
                 backend="auto", dtype=np.float32, input_shape=None, *, layers=None):
        self.backend = (backend if isinstance(backend, backend_module.Backend)
                        else backend_module.select(backend))
        self.xp = self.backend.xp
        self.dtype = np.dtype(dtype)
        self.cost = costs.get(cost)
        self.init = init
        self.seed = seed
        if (sizes is None) == (layers is None):
            raise ConfigError("give a Network either sizes (e.g. [784, 30, 10]) or layers")
        layers = list(sizes if layers is None else layers)
        if layers and all(isinstance(s, (int, np.integer)) for s in layers):
            self.sizes = [int(s) for s in layers]
            if len(self.sizes) < 2 or min(self.sizes) < 1:
                raise ConfigError(f"sizes must list at least two layer sizes, each >= 1; "
                                  f"received {self.sizes}")
            output_activation = output_activation or self.cost.default_output
            last = len(self.sizes) - 2
            _check_dropout(dropout)
            self.layers = [
                FullyConnected(n_in, n_out, activation if i < last else output_activation,
                               dropout if i > 0 else 0.0)
                for i, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:]))
            ]
        elif layers and all(isinstance(layer, Layer) for layer in layers):
            self.sizes = None
            self.layers = layers
        else:
            raise ConfigError("a Network is built from layer sizes (e.g. [784, 30, 10]) or a "
                              f"list of gpunn.layers layers; received {layers!r}")
        if input_shape is None:
            n_in = getattr(self.layers[0], "n_in", None)
            if n_in is None:
                raise ConfigError(
                    f"a network that starts with {self.layers[0]!r} needs input_shape="
                    f"(C, H, W), e.g. input_shape=(1, 28, 28) for MNIST"
                )
            input_shape = (n_in,)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.n_in = int(np.prod(self.input_shape))
        self.rng = self.backend.rng(seed)
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.build(shape, self.backend, self.rng, init, self.dtype)
            layer.output_shape = shape
        self.output_shape = shape
        if len(shape) != 1:
            raise ConfigError(f"the last layer must give one vector per example (N, n_out); "
                              f"{self.layers[-1]!r} gives {shape}")
        self.n_out = shape[0]
        out = self.layers[-1]
        self.cost.check_output(out.activation if hasattr(out, "activation") else None)
        # log-likelihood on a softmax layer: the fused softmax-cross-entropy kernel
        self._fused = (self.cost.name == "log-likelihood"
                       and isinstance(out, FullyConnected))
        self._eye = self.xp.eye(self.n_out, dtype=self.dtype)
        self.velocities = None

    # -- the book's attributes -------------------------------------------------------------
    @property
    def weights(self) -> list:
        """``weights[l]`` of every layer with parameters; (n_out, n_in) as in the book."""
        return [layer.w for layer in self.layers if layer.param_groups()]

    @property
    def biases(self) -> list:
        return [layer.b for layer in self.layers if layer.param_groups()]

    @property
    def num_layers(self) -> int:
        return len(self.layers) + 1

    @property
    def num_params(self) -> int:
        return sum(layer.num_params for layer in self.layers)

    @property
    def dropout(self) -> float:
        """The largest dropout probability of any layer (0 when none drops)."""
        return max(layer.dropout for layer in self.layers)

    def config(self) -> dict:
        """The architecture, enough to rebuild the network (see ``gpunn.load``)."""
        config = {
            "layers": [layer.config() for layer in self.layers],
            "input_shape": list(self.input_shape),
            "cost": self.cost.name,
            "init": self.init,
            "seed": self.seed,
        }
        if self.sizes is not None:
            config["sizes"] = self.sizes
        return config

    def __repr__(self) -> str:
        what = self.sizes if self.sizes is not None else f"{len(self.layers)} layers"
        return (f"Network({what}, cost={self.cost.name!r}, "
                f"backend={self.backend.name!r}, params={self.num_params:,})")

    def summary(self) -> list[dict]:
        """One row per layer: its description, output shape and parameter counts."""
        rows = []
        for layer in self.layers:
            groups = layer.param_groups()
            weights = sum(int(np.prod(p.shape)) for p, _, decays in groups if decays)
            biases = sum(int(np.prod(p.shape)) for p, _, decays in groups if not decays)
            rows.append({"layer": repr(layer), "output_shape": layer.output_shape,
                         "weights": weights, "biases": biases})
        return rows

    # -- forward and backward --------------------------------------------------------------
    def _input(self, X):
        backend_module.check_same_module(self.xp, X, where="Network")
        X = self.xp.asarray(X, dtype=self.dtype)
        if X.ndim == 1 or X.shape == self.input_shape:
            X = X[None]
        n = X.shape[0]
        if int(np.prod(X.shape[1:])) != self.n_in or (X.ndim > 2
                                                      and X.shape[1:] != self.input_shape):
            want = ", ".join(map(str, self.input_shape))
            raise ConfigError(f"the network expects X of shape (N, {self.n_in}) or "
                              f"(N, {want}); received X.shape={tuple(X.shape)}")
        return X.reshape((n,) + self.input_shape)

    def feedforward(self, X, train: bool = False):
        """Output activations (N, n_out) for inputs X of shape (N, n_in)."""
        a = self._input(X)
        for layer in self.layers:
            a = layer.forward(a, train, self.rng)
        return a

    def _targets(self, y):
        """One-hot rows for integer labels (N,), or y itself when already (N, n_out)."""
        y = self.xp.asarray(y)
        if y.ndim == 1:
            return self._eye[y]
        return y.astype(self.dtype, copy=False)

    def _backprop(self, X, Y, scale: float):
        """Forward then backward over the mini-batch; sets each layer's gradients to
        ``scale`` times the summed gradient (scale=1/m gives the mean)."""
        a = X
        for layer in self.layers:
            a = layer.forward(a, True, self.rng)
        out = self.layers[-1]
        if self._fused:
            # softmax + log-likelihood from the logits in one kernel: δ = (p − onehot)
            sxe = self.backend.kernel("softmax_cross_entropy")
            labels = Y.argmax(axis=1)
            _, out._a = sxe.forward(out._z, labels)
            delta = sxe.backward(out._a, labels, scale=scale * X.shape[0])
        else:
            delta = self.cost.delta(out._z, a, Y, out.activation)
            delta *= scale
        grad = out.backward_delta(delta, need_grad_input=len(self.layers) > 1)
        for i in range(len(self.layers) - 2, -1, -1):
            grad = self.layers[i].backward(grad, need_grad_input=i > 0)
        return out._a

    def backprop(self, X, y):
        """Gradient of the mean cost over the mini-batch (no regularisation term).

        X: (m, n_in); y: labels (m,) or one-hot targets (m, n_out). Returns
        ``(nabla_b, nabla_w)`` shaped like ``biases`` and ``weights`` (BP1–BP4, whole batch).
        Dropout, if set, is applied as in training.
        """
        X = self._input(X)
        self._backprop(X, self._targets(y), 1.0 / X.shape[0])
        layers = [layer for layer in self.layers if layer.param_groups()]
        return [layer.nabla_b for layer in layers], [layer.nabla_w for layer in layers]

    def gradients(self, X, y, lmbda: float = 0.0, l1: float = 0.0, n: int | None = None):
        """Gradient of the regularised cost C = mean cost + (λ/2n)Σw² + (λ₁/n)Σ|w|.

        ``n`` is the training-set size (defaults to the batch size). This is the gradient
        that :meth:`update_mini_batch` descends; biases are not regularised.
        """
        nabla_b, nabla_w = self.backprop(X, y)
        n = n or len(X)
        nabla_w = [gw + (lmbda / n) * w + (l1 / n) * self.xp.sign(w)
                   for gw, w in zip(nabla_w, self.weights)]
        return nabla_b, nabla_w

    # -- training ---------------------------------------------------------------------------
    def init_velocities(self) -> None:
        """Momentum buffers, one per parameter, zero (kept across ``sgd`` calls)."""
        if self.velocities is None:
            self.velocities = [[self.xp.zeros_like(p) for p, _, _ in layer.param_groups()]
                               for layer in self.layers]

    def update_mini_batch(self, X, Y, eta: float, lmbda: float = 0.0, n: int = 1,
                          l1: float = 0.0, momentum: float = 0.0) -> None:
        """One SGD step on mini-batch (X, Y) with Y one-hot; ``n`` is the training-set size.

        w ← w − η(∇C + (λ/n)w + (λ₁/n)sgn w), b ← b − η∇C (biases are not decayed);
        with momentum μ, v ← μv − η(...), w ← w + v.
        """
        self._backprop(X, Y, 1.0 / X.shape[0])
        decay = 1.0 - eta * lmbda / n
        xp = self.xp
        for i, layer in enumerate(self.layers):
            for k, (param, grad, decays) in enumerate(layer.param_groups()):
                if decays and l1:
                    grad += (l1 / n) * xp.sign(param)
                if momentum:
                    v = self.velocities[i][k]
                    if decays and lmbda:
                        grad += (lmbda / n) * param
                    v *= momentum
                    v -= eta * grad
                    param += v
                else:
                    if decays and lmbda:
                        param *= decay
                    grad *= eta
                    param -= grad

    def sgd(self, training_data, epochs: int, mini_batch_size: int, eta: float,
            lmbda: float = 0.0, evaluation_data=None, *, l1: float = 0.0,
            momentum: float = 0.0, monitor_evaluation_cost: bool = False,
            monitor_evaluation_accuracy: bool = True, monitor_training_cost: bool = False,
            monitor_training_accuracy: bool = False, early_stopping_n: int = 0,
            schedule_n: int = 0, schedule_floor: float = 1 / 128,
            on_epoch=None, on_progress=None, regularisation_n: int | None = None,
            resume: dict | None = None, on_checkpoint=None, checkpoint_every: int = 0,
            should_stop=None, on_nan: str = "stop") -> History:
        """Mini-batch stochastic gradient descent, as in the book's ``network2.SGD``.

        training_data / evaluation_data: a ``gpunn.data`` Split or a pair (X, y).
        early_stopping_n: stop when evaluation accuracy has not improved in that many epochs.
        schedule_n: halve η whenever evaluation accuracy has not improved in that many
            epochs; stop when η falls below ``schedule_floor`` times its first value.
        on_epoch(record): called after each epoch with the epoch's record (a dict).
        on_progress(done, total): called as examples of the epoch are processed.
        regularisation_n: the n in the L2/L1 terms λ/n (default: the training-set size;
            network3 uses the number of mini-batches).

        Resuming (see :mod:`gpunn.checkpoint` for files):
        on_checkpoint(state): called with the resumable state (a dict of JSON values and
            arrays, see :meth:`_resumable_state`) after every epoch, every
            ``checkpoint_every`` mini-batches (0: never mid-epoch) and when ``should_stop``
            stops training. Its arrays are live: copy or write them before returning.
        resume: such a state; training continues from it exactly. On the CPU the result is
            bit-identical to a run that was never stopped; on a GPU equal within float
            rounding. η, the schedule's bookkeeping and the history come from the state.
        should_stop(): polled after every chunk of ~1,000 examples (a whole number of
            mini-batches); when it returns True training stops there with
            ``history.stop_reason == "interrupted"`` (after a last ``on_checkpoint``).
        on_nan: what a non-finite weight does (checked once per chunk): "stop" raises
            :class:`TrainingDiverged` naming the epoch, mini-batch and η, with the network
            left at its last finite weights; "skip-batch" undoes and skips the mini-batches
            that made them; "halve-eta" undoes the chunk and retries it at η/2.
        """
        _check_positive_int("epochs", epochs, allow_zero=True)
        _check_positive_int("mini_batch_size", mini_batch_size)
        _check_positive_int("checkpoint_every", checkpoint_every, allow_zero=True)
        for name, value in (("eta", eta), ("lmbda", lmbda), ("l1", l1)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0; received {value!r}")
        if eta <= 0:
            raise ConfigError(f"eta must be > 0; received {eta!r}")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1); received {momentum!r}")
        if (early_stopping_n or schedule_n) and evaluation_data is None:
            raise ConfigError("early stopping and the eta schedule need evaluation_data")
        if on_nan not in ON_NAN:
            raise ConfigError(f"on_nan must be one of {', '.join(ON_NAN)}; received {on_nan!r}")

        train = as_split(training_data)
        evaluation = as_split(evaluation_data) if evaluation_data is not None else None
        n = len(train)
        if n == 0:
            raise ConfigError("training_data is empty")
        n_reg = regularisation_n or n
        xp, backend = self.xp, self.backend
        # What a resumed run must share with the run that wrote the state.
        settings = {"n": n, "mini_batch_size": mini_batch_size, "lmbda": lmbda, "l1": l1,
                    "momentum": momentum, "regularisation_n": n_reg,
                    "early_stopping_n": early_stopping_n, "schedule_n": schedule_n,
                    "schedule_floor": schedule_floor}
        run = _Run(history=History(), eta=eta, eta0=eta)
        if resume is not None:
            self._restore(resume, settings, run)
            if run.history.stop_reason not in ("completed", "interrupted"):
                return run.history  # it had stopped by itself (early stopping, schedule)
            run.history.stop_reason = "completed"
        # Whole chunks of SGD steps go through the dense_sgd kernel: one Numba call per chunk
        # on the CPU, the NumPy reference (update_mini_batch in a loop) wherever it can't.
        trainer = backend.kernel("dense_sgd")
        if not trainer.supports(self, self.dropout):
            trainer = backend.kernel("dense_sgd", reference=True)
        state = trainer.prepare(self, momentum)
        history = run.history
        chunk = max(mini_batch_size, (CHUNK // mini_batch_size) * mini_batch_size)

        def checkpoint():
            if on_checkpoint is not None:
                on_checkpoint(self._resumable_state(run, settings))

        def train_steps(lo, hi):
            """SGD over examples order[lo:hi] of the epoch, then the finiteness check."""
            idx = run.order[lo:hi]
            Xc = backend.asarray(self._rows(train, idx), dtype=self.dtype)
            Xc = Xc.reshape((len(idx),) + self.input_shape)
            Yc = self._eye[xp.asarray(train.labels[idx])]
            args = (lmbda, l1, n_reg, momentum)
            saved = self._snapshot()
            trainer.run(state, Xc, Yc, mini_batch_size, run.eta, *args)
            if not self._finite():
                self._after_nan(trainer, state, saved, Xc, Yc, mini_batch_size, args, run,
                                lo, on_nan)

        for epoch in range(run.epoch + 1, epochs + 1):
            start = time.perf_counter()
            if run.order is None:  # a new epoch (a resumed one keeps its order and progress)
                run.order, run.done, run.seconds = self.rng.permutation(n), 0, 0.0
            stop = False
            while run.done < n:
                hi = min(run.done + chunk, n)
                if checkpoint_every:  # end the chunk at the next checkpoint step
                    due = (run.steps // checkpoint_every + 1) * checkpoint_every
                    hi = min(hi, run.done + (due - run.steps) * mini_batch_size)
                train_steps(run.done, hi)
                run.steps += -(-(hi - run.done) // mini_batch_size)
                run.done = hi
                if on_progress is not None:
                    on_progress(hi, n)
                stop = should_stop is not None and bool(should_stop())
                if hi < n and (stop or (checkpoint_every
                                        and run.steps % checkpoint_every == 0)):
                    run.seconds += time.perf_counter() - start
                    start = time.perf_counter()
                    checkpoint()
                if stop and hi < n:
                    history.stop_reason = "interrupted"
                    return history
            backend.synchronize()
            record = {"epoch": epoch, "seconds": run.seconds + time.perf_counter() - start,
                      "eta": run.eta}
            if run.skipped:
                record["skipped_batches"], run.skipped = run.skipped, 0
            if monitor_training_cost or monitor_training_accuracy:
                record.update(self._monitor(train, "training", monitor_training_cost,
                                            monitor_training_accuracy, lmbda, l1, n_reg))
            if evaluation is not None and (monitor_evaluation_cost or monitor_evaluation_accuracy
                                           or early_stopping_n or schedule_n):
                record.update(self._monitor(evaluation, "evaluation", monitor_evaluation_cost,
                                            True, lmbda, l1, n_reg))
            for key in ("training_cost", "evaluation_cost"):
                if key in record and not math.isfinite(record[key]):
                    raise TrainingDiverged(
                        f"training diverged: the {key.replace('_', ' ')} is "
                        f"{record[key]} after epoch {epoch} (eta {run.eta:g}); try a smaller "
                        f"eta", epoch, None, run.eta)
            history.epochs.append(record)
            run.epoch, run.order = epoch, None
            if on_epoch is not None:
                on_epoch(record)
            if early_stopping_n or schedule_n:
                acc = record["evaluation_accuracy"]
                if acc > run.best:
                    run.best, run.best_epoch = acc, epoch
                elif early_stopping_n and epoch - run.best_epoch >= early_stopping_n:
                    history.stop_reason = (f"early stopping: no improvement in "
                                           f"{early_stopping_n} epochs")
                elif schedule_n and epoch - run.best_epoch >= schedule_n:
                    run.eta /= 2
                    run.best_epoch = epoch  # wait another schedule_n epochs at the new eta
                    if run.eta < run.eta0 * schedule_floor:
                        history.stop_reason = (f"eta schedule: eta fell below eta0 x "
                                               f"{schedule_floor:g}")
            checkpoint()
            if history.stop_reason != "completed":
                break
            if stop and epoch < epochs:
                history.stop_reason = "interrupted"
                break
        return history

    def _rows(self, data, idx):
        """Examples ``idx`` of ``data`` as float rows (N, n_in): compact uint8 images go
        through the gather_rows kernel, anything else through ``data.x``."""
        images = getattr(data, "images", None)
        if (self.dtype == np.float32 and isinstance(images, np.ndarray)
                and images.dtype == np.uint8 and images.ndim == 2):
            return self.backend.kernel("gather_rows").forward(images, idx, data.scale)
        return data.x(idx)

    # -- resumable state ---------------------------------------------------------------------
    def _resumable_state(self, run: _Run, settings: dict) -> dict:
        """What ``sgd(resume=...)`` needs to continue exactly: JSON values and arrays.

        ``epoch``: epochs completed; ``examples_done``/``order``: progress through the
        current epoch and its permutation (None at an epoch's end); ``steps``: mini-batches
        since the start; ``eta``, ``eta0``, ``best``, ``best_epoch``: the schedule and early
        stopping; ``history``; ``rng``: the generator's state; ``velocities``: momentum
        buffers (None without momentum); ``settings`` and ``architecture`` to check a resume.
        """
        return {
            "kind": "gpunn.Network.sgd", "version": 1,
            "epoch": run.epoch, "examples_done": run.done if run.order is not None else 0,
            "order": run.order, "steps": run.steps, "epoch_seconds": run.seconds,
            "eta": run.eta, "eta0": run.eta0, "best": run.best, "best_epoch": run.best_epoch,
            "history": run.history.to_dict(), "rng": self.rng.state,
            "velocities": self.velocities, "settings": settings,
            "architecture": self.config()["layers"],
        }

    def _restore(self, state: dict, settings: dict, run: _Run) -> None:
        """Load ``state`` (from :meth:`_resumable_state`) into this network and ``run``."""
        try:
            if state.get("kind") != "gpunn.Network.sgd" or state.get("version") != 1:
                raise ConfigError(f"resume expects the state Network.sgd gives "
                                  f"on_checkpoint; received kind {state.get('kind')!r}")
            mine = self.config()["layers"]
            if state["architecture"] != mine:
                raise ConfigError(f"cannot resume: the state is for the network "
                                  f"{_describe(state['architecture'])} but this network is "
                                  f"{_describe(mine)}")
            changed = [f"{k}={state['settings'].get(k)!r} in the state, {v!r} now"
                       for k, v in settings.items() if state["settings"].get(k) != v]
            if changed:
                raise ConfigError("cannot resume with different training settings: "
                                  + "; ".join(changed))
            self.rng.set_state(state["rng"])
            if state["velocities"] is None:
                self.velocities = None
            else:
                self.velocities = [[self.backend.asarray(v, dtype=self.dtype) for v in layer]
                                   for layer in state["velocities"]]
            run.history = History(list(state["history"]["epochs"]),
                                  state["history"]["stop_reason"])
            run.epoch, run.steps = int(state["epoch"]), int(state["steps"])
            run.eta, run.eta0 = float(state["eta"]), float(state["eta0"])
            run.best, run.best_epoch = float(state["best"]), int(state["best_epoch"])
            if state["order"] is not None:
                run.order = np.asarray(state["order"])
                run.done, run.seconds = int(state["examples_done"]), float(state["epoch_seconds"])
                if run.order.shape != (settings["n"],) or not 0 <= run.done <= settings["n"]:
                    raise ConfigError("the state's data order does not fit the training data")
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"resume: the state is incomplete or corrupt ({exc!r})") from exc

    # -- the divergence guard --------------------------------------------------------------
    def _params(self) -> list:
        """Every parameter and momentum buffer, the arrays training updates in place."""
        params = [p for layer in self.layers for p, _, _ in layer.param_groups()]
        if self.velocities is not None:
            params += [v for layer in self.velocities for v in layer]
        return params

    def _snapshot(self) -> list:
        return [p.copy() for p in self._params()]

    def _restore_snapshot(self, saved: list) -> None:
        for p, s in zip(self._params(), saved):
            p[...] = s  # in place: the trainer's state holds these very arrays

    def _finite(self) -> bool:
        """True when every parameter is finite; one reduction per array and one sync.

        A NaN or inf anywhere makes the array's sum non-finite (so can a finite sum over
        3.4e38, which is divergence too).
        """
        total = sum(p.sum(dtype=self.xp.float64) for p in self._params())
        return bool(self.xp.isfinite(total))

    def _after_nan(self, trainer, state, saved, Xc, Yc, mbs, args, run, lo, on_nan) -> None:
        """A chunk made a weight non-finite: undo it, then stop, skip or retry per ``on_nan``."""
        self._restore_snapshot(saved)
        if on_nan == "halve-eta":
            while True:
                run.eta /= 2
                if run.eta < run.eta0 * 2.0 ** -20:
                    break  # halving will not help: stop below
                trainer.run(state, Xc, Yc, mbs, run.eta, *args)
                if self._finite():
                    return
                self._restore_snapshot(saved)
        # Replay the chunk one mini-batch at a time to find (and maybe skip) the bad ones.
        for k in range(0, Xc.shape[0], mbs):
            saved = self._snapshot()
            trainer.run(state, Xc[k:k + mbs], Yc[k:k + mbs], mbs, run.eta, *args)
            if self._finite():
                continue
            self._restore_snapshot(saved)
            batch = (lo + k) // mbs + 1
            if on_nan == "skip-batch":
                run.skipped += 1
                continue
            raise TrainingDiverged(
                f"training diverged: a weight became NaN or infinite in mini-batch {batch} of "
                f"epoch {run.epoch + 1} (eta {run.eta:g}); the network keeps its last finite "
                f"weights; try a smaller eta, or on_nan='skip-batch' or 'halve-eta'",
                run.epoch + 1, batch, run.eta)

    # -- evaluation -------------------------------------------------------------------------
    def _monitor(self, data, prefix, want_cost, want_accuracy, lmbda, l1, n) -> dict:
        out = {}
        correct, total_cost = 0, 0.0
        for start in range(0, len(data), EVAL_BATCH):
            idx = np.arange(start, min(start + EVAL_BATCH, len(data)))
            a = self.feedforward(self.backend.asarray(self._rows(data, idx), dtype=self.dtype))
            labels = self.xp.asarray(data.labels[idx])
            if want_accuracy:
                correct += int((a.argmax(axis=1) == labels).sum())
            if want_cost:
                total_cost += self.cost.fn(a, self._eye[labels]) * len(idx)
        if want_cost:
            cost = total_cost / len(data)
            if lmbda:
                cost += 0.5 * (lmbda / n) * sum(float((w * w).sum()) for w in self.weights)
            if l1:
                cost += (l1 / n) * sum(float(abs(w).sum()) for w in self.weights)
            out[f"{prefix}_cost"] = cost
        if want_accuracy:
            out[f"{prefix}_accuracy"] = correct / len(data)
            out[f"{prefix}_correct"] = correct
        return out

    def accuracy(self, data) -> float:
        """Fraction of ``data`` (a Split or (X, y)) classified correctly."""
        data = as_split(data)
        return self._monitor(data, "", False, True, 0.0, 0.0, 1)["_accuracy"]

    def total_cost(self, data, lmbda: float = 0.0, n: int | None = None) -> float:
        """Mean cost over ``data`` plus the L2 term (λ/2n)Σw² when ``lmbda`` is given."""
        data = as_split(data)
        return self._monitor(data, "", True, False, lmbda, 0.0, n or len(data))["_cost"]

    def predict(self, X):
        """Most active output neuron for each row of X: labels (N,) on the backend."""
        return self.feedforward(X).argmax(axis=1)


@dataclass
class _Run:
    """Where one ``sgd`` call is: what a checkpoint records and a resume restores."""

    history: History
    eta: float
    eta0: float
    epoch: int = 0  # epochs completed
    order: np.ndarray | None = None  # this epoch's permutation, None between epochs
    done: int = 0  # examples of this epoch trained on
    steps: int = 0  # mini-batches since the start
    seconds: float = 0.0  # time spent in this epoch before a checkpoint
    best: float = -1.0
    best_epoch: int = 0
    skipped: int = 0  # mini-batches skipped this epoch (on_nan="skip-batch")


def _describe(layers: list) -> str:
    """A short name for a list of layer configs, e.g. 784-30-10 or Conv2D(...)-..."""
    if all(c.get("type") in ("fc", "softmax", "FullyConnected", "Softmax") and "n_in" in c
           for c in layers):
        return "-".join(str(v) for v in [layers[0]["n_in"]] + [c["n_out"] for c in layers])
    return " -> ".join(str(c) for c in layers)


def _check_positive_int(name, value, allow_zero=False) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):
        raise ConfigError(f"{name} must be an integer >= {0 if allow_zero else 1}; "
                          f"received {value!r}")

