"""A small real image folder to run the ImageNet-style demo on: drawn shapes and textures as JPEGs.

``make_toy(dir)`` writes ``dir/train/<class>/*.jpg`` and ``dir/val/<class>/*.jpg`` in the layout
:mod:`gpunn.data.folder` reads: by default 10 classes x (300 training + 60 validation) images of
80 x 80 pixels, 3,600 files, in a few seconds. The classes are shapes and textures::

    circle  square  triangle  cross  hstripes  vstripes  checkerboard  ring  diagonal  dots

Each image has its own random background and foreground colours (kept apart so the shape shows),
position, size, small rotation and pixel noise. Colours say nothing about the class, so the mean
colour of an image is no better than chance; the shape is what a convnet has to learn (a small one
gets above 90% on the validation split at crop 64).

Everything is written into ``dir.part`` first and renamed to ``dir`` at the end, so an
interrupted run leaves no half-written dataset. What it leaves out: anything photographic.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from gpunn.errors import ConfigError, DataError

__all__ = ["TOY_CLASSES", "FolderNotEmpty", "make_toy"]

TOY_CLASSES = ("circle", "square", "triangle", "cross", "hstripes", "vstripes", "checkerboard",
               "ring", "diagonal", "dots")
NOISE = 12  # standard deviation of the pixel noise, in 0..255 units
MIN_CONTRAST = 120  # the least Euclidean distance between background and foreground RGB


class FolderNotEmpty(DataError):
    """:func:`make_toy` was given a folder that holds files, without ``overwrite=True``.

    ``path`` is the folder; :meth:`words` gives the message with the caller's name for the
    overwrite switch (``gpunn imagenet make-toy`` says ``--overwrite``).
    """

    def __init__(self, path: Path):
        self.path = path
        super().__init__(self.words("overwrite=True"))

    def words(self, overwrite: str) -> str:
        return (f"{self.path}: not empty; the toy set is written only into a new or empty "
                f"folder, so choose another path or pass {overwrite} to replace it")


def make_toy(dir, classes: int = 10, per_class: int = 300, val_per_class: int = 60,
             size: int = 80, seed: int = 0, progress=None, overwrite: bool = False) -> Path:
    """Write the toy image folder at ``dir`` and return its path.

    ``classes`` takes the first 2 to 10 of :data:`TOY_CLASSES`; ``size`` is the side of every
    image in pixels; the same ``seed`` writes the same images. ``progress(done, total)`` is
    called after each file. ``dir`` must be new or empty unless ``overwrite=True``, which
    replaces it once the new folder is complete. Raises :class:`FolderNotEmpty` for a folder
    with files in it and :class:`DataError` for another unusable ``dir``.
    """
    if not 2 <= classes <= len(TOY_CLASSES) or per_class < 1 or val_per_class < 1 or size < 16:
        raise ConfigError(f"make_toy needs 2 <= classes <= {len(TOY_CLASSES)}, per_class >= 1, "
                          f"val_per_class >= 1 and size >= 16; received classes={classes}, "
                          f"per_class={per_class}, val_per_class={val_per_class}, size={size}")
    from PIL import Image, ImageDraw

    dest = Path(dir)
    if dest.exists() and not dest.is_dir():
        raise DataError(f"{dest}: exists and is not a folder; choose another path for the toy "
                        "dataset")
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise FolderNotEmpty(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    shutil.rmtree(part, ignore_errors=True)  # left by an interrupted run
    rng = np.random.default_rng(seed)
    names = TOY_CLASSES[:classes]
    total, done = classes * (per_class + val_per_class), 0
    try:
        for split, count in (("train", per_class), ("val", val_per_class)):
            for label, name in enumerate(names):
                folder = part / split / name
                folder.mkdir(parents=True)
                for i in range(count):
                    bg = _colour(rng)
                    fg = _colour(rng, away_from=bg)
                    image = Image.new("RGB", (size, size), bg)
                    _DRAW[label](ImageDraw.Draw(image), rng, size, fg)
                    pixels = np.asarray(image, dtype=np.float32)
                    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * NOISE
                    noisy = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                    noisy.save(folder / f"{name}_{i:04d}.jpg", quality=90)
                    done += 1
                    if progress is not None:
                        progress(done, total)
        _move_in(part, dest)
    except BaseException:  # KeyboardInterrupt too: leave nothing half-written
        shutil.rmtree(part, ignore_errors=True)
        raise
    return dest


def _move_in(part: Path, dest: Path) -> None:
    """Rename the finished ``part`` to ``dest``, replacing an old ``dest`` only at the end."""
    if not dest.exists():
        os.rename(part, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.rename(dest, old / dest.name)
    os.rename(part, dest)
    shutil.rmtree(old, ignore_errors=True)


def _colour(rng, away_from=None) -> tuple[int, int, int]:
    while True:
        rgb = rng.integers(0, 256, 3)
        if away_from is None or np.linalg.norm(rgb - np.asarray(away_from)) >= MIN_CONTRAST:
            return tuple(int(c) for c in rgb)


def _place(rng, size):
    """A centre and radius for a shape: radius 20-38% of the side, fully inside the image."""
    r = rng.uniform(0.2, 0.38) * size
    cx, cy = rng.uniform(r + 1, size - r - 1, 2)
    return cx, cy, r


def _polygon(draw, points, cx, cy, angle, fill):
    """Fill ``points`` (relative to the centre) rotated by ``angle`` radians about (cx, cy)."""
    c, s = math.cos(angle), math.sin(angle)
    draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in points], fill=fill)


def _tilt(rng, degrees=15):
    return math.radians(rng.uniform(-degrees, degrees))


def _circle(draw, rng, size, fg):
    cx, cy, r = _place(rng, size)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)


def _square(draw, rng, size, fg):
    cx, cy, r = _place(rng, size)
    r *= 0.85  # its corners would reach r * sqrt(2)
    _polygon(draw, [(-r, -r), (r, -r), (r, r), (-r, r)], cx, cy, _tilt(rng), fg)


def _triangle(draw, rng, size, fg):
    cx, cy, r = _place(rng, size)
    h = r * math.sqrt(3) / 2
    _polygon(draw, [(0, -r), (h, r / 2), (-h, r / 2)], cx, cy, _tilt(rng), fg)


def _cross(draw, rng, size, fg):
    cx, cy, r = _place(rng, size)
    w, angle = r * rng.uniform(0.22, 0.35), _tilt(rng)
    _polygon(draw, [(-r, -w), (r, -w), (r, w), (-r, w)], cx, cy, angle, fg)
    _polygon(draw, [(-w, -r), (w, -r), (w, r), (-w, r)], cx, cy, angle, fg)


def _stripes(draw, rng, size, fg, horizontal):
    period = rng.uniform(7, 16)
    width, offset = period * rng.uniform(0.35, 0.6), rng.uniform(0, period)
    start = offset - period
    while start < size:
        box = (0, start, size, start + width) if horizontal else (start, 0, start + width, size)
        draw.rectangle(box, fill=fg)
        start += period


def _hstripes(draw, rng, size, fg):
    _stripes(draw, rng, size, fg, horizontal=True)


def _vstripes(draw, rng, size, fg):
    _stripes(draw, rng, size, fg, horizontal=False)


def _checkerboard(draw, rng, size, fg):
    cell = int(rng.integers(7, 17))
    dx, dy = (int(v) for v in rng.integers(0, 2 * cell, 2))
    for row in range(-2, size // cell + 2):
        for col in range(-2, size // cell + 2):
            if (row + col) % 2 == 0:
                x, y = col * cell + dx - cell, row * cell + dy - cell
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=fg)


def _ring(draw, rng, size, fg):
    cx, cy, r = _place(rng, size)
    width = max(2, round(r * rng.uniform(0.18, 0.3)))
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fg, width=width)


def _diagonal(draw, rng, size, fg):
    """A thick line rising to the right ("/"), at 30 to 60 degrees, across most of the image."""
    cx, cy, r = _place(rng, size)
    angle = math.radians(rng.uniform(30, 60))
    dx, dy = r * 1.3 * math.cos(angle), r * 1.3 * math.sin(angle)
    draw.line((cx - dx, cy + dy, cx + dx, cy - dy), fill=fg,
              width=max(3, round(size * rng.uniform(0.06, 0.1))))


def _dots(draw, rng, size, fg):
    for _ in range(int(rng.integers(5, 13))):
        r = rng.uniform(0.03, 0.06) * size
        x, y = rng.uniform(r, size - r, 2)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fg)


_DRAW = (_circle, _square, _triangle, _cross, _hstripes, _vstripes, _checkerboard, _ring,
         _diagonal, _dots)
