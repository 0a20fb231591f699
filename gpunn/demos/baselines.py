"""Chapter 1's baselines: how well can MNIST be classified without a neural network?

* **Average darkness** (``mnist_average_darkness.py`` in the book): for each digit, the mean
  darkness (sum of pixel values) of its training images; a test image is classified as the
  digit whose mean is nearest its own darkness. 2,225 of 10,000 test images (22.25%).
* **Support vector machine** (``mnist_svm.py``): scikit-learn's ``SVC`` with its default
  settings of the time, an RBF kernel with C = 1 and gamma = 1/n_features, trained on the
  50,000 training images: 9,435 of 10,000 (94.35%). scikit-learn's default gamma became
  ``'scale'`` in 0.22 (a better fit, ~98%); the book's figure needs ``gamma='auto'``. Training on
  all 50,000 images takes many minutes, so ``train_size`` can cut it.

scikit-learn is optional: :func:`svm_accuracy` imports it when called.
"""

from __future__ import annotations

import numpy as np

from gpunn.errors import ConfigError, GpunnError

__all__ = ["average_darkness", "darkness_predict", "darkness_accuracy", "require_sklearn",
           "svm_accuracy"]

CHUNK = 5000  # images converted to float at a time


def _darkness(split) -> np.ndarray:
    """Sum of the pixel values of every image of ``split``: (N,) float64."""
    n = len(split)
    return np.concatenate([split.x(np.arange(i, min(i + CHUNK, n)), dtype=np.float64).sum(1)
                           for i in range(0, n, CHUNK)])


def average_darkness(split, classes: int = 10) -> np.ndarray:
    """Mean darkness (sum of pixel values) of the images of each digit: (classes,) float64.

    ``split`` is a ``gpunn.data`` Split (or anything with ``x(idx)`` and ``labels``).
    A digit with no training image gets NaN, so it is never the nearest.
    """
    darkness = _darkness(split)
    labels = np.asarray(split.labels)
    totals = np.bincount(labels, weights=darkness, minlength=classes)
    counts = np.bincount(labels, minlength=classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def darkness_predict(averages, X) -> np.ndarray:
    """The digit whose average darkness is nearest each image's darkness. X: (N, 784)."""
    return _nearest(averages, np.asarray(X, dtype=np.float64).sum(axis=1))


def _nearest(averages, darkness) -> np.ndarray:
    distance = np.abs(np.asarray(darkness)[:, None] - np.asarray(averages)[None, :])
    return np.nanargmin(distance, axis=1)


def darkness_accuracy(train, test) -> dict:
    """Train the average-darkness classifier on ``train``, score it on ``test``.

    Returns ``{"accuracy", "correct", "total", "averages"}``.
    """
    averages = average_darkness(train)
    predicted = _nearest(averages, _darkness(test))
    correct = int((predicted == np.asarray(test.labels)).sum())
    return {"accuracy": correct / len(test), "correct": correct, "total": len(test),
            "averages": averages}


def require_sklearn():
    """scikit-learn's ``svm`` module, or a GpunnError naming ``pip install scikit-learn``."""
    try:
        from sklearn import svm
    except ImportError as exc:
        raise GpunnError("the SVM baseline needs scikit-learn; install it with "
                         "pip install scikit-learn") from exc
    return svm


def svm_accuracy(train, test, train_size: int | None = None, test_size: int | None = None,
                 gamma="auto", C: float = 1.0) -> dict:
    """An RBF support vector machine (scikit-learn ``SVC``) trained on the first
    ``train_size`` images of ``train``, scored on the first ``test_size`` of ``test``.

    Returns ``{"accuracy", "correct", "total", "train_size", "gamma"}``. Raises GpunnError
    naming ``pip install scikit-learn`` when scikit-learn is missing.
    """
    svm = require_sklearn()
    train_size = len(train) if train_size is None else train_size
    test_size = len(test) if test_size is None else test_size
    if not 1 <= train_size <= len(train) or not 1 <= test_size <= len(test):
        raise ConfigError(f"train_size must be in 1..{len(train)} and test_size in "
                          f"1..{len(test)}; received {train_size} and {test_size}")
    clf = svm.SVC(C=C, kernel="rbf", gamma=gamma)
    clf.fit(train.x(np.arange(train_size)), np.asarray(train.labels[:train_size]))
    predicted = clf.predict(test.x(np.arange(test_size)))
    correct = int((predicted == np.asarray(test.labels[:test_size])).sum())
    return {"accuracy": correct / test_size, "correct": correct, "total": test_size,
            "train_size": train_size, "gamma": gamma}
