"""Finding and loading MNIST and Fashion-MNIST; Split and Dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpunn.data import DataError, Split, describe, load_dataset, load_mnist, locate, mnist
from gpunn.errors import ConfigError

REAL_BOOK_FILE = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist.pkl.gz"


@pytest.fixture
def small_validation(monkeypatch):
    """Hold out 4 training images as validation, so IDX test files can stay tiny."""
    monkeypatch.setattr(mnist, "VALIDATION_SIZE", 4)


def test_book_file(tmp_path, helpers):
    splits = helpers.book_splits(sizes=(20, 6, 7))
    ds = load_mnist(helpers.write_book(tmp_path / "mnist.pkl.gz", splits))
    assert (ds.name, len(ds.train), len(ds.validation), len(ds.test)) == ("mnist", 20, 6, 7)
    assert ds.source == str(tmp_path / "mnist.pkl.gz")
    assert ds.train.images.dtype == np.uint8 and ds.train.scale == 1 / 256
    for split, (x, y) in zip((ds.train, ds.validation, ds.test), splits, strict=True):
        np.testing.assert_array_equal(split.x(), x)  # the book's floats, bit for bit
        assert split.labels.dtype == np.int64
        np.testing.assert_array_equal(split.labels, y)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_idx_folder_holds_out_the_last_training_images(tmp_path, helpers, small_validation, gz):
    train_x, train_y, test_x, test_y = helpers.write_idx_folder(tmp_path / "d", 12, 5, gz=gz)
    ds = load_mnist(tmp_path / "d")
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (8, 4, 5)
    assert ds.train.scale == 1 / 255 and ds.train.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.validation.images, train_x[8:].reshape(4, 784))
    np.testing.assert_array_equal(ds.validation.labels, train_y[8:])
    np.testing.assert_array_equal(ds.test.labels, test_y)
    np.testing.assert_array_equal(ds.test.x(), test_x.reshape(5, 784) / np.float32(255))


def test_idx_validation_is_the_last_10000(tmp_path, helpers):
    train_x, train_y, *_ = helpers.write_idx_folder(tmp_path, 10_003, 2, gz=False)
    ds = load_mnist(tmp_path)
    assert (len(ds.train), len(ds.validation)) == (3, 10_000)
    np.testing.assert_array_equal(ds.train.labels, train_y[:3])


def test_idx_needs_more_than_the_validation_split(tmp_path, helpers):
    helpers.write_idx_folder(tmp_path, 10, 2)
    with pytest.raises(DataError, match="10 training images; more than 10000 are needed"):
        load_mnist(tmp_path)


def test_split_x_shapes_indices_and_subset(tmp_path, helpers, small_validation):
    helpers.write_idx_folder(tmp_path, 12, 5)
    split = load_mnist(tmp_path).train
    full = split.x()
    assert full.shape == (8, 784) and full.dtype == np.float32
    assert 0.0 <= full.min() and full.max() <= 1.0
    images = split.x([3, 1], shape="image")
    assert images.shape == (2, 1, 28, 28)
    np.testing.assert_array_equal(images.reshape(2, 784), full[[3, 1]])
    assert split.x(dtype=np.float64).dtype == np.float64
    assert Split(np.array([[255] * 784], np.uint8), np.array([0]), 1 / 255).x().max() == 1.0
    first = split.subset(3)
    assert len(first) == 3
    np.testing.assert_array_equal(first.labels, split.labels[:3])
    with pytest.raises(ConfigError, match="a subset of 1 to 8 examples was expected"):
        split.subset(9)
    with pytest.raises(ConfigError, match="'flat' or 'image'"):
        split.x(shape="square")


def test_count_mismatch_names_the_labels_file(tmp_path, helpers, small_validation):
    helpers.write_idx_folder(tmp_path, 12, 5)
    helpers.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4), gz=True)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: 4 labels for the 5 images"):
        load_mnist(tmp_path)


def test_wrong_image_dims(tmp_path, helpers, small_validation):
    helpers.write_idx_folder(tmp_path, 12, 5)
    helpers.write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 27, 28)), gz=True)
    with pytest.raises(DataError, match=r"t10k-images.*shape \(N, 28, 28\); found \(5, 27, 28\)"):
        load_mnist(tmp_path)


def test_labels_out_of_range(tmp_path, helpers, small_validation):
    helpers.write_idx_folder(tmp_path, 12, 5)
    helpers.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(12, 10), gz=True)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: training labels should "
                                        r"be in 0..9; found 10..10"):
        load_mnist(tmp_path)


def test_book_file_checks(tmp_path, helpers):
    splits = helpers.book_splits(sizes=(3, 2, 2))
    splits[2] = (splits[2][0], np.array([0, 12]))
    with pytest.raises(DataError, match=r"bad.pkl.gz: test labels should be in 0..9"):
        load_mnist(helpers.write_book(tmp_path / "bad.pkl.gz", splits))
    splits[2] = (splits[2][0], np.array([0, 1, 2]))
    with pytest.raises(DataError, match=r"count.pkl.gz: 2 test images but 3 labels"):
        load_mnist(helpers.write_book(tmp_path / "count.pkl.gz", splits))
    splits = [(x[:, :700], y) for x, y in helpers.book_splits(sizes=(3, 2, 2))]
    with pytest.raises(DataError, match=r"dims.pkl.gz: training images should be 28x28"):
        load_mnist(helpers.write_book(tmp_path / "dims.pkl.gz", splits))
    with pytest.raises(DataError, match=r"two.pkl.gz: expected the book's layout"):
        load_mnist(helpers.write_book(tmp_path / "two.pkl.gz", helpers.book_splits((3, 2))))


def test_lookup_order(isolated, tmp_path, helpers, monkeypatch):
    cache = tmp_path / "cache" / "gpunn" / "mnist"
    env = tmp_path / "env"
    explicit = tmp_path / "explicit"
    for folder in (cache, env / "mnist", explicit):
        helpers.write_book(folder / "mnist.pkl.gz")
    monkeypatch.setenv("GPUNN_DATA", str(env))
    assert locate("mnist", explicit) == explicit / "mnist.pkl.gz"
    assert locate("mnist") == env / "mnist" / "mnist.pkl.gz"
    monkeypatch.delenv("GPUNN_DATA")
    assert load_dataset("mnist").source == str(cache / "mnist.pkl.gz")
    (explicit / "mnist.pkl.gz").unlink()
    assert locate("mnist", explicit) == cache / "mnist.pkl.gz"  # falls through to the cache


def test_book_file_preferred_to_idx_in_a_folder(tmp_path, helpers, small_validation):
    helpers.write_idx_folder(tmp_path / "mnist")
    helpers.write_book(tmp_path / "mnist" / "mnist.pkl.gz")
    assert load_dataset("mnist", data_dir=tmp_path).source.endswith("mnist.pkl.gz")


def test_missing_data(tmp_path):
    with pytest.raises(DataError, match=r"mnist not found .*gpunn data fetch mnist"):
        load_dataset("mnist", download=False)
    with pytest.raises(DataError, match=r"apt-get install dataset-fashion-mnist.*--data-dir"):
        load_dataset("fashion-mnist")
    with pytest.raises(DataError, match="data folder .*nowhere does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(DataError, match="holds neither mnist.pkl.gz nor the four IDX files"):
        load_mnist(tmp_path)


def test_a_missing_folder_names_gpunn_data_when_it_came_from_there(isolated, tmp_path,
                                                                     monkeypatch):
    nowhere = tmp_path / "nonexistent"
    monkeypatch.setenv("GPUNN_DATA", str(nowhere))
    with pytest.raises(DataError) as info:  # what `--data-dir` with envvar=GPUNN_DATA passes
        load_dataset("mnist", data_dir=str(nowhere))
    assert str(info.value).startswith(
        f"data folder {nowhere} does not exist; it is the value of the environment variable "
        f"GPUNN_DATA: set GPUNN_DATA to an existing folder, or unset it")
    assert "--data-dir" not in str(info.value)
    with pytest.raises(DataError, match=f"mnist not found .*GPUNN_DATA={nowhere} is not an "
                                        f"existing folder"):
        load_dataset("mnist", download=False)
    monkeypatch.delenv("GPUNN_DATA")
    with pytest.raises(DataError, match=f"data folder {nowhere} does not exist; give an "
                                        r"existing folder \(--data-dir DIR\)"):
        load_dataset("mnist", data_dir=nowhere)


def test_fashion_mnist_from_the_system_folder(isolated, helpers, small_validation):
    helpers.write_idx_folder(isolated / "system", 12, 5)
    ds = load_dataset("fashion-mnist")
    assert ds.name == "fashion-mnist" and ds.source == str(isolated / "system")
    assert ds.classes[0] == "T-shirt/top" and len(ds.classes) == 10
    assert locate("mnist") is None  # MNIST never comes from Fashion-MNIST's folder


def test_describe(tmp_path, helpers, monkeypatch):
    path = helpers.write_book(tmp_path / "mnist.pkl.gz")
    monkeypatch.setitem(mnist.KNOWN_SHA256, mnist._dl.sha256_of(path), "a test file")
    book, fashion = describe(tmp_path)
    assert (book.source, book.format) == (path, "book pickle")
    assert book.files == [(path, path.stat().st_size, "a test file")]
    assert fashion.source is None and "apt-get install dataset-fashion-mnist" in fashion.hint
    assert tmp_path / "fashion-mnist" in fashion.searched
    assert describe(tmp_path, checksums=False)[0].files[0][2] == "not checked"


@pytest.mark.slow
@pytest.mark.skipif(not REAL_BOOK_FILE.exists(), reason=f"{REAL_BOOK_FILE} is not here")
def test_real_book_file_in_little_memory():
    """The book's own file: 50,000/10,000/10,000, exact, and well under 150 MB of peak RSS."""
    code = (
        "import json, sys\n"
        # VmHWM is this process's own peak: ru_maxrss would carry over the parent's (pytest's)
        # peak across fork and exec
        "def hwm_mb():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1]) / 1024\n"
        "from gpunn.data import load_mnist\n"
        "d = load_mnist(sys.argv[1])\n"
        "print(json.dumps({'sizes': [len(d.train), len(d.validation), len(d.test)],\n"
        "  'labels': [int(d.train.labels.min()), int(d.train.labels.max())],\n"
        "  'dtype': str(d.train.images.dtype), 'scale': d.train.scale,\n"
        "  'first': float(d.train.x([0]).sum()),\n"
        "  'rss_mb': hwm_mb()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(REAL_BOOK_FILE)], check=True,
                         capture_output=True, text=True).stdout
    report = json.loads(out)
    assert report["sizes"] == [50_000, 10_000, 10_000]
    assert report["labels"] == [0, 9]
    assert (report["dtype"], report["scale"]) == ("uint8", 1 / 256)
    assert report["first"] == 107.51953125  # the first image's pixels, summed (checked with pickle)
    assert report["rss_mb"] < 150, f"peak RSS {report['rss_mb']:.0f} MB"
