"""gather_rows on the CPU: one Numba pass gathers the rows and converts them to float32.

NumPy's uint8 → float32 cast and scale take ~0.3 ms per 1,000 MNIST rows; one fused,
vectorised loop takes a fraction of that. Same interface and rounding as
:mod:`gpunn.kernels.gather`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from gpunn.kernels.gather import divisor


@njit(cache=True)
def _gather(images, idx, factor, divide, out):
    for r in range(idx.shape[0]):
        src = images[idx[r]]
        dst = out[r]
        if divide:
            for j in range(src.shape[0]):
                dst[j] = np.float32(src[j]) / factor
        else:
            for j in range(src.shape[0]):
                dst[j] = np.float32(src[j]) * factor


class GatherRowsNumba:
    backend = "numba"

    def forward(self, images, idx, scale: float):
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        out = np.empty((idx.shape[0], images.shape[1]), np.float32)
        d = divisor(scale)
        _gather(images, idx, np.float32(d if d is not None else scale), d is not None, out)
        return out


gather_rows = GatherRowsNumba()
