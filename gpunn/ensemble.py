"""Ensembles (chapter 6): several networks vote, and the plurality wins.

Each member's guess is its most active output neuron; the ensemble's guess for an example is
the label most members chose. A tie goes to the tied label with the larger summed output
activation over the members, so the vote never depends on label order.

The vote needs only the members' output activations, not the networks: :func:`outputs` gives
them and :func:`vote_accuracy` scores them, so members trained on different machines (or in
different sessions) can vote from their recorded test-set outputs.
"""

from __future__ import annotations

import numpy as np

from gpunn.errors import ConfigError

__all__ = ["vote", "vote_accuracy", "outputs", "Ensemble"]


def vote(outputs) -> np.ndarray:
    """Plurality vote over members' outputs: a list of K arrays (N, n_out) -> labels (N,)."""
    outputs = [np.asarray(o) for o in outputs]
    if not outputs or len({o.shape for o in outputs}) != 1 or outputs[0].ndim != 2:
        shapes = [o.shape for o in outputs]
        raise ConfigError(f"vote expects one or more output arrays of one shape (N, n_out); "
                          f"received shapes {shapes}")
    n, k = outputs[0].shape
    counts = np.zeros((n, k), np.int64)
    for o in outputs:
        counts[np.arange(n), o.argmax(axis=1)] += 1
    total = np.sum(outputs, axis=0)
    # most votes first, then the larger summed activation among the tied labels
    top = counts == counts.max(axis=1, keepdims=True)
    return np.where(top, total, -np.inf).argmax(axis=1)


def vote_accuracy(outputs, labels) -> float:
    """Fraction of examples the plurality vote gets right: ``outputs`` a list of K arrays
    (N, n_out), ``labels`` (N,)."""
    labels = np.asarray(labels)
    guesses = vote(outputs)
    if len(guesses) != len(labels):
        raise ConfigError(f"vote_accuracy expects one label per example; received "
                          f"{len(labels)} labels for outputs of {len(guesses)} examples")
    return float((guesses == labels).mean())


def outputs(net, data, batch: int = 2000) -> np.ndarray:
    """``net``'s output activations on ``data`` (a Split or (X, y)): a NumPy array (N, n_out),
    computed ``batch`` examples at a time."""
    from gpunn.network import as_split

    data = as_split(data)
    return np.concatenate([_activations(net, data.x(np.arange(i, min(i + batch, len(data)))))
                           for i in range(0, len(data), batch)])


def _activations(net, X) -> np.ndarray:
    """``net``'s output activations for the inputs ``X``, as a NumPy array."""
    return net.backend.to_numpy(net.feedforward(net.backend.asarray(X)))


class Ensemble:
    """Networks that predict together by plurality vote."""

    def __init__(self, nets):
        self.nets = list(nets)
        if not self.nets:
            raise ConfigError("an ensemble needs at least one network")

    def predict(self, X) -> np.ndarray:
        return vote([_activations(net, X) for net in self.nets])

    def accuracy(self, data, batch: int = 2000) -> float:
        """Fraction of ``data`` (a Split or (X, y)) the vote gets right."""
        from gpunn.network import as_split

        data = as_split(data)
        return vote_accuracy([outputs(net, data, batch) for net in self.nets], data.labels)
