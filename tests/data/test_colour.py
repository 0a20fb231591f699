"""KSH's PCA colour noise: the RGB eigen-decomposition and the per-image shift, each against
a NumPy reference written out here, and its draws fixed by the generator it is handed."""

from __future__ import annotations

import numpy as np
import pytest

from gpunn.data.colour import PCANoise, colour_shift, rgb_pca
from gpunn.data.folder import ImageFolder, SyntheticImages
from gpunn.errors import ConfigError

from .test_folder import write_image


@pytest.fixture()
def colours(tmp_path):
    """2 classes x 6 PNGs of 10x12 random pixels, each image with its own colour cast."""
    r = np.random.default_rng(7)
    for split in ("train", "val"):
        for name in ("a", "b"):
            for i in range(6):
                cast = r.integers(0, 120, 3)
                pixels = np.clip(r.integers(0, 130, (10, 12, 3)) + cast, 0, 255)
                write_image(tmp_path / split / name / f"{i}.png", pixels)
    return ImageFolder(tmp_path, "train", crop=6, resize=10)


def test_rgb_pca_is_the_eigen_decomposition_of_the_rgb_covariance(colours):
    values, vectors = rgb_pca(colours, samples=100)
    pixels = colours.load_uint8(np.arange(len(colours))).reshape(-1, 3) / 255.0
    covariance = np.cov(pixels.T, bias=True)  # every crop: samples > images
    np.testing.assert_allclose(values, np.sort(np.linalg.eigvalsh(covariance))[::-1],
                               rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(covariance @ vectors, vectors * values, atol=1e-12)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(3), atol=1e-12)
    assert values[0] > values[1] > values[2] > 0
    again = rgb_pca(colours, samples=100)  # cached: the same numbers, not the same arrays
    assert np.array_equal(again[0], values) and again[0] is not values


def test_colour_shift_is_the_sum_of_scaled_eigenvectors():
    vectors = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    values = np.array([0.04, 0.01, 0.0025])
    alphas = np.random.default_rng(2).normal(0, 0.1, (4, 3))
    want = np.array([sum(a[i] * np.sqrt(values[i]) * vectors[:, i] for i in range(3))
                     for a in alphas])
    np.testing.assert_allclose(colour_shift(alphas, values, vectors), want, atol=1e-15)


def test_pca_noise_adds_each_image_its_shift_after_the_same_crops(colours):
    noisy = PCANoise(colours, std=0.1)
    idx = np.array([3, 0, 7, 11])
    X, y = noisy.load(idx, np.random.default_rng([5, 1, 2]))
    # the reference: the same generator draws the crops and flips first, then the alphas
    ref_rng = np.random.default_rng([5, 1, 2])
    crops = colours.load_uint8(idx, ref_rng.random((4, 3))).astype(np.float64) / 255
    alphas = ref_rng.normal(0.0, 0.1, (4, 3))
    values, vectors = rgb_pca(colours)
    for j in range(4):
        shift = sum(alphas[j, i] * np.sqrt(values[i]) * vectors[:, i] for i in range(3))
        want = ((crops[j] + shift - colours.mean) / colours.std).transpose(2, 0, 1)
        np.testing.assert_allclose(X[j], want, atol=2e-6)
    assert y.tolist() == colours.labels[idx].tolist()
    # a constant per image and channel: the colour of the light, not a texture
    plain, _ = colours.load(idx, np.random.default_rng([5, 1, 2]))
    delta = (X - plain).reshape(4, 3, -1)
    np.testing.assert_allclose(delta, delta[:, :, :1].repeat(delta.shape[2], axis=2),
                               atol=1e-5)
    assert np.abs(delta).max() > 1e-3
    # fixed by the generator: the same seed, the same images; another seed, others
    again, _ = noisy.load(idx, np.random.default_rng([5, 1, 2]))
    other, _ = noisy.load(idx, np.random.default_rng([5, 1, 3]))
    assert np.array_equal(X, again) and not np.array_equal(X, other)


def test_pca_noise_refuses_what_it_cannot_use(colours):
    with pytest.raises(ConfigError, match="needs an image folder.*received SyntheticImages"):
        PCANoise(SyntheticImages(4, 2, 8))
    with pytest.raises(ConfigError, match=r"std should be a number > 0 \(KSH: 0.1\); "
                                          r"received 0"):
        PCANoise(colours, std=0)
