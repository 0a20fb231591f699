"""gather_rows: the Numba kernel against the reference and against Split.x (the same values,
bit for bit, so training reads exactly what the data layer would give)."""

from __future__ import annotations

import numpy as np
import pytest

from gpunn.data.dataset import Split
from gpunn.kernels import registry


@pytest.mark.parametrize("scale", [1 / 256, 1 / 255, 0.5])
@pytest.mark.parametrize("impl", ["numpy", "numba"])
def test_gather_rows_equals_split_x(scale, impl):
    r = np.random.default_rng(0)
    images = r.integers(0, 256, (50, 784)).astype(np.uint8)
    images[0] = 255
    idx = r.permutation(50)[:17]
    got = registry.lookup("gather_rows", impl).forward(images, idx, scale)
    want = Split(images, np.zeros(50, np.int64), scale).x(idx)
    assert got.dtype == np.float32 and got.shape == (17, 784)
    assert np.array_equal(got, want)
    if scale == 1 / 255:
        assert registry.lookup("gather_rows", impl).forward(images, [0], scale).max() == 1.0
