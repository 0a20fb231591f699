"""Training a convnet on image-folder data as KSH 2012 did: SGD with momentum and weight decay.

    from gpunn import imagenet, models
    from gpunn.data import make_toy, open_image_folder
    train_set, val_set = open_image_folder(make_toy("toy"), crop=64)
    net = models.build("alexnet-small", classes=len(train_set.classes), seed=1)
    history = imagenet.train(net, train_set, val_set, epochs=10, batch_size=64)
    imagenet.evaluate(net, val_set)          # {"top1": 0.95, "top5": 1.0, "loss": ...}

This module is configuration of the one training loop (:func:`gpunn.train.fit`), not a loop
of its own: the update is :class:`gpunn.optim.SGD` with KSH's v ← 0.9 v − η(∇C + 5·10⁻⁴ w),
w ← w + v (biases not decayed); η starts at 0.01 and is divided by 10 every ``step_epochs``
epochs (``schedule="step"``) or, as in the paper, when validation top-1 has not improved
for ``patience`` epochs (``"plateau"``); batches come from an :class:`gpunn.train.ImageSource`
(background threads), epoch ``e`` in the same order on every run with the same seed; each
epoch records the training cost and top-1 of the mini-batches as they were trained, and
top-1, top-5 and the cost on the validation set. Checkpoints, resume (exact, mid-epoch too),
stop requests and the divergence guard are the loop's (see :func:`gpunn.train.fit`).
``pca_noise`` adds KSH's PCA colour noise to the training images (:mod:`gpunn.data.colour`);
``evaluate(..., ten_crop=True)`` is KSH's ten-crop testing: the softmax outputs of the four
corner and the centre crops and their mirror images, averaged.

What it leaves out: the two-GPU model split.
"""

from __future__ import annotations

import math
import time

import numpy as np

from gpunn.errors import ConfigError
from gpunn.optim import SGD
from gpunn.train import History, ImageSource, LayerStep, Loading, Schedule, fit, topk_correct

__all__ = ["SCHEDULES", "topk_accuracy", "evaluate", "train", "throughput"]

SCHEDULES = ("step", "plateau", "constant")


def topk_accuracy(outputs, labels, k: int = 1) -> float:
    """Fraction of rows of ``outputs`` (N, classes) whose label (N,) is among the top ``k``."""
    if outputs.ndim != 2 or len(outputs) != len(labels) or len(labels) == 0:
        raise ConfigError(f"topk_accuracy expects outputs (N, classes) and N >= 1 labels (N,); "
                          f"received outputs.shape={tuple(outputs.shape)}, "
                          f"{len(labels)} labels")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be an integer >= 1; received {k!r}")
    return float(topk_correct(outputs, labels, k).mean())


def evaluate(net, source, batch_size: int = 128, workers: int = 2, on_batch=None,
             ten_crop: bool = False) -> dict:
    """Top-1, top-5 accuracy and mean loss of ``net`` on ``source`` (centre crops).

    ``source`` is anything with ``len`` and ``load(indices, rng) -> (X, y)``: an
    :class:`~gpunn.data.ImageFolder` split or :class:`~gpunn.data.SyntheticImages`.
    ``on_batch(done, total)`` follows each batch. Returns ``{"top1", "top5", "loss",
    "images"}`` with the accuracies as fractions. ``ten_crop=True`` (an image folder only)
    scores each image by its softmax outputs averaged over KSH's ten crops (ten times the
    forward passes; ``batch_size`` counts crops); the loss is then that of the average.
    """
    from gpunn.train import evaluate as evaluate_source

    if ten_crop:
        return _evaluate_ten_crops(net, source, batch_size, workers, on_batch)
    figures = evaluate_source(net, ImageSource(source, batch_size, workers=workers), (1, 5),
                              cost=True, batch_size=batch_size, on_batch=on_batch)
    return {"top1": figures["accuracy"], "top5": figures["top5"], "loss": figures["cost"],
            "images": figures["images"]}


def _evaluate_ten_crops(net, source, batch_size, workers, on_batch) -> dict:
    """:func:`evaluate` with ``ten_crop=True``: crops decoded ahead by threads, normalised on
    the device, each image's ten softmax outputs averaged before top-k and the loss."""
    from gpunn.data import Prefetcher

    if not hasattr(source, "load_ten_crops"):
        raise ConfigError(f"ten-crop testing needs an image folder (gpunn.data.ImageFolder), "
                          f"whose images are larger than the crop; received "
                          f"{type(source).__name__}")
    be, xp = net.backend, net.xp
    hits, total_cost, done = {1: 0, 5: 0}, 0.0, 0
    ten_crops = Loading(source, lambda idx, rng: (source.load_ten_crops(idx),
                                                  source.labels[idx]))
    with Prefetcher(ten_crops, max(1, batch_size // 10), shuffle=False,
                    workers=workers) as batches:
        for crops, y in batches:
            X = source.normalise(be.asarray(crops, dtype=None), xp)
            a = net.feedforward(be.asarray(X, dtype=net.dtype))
            p = a.reshape(len(y), 10, a.shape[-1]).mean(axis=1)  # KSH: average the softmax
            labels = xp.asarray(y)
            for k in hits:
                hits[k] = hits[k] + topk_correct(p, labels, min(k, net.n_out)).sum()
            total_cost += float(net.cost.fn(p, net.targets(labels))) * len(y)
            done += len(y)
            if on_batch is not None:
                on_batch(done, len(source))
    n = max(done, 1)
    return {"top1": int(hits[1]) / n, "top5": int(hits[5]) / n, "loss": total_cost / n,
            "images": done}


def _check(name, value, low, high=math.inf, integer=False):
    ok = (isinstance(value, (int, np.integer)) if integer
          else isinstance(value, (int, float, np.floating)) and math.isfinite(value))
    if isinstance(value, bool) or not ok or not low <= value < high:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind} in [{low}, {high}); received {value!r}")


def train(net, train_source, val_source=None, epochs: int = 10, batch_size: int = 128,
          eta: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
          schedule: str = "step", step_epochs: int = 30, patience: int = 2, seed: int = 0,
          workers: int = 2, on_epoch=None, on_progress=None, steps: int | None = None,
          on_checkpoint=None, checkpoint_every: int = 0, should_stop=None,
          on_nan: str = "stop", resume: dict | None = None,
          pca_noise: float = 0.0, comm=None) -> History:
    """Train ``net`` on ``train_source`` for ``epochs`` epochs; returns a :class:`History`.

    Args:
        net: a :class:`gpunn.Network` with a softmax output (e.g. from :mod:`gpunn.models`).
        train_source, val_source: anything with ``len`` and ``load(indices, rng) ->
            (X (n, 3, H, W) float32, y (n,) int64)``; validation is evaluated each epoch.
        eta, momentum, weight_decay: KSH's 0.01, 0.9 and 5e-4.
        schedule: "step" (η/10 every ``step_epochs``), "plateau" (η/10 when validation
            top-1 has not improved for ``patience`` epochs) or "constant".
        steps: stop after this many mini-batches in all (a quick run); the epoch it falls
            in is recorded and evaluated.
        on_progress(done, total): after each mini-batch, images of the epoch so far.
        on_epoch(record): after each epoch with its record (also kept in the history):
            epoch, eta, seconds, images_per_s, training_cost, training_accuracy and, with a
            val_source, evaluation_accuracy (top-1), evaluation_top5, evaluation_cost.
        on_checkpoint, checkpoint_every, should_stop, on_nan, resume: as
            :func:`gpunn.train.fit` (store states with :mod:`gpunn.checkpoint`).
        pca_noise: the standard deviation of KSH's PCA colour noise (0.1 in the paper; 0,
            the default, for none): ``train_source``, an image folder, is wrapped in
            :class:`gpunn.data.colour.PCANoise`.
        comm: a communicator of :mod:`gpunn.distributed`: the ranks train data parallel
            (each loads every batch and takes its slice; see :func:`gpunn.train.fit`).
    """
    for name, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1),
                             ("step_epochs", step_epochs, 1), ("patience", patience, 1),
                             ("workers", workers, 0)):
        _check(name, value, low, integer=True)
    _check("weight_decay", weight_decay, 0)
    _check("pca_noise", pca_noise, 0)
    if pca_noise:
        from gpunn.data.colour import PCANoise

        train_source = PCANoise(train_source, pca_noise)
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}; received "
                          f"{schedule!r}")
    if schedule == "plateau" and val_source is None:
        raise ConfigError("schedule='plateau' watches validation accuracy: give a val_source")
    optimizer = SGD(eta, lmbda=weight_decay, n=1, momentum=momentum)
    if len(train_source) == 0:
        raise ConfigError("the training set is empty")
    classes = len(getattr(train_source, "classes", ())) or None
    if classes is not None and classes != net.n_out:
        raise ConfigError(f"the data has {classes} classes but the network gives {net.n_out} "
                          f"outputs; build it with classes={classes}")
    plan = {"step": Schedule("step", every=step_epochs, factor=10.0),
            "plateau": Schedule("plateau", patience=patience, factor=10.0),
            "constant": Schedule()}[schedule]
    return fit(net, ImageSource(train_source, batch_size, seed, workers), epochs, batch_size,
               optimizer, evaluation_data=None if val_source is None else
               ImageSource(val_source, batch_size, workers=workers),
               schedule=plan, topk=(1, 5), monitor_evaluation_cost=True,
               track_training=True, on_epoch=on_epoch, on_progress=on_progress,
               on_checkpoint=on_checkpoint, checkpoint_every=checkpoint_every,
               should_stop=should_stop, on_nan=on_nan, resume=resume, steps=steps, comm=comm,
               settings={"seed": seed, "batch_size": batch_size, "schedule_kind": schedule,
                         **({"pca_noise": pca_noise} if pca_noise else {})})


def throughput(net, source, batch_size: int = 64, steps: int = 5, warmup: int = 1,
               eta: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
               on_step=None) -> dict:
    """Steady-state images per second of ``net``: training steps, then forward passes only.

    One batch is loaded from ``source`` and reused, so the figures are compute alone (no
    decoding). ``warmup`` untimed steps first (JIT compiles, scratch arrays, caches), then
    ``steps`` timed ones; ``on_step(done, total)`` follows each. Returns
    ``{"train_images_per_s", "forward_images_per_s", "batch_size", "steps", "warmup"}``.
    """
    _check("batch_size", batch_size, 1, integer=True)
    _check("steps", steps, 1, integer=True)
    _check("warmup", warmup, 0, integer=True)
    be = net.backend
    X, y = source.load(np.arange(batch_size) % len(source), np.random.default_rng(0))
    X, labels = be.asarray(X, dtype=net.dtype), net.xp.asarray(y)
    step = LayerStep(net, SGD(eta, lmbda=weight_decay, n=1, momentum=momentum))
    total = 2 * (warmup + steps)

    def timed(fn, offset):
        for i in range(warmup):
            fn()
            if on_step is not None:
                on_step(offset + i + 1, total)
        be.synchronize()
        start = time.perf_counter()
        for i in range(steps):
            fn()
            be.synchronize()
            if on_step is not None:
                on_step(offset + warmup + i + 1, total)
        return steps * batch_size / (time.perf_counter() - start)

    train_rate = timed(lambda: step.run(X, labels, batch_size), 0)
    forward_rate = timed(lambda: net.feedforward(X), warmup + steps)
    return {"train_images_per_s": train_rate, "forward_images_per_s": forward_rate,
            "batch_size": batch_size, "steps": steps, "warmup": warmup}
