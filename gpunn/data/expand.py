"""Expanded training data (chapter 6): every image also shifted one pixel up, down, left and
right, with zero fill, as the book's ``expand_mnist.py`` makes it: 5 × 50,000 = 250,000.

The shifted copies are never stored: :class:`ExpandedSplit` makes the rows asked for from the
original uint8 images, one mini-batch chunk at a time, so memory stays that of the original
split (no 5× float64 file as the book's script writes). Small rotations are left out.
"""

from __future__ import annotations

import numpy as np

from gpunn.data.dataset import PIXELS, SIDE, Split
from gpunn.errors import ConfigError

__all__ = ["ExpandedSplit", "expand_mnist", "shift_images", "SHIFTS"]

# (down, right) of each copy; copy 0 is the original image.
SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def shift_images(images, down: int, right: int):
    """``images (n, H, W)`` moved by (down, right) pixels; what moves in is zero."""
    out = np.zeros_like(images)
    h, w = images.shape[1:]
    out[:, max(down, 0):h + min(down, 0), max(right, 0):w + min(right, 0)] = \
        images[:, max(-down, 0):h + min(-down, 0), max(-right, 0):w + min(-right, 0)]
    return out


class ExpandedSplit:
    """A training split and its four one-pixel shifts: ``len = 5 × len(split)``.

    Row ``i`` is copy ``i // n`` (see :data:`SHIFTS`) of image ``i % n``. Same interface as
    :class:`gpunn.data.Split` (``x(idx)``, ``labels``, ``len``, ``subset``).
    """

    def __init__(self, split: Split):
        if split.images.shape[1:] != (PIXELS,):
            raise ConfigError(f"expand_mnist needs 28x28 images stored as (N, {PIXELS}); "
                              f"received images of shape {split.images.shape}")
        self.base = split
        self.labels = np.tile(split.labels, len(SHIFTS))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def scale(self) -> float:
        return self.base.scale

    def raw(self, idx) -> np.ndarray:
        """The stored-format (e.g. uint8) rows ``idx``, shifted as their copy says."""
        n = len(self.base)
        idx = np.arange(len(self)) if idx is None else np.asarray(idx)
        source, copy = idx % n, idx // n
        images = self.base.images[source].reshape(-1, SIDE, SIDE)
        out = np.empty_like(images)
        for k, (down, right) in enumerate(SHIFTS):
            pick = copy == k
            if pick.any():
                out[pick] = shift_images(images[pick], down, right)
        return out.reshape(-1, PIXELS)

    def x(self, idx=None, dtype=np.float32, shape: str = "flat") -> np.ndarray:
        rows = self.raw(idx)
        return Split(rows, np.zeros(len(rows), np.int64), self.base.scale).x(None, dtype, shape)

    def subset(self, n: int) -> Split:
        idx = np.arange(n)
        return Split(self.raw(idx), self.labels[:n].copy(), self.base.scale)


def expand_mnist(split: Split) -> ExpandedSplit:
    """The book's expanded training set for ``split`` (250,000 rows for MNIST's 50,000)."""
    return ExpandedSplit(split)
