"""Pictures of the book's figures and 3Blue1Brown's views, drawn with matplotlib into PNG files.

Each function takes numbers (never a network or a dataset to evaluate), draws one figure of a
fixed size in pixels (``SIZES``, at ``DPI``) and writes it to ``path``:

- :func:`training_curves`: accuracy and cost per epoch (``gpunn train --metrics-json``);
- :func:`approximation`: chapter 4's bumps against σ⁻¹∘f and f, and a trained fit;
- :func:`layer_speeds`: chapter 5's speed of learning per hidden layer;
- :func:`first_layer_weights`: each hidden neuron's 784 incoming weights as a 28x28 image;
- :func:`prediction`: a digit beside the activations of the output (and every) layer.

matplotlib is optional (``pip install "gpunn[plot]"``) and imported only inside these
functions, with the headless Agg backend; figures are built with ``matplotlib.figure.Figure``,
not pyplot, so nothing is left open between calls.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from gpunn.errors import ConfigError, GpunnError

__all__ = ["DPI", "SIZES", "training_curves", "approximation", "layer_speeds",
           "first_layer_weights", "prediction", "prediction_size"]

DPI = 100
#: figure sizes in inches; at DPI 100, (10, 4) is a 1000 x 400 pixel PNG
SIZES = {
    "training_curves": (10, 4),
    "approximation": (10, 4),
    "layer_speeds": (10, 4),
    "first_layer_weights": (8, 8),
}
# The book's colours for the speed-of-learning plots (fig/generate_gradient.py).
BOOK_COLOURS = ["#2A6EA6", "#FFA933", "#FF5555", "#55FF55", "#5555FF"]


def _figure(name_or_size):
    """A new matplotlib Figure (Agg), or a GpunnError naming the install when it's missing."""
    try:
        import matplotlib
    except ImportError as exc:
        raise GpunnError('plotting needs matplotlib; install it with pip install "gpunn[plot]"'
                         ) from exc
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")  # headless; an interactive session keeps its own backend
    from matplotlib.figure import Figure

    size = SIZES[name_or_size] if isinstance(name_or_size, str) else name_or_size
    return Figure(figsize=size, dpi=DPI)


def _save(fig, path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, format="png")
    except OSError as exc:
        raise GpunnError(f"could not write the plot {path}: {exc.strerror or exc}") from exc
    return path


# -- training ---------------------------------------------------------------------------------
def training_curves(metrics, path, title: str | None = None) -> Path:
    """Accuracy (left) and cost (right) per epoch, training and evaluation.

    ``metrics`` is what ``gpunn train --metrics-json`` writes (a dict with ``epochs``: a list
    of records with ``epoch`` and any of ``training_accuracy``, ``evaluation_accuracy``,
    ``training_cost``, ``evaluation_cost``), a :class:`gpunn.History`, or the list itself.
    Accuracies are fractions and are drawn as percentages.
    """
    epochs = getattr(metrics, "epochs", None)
    if epochs is None:
        epochs = metrics.get("epochs") if isinstance(metrics, dict) else metrics
    if not isinstance(epochs, list) or not all(isinstance(e, dict) for e in epochs):
        raise ConfigError("training_curves expects metrics with 'epochs': a list of per-epoch "
                          "records, as gpunn train --metrics-json writes")
    panels = []
    for quantity in ("accuracy", "cost"):
        lines = []
        for part in ("training", "evaluation"):
            points = [(e.get("epoch", i + 1), e[f"{part}_{quantity}"])
                      for i, e in enumerate(epochs) if e.get(f"{part}_{quantity}") is not None]
            if points:
                lines.append((part, points))
        if lines:
            panels.append((quantity, lines))
    if not panels:
        raise ConfigError("the metrics hold no per-epoch accuracy or cost to plot (expected "
                          "epochs[].training_accuracy, evaluation_accuracy, training_cost or "
                          "evaluation_cost)")
    fig = _figure("training_curves")
    for k, (quantity, lines) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for part, points in lines:
            x, y = zip(*points)
            y = np.asarray(y, dtype=float) * (100 if quantity == "accuracy" else 1)
            ax.plot(x, y, marker="." if len(x) < 40 else None, label=f"{part} data",
                    color="#2A6EA6" if part == "training" else "#FFA933")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)  # no epoch 1.25
        ax.set_ylabel("accuracy (%)" if quantity == "accuracy" else "cost")
        ax.set_title(f"{quantity.capitalize()} per epoch")
        ax.grid(True, alpha=0.4)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# -- chapter 4 ---------------------------------------------------------------------------------
def approximation(x, goal, weighted: dict, f, outputs: dict, path,
                  deviation: float | None = None) -> Path:
    """Chapter 4's picture: left, σ⁻¹∘f (``goal``) and the weighted outputs Σ h_j a_j + b of
    constructions (``weighted``: label -> (N,) values); right, f and network outputs
    (``outputs``: label -> (N,) values). ``x``: (N,) points of [0, 1].
    """
    fig = _figure("approximation")
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    left.plot(x, goal, color="black", lw=2, label="goal σ⁻¹∘f")
    for (label, y), colour in zip(weighted.items(), BOOK_COLOURS):
        left.plot(x, y, color=colour, lw=1.2, label=label)
    title = "Weighted output from the hidden layer"
    if deviation is not None:
        title += f"\naverage deviation {deviation:.2f} (book's target 0.40)"
    left.set_title(title)
    right.plot(x, f, color="black", lw=2, label="f(x)")
    for (label, y), colour in zip(outputs.items(), BOOK_COLOURS):
        right.plot(x, y, color=colour, lw=1.2, label=label)
    right.set_title("Network output")
    for ax in (left, right):
        ax.set_xlim(0, 1)
        ax.set_xlabel("x")
        ax.grid(True, alpha=0.4)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


# -- chapter 5 ---------------------------------------------------------------------------------
def layer_speeds(results: list, path) -> Path:
    """Chapter 5's speed of learning ‖δ^l‖ (log scale).

    ``results``: one dict per network with ``sizes``, ``speeds`` (one float per hidden
    layer, at initialisation), optionally ``book`` (the book's figures) and ``track`` (a
    list of per-epoch rows of speeds). With tracks, one panel per network shows each hidden
    layer over the epochs, as in the book; without, one panel shows the speed against the
    layer, ours solid and the book's dashed.
    """
    if not results:
        raise ConfigError("layer_speeds needs at least one network's speeds")
    fig = _figure("layer_speeds")
    tracked = [r for r in results if r.get("track")]
    if tracked:
        for k, r in enumerate(tracked):
            ax = fig.add_subplot(1, len(tracked), k + 1)
            track = np.asarray(r["track"], dtype=float)
            for l in range(track.shape[1]):
                ax.plot(np.arange(len(track)), track[:, l], color=BOOK_COLOURS[l % 5],
                        label=f"Hidden layer {l + 1}")
            ax.set_yscale("log")
            ax.set_xlim(0, len(track) - 1)
            ax.set_xlabel("Number of epochs of training")
            ax.set_title(f"Speed of learning: {track.shape[1]} hidden layers", fontsize=10)
            ax.grid(True, alpha=0.4)
            ax.legend(fontsize=7, loc="upper right")
    else:
        ax = fig.add_subplot(1, 1, 1)
        for r, colour in zip(results, BOOK_COLOURS):
            name = "-".join(map(str, r["sizes"]))
            layers = np.arange(1, len(r["speeds"]) + 1)
            ax.plot(layers, r["speeds"], marker="o", color=colour, label=f"{name} (gpunn)")
            if r.get("book"):
                ax.plot(layers, r["book"], marker="o", ls="--", mfc="none", color=colour,
                        label=f"{name} (book)")
        ax.set_yscale("log")
        ax.set_xticks(range(1, max(len(r["speeds"]) for r in results) + 1))
        ax.set_xlabel("hidden layer (1 = next to the input)")
        ax.set_ylabel("speed of learning ‖δˡ‖")
        ax.set_title("Speed of learning at initialisation, mean cost over the training images")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


# -- 3Blue1Brown's views -------------------------------------------------------------------------
def first_layer_weights(w, path, side: int = 28, title: str | None = None) -> Path:
    """Each row of ``w`` (n_hidden, side·side), a hidden neuron's incoming weights, as a
    side x side image: blue positive, red negative, white zero, with limits ±max|w_j| per
    neuron (each pattern uses the whole colour range).
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != side * side:
        raise ConfigError(f"first_layer_weights expects w of shape (n_hidden, {side * side}); "
                          f"received {w.shape}")
    n = w.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = _figure("first_layer_weights")
    for j in range(n):
        ax = fig.add_subplot(rows, cols, j + 1)
        limit = float(np.abs(w[j]).max()) or 1.0
        ax.imshow(w[j].reshape(side, side), cmap="RdBu", vmin=-limit, vmax=limit,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"Incoming weights of the {n} neurons of the first hidden layer "
                          "(blue +, red −)")
    fig.tight_layout()
    return _save(fig, path)


def prediction_size(layers: int) -> tuple[float, float]:
    """Figure size (inches) of :func:`prediction` with ``layers`` activation panels."""
    return (3.2 + 3.6 * layers, 3.4)


def prediction(image, activations: list, path, title: str | None = None) -> Path:
    """The digit (``image``: 784 values in [0, 1]) beside bars of each layer's activations
    (``activations``: a list of 1-D arrays, the output layer last; its largest is the
    network's answer, drawn in orange).
    """
    image = np.asarray(image, dtype=np.float64).reshape(-1)
    side = int(round(math.sqrt(image.size)))
    if side * side != image.size:
        raise ConfigError(f"prediction expects a square image (e.g. 784 values); received "
                          f"{image.size} values")
    if not activations:
        raise ConfigError("prediction needs at least the output layer's activations")
    fig = _figure(prediction_size(len(activations)))
    widths = [3.2] + [3.6] * len(activations)
    grid = fig.add_gridspec(1, len(widths), width_ratios=widths)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(image.reshape(side, side), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("input")
    for k, a in enumerate(activations):
        a = np.asarray(a, dtype=np.float64).reshape(-1)
        ax = fig.add_subplot(grid[0, k + 1])
        last = k == len(activations) - 1
        colours = ["#2A6EA6"] * a.size
        if last:
            colours[int(a.argmax())] = "#FFA933"
        ax.bar(np.arange(a.size), a, color=colours)
        ax.set_ylim(0, max(1.0, float(a.max())))
        if last:
            ax.set_xticks(np.arange(a.size))
            ax.set_title(f"output: {int(a.argmax())}")
        else:
            ax.set_title(f"hidden layer {k + 1} ({a.size})")
            ax.set_xticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
