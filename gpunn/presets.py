"""The book's runs, by name: the settings behind each figure a reader wants to reproduce.

Each preset is a dict of ``gpunn train`` settings; options given on the command line
override it. ``book`` is the result the book reports for the run and where. The book's
chapter-5 and chapter-6 rows (:mod:`gpunn.book`) are presets too, conv nets included.
"""

from __future__ import annotations

from gpunn.errors import ConfigError

__all__ = ["PRESETS", "DEFAULTS", "get", "names", "describe", "book_rows"]

# The defaults of `gpunn train` are chapter 1's run.
DEFAULTS = {
    "sizes": [784, 30, 10],
    "activation": "sigmoid",
    "cost": "quadratic",
    "eta": 3.0,
    "batch_size": 10,
    "epochs": 30,
    "lmbda": 0.0,
    "l1": 0.0,
    "momentum": 0.0,
    "dropout": 0.0,
    "init": "large",
    "early_stop": 0,
    "schedule": 0,
}

PRESETS = {
    "ch1": {
        "summary": "chapter 1: 784-30-10 sigmoid, quadratic cost, eta 3.0",
        "book": "95.42% test (best of 3 runs)",
        "settings": {},
    },
    "ch1-100": {
        "summary": "chapter 1: 784-100-10 sigmoid, quadratic cost, eta 3.0",
        "book": "96.59% test",
        "settings": {"sizes": [784, 100, 10]},
    },
    "ch3-xent": {
        "summary": "chapter 3: 784-30-10, cross-entropy cost, eta 0.5",
        "book": "95.49% test",
        "settings": {"cost": "cross-entropy", "eta": 0.5},
    },
    "ch3-l2": {
        "summary": "chapter 3: 784-30-10, cross-entropy, L2 lambda 5.0, eta 0.5",
        "book": "96.49% test",
        "settings": {"cost": "cross-entropy", "eta": 0.5, "lmbda": 5.0},
    },
    "ch3-l2-100": {
        "summary": "chapter 3: 784-100-10, cross-entropy, L2 lambda 5.0, eta 0.5",
        "book": "97.92% validation",
        "settings": {"sizes": [784, 100, 10], "cost": "cross-entropy", "eta": 0.5,
                     "lmbda": 5.0},
    },
    "ch3-init": {
        "summary": "chapter 3: ch3-l2-100 with weights N(0, 1/n_in)",
        "book": "learns faster than ch3-l2-100; about the same final accuracy",
        "settings": {"sizes": [784, 100, 10], "cost": "cross-entropy", "eta": 0.5,
                     "lmbda": 5.0, "init": "default"},
    },
    "3b1b": {
        "summary": "3Blue1Brown's network: 784-16-16-10 sigmoid, 13,002 parameters",
        "book": "about 96% test (3Blue1Brown, part 2)",
        "settings": {"sizes": [784, 16, 16, 10]},
    },
}


def _row_preset(row) -> dict:
    """A chapter-5 or chapter-6 row of :mod:`gpunn.book` as ``gpunn train`` settings.

    A convolutional row has ``"row"`` set and ``"sizes"`` None: it is built by
    :func:`gpunn.book.build`; a fully connected one has its sizes."""
    return {**DEFAULTS, "sizes": list(row.sizes) or None, "cost": row.cost, "eta": row.eta,
            "batch_size": row.mini_batch_size, "epochs": row.epochs, "lmbda": row.lmbda,
            "init": row.init, "activation": row.activation if not row.sizes else "sigmoid",
            "dropout": row.dropout if not row.sizes else 0.0,
            "row": None if row.sizes else row.name}


def book_rows() -> dict:
    """The rows of :mod:`gpunn.book` that ``gpunn train`` runs as presets (one network each:
    chapters 5 and 6; the ensemble is ``gpunn ensemble``)."""
    from gpunn.book import ROWS

    return {name: row for name, row in ROWS.items()
            if name not in PRESETS and row.ensemble == 1}


def names() -> list[str]:
    return list(PRESETS) + list(book_rows())


def describe(name: str) -> tuple[str, str]:
    """(summary, the book's figure) of preset ``name``, for ``--list-presets``."""
    if name in PRESETS:
        return PRESETS[name]["summary"], PRESETS[name]["book"]
    row = book_rows()[name]
    return f"chapter {row.chapter}: {row.title}", f"{row.book:.2f}% {row.split}"


def get(name: str) -> dict:
    """The settings of preset ``name`` merged over the defaults."""
    if name in PRESETS:
        return {**DEFAULTS, **PRESETS[name]["settings"]}
    rows = book_rows()
    if name in rows:
        return _row_preset(rows[name])
    raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(names())} "
                      f"(see `gpunn train --list-presets`)")
