"""Chapter 1's baselines on crafted data whose answers are known."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from gpunn.data import Split
from gpunn.demos import baselines
from gpunn.errors import GpunnError


def crafted(counts, lit, seed=0):
    """Images where digit d lights ``lit[d]`` pixels (value 1): darkness = lit[d] exactly."""
    r = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    r.shuffle(labels)
    images = np.zeros((len(labels), 784), np.uint8)
    for i, d in enumerate(labels):
        images[i, r.choice(784, lit[d], replace=False)] = 1
    return Split(images, labels.astype(np.int64), 1.0)


def test_average_darkness_is_the_mean_pixel_sum_per_digit():
    lit = [10 * (d + 1) for d in range(10)]
    train = crafted([3] * 10, lit)
    np.testing.assert_allclose(baselines.average_darkness(train), lit)


def test_darkness_classifies_by_the_nearest_average():
    lit = [10 * (d + 1) for d in range(10)]
    train, test = crafted([5] * 10, lit, seed=1), crafted([2] * 10, lit, seed=2)
    r = baselines.darkness_accuracy(train, test)
    assert r["accuracy"] == 1.0 and r["correct"] == r["total"] == 20
    # darkness 34 is nearest digit 2's 30; 36 is nearest digit 3's 40
    X = np.zeros((2, 784))
    X[0, :34], X[1, :36] = 1, 1
    assert baselines.darkness_predict(r["averages"], X).tolist() == [2, 3]


def test_two_digits_of_equal_darkness_cannot_both_be_right():
    lit = [20, 20, 60]  # 0 and 1 look alike to this classifier
    train, test = crafted([4, 4, 4], lit, seed=3), crafted([10, 10, 10], lit, seed=4)
    r = baselines.darkness_accuracy(train, test)
    assert r["accuracy"] == pytest.approx(20 / 30)


def test_a_digit_missing_from_training_is_never_guessed():
    train = crafted([3, 0, 3], [10, 20, 30])
    averages = baselines.average_darkness(train, classes=3)
    assert np.isnan(averages[1])
    X = np.zeros((1, 784))
    X[0, :20] = 1
    assert baselines.darkness_predict(averages, X)[0] in (0, 2)


def test_svm_needs_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now fails
    with pytest.raises(GpunnError, match="pip install scikit-learn"):
        baselines.svm_accuracy(crafted([2] * 3, [10, 20, 30]), crafted([2] * 3, [10, 20, 30]))


def blocks(n, seed):
    """n noisy images where digit d lights pixels 60d to 60d + 59: separable by place."""
    r = np.random.default_rng(seed)
    labels = r.integers(0, 5, n)
    images = (r.random((n, 784)) < 0.05).astype(np.uint8) * 128
    for i, d in enumerate(labels):
        images[i, 60 * d:60 * d + 60] = 255
    return Split(images, labels.astype(np.int64), 1 / 255)


def test_svm_separates_separable_digits():
    pytest.importorskip("sklearn", reason="scikit-learn is optional")
    train, test = blocks(100, seed=5), blocks(30, seed=6)
    r = baselines.svm_accuracy(train, test, train_size=80)
    assert r["train_size"] == 80 and r["total"] == 30 and r["accuracy"] >= 0.9
