"""softmax_cross_entropy on the GPU: one block per row, shared-memory reductions.

The CUDA source is ``cuda_sources.SOFTMAX_XENT``. Forward returns the loss as a Python float,
which waits for the GPU once per call. Same interface as :mod:`gpunn.kernels.softmax_xent`.
"""

from __future__ import annotations

import cupy
import numpy as np

from gpunn.kernels import checks
from gpunn.kernels.cuda_sources import SOFTMAX_THREADS
from gpunn.kernels.cupy_module import THREADS, blocks, function
from gpunn.kernels.softmax_xent import check_backward


class SoftmaxCrossEntropyCupy:
    """Fused softmax + cross-entropy (float32 and float64)."""

    backend = "cupy"

    def forward(self, logits, labels):
        """``logits (N, K)`` float, ``labels (N,)`` int -> ``(mean loss, probs (N, K))``."""
        checks.softmax_cross_entropy(logits, labels)
        logits = cupy.ascontiguousarray(logits)
        labels = cupy.ascontiguousarray(labels, dtype=cupy.int64)
        n, k = logits.shape
        probs = cupy.empty_like(logits)
        row_loss = cupy.empty(n, dtype=cupy.float64)
        bad = cupy.zeros(1, dtype=cupy.int32)
        if n:
            function("softmax_xent", logits.dtype, "softmax_xent_forward")(
                (n,), (SOFTMAX_THREADS,),
                (logits, labels, probs, row_loss, bad, np.int32(n), np.int32(k)),
            )
        row = int(bad[0])
        if row:
            raise checks.label_range(k, int(labels[row - 1]))
        return (float(row_loss.sum()) / n if n else 0.0), probs

    def backward(self, probs, labels, scale: float = 1.0):
        """``probs (N, K)``, ``labels (N,)`` -> ``dlogits = scale * (probs - onehot) / N``."""
        check_backward(probs, labels)
        probs = cupy.ascontiguousarray(probs)
        labels = cupy.ascontiguousarray(labels, dtype=cupy.int64)
        n, k = probs.shape
        dlogits = cupy.empty_like(probs)
        factor = probs.dtype.type(scale / max(n, 1))
        function("softmax_xent", probs.dtype, "softmax_xent_backward")(
            blocks(dlogits.size), (THREADS,),
            (probs, labels, dlogits, factor, np.int32(n), np.int32(k)),
        )
        return dlogits


softmax_cross_entropy = SoftmaxCrossEntropyCupy()
