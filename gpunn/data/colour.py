"""KSH 2012's colour augmentation: PCA colour noise on the training images.

KSH (section 4.1) perform PCA on the RGB pixel values of the training set and add to every
pixel of an image the same shift ``[p1 p2 p3] [α1 λ1, α2 λ2, α3 λ3]ᵀ``, where ``pᵢ`` and
``λᵢ`` are the eigenvectors and eigenvalues of the 3 × 3 covariance of RGB values and
``αᵢ ~ N(0, 0.1²)`` is drawn once per image each time it is used. The shift here is
``Σ αᵢ √λᵢ pᵢ``, the standard deviation along each principal component rather than its
variance, as the reproductions of the paper do (Caffe's and fb.resnet.torch's ImageNet
figures, 55.46, 4.79 and 1.15 levels of 255, are these square roots). Read literally, λᵢ
makes the shift depend on the pixels' units: for ImageNet's first component about 300
levels on a 0-255 scale, about one level on [0, 1]; with √λᵢ it is about 5 either way.

    from gpunn.data import open_image_folder
    from gpunn.data.colour import PCANoise
    train, val = open_image_folder("toy", crop=64)
    noisy = PCANoise(train)                 # rgb_pca of 1,000 centre crops, computed once
    X, y = noisy.load([0, 1, 2], rng)       # train's crops and flips, then the noise

The noise is drawn from the generator :meth:`PCANoise.load` is handed, after the crops and
flips, so each batch's noise is fixed by ``(seed, epoch, batch)`` as its crops are and a
resumed run sees the same images. Batches leave the host as float32 (the noise is added
after normalising, where a uint8 image could not hold it). What it leaves out: noise at
evaluation (KSH evaluate clean images), and a covariance of every training pixel (a sample of
images is as good: the 3 × 3 matrix settles within a few hundred).
"""

from __future__ import annotations

import numpy as np

from gpunn.errors import ConfigError

__all__ = ["KSH_ALPHA_STD", "PCANoise", "colour_shift", "rgb_pca"]

#: The standard deviation of KSH's αᵢ.
KSH_ALPHA_STD = 0.1
_CACHE: dict = {}  # rgb_pca's results, keyed by the folder, crop and sample


def rgb_pca(dataset, samples: int = 1000, seed: int = 0):
    """``(eigenvalues (3,), eigenvectors (3, 3))`` of the covariance of RGB values on [0, 1]
    in up to ``samples`` centre crops of ``dataset`` (an :class:`~gpunn.data.ImageFolder`),
    drawn at random with ``seed``; eigenvalues descending, eigenvector ``i`` in column ``i``.

    Computed once per folder, crop and sample in a process (the same numbers every time:
    a resumed run adds the same noise). The sums are float64, 100 images at a time.
    """
    if not hasattr(dataset, "load_uint8"):
        raise ConfigError(f"PCA colour noise needs an image folder (gpunn.data.ImageFolder); "
                          f"received {type(dataset).__name__}")
    key = (str(getattr(dataset, "folder", id(dataset))), len(dataset), dataset.crop,
           getattr(dataset, "resize", None), samples, seed)
    if key not in _CACHE:
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.permutation(len(dataset))[:samples])
        total, outer, count = np.zeros(3), np.zeros((3, 3)), 0
        for start in range(0, len(indices), 100):
            pixels = dataset.load_uint8(indices[start:start + 100]).reshape(-1, 3) / 255.0
            total += pixels.sum(axis=0)
            outer += pixels.T @ pixels
            count += len(pixels)
        mean = total / count
        covariance = outer / count - np.outer(mean, mean)
        values, vectors = np.linalg.eigh(covariance)  # ascending
        values = np.clip(values[::-1], 0.0, None)     # rounding may leave -1e-18
        _CACHE[key] = (values, vectors[:, ::-1].copy())
    values, vectors = _CACHE[key]
    return values.copy(), vectors.copy()


def colour_shift(alphas, eigenvalues, eigenvectors) -> np.ndarray:
    """The RGB shift of each image: ``alphas (n, 3)`` -> (n, 3) ``Σᵢ αᵢ √λᵢ pᵢ``, on the
    scale the eigenvalues were measured on ([0, 1] for :func:`rgb_pca`)."""
    alphas = np.asarray(alphas, dtype=np.float64)
    return (alphas * np.sqrt(np.asarray(eigenvalues, dtype=np.float64))) @ \
        np.asarray(eigenvectors, dtype=np.float64).T


class PCANoise:
    """An image-folder training split whose images get KSH's PCA colour noise.

    ``std`` is that of the αᵢ (KSH: 0.1); ``pca`` an ``(eigenvalues, eigenvectors)`` pair,
    else :func:`rgb_pca` of ``dataset``. :meth:`load` is ``dataset.load`` (crops and flips
    from ``rng``), then ``n × 3`` normal draws from the same ``rng`` and the shift added to
    the normalised pixels (divided by each channel's ``std``, as the pixels were).
    """

    def __init__(self, dataset, std: float = KSH_ALPHA_STD, pca=None):
        if not (isinstance(std, (int, float, np.floating)) and np.isfinite(std) and std > 0):
            raise ConfigError(f"the PCA noise's std should be a number > 0 (KSH: "
                              f"{KSH_ALPHA_STD}); received {std!r}")
        self.dataset, self.std = dataset, float(std)
        values, vectors = rgb_pca(dataset) if pca is None else pca
        self.eigenvalues = np.asarray(values, dtype=np.float64).reshape(3)
        self.eigenvectors = np.asarray(vectors, dtype=np.float64).reshape(3, 3)
        self.classes, self.labels, self.crop = dataset.classes, dataset.labels, dataset.crop

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        return f"PCANoise({self.dataset!r}, std={self.std:g})"

    def load(self, indices, rng: np.random.Generator | None = None):
        """Images ``indices`` as ``(X (n, 3, crop, crop) float32, y (n,) int64)``, cropped,
        flipped and shifted in colour by draws from ``rng`` (None: an unseeded one)."""
        rng = np.random.default_rng() if rng is None else rng
        X, y = self.dataset.load(indices, rng)
        alphas = rng.normal(0.0, self.std, (len(y), 3))
        shift = colour_shift(alphas, self.eigenvalues, self.eigenvectors) / self.dataset.std
        X += shift.astype(np.float32)[:, :, None, None]
        return X, y
