"""Turn a picture of a handwritten digit into an MNIST-like input vector, for ``gpunn predict``.

MNIST's digits were made this way: the ink's bounding box scaled (anti-aliased) so its longer
side is 20 pixels, then placed in a 28 x 28 field so that the centre of mass of the ink sits at
the field's centre. :func:`load_digit` does the same to a PNG or JPEG of any size, after making
it grey, light-on-dark (inverted when its border is light, as on paper) and stretched so the
background is 0 and the darkest ink 1.

What it leaves out: deskewing, denoising, and finding a digit among other marks; the picture
should hold one digit on a plain background.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpunn.errors import DataError

__all__ = ["load_digit"]

SIDE = 28  # the MNIST field
BOX = 20  # the longer side of the digit's bounding box inside it
INK = 0.2  # a pixel this bright (after stretching to [0, 1]) counts towards the bounding box


def load_digit(path) -> np.ndarray:
    """The digit pictured in the image file ``path`` as a (784,) float32 vector in [0, 1].

    Raises :class:`DataError` naming the file when it is not an image Pillow can read, or
    when it holds no ink (a blank picture).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                image = image.convert("RGBA")  # paint transparent parts white, like paper
                paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(paper, image)
            grey = np.asarray(image.convert("L"), dtype=np.float32) / 255
    except (UnidentifiedImageError, Image.DecompressionBombError, ValueError, SyntaxError) as exc:
        # Pillow raises ValueError/SyntaxError for some damaged files (a truncated PNG header)
        raise DataError(f"{path}: not an image gpunn can read (PNG or JPEG of a digit expected)"
                        ) from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read the image ({exc.strerror or exc})") from exc

    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 0.5:  # dark ink on light paper: MNIST is light ink on black
        grey, border = 1 - grey, 1 - border
    ink = np.clip(grey - np.median(border), 0, None)
    if ink.max() < 0.1:
        raise DataError(f"{path}: no digit found (the picture is nearly uniform); "
                        "a digit on a plain background is expected")
    ink /= ink.max()

    rows = np.flatnonzero((ink >= INK).any(axis=1))
    cols = np.flatnonzero((ink >= INK).any(axis=0))
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = ink.shape
    factor = BOX / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    box = Image.fromarray(np.round(ink * 255).astype(np.uint8)).resize(size, Image.LANCZOS)
    box = np.asarray(box, dtype=np.float32) / 255

    # Shift so the centre of mass lands on the field's centre (13.5, 13.5 in pixel indices).
    total = box.sum()
    ys, xs = np.indices(box.shape)
    top = round((SIDE - 1) / 2 - (ys * box).sum() / total)
    left = round((SIDE - 1) / 2 - (xs * box).sum() / total)
    top = min(max(top, 0), SIDE - box.shape[0])
    left = min(max(left, 0), SIDE - box.shape[1])
    field = np.zeros((SIDE, SIDE), dtype=np.float32)
    field[top:top + box.shape[0], left:left + box.shape[1]] = box
    return field.reshape(-1)
