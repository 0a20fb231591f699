"""softmax_cross_entropy on the GPU: one block per row, shared-memory reductions.

The CUDA source is ``cuda_sources.SOFTMAX_XENT``. Forward returns the loss as a 0-d device
array and, given a label ``flag``, never waits for the GPU (without one it reads the kernel's
bad-label flag once). Same interface as :mod:`gpunn.kernels.softmax_xent`.
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

    def forward(self, logits, labels, flag=None):
        """``logits (N, K)`` float, ``labels (N,)`` int -> ``(mean loss, probs (N, K))``."""
        checks.softmax_cross_entropy(logits, labels)
        logits = cupy.ascontiguousarray(logits)
        labels = _device_labels(labels)
        n, k = logits.shape
        probs = cupy.empty_like(logits)
        row_loss = cupy.zeros(max(n, 1), dtype=cupy.float64)
        bad = checks.label_flag(cupy) if flag is None else flag
        if n:
            function("softmax_xent", logits.dtype, "softmax_xent_forward")(
                (n,), (SOFTMAX_THREADS,),
                (logits, labels, probs, row_loss, bad, np.int32(n), np.int32(k)),
            )
        if flag is None:  # nobody to read the flag later: wait for the GPU now
            checks.raise_for_label_flag(cupy.asnumpy(bad), k)
        return row_loss.sum() / max(n, 1), probs

    def backward(self, probs, labels, scale: float = 1.0):
        """``probs (N, K)``, ``labels (N,)`` -> ``dlogits = scale * (probs - onehot) / N``."""
        check_backward(probs, labels)
        probs = cupy.ascontiguousarray(probs)
        labels = _device_labels(labels)
        n, k = probs.shape
        dlogits = cupy.empty_like(probs)
        factor = probs.dtype.type(scale / max(n, 1))
        function("softmax_xent", probs.dtype, "softmax_xent_backward")(
            blocks(dlogits.size), (THREADS,),
            (probs, labels, dlogits, factor, np.int32(n), np.int32(k)),
        )
        return dlogits


def _device_labels(labels):
    """Labels as contiguous int64 on the GPU; host (NumPy) labels are copied over, as the
    NumPy reference and the CPU kernels take them (``cupy.ascontiguousarray`` would not)."""
    return cupy.ascontiguousarray(cupy.asarray(labels, dtype=cupy.int64))


softmax_cross_entropy = SoftmaxCrossEntropyCupy()
