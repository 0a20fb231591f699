"""The training loop: one for every network, command and device.

:func:`fit` runs epochs of seeded shuffling and mini-batch steps, evaluates, keeps a
:class:`History` and reports through callbacks: progress, checkpoints (a resumable state,
exact on the CPU), the η schedule and early stopping (:class:`Schedule`), top-k metrics, the
divergence guard (``on_nan``) and a stop request (``should_stop``, polled after every
chunk). ``Network.sgd`` (the book's chapters 1–6) and ``gpunn.imagenet.train`` (KSH 2012)
are configurations of it; every training command of the CLI runs through it.

Two things vary and are chosen once per run:

- the **data source**: arrays or a ``gpunn.data`` split (:class:`ArraySource`, rows
  gathered ~1,000 at a time), or an image folder read ahead by background threads
  (:class:`ImageSource`, one mini-batch at a time);
- the **step**: :class:`FusedDenseStep` (whole chunks of a fully connected stack in one
  call of the ``dense_sgd`` kernel: Numba on the CPU, one CUDA launch on CuPy) where it
  applies, else :class:`LayerStep` (backpropagation through the
  layers, then :class:`gpunn.optim.SGD`), for any stack on any backend; on several ranks
  (a ``comm`` of :mod:`gpunn.distributed`), :class:`DistributedStep`, which sums the
  ranks' gradients of each mini-batch in one all-reduce.

What it leaves out: printing (the CLI's callbacks print) and files (``on_checkpoint`` hands
the state to whoever stores it, see :mod:`gpunn.checkpoint`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from gpunn.distributed import Single
from gpunn.errors import ConfigError, TrainingDiverged

__all__ = ["History", "Schedule", "ArraySource", "ImageSource", "as_source", "LayerStep",
           "FusedDenseStep", "DistributedStep", "choose_step", "evaluate", "fit", "topk_correct"]

# Examples converted to float32 and moved to the device at a time: large enough to amortise
# the conversion, small enough to keep memory flat (1,000 MNIST images = 3 MB).
CHUNK = 1000
EVAL_BATCH = 2000  # bounded memory: 2,000 images at a time (6 MB for MNIST)
ON_NAN = ("stop", "skip-batch", "halve-eta")  # what the loop does about a non-finite weight
STATE_KIND, STATE_VERSION = "gpunn.Network.sgd", 1


@dataclass
class History:
    """What a training run did: one record (a dict) per epoch, and why it stopped."""

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


# -- η schedules and early stopping -----------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """When η changes and when training stops early, decided after each epoch.

    ``kind``: "constant"; "plateau" (η ÷ ``factor`` when evaluation accuracy has not
    improved for ``patience`` epochs; the book's chapter-3 schedule halves, KSH divide by
    10); "step" (η ÷ ``factor`` every ``every`` epochs, KSH's fixed steps). Training stops
    when η falls below ``floor`` × its first value (the book's 1/128), or, with
    ``early_stopping_n``, when accuracy has not improved in that many epochs.
    """

    kind: str = "constant"
    patience: int = 0
    factor: float = 2.0
    floor: float = 0.0
    every: int = 0
    early_stopping_n: int = 0

    KINDS = ("constant", "plateau", "step")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise ConfigError(f"schedule kind must be one of {', '.join(self.KINDS)}; "
                              f"received {self.kind!r}")
        for name in ("patience", "every", "early_stopping_n"):
            _check_int(name, getattr(self, name), allow_zero=True)
        if self.kind == "plateau" and self.patience < 1:
            raise ConfigError("a plateau schedule needs patience >= 1 epochs")
        if self.kind == "step" and self.every < 1:
            raise ConfigError("a step schedule needs every >= 1 epochs")
        if not (self.factor > 1 and 0 <= self.floor < 1):
            raise ConfigError(f"a schedule needs factor > 1 and floor in [0, 1); received "
                              f"factor={self.factor!r}, floor={self.floor!r}")

    @classmethod
    def book(cls, schedule_n: int = 0, floor: float = 1 / 128, early_stopping_n: int = 0):
        """Chapter 3: halve η after ``schedule_n`` epochs without improvement (0: never)."""
        if schedule_n:
            return cls("plateau", schedule_n, 2.0, floor, early_stopping_n=early_stopping_n)
        return cls(early_stopping_n=early_stopping_n)

    @property
    def watches_accuracy(self) -> bool:
        return self.kind == "plateau" or self.early_stopping_n > 0

    def settings(self) -> dict:
        return {"schedule": self.kind, **{k: v for k, v in asdict(self).items() if k != "kind"}}

    def after_epoch(self, run: _Run, epoch: int, accuracy) -> str | None:
        """Update ``run.eta`` and the bookkeeping; a stop reason, or None to go on."""
        if self.kind == "step" and epoch % self.every == 0:
            run.eta /= self.factor
        if not self.watches_accuracy:
            return None
        if accuracy > run.best:
            run.best, run.best_epoch = accuracy, epoch
        elif self.early_stopping_n and epoch - run.best_epoch >= self.early_stopping_n:
            n = self.early_stopping_n
            return f"early stopping: no improvement in {n} epoch{'s' * (n != 1)}"
        elif self.kind == "plateau" and epoch - run.best_epoch >= self.patience:
            run.eta /= self.factor
            run.best_epoch = epoch  # wait another `patience` epochs at the new eta
            if run.eta < run.eta0 * self.floor:
                return f"eta schedule: eta fell below eta0 x {self.floor:g}"
        return None


# -- data sources ------------------------------------------------------------------------------
class _Arrays:
    """Adapts an (X, y) pair of host arrays to the Split interface (``x(idx)``, ``labels``)."""

    def __init__(self, X, y):
        X, y = _host(X), _host(y)
        self._X, self.labels = X, y.argmax(axis=1) if y.ndim == 2 else y  # one-hot: the book's
        if self._X.ndim < 2 or len(self._X) != len(self.labels):
            raise ConfigError(f"data must be X of shape (N, n_in) with N labels; received "
                              f"X.shape={self._X.shape} and {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def x(self, idx=None, dtype=np.float32):
        X = self._X if idx is None else self._X[idx]
        return X.astype(dtype, copy=False)


def _host(a) -> np.ndarray:
    """A NumPy array of ``a`` (CuPy arrays come to the host: data is sliced there)."""
    get = getattr(a, "get", None)
    return np.asarray(get() if callable(get) and not isinstance(a, np.ndarray) else a)


def as_split(data):
    """A training/evaluation set as an object with ``x(idx)``, ``labels`` and ``len``."""
    if hasattr(data, "x") and hasattr(data, "labels"):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return _Arrays(*data)
    raise ConfigError(
        "data must be a gpunn.data Split or a pair (X, y) with X of shape (N, n_in) and y "
        f"labels of shape (N,); received {type(data).__name__}")


class ArraySource:
    """Examples held in memory (a Split or (X, y)): shuffled by the network's generator,
    gathered and converted to float ~1,000 at a time (uint8 images by the gather kernel)."""

    def __init__(self, data):
        self.split = as_split(data)

    def __len__(self) -> int:
        return len(self.split)

    def chunk_size(self, mini_batch_size: int) -> int:
        return max(mini_batch_size, (CHUNK // mini_batch_size) * mini_batch_size)

    def order(self, epoch: int, rng) -> np.ndarray:
        return rng.permutation(len(self.split))

    def rows(self, net, idx):
        """Examples ``idx`` as float rows (N, n_in) on the host."""
        images = getattr(self.split, "images", None)
        if (net.dtype == np.float32 and isinstance(images, np.ndarray)
                and images.dtype == np.uint8 and images.ndim == 2):
            return net.backend.kernel("gather_rows").forward(images, idx, self.split.scale)
        return self.split.x(idx)

    def load(self, net, epoch, order, lo, hi):
        """``(X, labels)`` of examples ``order[lo:hi]`` on the network's device."""
        idx = order[lo:hi]
        X = net.backend.asarray(self.rows(net, idx), dtype=net.dtype)
        return X.reshape((len(idx),) + net.input_shape), net.xp.asarray(self.split.labels[idx])

    def batches(self, net, batch_size=None):
        """Every example in order, ``batch_size`` (2,000) at a time, for evaluation."""
        batch_size = batch_size or EVAL_BATCH
        for start in range(0, len(self), batch_size):
            yield self.load(net, 0, np.arange(len(self)), start,
                            min(start + batch_size, len(self)))

    def close(self) -> None:
        pass


class ImageSource:
    """Images decoded ahead by background threads (:class:`gpunn.data.Prefetcher`).

    ``dataset`` has ``len`` and ``load(indices, rng) -> (X (n, C, H, W), y (n,))`` (an image
    folder split, :class:`gpunn.data.SyntheticImages`); one with ``normalise`` (an image
    folder) is loaded as uint8 crops, copied as such and normalised on the device. Epoch
    e's order and each batch's augmentation come from ``(seed, e)``, so a run resumed
    mid-epoch sees the batches the first one would have. The last partial batch is dropped
    (KSH's fixed batches).
    """

    def __init__(self, dataset, batch_size: int, seed: int = 0, workers: int = 2):
        from gpunn.data import Prefetcher

        if len(dataset) == 0:
            raise ConfigError("the image set is empty")
        self.dataset, self.workers = dataset, workers
        # A dataset that can normalise on a device (an image folder) hands over uint8 crops:
        # a quarter of the bytes to copy to the GPU, normalised there.
        self._uint8 = hasattr(dataset, "normalise")
        self._loading = (Loading(dataset, lambda idx, rng: dataset.load(idx, rng, uint8=True))
                         if self._uint8 else dataset)
        self.prefetcher = Prefetcher(self._loading, batch_size, shuffle=True, seed=seed,
                                     workers=workers, depth=max(2, workers),
                                     drop_last=len(dataset) >= batch_size)
        self.batch_size = batch_size
        self._n = len(self.prefetcher) * batch_size if len(dataset) >= batch_size \
            else len(dataset)
        self._epoch = self._next = self._batches = None

    def __len__(self) -> int:
        return self._n

    def chunk_size(self, mini_batch_size: int) -> int:
        return self.batch_size  # one mini-batch of images at a time, as they are decoded

    def order(self, epoch: int, rng) -> np.ndarray:
        return self.prefetcher.order(epoch - 1)[:self._n]

    def load(self, net, epoch, order, lo, hi):
        if self._batches is None or (self._epoch, self._next) != (epoch, lo):
            self.close()
            self._batches = self.prefetcher.epoch(epoch - 1, start=lo // self.batch_size)
            self._epoch = epoch
        X, y = next(self._batches)
        self._next = hi
        return self._to_device(net, X, y)

    def _to_device(self, net, X, y):
        if self._uint8:  # uint8 crosses; the device normalises (the same numbers as the host)
            X = self.dataset.normalise(net.backend.asarray(X, dtype=None), net.xp)
        return net.backend.asarray(X, dtype=net.dtype), net.xp.asarray(y)

    def batches(self, net, batch_size=None):
        """Every image in order (centre crops), a training batch at a time, for evaluation."""
        from gpunn.data import Prefetcher

        with Prefetcher(self._loading, batch_size or self.batch_size, shuffle=False,
                        workers=self.workers) as batches:
            for X, y in batches:
                yield self._to_device(net, X, y)

    def close(self) -> None:
        if self._batches is not None:
            self._batches.close()  # stops this epoch's loading threads
            self._batches = None


class Loading:
    """``dataset`` read through another ``load(indices, rng) -> (X, y)``, for a
    :class:`gpunn.data.Prefetcher`: e.g. an image folder's uint8 crops, or its ten crops."""

    def __init__(self, dataset, load):
        self.dataset, self.load = dataset, load

    def __len__(self) -> int:
        return len(self.dataset)


def as_source(data):
    """``data`` as a source for :func:`fit` and :func:`evaluate` (sources pass through)."""
    if isinstance(data, (ArraySource, ImageSource)):
        return data
    if hasattr(data, "load") and not hasattr(data, "x"):
        raise ConfigError("an image dataset trains through ImageSource(dataset, batch_size, "
                          "seed): its batches are read ahead by threads")
    return ArraySource(data)


# -- steps --------------------------------------------------------------------------------------
class LayerStep:
    """Backpropagation through the layers, then the optimiser: any stack, any backend.

    With ``track=True`` it also sums the cost and counts the correct top-1 answers of each
    mini-batch (the outputs before its update), as KSH report training figures. Nothing in
    a step waits for the GPU: the sums stay on the device (the loop reads them once an
    epoch), and on a GPU the softmax records a bad label in ``label_flag``, which the loop
    reads with its once-a-chunk finiteness check.
    """

    name = "layer-by-layer"

    def __init__(self, net, optimizer, track: bool = False):
        self.net, self.optimizer, self.track = net, optimizer, track
        self.label_flag = net.backend.label_flag()

    def run(self, X, labels, mini_batch_size: int):
        """Every mini-batch of the chunk in order; with ``track``, returns the summed cost
        and the count of correct top-1 outputs over the chunk (0-d arrays on the device),
        else None."""
        net, cost_sum, correct = self.net, 0.0, 0
        for k in range(0, X.shape[0], mini_batch_size):
            y = labels[k:k + mini_batch_size]
            out, cost = net.train_batch(X[k:k + mini_batch_size], y, want_cost=self.track,
                                        label_flag=self.label_flag)
            self.optimizer.step(net.layers, net.xp)
            if self.track:
                cost_sum = cost_sum + cost * len(y)
                correct = correct + topk_correct(out, y, 1).sum()
        return (cost_sum, correct) if self.track else None


class DistributedStep(LayerStep):
    """:class:`LayerStep` on ``comm.size`` ranks: each backpropagates its slice of every
    global mini-batch, and the ranks sum their gradients in one all-reduce a step.

    A mini-batch of m examples (rows ``k .. k + m`` of the chunk, the same on every rank)
    is cut into ``size`` slices; rank r's mean gradient over its m_r examples, times m_r,
    is its share of the batch's summed gradient. Every layer's shares are packed into one
    buffer, summed over the ranks, unpacked and divided by m: the mean gradient one process
    would compute, so the optimiser steps identically on every rank.
    """

    name = "data-parallel"

    def __init__(self, net, optimizer, comm, track: bool = False):
        super().__init__(net, optimizer, track)
        self.comm = comm

    def run(self, X, labels, mini_batch_size: int):
        from gpunn.distributed import pack, unpack

        net, xp, comm = self.net, self.net.xp, self.comm
        cost_sum, correct = 0.0, 0
        for k in range(0, X.shape[0], mini_batch_size):
            m = min(mini_batch_size, X.shape[0] - k)  # the last batch may be short
            lo, hi = k + m * comm.rank // comm.size, k + m * (comm.rank + 1) // comm.size
            if hi > lo:
                out, cost = net.train_batch(X[lo:hi], labels[lo:hi], want_cost=self.track,
                                            label_flag=self.label_flag)
            else:  # fewer examples than ranks: this rank adds nothing to the sum
                for layer in net.layers:
                    layer.zero_gradients()
            grads = [grad for layer in net.layers for _, grad, _ in layer.param_groups()]
            buffer = pack(grads, xp)
            buffer *= buffer.dtype.type(hi - lo)  # the slice's mean -> its share of the sum
            comm.all_reduce(buffer)
            buffer /= buffer.dtype.type(m)  # the batch's summed gradient -> its mean
            unpack(buffer, grads)
            self.optimizer.step(net.layers, xp)
            if self.track and hi > lo:
                cost_sum = cost_sum + cost * (hi - lo)
                correct = correct + topk_correct(out, labels[lo:hi], 1).sum()
        return (cost_sum, correct) if self.track else None


class FusedDenseStep:
    """Whole chunks of a float32 fully connected stack in one call of the ``dense_sgd``
    kernel (Numba on the CPU, one CUDA launch on CuPy): the same update as
    :class:`LayerStep` in ~10x fewer calls on the CPU, and on a GPU one launch a chunk
    instead of ~33 a mini-batch.

    The step never moves a network between devices: on CuPy the alternative is
    :class:`LayerStep` on the same GPU (~33 launches a mini-batch). Whether ``--device auto``
    should keep small nets on the CPU is the backend's choice, unchanged until
    ``benchmarks/gpu_check.sh`` has measured this step on a GPU. There, as in
    :class:`LayerStep`, a label outside ``[0, n_out)`` is recorded in ``label_flag`` (CuPy's
    indexing would wrap it silently), which the loop reads once a chunk."""

    name = "fused dense"

    def __init__(self, net, optimizer):
        self.net, self.optimizer = net, optimizer
        self.kernel = net.backend.kernel("dense_sgd")
        self.label_flag = net.backend.label_flag()
        opt = optimizer
        if opt.momentum:
            opt.init_velocities(net.layers, net.xp)
        vel = opt.velocities
        self.state = self.kernel.prepare(
            [layer.w for layer in net.layers], [layer.b for layer in net.layers],
            [layer.activation.name for layer in net.layers], net.cost.name,
            None if vel is None else [v[0] for v in vel],
            None if vel is None else [v[1] for v in vel])

    @staticmethod
    def applies(net) -> bool:
        """True for a fully connected stack without dropout that the kernel takes."""
        kernel = net.backend.kernel("dense_sgd")
        layers = net.layers
        if kernel.backend not in ("numba", "cupy") or len(net.input_shape) != 1:
            return False
        if not all(layer.kind in ("fully-connected", "softmax") for layer in layers) \
                or any(layer.dropout for layer in layers):
            return False
        return kernel.supports([layer.w for layer in layers], [layer.b for layer in layers],
                               [layer.activation.name for layer in layers], net.cost.name)

    def run(self, X, labels, mini_batch_size: int) -> None:
        opt = self.optimizer
        if self.label_flag is not None:
            labels = self._record_bad_label(labels)
        self.kernel.run(self.state, X, self.net.targets(labels), mini_batch_size, opt.eta,
                        opt.lmbda, opt.l1, opt.n, opt.momentum)

    def _record_bad_label(self, labels):
        """The labels clipped to ``[0, n_out)``, the first one outside kept in the flag;
        device operations only, so the step does not wait for the GPU."""
        xp, k, flag = self.net.xp, self.net.n_out, self.label_flag
        labels = xp.asarray(labels)
        out_of_range = (labels < 0) | (labels >= k)
        first = out_of_range.argmax()
        found = xp.stack([out_of_range[first], labels[first]]).astype(xp.int64)
        flag[...] = xp.where(flag[0] > 0, flag, found)  # keep the first bad label
        return xp.clip(labels, 0, k - 1)


def choose_step(net, optimizer, track: bool = False, comm=None):
    """The data-parallel step on several ranks (``comm``); else the fused dense step where
    it applies (and nothing is tracked), else layer by layer. (The fused step updates the
    weights inside its kernel, so it cannot all-reduce each mini-batch's gradient.)"""
    if comm is not None and comm.size > 1:
        return DistributedStep(net, optimizer, comm, track)
    if not track and FusedDenseStep.applies(net):
        return FusedDenseStep(net, optimizer)
    return LayerStep(net, optimizer, track)


# -- evaluation ---------------------------------------------------------------------------------
def topk_correct(outputs, labels, k: int):
    """(N,) bool: is each label among its row's ``k`` largest outputs? Top-1 is the argmax;
    for k > 1 ties count as hits. NaN counts as wrong (a diverged network scores 0)."""
    xp = _xp(outputs)
    if k == 1:  # ties go to the first neuron, as argmax does; a NaN row is wrong
        return (outputs.argmax(axis=1) == labels) & ~xp.isnan(outputs).any(axis=1)
    mine = outputs[xp.arange(len(labels)), labels]
    return (~(outputs <= mine[:, None])).sum(axis=1) < k


def _xp(a):
    from gpunn.backend import array_module

    return array_module(a)


def evaluate(net, data, topk=(1,), cost: bool = False, optimizer=None,
             batch_size: int | None = None, on_batch=None, comm=None) -> dict:
    """Accuracy (and top-k, and the cost) of ``net`` on ``data`` (a source, Split or (X, y)).

    Returns ``{"accuracy", "correct", "images"}``, ``"top{k}"`` for each k > 1 in ``topk``
    and, with ``cost``, ``"cost"``: the mean cost plus, given the ``optimizer``, its
    regularisation terms (λ/2n)Σw² + (λ₁/n)Σ|w|. ``on_batch(done, total)`` follows each batch.
    With ``comm`` (:mod:`gpunn.distributed`) of several ranks, rank r takes batches r, r +
    size, ... and the counts are summed: every rank returns the figures of the whole set.
    """
    source = as_source(data)
    hits = dict.fromkeys(topk, 0)
    hits.setdefault(1, 0)
    total_cost, done = 0.0, 0
    k_max = net.n_out
    rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)
    for i, (X, labels) in enumerate(source.batches(net, batch_size)):
        if i % size != rank:
            continue
        a = net.feedforward(X)
        for k in hits:  # counted on the device, read once at the end
            hits[k] = hits[k] + topk_correct(a, labels, min(k, k_max)).sum()
        if cost:  # from the logits where the output layer has them: finite when σ saturates
            z = getattr(net.layers[-1], "logits", None)
            total_cost += net.cost.fn(a, net.targets(labels), z=z) * len(labels)
        done += len(labels)
        if on_batch is not None:
            on_batch(done, len(source))
    hits = {k: int(v) for k, v in hits.items()}
    if size > 1:
        sums = comm.all_reduce(np.array([done, total_cost, *hits.values()], dtype=np.float64))
        done, total_cost = int(sums[0]), float(sums[1])
        hits = {k: int(v) for k, v in zip(hits, sums[2:])}
    n = max(done, 1)
    out = {"accuracy": hits[1] / n, "correct": hits[1], "images": done}
    out.update({f"top{k}": hits[k] / n for k in hits if k > 1})
    if cost:
        out["cost"] = total_cost / n
        if optimizer is not None and optimizer.lmbda:
            out["cost"] += 0.5 * (optimizer.lmbda / optimizer.n) * sum(
                float((w * w).sum()) for w in net.weights)
        if optimizer is not None and optimizer.l1:
            out["cost"] += (optimizer.l1 / optimizer.n) * sum(float(abs(w).sum())
                                                              for w in net.weights)
    return out


# -- the loop -------------------------------------------------------------------------------
@dataclass
class _Run:
    """Where a run is: what a checkpoint records and a resume restores."""

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
    tracked: tuple = (0.0, 0)  # summed cost and correct answers of this epoch's batches


class _Loop:
    """One run of :func:`fit`: the network, its data, step and optimiser, and the run."""

    def __init__(self, net, source, mini_batch_size, optimizer, step, settings, on_nan):
        self.net, self.source, self.mbs = net, source, mini_batch_size
        self.optimizer, self.step, self.settings, self.on_nan = optimizer, step, settings, on_nan
        self.run = _Run(History(), optimizer.eta, optimizer.eta)

    # -- the resumable state
    def state(self) -> dict:
        """JSON values and arrays: everything a resume needs to continue exactly.

        ``epoch``: epochs completed; ``examples_done``/``order``: progress through the
        current epoch and its permutation (None at an epoch's end); ``steps``: mini-batches
        since the start; ``eta``, ``eta0``, ``best``, ``best_epoch``: the schedule and early
        stopping; ``history``; ``rng``: the generator's state; ``velocities``: momentum
        buffers (None without momentum); ``settings`` and ``architecture`` to check a resume.
        """
        run = self.run
        return {
            "kind": STATE_KIND, "version": STATE_VERSION,
            "epoch": run.epoch, "examples_done": run.done if run.order is not None else 0,
            "order": run.order, "steps": run.steps, "epoch_seconds": run.seconds,
            "eta": run.eta, "eta0": run.eta0, "best": run.best, "best_epoch": run.best_epoch,
            "tracked": [float(run.tracked[0]), int(run.tracked[1])],
            "history": run.history.to_dict(),
            "rng": self.net.rng.state,
            "velocities": self.optimizer.velocities, "settings": self.settings,
            "architecture": self.net.config()["layers"],
        }

    def restore(self, state: dict) -> None:
        net, run, n = self.net, self.run, self.settings["n"]
        try:
            if state.get("kind") != STATE_KIND or state.get("version") != STATE_VERSION:
                raise ConfigError(f"resume expects a state of the training loop (kind "
                                  f"{STATE_KIND!r}); received kind {state.get('kind')!r}")
            mine = net.config()["layers"]
            if state["architecture"] != mine:
                raise ConfigError(f"cannot resume: the state is for the network "
                                  f"{_describe(state['architecture'])} but this network is "
                                  f"{_describe(mine)}")
            changed = [f"{k}={state['settings'].get(k)!r} in the state, {v!r} now"
                       for k, v in self.settings.items() if state["settings"].get(k) != v]
            if changed:
                raise ConfigError("cannot resume with different training settings: "
                                  + "; ".join(changed))
            net.rng.set_state(state["rng"])
            self.optimizer.velocities = None if state["velocities"] is None else [
                [net.backend.asarray(v, dtype=net.dtype) for v in layer]
                for layer in state["velocities"]]
            run.history = History(list(state["history"]["epochs"]),
                                  state["history"]["stop_reason"])
            run.epoch, run.steps = int(state["epoch"]), int(state["steps"])
            run.eta, run.eta0 = float(state["eta"]), float(state["eta0"])
            run.best, run.best_epoch = float(state["best"]), int(state["best_epoch"])
            cost_sum, correct = state.get("tracked", (0.0, 0))
            run.tracked = (float(cost_sum), int(correct))
            if state["order"] is not None:
                run.order = np.asarray(state["order"])
                run.done, run.seconds = int(state["examples_done"]), float(state["epoch_seconds"])
                if run.order.shape != (n,) or not 0 <= run.done <= n:
                    raise ConfigError("the state's data order does not fit the training data")
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"resume: the state is incomplete or corrupt ({exc!r})") from exc

    # -- the divergence guard
    def _params(self) -> list:
        """Every parameter and momentum buffer: the arrays a step updates in place."""
        params = [p for layer in self.net.layers for p, _, _ in layer.param_groups()]
        if self.optimizer.velocities is not None:
            params += [v for layer in self.optimizer.velocities for v in layer]
        return params

    def _snapshot(self) -> list:
        return [p.copy() for p in self._params()]

    def _restore_snapshot(self, saved: list) -> None:
        for p, s in zip(self._params(), saved):
            p[...] = s  # in place: the step holds these very arrays

    def _finite(self) -> bool:
        """True when every parameter is finite; one reduction per array and one sync, which
        also reads the step's bad-label flag (on a GPU) and raises for a bad label.

        A NaN or inf anywhere makes the array's sum non-finite (so can a finite sum over
        3.4e38, which is divergence too).
        """
        xp = self.net.xp
        finite = xp.isfinite(sum(p.sum(dtype=xp.float64) for p in self._params()))
        flag = getattr(self.step, "label_flag", None)
        if flag is None:
            return bool(finite)
        from gpunn.kernels import checks

        values = self.net.backend.to_numpy(xp.concatenate([flag, xp.asarray(finite)[None]]))
        checks.raise_for_label_flag(values[:2], self.net.n_out)
        return bool(values[2])

    def train_chunk(self, epoch: int, lo: int, hi: int) -> None:
        """SGD over examples ``order[lo:hi]`` of the epoch, then the finiteness check."""
        X, labels = self.source.load(self.net, epoch, self.run.order, lo, hi)
        self.optimizer.eta = self.run.eta
        saved = self._snapshot()
        tracked = self.step.run(X, labels, self.mbs)
        try:
            finite = self._finite()
        except ConfigError:  # a bad label, found after the chunk: leave the weights before it
            self._restore_snapshot(saved)
            raise
        if not finite:
            self._after_nan(saved, X, labels, lo)
        elif tracked is not None:  # device sums, read once an epoch
            self.run.tracked = tuple(a + b for a, b in zip(self.run.tracked, tracked))

    def _after_nan(self, saved, X, labels, lo) -> None:
        """A chunk made a weight non-finite: undo it, then stop, skip or retry per ``on_nan``."""
        run, mbs, opt = self.run, self.mbs, self.optimizer
        self._restore_snapshot(saved)
        if self.on_nan == "halve-eta":
            while True:
                run.eta /= 2
                if run.eta < run.eta0 * 2.0 ** -20:
                    break  # halving will not help: stop below
                opt.eta = run.eta
                self.step.run(X, labels, mbs)
                if self._finite():
                    return
                self._restore_snapshot(saved)
        # Replay the chunk one mini-batch at a time to find (and maybe skip) the bad ones.
        for k in range(0, X.shape[0], mbs):
            saved = self._snapshot()
            self.step.run(X[k:k + mbs], labels[k:k + mbs], mbs)
            if self._finite():
                continue
            self._restore_snapshot(saved)
            batch = (lo + k) // mbs + 1
            if self.on_nan == "skip-batch":
                run.skipped += 1
                continue
            raise TrainingDiverged(
                f"training diverged: a weight became NaN or infinite in mini-batch {batch} of "
                f"epoch {run.epoch + 1} (eta {run.eta:g}); the network keeps its last finite "
                f"weights; try a smaller eta, or on_nan='skip-batch' or 'halve-eta'",
                run.epoch + 1, batch, run.eta)


def fit(net, training_data, epochs: int, mini_batch_size: int, optimizer, *,
        evaluation_data=None, schedule: Schedule | None = None, topk=(1,),
        monitor_evaluation_cost: bool = False, monitor_training_cost: bool = False,
        monitor_training_accuracy: bool = False, track_training: bool = False,
        on_epoch=None, on_progress=None, on_checkpoint=None, checkpoint_every: int = 0,
        should_stop=None, on_nan: str = "stop", resume: dict | None = None,
        steps: int | None = None, settings: dict | None = None, comm=None) -> History:
    """Train ``net`` with ``optimizer`` (:class:`gpunn.optim.SGD`); returns a :class:`History`.

    training_data / evaluation_data: a source (:class:`ArraySource`, :class:`ImageSource`),
        a ``gpunn.data`` Split, or a pair (X, y).
    schedule: η schedule and early stopping (:class:`Schedule`; default constant η).
    topk: the top-k accuracies evaluated each epoch (``evaluation_top5`` for k = 5).
    monitor_*: also record the evaluation cost, or the training cost/accuracy (one more
        pass over the training data after the epoch); ``track_training`` instead records
        them from each mini-batch's outputs during the epoch, as KSH did.
    on_epoch(record), on_progress(done, total): after each epoch / chunk (~1,000 examples,
        or one mini-batch of images).
    on_checkpoint(state): with the resumable state (a dict of JSON values and arrays) after
        every epoch, every ``checkpoint_every`` mini-batches (0: never mid-epoch) and when
        ``should_stop`` stops training. Its arrays are live: copy or write them at once.
    resume: such a state; training continues from it exactly (bit-identical on the CPU).
    should_stop(): polled after every chunk; True stops there with
        ``history.stop_reason == "interrupted"`` (after a last ``on_checkpoint``).
    on_nan: "stop" raises :class:`TrainingDiverged` (weights left at their last finite
        values), "skip-batch" undoes and skips the offending mini-batches, "halve-eta"
        undoes the chunk and retries it at η/2.
    steps: stop after this many mini-batches in all (a quick run).
    settings: more values a resumed run must share with the one that wrote the state.
    comm: a communicator of :mod:`gpunn.distributed` (default: one process). On several
        ranks the weights start as rank 0's, every rank trains on its slice of each global
        mini-batch of rank 0's permutation (one all-reduce of the gradients a step),
        evaluation is split, a stop is agreed by all, and only rank 0 calls
        ``on_checkpoint``. Without dropout the weights are one process's (to rounding);
        dropout masks come from a stream of each rank's own.
    """
    _check_int("epochs", epochs, allow_zero=True)
    _check_int("mini_batch_size", mini_batch_size)
    _check_int("checkpoint_every", checkpoint_every, allow_zero=True)
    if steps is not None:
        _check_int("steps", steps)
    if on_nan not in ON_NAN:
        raise ConfigError(f"on_nan must be one of {', '.join(ON_NAN)}; received {on_nan!r}")
    schedule = schedule or Schedule()
    if schedule.watches_accuracy and evaluation_data is None:
        raise ConfigError("early stopping and the eta schedule need evaluation_data")
    source = as_source(training_data)
    evaluation = as_source(evaluation_data) if evaluation_data is not None else None
    n = len(source)
    if n == 0:
        raise ConfigError("training_data is empty")
    chunk = source.chunk_size(mini_batch_size)
    settings = {"n": n, "mini_batch_size": mini_batch_size, "lmbda": optimizer.lmbda,
                "l1": optimizer.l1, "momentum": optimizer.momentum,
                "regularisation_n": optimizer.n, **schedule.settings(), **(settings or {})}
    loop = _Loop(net, source, mini_batch_size, optimizer, None, settings, on_nan)
    run = loop.run
    if resume is not None:
        loop.restore(resume)
        if run.history.stop_reason not in ("completed", "interrupted"):
            return run.history  # it had stopped by itself (early stopping, schedule)
        run.history.stop_reason = "completed"
    history = run.history
    # chosen after a resume: the fused step holds the restored momentum buffers themselves
    comm = comm if comm is not None else Single()
    if comm.size > 1:
        _start_ranks(net, optimizer, comm)
    loop.step = choose_step(net, optimizer, track_training, comm)

    def checkpoint():
        if on_checkpoint is not None and comm.rank == 0:
            on_checkpoint(loop.state())

    # Overflow on the way to NaN is the divergence guard's to report (one line, exit 3),
    # and float32 units saturated at exactly 0 or 1 are a normal state: NumPy's warnings
    # would only be noise on stderr.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        try:
            for epoch in range(run.epoch + 1, epochs + 1):
                start = time.perf_counter()
                if run.order is None:  # a new epoch (a resumed one keeps its order and progress)
                    run.order, run.done, run.seconds = source.order(epoch, net.rng), 0, 0.0
                if comm.size > 1:  # rank 0's permutation (the others' draws may differ)
                    run.order = comm.broadcast(np.ascontiguousarray(run.order, np.int64))
                stop = quick = False
                while run.done < n:
                    hi = min(run.done + chunk, n)
                    if checkpoint_every:  # end the chunk at the next checkpoint step
                        due = (run.steps // checkpoint_every + 1) * checkpoint_every
                        hi = min(hi, run.done + (due - run.steps) * mini_batch_size)
                    loop.train_chunk(epoch, run.done, hi)
                    run.steps += -(-(hi - run.done) // mini_batch_size)
                    run.done = hi
                    if on_progress is not None:
                        on_progress(hi, n)
                    stop = comm.any(should_stop is not None and bool(should_stop()))
                    quick = steps is not None and run.steps >= steps
                    if hi < n and (stop or (checkpoint_every
                                            and run.steps % checkpoint_every == 0)):
                        run.seconds += time.perf_counter() - start
                        start = time.perf_counter()
                        checkpoint()
                    if stop and hi < n:
                        history.stop_reason = "interrupted"
                        return history
                    if quick:
                        break
                net.backend.synchronize()
                seconds = run.seconds + time.perf_counter() - start
                record = {"epoch": epoch, "seconds": seconds, "eta": run.eta,
                          "images_per_s": run.done / seconds if seconds > 0 else float("inf")}
                if run.skipped:
                    record["skipped_batches"], run.skipped = run.skipped, 0
                if track_training:  # the epoch's device sums, read here once
                    (cost_sum, correct), run.tracked = run.tracked, (0.0, 0)
                    if comm.size > 1:
                        cost_sum, correct = comm.all_reduce(
                            np.array([float(cost_sum), float(correct)]))
                    record.update(training_cost=float(cost_sum) / max(run.done, 1),
                                  training_accuracy=int(correct) / max(run.done, 1))
                elif monitor_training_cost or monitor_training_accuracy:
                    figures = evaluate(net, source, cost=monitor_training_cost,
                                       optimizer=optimizer, comm=comm)
                    record.update(_prefixed("training", figures, monitor_training_cost,
                                            monitor_training_accuracy))
                if evaluation is not None:
                    # the book's cost carries the L2 term (network2's total_cost); KSH's
                    # tracked figures are the data's loss alone, so the evaluation's is too
                    figures = evaluate(net, evaluation, topk, cost=monitor_evaluation_cost,
                                       optimizer=None if track_training else optimizer,
                                       comm=comm)
                    record.update(_prefixed("evaluation", figures, monitor_evaluation_cost, True))
                for key in ("training_cost", "evaluation_cost"):
                    if key in record and not math.isfinite(record[key]):
                        raise TrainingDiverged(
                            f"training diverged: the {key.replace('_', ' ')} is {record[key]} "
                            f"after epoch {epoch} (eta {run.eta:g}); try a smaller eta",
                            epoch, None, run.eta)
                history.epochs.append(record)
                run.epoch, run.order = epoch, None
                if on_epoch is not None:
                    on_epoch(record)
                reason = schedule.after_epoch(run, epoch, record.get("evaluation_accuracy"))
                if reason:
                    history.stop_reason = reason
                elif quick:
                    history.stop_reason = f"stopped after {steps} step{'s' * (steps != 1)}"
                checkpoint()
                if history.stop_reason != "completed":
                    break
                if stop and epoch < epochs:
                    history.stop_reason = "interrupted"
                    break
        finally:
            source.close()
    return history


def _start_ranks(net, optimizer, comm) -> None:
    """Every rank starts from rank 0's weights (and momentum); with dropout, ranks other than
    0 draw their masks from their own stream (rank 0's, jumped ``rank`` times)."""
    params = [p for layer in net.layers for p, _, _ in layer.param_groups()]
    if optimizer.velocities is not None:
        params += [v for layer in optimizer.velocities for v in layer]
    for p in params:
        comm.broadcast(p)
    if comm.rank > 0 and any(layer.dropout for layer in net.layers):
        bits = np.random.PCG64()
        bits.state = net.rng.state
        net.rng.set_state(bits.jumped(comm.rank).state)


def _prefixed(prefix: str, figures: dict, want_cost: bool, want_accuracy: bool) -> dict:
    out = {}
    if want_cost:
        out[f"{prefix}_cost"] = figures["cost"]
    if want_accuracy:
        out[f"{prefix}_accuracy"] = figures["accuracy"]
        out[f"{prefix}_correct"] = figures["correct"]
        out.update({f"{prefix}_{k}": v for k, v in figures.items() if k.startswith("top")})
    return out


def _describe(layers: list) -> str:
    """A short name for a list of layer configs, e.g. 784-30-10 or Conv2D(...)-..."""
    if all(c.get("type") in ("FullyConnected", "Softmax") and "n_in" in c for c in layers):
        return "-".join(str(v) for v in [layers[0]["n_in"]] + [c["n_out"] for c in layers])
    return " -> ".join(str(c) for c in layers)


def _check_int(name, value, allow_zero=False) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):
        raise ConfigError(f"{name} must be an integer >= {0 if allow_zero else 1}; "
                          f"received {value!r}")
