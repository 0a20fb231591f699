"""softmax_cross_entropy on the CPU: one Numba pass per row for probabilities and loss.

Each row takes its maximum, then ``exp(z - max)`` into ``probs`` while summing, then
normalises; the row's loss ``log(sum) + max - z[label]`` is summed in float64. Labels out of
range are found inside the loop and reported from Python. For wide rows (``K >= WIDE``) the
row-wise passes go to NumPy, whose SIMD ``exp``, sum and division beat Numba's scalar
loops, and Numba only sums the loss. Same interface as
:mod:`gpunn.kernels.softmax_xent`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gpunn.kernels import checks
from gpunn.kernels.softmax_xent import check_backward


@njit(cache=True)
def _forward(logits, labels, probs):
    """Fill ``probs``; return (total loss, index of the first bad label or -1)."""
    n_, k_ = logits.shape
    total = 0.0
    for n in range(n_):
        label = labels[n]
        if label < 0 or label >= k_:
            return 0.0, n
        z, p = logits[n], probs[n]
        m = z[0]
        for k in range(1, k_):
            if z[k] > m:
                m = z[k]
        s = 0.0
        for k in range(k_):
            e = np.exp(z[k] - m)
            p[k] = e
            s += e
        inv = 1.0 / s
        for k in range(k_):
            p[k] *= inv
        total += np.log(s) + m - z[label]
    return total, -1


@njit(cache=True)
def _row_loss(logits, row_max, row_sum, labels):
    """Total of ``log(sum) + max - z[label]`` over rows; (total, first bad row or -1)."""
    n_, k_ = logits.shape
    total = 0.0
    for n in range(n_):
        label = labels[n]
        if label < 0 or label >= k_:
            return 0.0, n
        total += np.log(row_sum[n]) + row_max[n] - logits[n, label]
    return total, -1


@njit(cache=True)
def _backward(probs, labels, factor, dlogits):
    n_, k_ = probs.shape
    for n in range(n_):
        p, d = probs[n], dlogits[n]
        for k in range(k_):
            d[k] = p[k] * factor
        d[labels[n]] -= factor


WIDE = 64


class SoftmaxCrossEntropyNumba:
    """Fused softmax + cross-entropy, one pass per row (float32 and float64)."""

    backend = "numba"

    def forward(self, logits, labels, flag=None):
        """``logits (N, K)`` float, ``labels (N,)`` int -> ``(mean loss, probs (N, K))``.

        A bad label raises at once (no device to wait for): ``flag`` is left alone."""
        checks.softmax_cross_entropy(logits, labels)
        logits = np.ascontiguousarray(logits)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        probs = np.empty_like(logits)
        if logits.shape[1] >= WIDE:
            row_max = logits.max(axis=1)
            np.exp(np.subtract(logits, row_max[:, None], out=probs), out=probs)
            row_sum = probs.sum(axis=1)
            probs /= row_sum[:, None]
            total, bad = _row_loss(logits, row_max, row_sum, labels)
        else:
            total, bad = _forward(logits, labels, probs)
        if bad >= 0:
            raise checks.label_range(logits.shape[1], int(labels[bad]))
        return np.float64(total / max(logits.shape[0], 1)), probs

    def backward(self, probs, labels, scale: float = 1.0):
        """``probs (N, K)``, ``labels (N,)`` -> ``dlogits = scale * (probs - onehot) / N``."""
        check_backward(probs, labels)
        dlogits = np.empty(probs.shape, dtype=probs.dtype)
        factor = scale / max(probs.shape[0], 1)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        _backward(np.ascontiguousarray(probs), labels, factor, dlogits)
        return dlogits


softmax_cross_entropy = SoftmaxCrossEntropyNumba()
