"""Datasets for the book's networks: MNIST and Fashion-MNIST, found or fetched, read safely.

    from gpunn.data import load_dataset
    ds = load_dataset("mnist")               # 50,000 / 10,000 / 10,000 images
    x = ds.train.x(idx)                      # (n, 784) float32 in [0, 1]
    y = ds.train.labels[idx]                 # (n,) int64

Images stay uint8 in memory and become float32 a batch at a time. Where data is looked for and
the validation split of IDX files are described in :mod:`gpunn.data.mnist`; downloading in
:mod:`gpunn.data.download`. This package imports NumPy only; urllib, tqdm and pip are used
when a download happens.
"""

from gpunn.data.colour import PCANoise, rgb_pca
from gpunn.data.dataset import Dataset, Split
from gpunn.data.download import cache_dir
from gpunn.data.expand import ExpandedSplit, expand_mnist
from gpunn.data.folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolder,
    SyntheticImages,
    channel_stats,
    open_image_folder,
)
from gpunn.data.mnist import (
    DATASETS,
    DatasetInfo,
    describe,
    fetch,
    load_dataset,
    load_mnist,
    locate,
)
from gpunn.data.prefetch import Prefetcher
from gpunn.data.toy import TOY_CLASSES, FolderNotEmpty, make_toy
from gpunn.errors import DataError

__all__ = [
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TOY_CLASSES",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "ExpandedSplit",
    "FolderNotEmpty",
    "ImageFolder",
    "PCANoise",
    "Prefetcher",
    "Split",
    "SyntheticImages",
    "cache_dir",
    "channel_stats",
    "describe",
    "expand_mnist",
    "fetch",
    "load_dataset",
    "load_mnist",
    "locate",
    "make_toy",
    "open_image_folder",
    "rgb_pca",
]
