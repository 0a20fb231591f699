"""The book's results, row by row: the networks, hyperparameters and figures to reproduce.

Each :class:`Row` names a result of the book (chapters 1, 3, 5 and chapter 6's table), the
network that gave it, the settings it was trained with, and the figure the book prints.
:func:`run_row` trains it once for a seed and returns what it reached; ``gpunn reproduce``
runs several seeds and prints them beside the book.

Chapter 6's figures come from network3.py: the test accuracy at the epoch of best
validation accuracy, which is what :func:`run_row` reports as ``test_at_best``.
``compat="network3"`` switches to network3's actual behaviour where it departs from the
book's text: fully connected weights N(0, 1/n_out) and the L2 term divided by the number of
mini-batches instead of n.

Dropout in these rows is the book's (chapter 3: the full net runs with the weights out of
dropped neurons halved) and network3's: kept units are not scaled in training, and the
weights are scaled by (1 - p) at evaluation. The library's own default, inverted dropout
(kept units scaled by 1/(1 - p) in training), computes the same function but doubles the
inputs of the fully connected layers in training, and with them the steps at the book's
η = 0.03: with it, 3 of 20 seeds of ch6-dropout lost every unit of the second conv-pool layer
in their first few mini-batches and never learned (10% accuracy); scaled at evaluation, none.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gpunn.errors import ConfigError
from gpunn.layers import ConvPool, FullyConnected, Softmax

__all__ = ["Row", "ROWS", "get", "build", "run_row"]

COMPAT = ("book", "network3")
#: how the rows' dropout scales (see the module's text): at evaluation, as the book does
DROPOUT_MODE = "scale-at-eval"


@dataclass(frozen=True)
class Row:
    name: str
    chapter: int
    title: str
    book: float  # the book's figure, percent
    split: str  # the split the book measured: "test" or "validation"
    epochs: int
    eta: float
    mini_batch_size: int = 10
    lmbda: float = 0.0
    cost: str = "quadratic"
    sizes: tuple = ()  # a fully connected network ...
    init: str = "default"
    conv: int = 0  # ... or network3's: this many conv-pool layers,
    activation: str = "sigmoid"
    fc: tuple = (100,)  # fully connected hidden layers,
    dropout: float = 0.0  # dropout on the inputs of the FC and softmax layers,
    expanded: bool = False  # on the expanded training data,
    ensemble: int = 1  # voting members
    notes: str = field(default="", compare=False)

    @property
    def is_conv_net(self) -> bool:
        return not self.sizes


def _mlp(name, chapter, title, book, split, sizes, eta, **kw) -> Row:
    return Row(name, chapter, title, book, split, kw.pop("epochs", 30), eta, sizes=sizes, **kw)


def _net3(name, title, book, **kw) -> Row:
    return Row(name, 6, title, book, "test", kw.pop("epochs", 60), kw.pop("eta", 0.1),
               cost="log-likelihood", **kw)


_RELU = {"activation": "relu", "eta": 0.03, "lmbda": 0.1}
ROWS = {r.name: r for r in [
    _mlp("ch1", 1, "784-30-10 sigmoid, quadratic cost", 95.42, "test", (784, 30, 10), 3.0,
         init="large", notes="the book's best of 3 runs, at its best epoch"),
    _mlp("ch1-100", 1, "784-100-10 sigmoid, quadratic cost", 96.59, "test", (784, 100, 10),
         3.0, init="large"),
    _mlp("ch3-xent", 3, "784-30-10, cross-entropy", 95.49, "test", (784, 30, 10), 0.5,
         cost="cross-entropy", init="large"),
    _mlp("ch3-l2", 3, "784-30-10, cross-entropy, L2 5.0", 96.49, "test", (784, 30, 10), 0.5,
         cost="cross-entropy", lmbda=5.0, init="large"),
    _mlp("ch3-l2-100", 3, "784-100-10, cross-entropy, L2 5.0", 97.92, "validation",
         (784, 100, 10), 0.5, cost="cross-entropy", lmbda=5.0, init="large"),
    _mlp("ch5-1", 5, "784-30-10, cross-entropy, L2 5.0, eta 0.1", 96.48, "validation",
         (784, 30, 10), 0.1, cost="cross-entropy", lmbda=5.0),
    _mlp("ch5-2", 5, "784-30-30-10", 96.90, "validation", (784, 30, 30, 10), 0.1,
         cost="cross-entropy", lmbda=5.0),
    _mlp("ch5-3", 5, "784-30-30-30-10", 96.57, "validation", (784, 30, 30, 30, 10), 0.1,
         cost="cross-entropy", lmbda=5.0),
    _mlp("ch5-4", 5, "784-30-30-30-30-10", 96.53, "validation", (784, 30, 30, 30, 30, 10),
         0.1, cost="cross-entropy", lmbda=5.0),
    _net3("ch6-shallow", "one hidden layer of 100 sigmoid neurons, softmax", 97.80, conv=0),
    _net3("ch6-conv1", "one conv-pool layer (20 5x5), 100 hidden, softmax", 98.78, conv=1),
    _net3("ch6-conv2", "two conv-pool layers (20, 40), 100 hidden, softmax", 99.06, conv=2),
    _net3("ch6-relu", "two conv-pool layers, ReLU, L2 0.1, eta 0.03", 99.23, conv=2, **_RELU),
    _net3("ch6-expanded", "ch6-relu on the expanded training data", 99.37, conv=2,
          expanded=True, **_RELU),
    _net3("ch6-extra-fc", "ch6-expanded with a second hidden layer of 100", 99.43, conv=2,
          fc=(100, 100), expanded=True, **_RELU),
    _net3("ch6-dropout", "two FC layers of 1000, dropout 0.5, expanded data", 99.60, conv=2,
          fc=(1000, 1000), dropout=0.5, expanded=True, epochs=40, activation="relu",
          eta=0.03),
    _net3("ch6-ensemble", "ensemble of 5 ch6-dropout networks, plurality vote", 99.67, conv=2,
          fc=(1000, 1000), dropout=0.5, expanded=True, epochs=40, activation="relu",
          eta=0.03, ensemble=5),
]}


def get(name: str) -> Row:
    try:
        return ROWS[name]
    except KeyError:
        raise ConfigError(f"unknown book row {name!r}; see `gpunn reproduce --list` for "
                          f"{', '.join(ROWS)}") from None


def build(row: Row, seed=None, backend="auto", compat: str = "book"):
    """The untrained network of ``row`` (one ensemble member)."""
    from gpunn.network import Network

    if compat not in COMPAT:
        raise ConfigError(f"compat must be one of {', '.join(COMPAT)}; received {compat!r}")
    if not row.is_conv_net:
        return Network(list(row.sizes), cost=row.cost, init=row.init, seed=seed,
                       backend=backend)
    layers, channels, n_in = [], 1, 784
    for filters in (20, 40)[:row.conv]:
        layers.append(ConvPool(channels, filters, 5, 2, row.activation))
        channels = filters
    if row.conv:
        side = 28
        for _ in range(row.conv):
            side = (side - 4) // 2
        n_in = channels * side * side
    for width in row.fc:
        layers.append(FullyConnected(n_in, width, row.activation, row.dropout, DROPOUT_MODE))
        n_in = width
    layers.append(Softmax(n_in, 10, row.dropout, DROPOUT_MODE))
    return Network(layers, cost=row.cost, input_shape=(1, 28, 28) if row.conv else None,
                   seed=seed, backend=backend,
                   init="network3" if compat == "network3" else "default")


def run_row(row: Row, data, seed: int, *, epochs=None, backend="auto", compat="book",
            train_size=None, on_epoch=None, on_progress=None, resume=None,
            on_checkpoint=None, should_stop=None, checkpoint_every: int = 0,
            on_nan: str = "stop", expand: str | None = None, comm=None) -> dict:
    """Train ``row`` once with ``seed``; returns its accuracies and time.

    ``data`` is a gpunn.data Dataset. Reports ``final`` (the watched split after the last
    epoch: the book's split, validation for chapter 6), ``best`` and ``best_epoch`` on it,
    for chapter 6 ``test_at_best`` (test accuracy at the epoch of best validation accuracy,
    network3's figure), and ``figure``, the number comparable with ``row.book``.

    ``resume=(net, state)`` (from :func:`gpunn.checkpoint.load_checkpoint`) continues a run
    stopped by ``should_stop``; ``on_checkpoint``, ``checkpoint_every``, ``should_stop`` and
    ``on_nan`` are passed to :meth:`gpunn.Network.sgd`. ``stop_reason`` in the result says
    whether it finished. ``expand`` ("shifts", "rotations", "shifts,rotations" or "none";
    see :func:`gpunn.data.expand.expanded`) replaces the row's own choice of training data
    (shifts for the expanded rows, else none). ``comm`` (:mod:`gpunn.distributed`) trains
    and evaluates across its ranks (see :func:`gpunn.train.fit`).
    """
    from gpunn.data.expand import expanded
    from gpunn.train import evaluate

    epochs = epochs or row.epochs
    train = data.train if not train_size else data.train.subset(train_size)
    if expand is None:
        expand = "shifts" if row.expanded else "none"
    train = expanded(train, expand)
    net, state = resume if resume is not None else (
        build(row, seed=seed, backend=backend, compat=compat), None)
    watch = data.validation if row.chapter == 6 else getattr(data, row.split)
    best = {"accuracy": -1.0, "epoch": 0, "test": None}
    # the epochs of a resumed run already hold what they reached (test accuracy included)
    for record in (state or {}).get("history", {}).get("epochs", []):
        if record["evaluation_accuracy"] > best["accuracy"]:
            best.update(accuracy=record["evaluation_accuracy"], epoch=record["epoch"],
                        test=record.get("test_accuracy"))

    def test_accuracy():
        return evaluate(net, data.test, comm=comm)["accuracy"]  # split over the ranks

    def epoch_done(record):
        acc = record["evaluation_accuracy"]
        if acc > best["accuracy"]:
            best.update(accuracy=acc, epoch=record["epoch"])
            if row.chapter == 6:
                best["test"] = record["test_accuracy"] = test_accuracy()
        if on_epoch is not None:
            on_epoch(record)

    start = time.perf_counter()
    n_l2 = len(train) // row.mini_batch_size if compat == "network3" else None
    history = net.sgd(train, epochs, row.mini_batch_size, row.eta, lmbda=row.lmbda,
                      evaluation_data=watch, on_epoch=epoch_done, on_progress=on_progress,
                      regularisation_n=n_l2, resume=state, on_checkpoint=on_checkpoint,
                      should_stop=should_stop, checkpoint_every=checkpoint_every,
                      on_nan=on_nan, comm=comm)
    final = history[-1]["evaluation_accuracy"] if len(history) else None
    return {
        "row": row.name, "seed": seed, "epochs": len(history), "net": net,
        "stop_reason": history.stop_reason,
        "final": final, "best": best["accuracy"], "best_epoch": best["epoch"],
        "test": test_accuracy(), "test_at_best": best["test"],
        # the number to set beside the book's: network3's for chapter 6, else the last epoch
        "figure": best["test"] if row.chapter == 6 else final,
        "seconds": time.perf_counter() - start,
        # of which the epochs' training (the rest: evaluating, the test set, set-up)
        "train_seconds": sum(record["seconds"] for record in history.epochs),
    }
