"""softmax_cross_entropy, the NumPy reference: the oracle the other implementations meet.

The softmax output layer and the log-likelihood cost of the book's chapter 3, fused:
for ``logits z (N, K)`` and integer ``labels y (N,)``,

    p = softmax(z),   loss = -(1/N) * sum_n log p[n, y_n],   dloss/dz = (p - onehot(y)) / N

Numerically stable: ``log p = z - max(z) - log(sum(exp(z - max(z))))`` (log-sum-exp), so
logits of +-1e4 give a finite loss; ``p`` never has to be 0 for the loss to stay finite.
Uses only ``xp`` operations, so it runs on CuPy arrays too.

Interface (shared by ``softmax_xent_numba`` and ``softmax_xent_cupy``)::

    loss, probs = softmax_cross_entropy.forward(logits, labels)   # loss: 0-d float64 array
    loss, probs = softmax_cross_entropy.forward(logits, labels, flag)  # no wait for the GPU
    dlogits = softmax_cross_entropy.backward(probs, labels, scale=1.0)  # scale*(p - onehot)/N

``loss`` is the mean loss as a 0-d float64 array on the logits' device (a NumPy float64 on
the CPU): nothing waits for the GPU until someone reads it (``float(loss)``), so a training
step sums losses on the device. Checking the labels' range would wait too: given ``flag``
(:func:`gpunn.kernels.checks.label_flag`), a GPU implementation records a bad label there for
the caller to read once per chunk; host implementations raise at once either way.
"""

from __future__ import annotations

import numpy as np

from gpunn.backend import array_module
from gpunn.errors import ConfigError
from gpunn.kernels import checks


def check_backward(probs, labels) -> None:
    """Raise unless ``probs (N, K)`` and ``labels (N,)`` agree (shared by all backends)."""
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ConfigError(
            f"softmax_cross_entropy backward expects probs of shape (N, K) and labels of "
            f"shape (N,); received probs.shape={probs.shape}, labels.shape={labels.shape}"
        )


class SoftmaxCrossEntropyReference:
    """Fused softmax + cross-entropy in plain ``xp`` operations (NumPy or CuPy)."""

    backend = "numpy"

    def forward(self, logits, labels, flag=None):
        """``logits (N, K)`` float, ``labels (N,)`` int -> ``(mean loss, probs (N, K))``."""
        checks.softmax_cross_entropy(logits, labels)
        xp = array_module(logits)
        labels = xp.asarray(labels)  # host labels for device logits are welcome
        n, k = logits.shape
        out_of_range = (labels < 0) | (labels >= k)
        if n and flag is not None and xp is not np:  # record on the device for the caller
            first = out_of_range.argmax()
            found = xp.stack([out_of_range[first], labels[first]]).astype(xp.int64)
            flag[...] = xp.where(flag[0] > 0, flag, found)  # keep the first bad label
            labels = xp.clip(labels, 0, k - 1)
        elif n and out_of_range.any():
            raise checks.label_range(k, int(labels[out_of_range][0]))
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_sum = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        log_p = shifted - log_sum
        loss = (-log_p[xp.arange(n), labels].mean()).astype(np.float64) if n else np.float64(0)
        return loss, xp.exp(log_p)

    def backward(self, probs, labels, scale: float = 1.0):
        """``probs (N, K)``, ``labels (N,)`` -> ``dlogits = scale * (probs - onehot) / N``."""
        check_backward(probs, labels)
        xp = array_module(probs)
        labels = xp.asarray(labels)
        n = probs.shape[0]
        dlogits = probs.copy()
        dlogits[xp.arange(n), labels] -= 1
        dlogits *= probs.dtype.type(scale / max(n, 1))
        return dlogits


softmax_cross_entropy = SoftmaxCrossEntropyReference()
