"""gather_rows, the NumPy reference: rows ``idx`` of compact (uint8) images as float32.

``forward(images (N, D) uint8, idx (n,) int, scale) -> (n, D) float32`` with each value
``k * scale``, computed as ``k / (1/scale)`` when ``1/scale`` is a whole number (k/255 is then
correctly rounded and 255/255 is exactly 1), as :meth:`gpunn.data.Split.x` does. Training
calls it once per chunk of ~1,000 shuffled examples; at mini-batch 100 the conversion is a
fifth of an MNIST epoch in NumPy, hence a Numba twin (:mod:`gpunn.kernels.gather_numba`).
"""

from __future__ import annotations

import numpy as np


def divisor(scale: float) -> float | None:
    """1/scale when it is a whole number (divide by it), else None (multiply by scale)."""
    inv = 1.0 / scale
    return inv if float(inv).is_integer() else None


class GatherRowsReference:
    backend = "numpy"

    def forward(self, images, idx, scale: float):
        out = images[idx].astype(np.float32)
        d = divisor(scale)
        if d is not None:
            out /= np.float32(d)
        else:
            out *= np.float32(scale)
        return out


gather_rows = GatherRowsReference()
