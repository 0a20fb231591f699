"""The book's runs, by name: the settings behind each figure a reader wants to reproduce.

A preset is a row of :mod:`gpunn.book` that is one network (chapters 1, 3, 5 and 6, conv
nets included; the ensemble is ``gpunn ensemble``), plus two runs the book shows without a
figure of its own: chapter 3's better weight initialisation and 3Blue1Brown's network.
:func:`get` gives a row as ``gpunn train`` settings; options given on the command line
override them.
"""

from __future__ import annotations

from gpunn.errors import ConfigError

__all__ = ["DEFAULTS", "rows", "get", "names", "describe"]

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


def rows() -> dict:
    """Every preset as a :class:`gpunn.book.Row`, in the book's order."""
    from gpunn.book import ROWS, Row

    nan = float("nan")
    extra = {
        "ch3-init": Row("ch3-init", 3, "ch3-l2-100 with weights N(0, 1/n_in)", nan,
                        "validation", 30, 0.5, lmbda=5.0, cost="cross-entropy",
                        sizes=(784, 100, 10), init="default",
                        notes="learns faster than ch3-l2-100; about the same final accuracy"),
        "3b1b": Row("3b1b", 0, "3Blue1Brown's network: 784-16-16-10 sigmoid, 13,002 "
                    "parameters", nan, "test", 30, 3.0, sizes=(784, 16, 16, 10), init="large",
                    notes="about 96% test (3Blue1Brown, part 2)"),
    }
    out = {}
    for name, row in ROWS.items():
        if row.ensemble == 1:
            out[name] = row
        if name == "ch3-l2-100":
            out["ch3-init"] = extra["ch3-init"]
    out["3b1b"] = extra["3b1b"]
    return out


def names() -> list[str]:
    return list(rows())


def describe(name: str) -> tuple[str, str]:
    """(summary, the book's figure) of preset ``name``, for ``--list-presets``."""
    row = _row(name)
    where = f"chapter {row.chapter}: " if row.chapter else ""
    book = row.notes if row.book != row.book else f"{row.book:.2f}% {row.split}"
    return where + row.title, book


def get(name: str) -> dict:
    """The ``gpunn train`` settings of preset ``name``: a convolutional row has ``"row"``
    set and ``"sizes"`` None (it is built by :func:`gpunn.book.build`)."""
    row = _row(name)
    conv = not row.sizes
    return {**DEFAULTS, "sizes": None if conv else list(row.sizes), "cost": row.cost,
            "eta": row.eta, "batch_size": row.mini_batch_size, "epochs": row.epochs,
            "lmbda": row.lmbda, "init": row.init,
            "activation": row.activation if conv else "sigmoid",
            "dropout": row.dropout if conv else 0.0, "row": row.name if conv else None}


def _row(name: str):
    try:
        return rows()[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(names())} "
                          f"(see `gpunn train --list-presets`)") from None
