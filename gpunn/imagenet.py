"""Training a convnet on image-folder data as KSH 2012 did: SGD with momentum and weight decay.

    from gpunn import imagenet, models
    from gpunn.data import open_image_folder
    train_set, val_set = open_image_folder("toy", crop=64)
    net = models.build("alexnet-small", classes=len(train_set.classes), seed=1)
    history = imagenet.train(net, train_set, val_set, epochs=10, batch_size=64)
    imagenet.evaluate(net, val_set)          # {"top1": 0.95, "top5": 1.0, "loss": ...}

The update is KSH's: v ← 0.9 v − η(∇C + 5·10⁻⁴ w), w ← w + v (``update_mini_batch`` with
``lmbda=weight_decay, n=1``), biases not decayed. η starts at 0.01 and is divided by 10
every ``step_epochs`` epochs (``schedule="step"``) or, as in the paper, when validation top-1
has not improved for ``patience`` epochs (``"plateau"``). Batches come from a
:class:`gpunn.data.Prefetcher` (background threads), epoch ``e`` in the same order on every
run with the same seed, so a resumed run sees the batches the first one would have.

The library reports and returns; it never prints. ``on_step(info)`` follows each mini-batch
(a progress bar's food: images, seconds, loss), ``on_epoch(record)`` each epoch. With
``checkpoint_dir`` a checkpoint (:mod:`gpunn.checkpoint`: weights, momentum, generator,
schedule, history) is written after every epoch, and ``state=`` (from :func:`resume`)
continues a run where its checkpoint left off, as if it had not stopped.

What it leaves out: ten-crop testing, PCA colour noise, the two-GPU model split.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from gpunn.errors import ConfigError
from gpunn.network import History

__all__ = ["SCHEDULES", "topk_accuracy", "evaluate", "train", "throughput", "save_epoch",
           "resume"]

SCHEDULES = ("step", "plateau", "constant")
_EPS = 1e-12  # keeps log p finite when a probability underflows to 0


def _topk_correct(outputs, labels, k: int):
    """(N,) bool: is each label among its row's ``k`` largest outputs? Ties count as hits;
    NaN counts as larger than anything, so a diverged network scores 0, not 100%."""
    xp = _xp(outputs)
    labels = xp.asarray(labels)
    mine = outputs[xp.arange(len(labels)), labels]
    return (~(outputs <= mine[:, None])).sum(axis=1) < k


def topk_accuracy(outputs, labels, k: int = 1) -> float:
    """Fraction of rows of ``outputs`` (N, classes) whose label (N,) is among the top ``k``."""
    if outputs.ndim != 2 or len(outputs) != len(labels) or len(labels) == 0:
        raise ConfigError(f"topk_accuracy expects outputs (N, classes) and N >= 1 labels (N,); "
                          f"received outputs.shape={tuple(outputs.shape)}, "
                          f"{len(labels)} labels")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be an integer >= 1; received {k!r}")
    return float(_topk_correct(outputs, labels, k).mean())


def _xp(a):
    from gpunn.backend import array_module

    return array_module(a)


def _loss(probs, labels) -> float:
    """Summed log-likelihood cost −Σ ln p(label) of a batch of probabilities (N, classes)."""
    xp = _xp(probs)
    p = probs[xp.arange(len(labels)), labels]
    return float(-xp.log(p + _EPS).sum())


def evaluate(net, source, batch_size: int = 128, workers: int = 2, on_batch=None) -> dict:
    """Top-1, top-5 accuracy and mean loss of ``net`` on ``source`` (centre crops).

    ``source`` is anything with ``len`` and ``load(indices, rng) -> (X, y)``: an
    :class:`~gpunn.data.ImageFolder` split or :class:`~gpunn.data.SyntheticImages`.
    ``on_batch(done, total)`` follows each batch. Returns ``{"top1", "top5", "loss",
    "images"}`` with the accuracies as fractions.
    """
    from gpunn.data import Prefetcher

    be = net.backend
    top1 = top5 = done = 0
    loss = 0.0
    k5 = min(5, net.n_out)
    with Prefetcher(source, batch_size, shuffle=False, workers=workers) as batches:
        for X, y in batches:
            probs = net.feedforward(be.asarray(X, dtype=net.dtype))
            labels = net.xp.asarray(y)
            top1 += int(_topk_correct(probs, labels, 1).sum())
            top5 += int(_topk_correct(probs, labels, k5).sum())
            loss += _loss(probs, labels)
            done += len(y)
            if on_batch is not None:
                on_batch(done, len(source))
    n = len(source)
    return {"top1": top1 / n, "top5": top5 / n, "loss": loss / n, "images": n}


def _check(name, value, low, high=math.inf, integer=False):
    ok = (isinstance(value, (int, np.integer)) if integer
          else isinstance(value, (int, float, np.floating)) and math.isfinite(value))
    if isinstance(value, bool) or not ok or not low <= value < high:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind} in [{low}, {high}); received {value!r}")


def train(net, train_source, val_source=None, epochs: int = 10, batch_size: int = 128,
          eta: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4,
          schedule: str = "step", step_epochs: int = 30, patience: int = 2, seed: int = 0,
          workers: int = 2, on_step=None, on_epoch=None, steps: int | None = None,
          checkpoint_dir=None, keep: int = 3, state: dict | None = None) -> History:
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
        checkpoint_dir: write a checkpoint there after every epoch, keeping ``keep``.
        state: a checkpoint's state (see :func:`resume`) to continue from.
        on_step(info): after each mini-batch; ``info`` has epoch, step, steps (per epoch),
            images (this epoch so far), seconds (this epoch so far), loss (mean of the batch).
        on_epoch(record): after each epoch with its record (also kept in the history):
            epoch, eta, seconds, images_per_s, train_loss, train_top1 and, with a
            val_source, val_top1, val_top5, val_loss.
    """
    from gpunn.data import Prefetcher

    _check("epochs", epochs, 0, integer=True)
    _check("batch_size", batch_size, 1, integer=True)
    _check("eta", eta, 0)
    _check("momentum", momentum, 0, 1)
    _check("weight_decay", weight_decay, 0)
    _check("step_epochs", step_epochs, 1, integer=True)
    _check("patience", patience, 1, integer=True)
    _check("workers", workers, 0, integer=True)
    if steps is not None:
        _check("steps", steps, 1, integer=True)
    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}; received "
                          f"{schedule!r}")
    if schedule == "plateau" and val_source is None:
        raise ConfigError("schedule='plateau' watches validation accuracy: give a val_source")
    if eta <= 0:
        raise ConfigError(f"eta must be > 0; received {eta!r}")
    if len(train_source) == 0:
        raise ConfigError("the training set is empty")
    classes = len(getattr(train_source, "classes", ())) or None
    if classes is not None and classes != net.n_out:
        raise ConfigError(f"the data has {classes} classes but the network gives {net.n_out} "
                          f"outputs; build it with classes={classes}")

    state = dict(state or {})
    history = History(epochs=list(state.get("history", [])))
    eta = float(state.get("eta", eta))
    best, best_epoch = state.get("best_top1", -1.0), state.get("best_epoch", 0)
    first = int(state.get("epoch", 0)) + 1
    be, xp = net.backend, net.xp
    if state.get("velocities") is not None:  # momentum and dropout continue where they were
        net.velocities = [[be.asarray(v, dtype=net.dtype) for v in group]
                          for group in state["velocities"]]
    if state.get("rng") is not None:
        net.rng.set_state(state["rng"])
    net.init_velocities()
    done_steps = 0
    with Prefetcher(train_source, batch_size, shuffle=True, seed=seed, workers=workers,
                    depth=max(2, workers), drop_last=len(train_source) >= batch_size) as data:
        for epoch in range(first, epochs + 1):
            start, images, loss, top1 = time.perf_counter(), 0, 0.0, 0
            batches = data.epoch(epoch - 1)
            for step, (X, y) in enumerate(batches, start=1):
                labels = xp.asarray(y)
                net.update_mini_batch(be.asarray(X, dtype=net.dtype), net._targets(labels),
                                      eta, lmbda=weight_decay, n=1, momentum=momentum)
                probs = net.layers[-1]._a  # this batch's softmax, before the update
                batch_loss = _loss(probs, labels)
                loss += batch_loss
                top1 += int(_topk_correct(probs, labels, 1).sum())
                images += len(y)
                done_steps += 1
                if on_step is not None:
                    on_step({"epoch": epoch, "step": step, "steps": len(data),
                             "images": images, "seconds": time.perf_counter() - start,
                             "loss": batch_loss / len(y)})
                if steps is not None and done_steps >= steps:
                    batches.close()  # stops the loading threads of this epoch
                    break
            be.synchronize()
            seconds = time.perf_counter() - start
            record = {"epoch": epoch, "eta": eta, "seconds": seconds,
                      "images_per_s": images / seconds, "train_loss": loss / images,
                      "train_top1": top1 / images}
            if val_source is not None:
                result = evaluate(net, val_source, batch_size, workers)
                record.update(val_top1=result["top1"], val_top5=result["top5"],
                              val_loss=result["loss"])
            if not math.isfinite(record["train_loss"]):
                history.epochs.append(record)
                history.stop_reason = (f"the loss diverged (epoch {epoch}); lower eta "
                                       f"(it was {eta:g})")
                break
            # η for the next epoch
            if schedule == "step" and epoch % step_epochs == 0:
                eta /= 10
            elif schedule == "plateau":
                if record["val_top1"] > best:
                    best, best_epoch = record["val_top1"], epoch
                elif epoch - best_epoch >= patience:
                    eta, best_epoch = eta / 10, epoch
            history.epochs.append(record)
            if checkpoint_dir is not None:
                record["checkpoint"] = str(save_epoch(
                    checkpoint_dir, net, {"epoch": epoch, "eta": eta, "best_top1": best,
                                          "best_epoch": best_epoch, "seed": seed,
                                          "history": history.epochs}, keep))
            if on_epoch is not None:
                on_epoch(record)
            if steps is not None and done_steps >= steps:
                history.stop_reason = f"stopped after {steps} steps"
                break
    return history


def save_epoch(directory, net, state: dict, keep: int = 3) -> Path:
    """Checkpoint ``net`` after an epoch into ``directory`` (:mod:`gpunn.checkpoint`), with
    ``state``, its momentum buffers and its generator, so a resumed run continues exactly."""
    from gpunn.checkpoint import save_checkpoint

    return save_checkpoint(directory, net, {**state, "velocities": net.velocities,
                                            "rng": net.rng.state}, keep=keep)


def resume(path, backend="auto"):
    """``(net, state)`` from a checkpoint file or the newest one in a checkpoint folder;
    pass ``state`` to :func:`train` to continue the run."""
    from gpunn.checkpoint import load_checkpoint

    net, state = load_checkpoint(path, backend=backend)
    if "epoch" not in state:
        raise ConfigError(f"{state.get('checkpoint_path', path)} was not written by "
                          f"gpunn.imagenet.train (no epoch in its state); resume it with the "
                          f"command that wrote it")
    return net, state


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
    X, Y = be.asarray(X, dtype=net.dtype), net._targets(net.xp.asarray(y))
    net.init_velocities()
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

    train_rate = timed(lambda: net.update_mini_batch(X, Y, eta, weight_decay, 1,
                                                     momentum=momentum), 0)
    forward_rate = timed(lambda: net.feedforward(X), warmup + steps)
    return {"train_images_per_s": train_rate, "forward_images_per_s": forward_rate,
            "batch_size": batch_size, "steps": steps, "warmup": warmup}
