"""The containers the loaders return: a :class:`Dataset` of three :class:`Split` s.

A split keeps its images as compact as the source allows (uint8, with ``scale`` saying what one
unit is worth) and converts to float32 only the rows asked for, one mini-batch at a time. The
50,000 training images of MNIST take 39 MB this way instead of 157 MB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpunn.errors import ConfigError

__all__ = ["Dataset", "Split"]

SIDE = 28  # MNIST and Fashion-MNIST images are SIDE x SIDE grey pixels
PIXELS = SIDE * SIDE


@dataclass(frozen=True, eq=False)  # arrays inside: compare with numpy, not ==
class Split:
    """One part of a dataset (training, validation or test): N images and their labels.

    ``images`` is (N, 784) raw storage: uint8 (``scale`` 1/256 for the book's file, 1/255 for
    IDX files) or float32 (``scale`` 1.0). ``labels`` is (N,) int64, each in 0..9.
    """

    images: np.ndarray
    labels: np.ndarray
    scale: float

    def __len__(self) -> int:
        return len(self.labels)

    def x(self, idx=None, dtype=np.float32, shape: str = "flat") -> np.ndarray:
        """Images ``idx`` (all when None; an int array, slice or mask) as values in [0, 1].

        ``shape="flat"`` gives (n, 784), the book's input vectors; ``shape="image"`` gives
        (n, 1, 28, 28) (N, C, H, W) for convolutional layers. A fresh array of ``dtype``.
        """
        raw = self.images if idx is None else self.images[idx]
        out = raw.astype(dtype)  # always a copy, so callers may scale it in place
        if self.scale != 1.0:
            divisor = 1.0 / self.scale
            if divisor.is_integer():  # divide: k/255 is then correctly rounded, 255/255 is 1
                out /= out.dtype.type(divisor)
            else:
                out *= out.dtype.type(self.scale)
        if shape == "flat":
            return out.reshape(-1, PIXELS)
        if shape == "image":
            return out.reshape(-1, 1, SIDE, SIDE)
        raise ConfigError(f"Split.x shape should be 'flat' or 'image'; received {shape!r}")

    def subset(self, n: int) -> Split:
        """The first ``n`` examples (for ``--train-size``); views, no copy."""
        if not 1 <= n <= len(self):
            raise ConfigError(f"a subset of 1 to {len(self)} examples was expected; "
                              f"received n={n}")
        return Split(self.images[:n], self.labels[:n], self.scale)


@dataclass(frozen=True, eq=False)  # arrays inside: compare with numpy, not ==
class Dataset:
    """A named dataset: training, validation and test splits, and the names of its classes.

    ``source`` is where it was read from: the book's ``mnist.pkl.gz`` or a folder of IDX files.
    """

    name: str
    source: str
    train: Split
    validation: Split
    test: Split
    classes: tuple[str, ...]

    def __repr__(self) -> str:
        sizes = "/".join(str(len(s)) for s in (self.train, self.validation, self.test))
        return f"Dataset({self.name!r}, train/validation/test={sizes}, source={self.source!r})"
