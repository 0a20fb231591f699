"""Expanded training data (chapter 6): every image also shifted one pixel up, down, left and
right, with zero fill, as the book's ``expand_mnist.py`` makes it: 5 × 50,000 = 250,000.
Optionally each image also rotated by ±θ, the other expansion the book names (chapter 3,
"Artificially expanding the training data", rotates a digit by 15 degrees).

The copies are never stored: :class:`ExpandedSplit` makes the rows asked for from the
original uint8 images, one mini-batch chunk at a time, so memory stays that of the original
split (no 5× float64 file as the book's script writes). A rotation samples the image
bilinearly about its centre, with zero outside, and rounds back to the stored uint8.
What it leaves out: elastic distortions and the other transformations of Simard et al.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from gpunn.data.dataset import PIXELS, SIDE, Split
from gpunn.errors import ConfigError

__all__ = ["BOOK_ROTATION", "FAMILIES", "ExpandedSplit", "expand_mnist", "expanded", "families",
           "rotate_images", "shift_images", "SHIFTS"]

# (down, right) of each copy; copy 0 is the original image.
SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
#: The kinds of copy that can be asked for by name (``--expand shifts,rotations``).
FAMILIES = ("shifts", "rotations")
#: Degrees of the book's example rotation (chapter 3): a small one still reads as the digit.
BOOK_ROTATION = 15.0


def shift_images(images, down: int, right: int):
    """``images (n, H, W)`` moved by (down, right) pixels; what moves in is zero."""
    out = np.zeros_like(images)
    h, w = images.shape[1:]
    out[:, max(down, 0):h + min(down, 0), max(right, 0):w + min(right, 0)] = \
        images[:, max(-down, 0):h + min(-down, 0), max(-right, 0):w + min(-right, 0)]
    return out


@functools.lru_cache(maxsize=16)
def _rotation_taps(h: int, w: int, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """For every output pixel, its four bilinear source pixels and their weights: (4, H*W)
    flat indices and (4, H*W) float64 weights, zero where a source pixel is off the image.

    The output pixel at (row r, column c) samples the input at the point that the rotation
    about the centre ((H-1)/2, (W-1)/2) carries onto it; positive ``degrees`` turn the image
    anticlockwise as it is displayed (rows go down), as Pillow's ``Image.rotate`` does.
    """
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    r, c = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                       indexing="ij")
    y, x = r - (h - 1) / 2, c - (w - 1) / 2
    src_r = (h - 1) / 2 + x * sin + y * cos
    src_c = (w - 1) / 2 + x * cos - y * sin
    r0, c0 = np.floor(src_r), np.floor(src_c)
    fr, fc = src_r - r0, src_c - c0
    index, weight = [], []
    for dr, dc, wt in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                       (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        rr, cc = (r0 + dr).astype(np.int64), (c0 + dc).astype(np.int64)
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        index.append(np.where(inside, rr * w + cc, 0).ravel())
        weight.append(np.where(inside, wt, 0.0).ravel())
    return np.stack(index), np.stack(weight)


def rotate_images(images, degrees: float):
    """``images (n, H, W)`` rotated by ``degrees`` about their centres (anticlockwise as
    displayed), bilinear, zero outside. Integer images are rounded back to their dtype."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ConfigError(f"rotate_images expects images of shape (n, H, W); received "
                          f"images.shape={images.shape}")
    n, h, w = images.shape
    index, weight = _rotation_taps(h, w, float(degrees))
    # float32 sums for uint8 (a level is 1/255, float32 keeps 1e-5 of it), else float64
    work = np.float64 if images.dtype == np.float64 else np.float32
    taps = images.reshape(n, h * w)[:, index]  # (n, 4, H*W), gathered in the stored dtype
    out = np.einsum("nkp,kp->np", taps.astype(work), weight.astype(work))
    if np.issubdtype(images.dtype, np.integer):
        info = np.iinfo(images.dtype)
        out = np.clip(np.floor(out + 0.5), info.min, info.max)
    return out.astype(images.dtype).reshape(n, h, w)


def _copies(shifts: bool, rotations) -> tuple[tuple, ...]:
    """The copies of each image, in row-block order: ("shift", down, right) or
    ("rotate", degrees); the first is always the original ("shift", 0, 0)."""
    copies = [("shift", 0, 0)]
    if shifts:
        copies += [("shift", down, right) for down, right in SHIFTS[1:]]
    if rotations is not None and rotations is not False:
        theta = BOOK_ROTATION if rotations is True else rotations
        if not (isinstance(theta, (int, float, np.integer, np.floating)) and math.isfinite(theta)
                and 0 < theta < 90):
            raise ConfigError(f"rotations should be an angle in degrees, 0 < θ < 90 (the book "
                              f"uses {BOOK_ROTATION:g}); received rotations={rotations!r}")
        copies += [("rotate", float(theta)), ("rotate", -float(theta))]
    if len(copies) == 1:
        raise ConfigError("expand_mnist needs shifts=True, rotations=θ or both; received "
                          "shifts=False, rotations=None (use the split itself for no "
                          "expansion)")
    return tuple(copies)


class ExpandedSplit:
    """A training split and its copies: ``len = len(copies) × len(split)``.

    Row ``i`` is copy ``i // n`` (see :attr:`copies`) of image ``i % n``: the original, then
    the four one-pixel shifts of :data:`SHIFTS` (``shifts=True``), then the rotations by
    +θ and −θ (``rotations=θ``). Same interface as :class:`gpunn.data.Split` (``x(idx)``,
    ``labels``, ``len``, ``subset``).
    """

    def __init__(self, split: Split, shifts: bool = True, rotations=None):
        if split.images.shape[1:] != (PIXELS,):
            raise ConfigError(f"expand_mnist needs 28x28 images stored as (N, {PIXELS}); "
                              f"received images of shape {split.images.shape}")
        self.base = split
        self.copies = _copies(shifts, rotations)
        self.labels = np.tile(split.labels, len(self.copies))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def scale(self) -> float:
        return self.base.scale

    def raw(self, idx) -> np.ndarray:
        """The stored-format (e.g. uint8) rows ``idx``, moved as their copy says."""
        n = len(self.base)
        idx = np.arange(len(self)) if idx is None else np.asarray(idx)
        source, copy = idx % n, idx // n
        images = self.base.images[source].reshape(-1, SIDE, SIDE)
        out = np.empty_like(images)
        for k, (kind, *how) in enumerate(self.copies):
            pick = copy == k
            if pick.any():
                out[pick] = (shift_images(images[pick], *how) if kind == "shift"
                             else rotate_images(images[pick], *how))
        return out.reshape(-1, PIXELS)

    def x(self, idx=None, dtype=np.float32, shape: str = "flat") -> np.ndarray:
        rows = self.raw(idx)
        return Split(rows, np.zeros(len(rows), np.int64), self.base.scale).x(None, dtype, shape)

    def subset(self, n: int) -> Split:
        idx = np.arange(n)
        return Split(self.raw(idx), self.labels[:n].copy(), self.base.scale)


def expand_mnist(split: Split, shifts: bool = True, rotations=None) -> ExpandedSplit:
    """The book's expanded training set for ``split`` (250,000 rows for MNIST's 50,000).

    ``rotations=θ`` (degrees, 0 < θ < 90; ``True`` for the book's 15) adds each image turned
    by +θ and −θ: 7 copies with the shifts, 3 with ``shifts=False``.
    """
    return ExpandedSplit(split, shifts, rotations)


def families(text: str) -> str:
    """``text`` ("shifts", "rotations", "shifts,rotations" or "none") checked and written in
    :data:`FAMILIES` order, e.g. "rotations,shifts" -> "shifts,rotations"."""
    parts = [part.strip() for part in str(text).split(",")]
    if parts == ["none"]:
        return "none"
    unknown = [part for part in parts if part not in FAMILIES]
    if unknown or len(set(parts)) != len(parts):
        raise ConfigError(f"expected shifts, rotations, shifts,rotations or none; received "
                          f"{text!r}")
    return ",".join(name for name in FAMILIES if name in parts)


def expanded(split: Split, names: str):
    """``split`` expanded by the copies ``names`` lists (see :func:`families`): rotations
    are by ±:data:`BOOK_ROTATION`; "none" gives ``split`` itself."""
    names = families(names)
    if names == "none":
        return split
    return ExpandedSplit(split, "shifts" in names, True if "rotations" in names else None)
