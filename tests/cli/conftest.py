"""A tiny MNIST-format file for the CLI tests (no network, no real dataset needed)."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest


def digits(n, seed):
    """n 28x28 images of ten crude, separable 'digits' (bars at a label-dependent place)."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 10, n)
    X = np.zeros((n, 28, 28), np.float32)
    for i, label in enumerate(y):
        X[i, 2 + 2 * label: 5 + 2 * label, 4:24] = 1.0
    X = np.clip(X + 0.1 * r.random(X.shape), 0, 255 / 256)
    X = np.floor(X * 256) / 256  # the book's file holds k/256 values
    return X.reshape(n, 784).astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    splits = (digits(400, 0), digits(100, 1), digits(100, 2))
    with gzip.open(d / "mnist.pkl.gz", "wb") as f:
        pickle.dump(splits, f, protocol=4)
    return d
