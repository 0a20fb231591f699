"""Image folders: class mapping, exact centre crops, random crops and flips, normalisation,
determinism, and a DataError naming the path for every kind of bad folder or file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from gpunn.data.folder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolder,
    SyntheticImages,
    channel_stats,
    normalise,
    open_image_folder,
    ten_crops,
)
from gpunn.errors import ConfigError, DataError


def pattern(height, width):
    """(H, W, 3) uint8 where R encodes the row and G the column, so a crop shows where it came
    from."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 20, cols * 20, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def write_image(path, pixels, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path, format=fmt)
    return path


def make_folder(root, classes=("cat", "dog"), per_class=2, splits=("train", "val"),
                pixels=None):
    for split in splits:
        for k, name in enumerate(classes):
            for i in range(per_class):
                image = pattern(10, 12) if pixels is None else pixels
                write_image(root / split / name / f"{i}.png", image + k)
    return root


def test_classes_are_sorted_folder_names_and_labels_follow(tmp_path):
    root = make_folder(tmp_path / "data", classes=("zebra", "ant", "moth"), per_class=2)
    (root / "train" / "ant" / "notes.txt").write_text("not an image")
    (root / "train" / "ant" / ".hidden.png").write_bytes(b"junk")
    write_image(root / "train" / "ant" / "UPPER.JPG", pattern(10, 12), fmt="JPEG")
    data = ImageFolder(root, "train", crop=4, resize=8)
    assert data.classes == ("ant", "moth", "zebra")
    assert len(data) == 7 and data.labels.dtype == np.int64
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert [p.name for p in data.paths[:3]] == ["0.png", "1.png", "UPPER.JPG"]
    assert data.train and not ImageFolder(root, "val", crop=4, resize=8).train


def test_centre_crop_is_the_exact_middle(tmp_path):
    source = pattern(10, 12)  # shorter side 10 == resize: no resampling
    root = make_folder(tmp_path / "data", pixels=source)
    val = ImageFolder(root, "val", crop=6, resize=10)
    out = val.load_uint8([0])
    np.testing.assert_array_equal(out[0], source[2:8, 3:9])  # (10-6)//2, (12-6)//2
    X, y = ImageFolder(root, "val", crop=6, resize=10, mean=(0, 0, 0), std=(1, 1, 1)).load([0])
    assert X.shape == (1, 3, 6, 6) and X.dtype == np.float32 and y.tolist() == [0]
    np.testing.assert_allclose(X[0], source[2:8, 3:9].transpose(2, 0, 1) / 255, rtol=1e-6)


def test_ten_crops_are_the_corners_the_centre_and_their_mirrors(tmp_path):
    source = pattern(10, 12)
    crops = ten_crops(source, 6)
    want = [source[0:6, 0:6], source[0:6, 6:12], source[4:10, 0:6], source[4:10, 6:12],
            source[2:8, 3:9]]  # the centre is evaluation's centre crop
    want += [w[:, ::-1] for w in want]
    assert crops.shape == (10, 6, 6, 3) and crops.dtype == np.uint8
    for got, expected in zip(crops, want):
        np.testing.assert_array_equal(got, expected)
    root = make_folder(tmp_path / "data", pixels=source)
    val = ImageFolder(root, "val", crop=6, resize=10)
    both = val.load_ten_crops([1, 2])
    np.testing.assert_array_equal(both[:10], crops)
    np.testing.assert_array_equal(both[10:], ten_crops(source + 1, 6))  # class 1's image
    np.testing.assert_array_equal(both[4], val.load_uint8([1])[0])
    with pytest.raises(ConfigError, match="received one of 10x12"):
        ten_crops(source, 11)


def test_random_crops_stay_inside_and_flips_mirror(tmp_path):
    source = pattern(10, 12)
    root = make_folder(tmp_path / "data", pixels=source, per_class=1)
    train = ImageFolder(root, "train", crop=6, resize=10)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        draws = rng.random((1, 3))
        patch = train.load_uint8([0], draws)[0]
        flip = bool(draws[0, 2] < 0.5)
        top, left = patch[0, -1 if flip else 0, :2] // 20
        window = source[top:top + 6, left:left + 6]
        np.testing.assert_array_equal(patch, window[:, ::-1] if flip else window)
        assert 0 <= top <= 4 and 0 <= left <= 6
        seen.add((int(top), int(left), flip))
    tops, lefts, flips = zip(*seen)
    assert {0, 4} <= set(tops) and {0, 6} <= set(lefts) and set(flips) == {False, True}


def test_shorter_side_is_resized_and_jpeg_drafts_keep_the_size(tmp_path):
    root = make_folder(tmp_path / "data", per_class=1)
    write_image(root / "train" / "cat" / "big.jpg", np.zeros((300, 400, 3)), fmt="JPEG")
    write_image(root / "train" / "dog" / "tall.png", np.zeros((50, 20, 3)))
    train = ImageFolder(root, "train", crop=64, resize=73)
    by_name = {p.name: p for p in train.paths}
    assert train._decode(by_name["big.jpg"]).shape == (73, 97, 3)
    assert train._decode(by_name["tall.png"]).shape == (182, 73, 3)
    X, y = train.load(np.arange(len(train)), np.random.default_rng(0))
    assert X.shape == (len(train), 3, 64, 64)


def test_grey_and_transparent_images_become_rgb(tmp_path):
    root = make_folder(tmp_path / "data", per_class=1)
    grey = root / "train" / "cat" / "grey.png"
    Image.fromarray(np.full((10, 12), 90, dtype=np.uint8)).save(grey)
    Image.fromarray(np.full((10, 12, 4), 60, dtype=np.uint8)).save(root / "train" / "dog" / "a.png")
    train = ImageFolder(root, "train", crop=6, resize=10, train=False)
    out = train.load_uint8(np.arange(len(train)))
    names = [p.name for p in train.paths]
    assert out.shape == (4, 6, 6, 3)
    assert (out[names.index("grey.png")] == 90).all() and (out[names.index("a.png")] == 60).all()


def test_normalisation_uses_imagenet_mean_and_std_by_default(tmp_path):
    pixels = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    pixels[0], pixels[1] = 255, (10, 128, 250)
    out = normalise(pixels, IMAGENET_MEAN, IMAGENET_STD)
    expected = (pixels.transpose(0, 3, 1, 2) / 255 - np.reshape(IMAGENET_MEAN, (3, 1, 1))) \
        / np.reshape(IMAGENET_STD, (3, 1, 1))
    assert out.dtype == np.float32 and out.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_channel_stats_of_flat_colours(tmp_path):
    root = make_folder(tmp_path / "data", pixels=np.full((10, 12, 3), (51, 102, 204)))
    mean, std = channel_stats(ImageFolder(root, "val", crop=6, resize=10))
    # labels add k to every channel: class 1 is one unit brighter
    np.testing.assert_allclose(mean, np.array([51.5, 102.5, 204.5]) / 255, atol=1e-9)
    np.testing.assert_allclose(std, [0.5 / 255] * 3, atol=1e-9)


def test_a_seed_gives_the_same_batch(tmp_path):
    root = make_folder(tmp_path / "data", per_class=3)
    train = ImageFolder(root, "train", crop=6, resize=10)
    a = train.load([4, 0, 2], np.random.default_rng(7))
    b = train.load([4, 0, 2], np.random.default_rng(7))
    c = train.load([4, 0, 2], np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].tolist() == [1, 0, 0] and not np.array_equal(a[0], c[0])


def test_open_image_folder_gives_train_and_val(tmp_path):
    train, val = open_image_folder(make_folder(tmp_path / "data"), crop=6, resize=10)
    assert train.train and not val.train and train.classes == val.classes == ("cat", "dog")


@pytest.mark.parametrize("case, names", [
    ("root", ["nowhere"]),
    ("train", ["train", "missing"]),
    ("val", ["val", "missing"]),
    ("no classes", ["train", "no class folders"]),
    ("one class", ["train", "only one class", "cat"]),
    ("empty class", ["dog", "no images"]),
    ("mismatch", ["different classes", "missing from val/: bird", "missing from train/: fish"]),
])
def test_bad_folders_raise_data_error_naming_the_path(tmp_path, case, names):
    root = tmp_path / "data"
    if case != "root":
        make_folder(root)
    if case in ("train", "val"):
        shutil.rmtree(root / case)
    elif case == "no classes":
        for child in (root / "train").iterdir():
            shutil.rmtree(child)
        (root / "train" / "stray.png").write_bytes(b"")
    elif case == "one class":
        shutil.rmtree(root / "train" / "dog")
    elif case == "empty class":
        for child in (root / "train" / "dog").iterdir():
            child.unlink()
        (root / "train" / "dog" / "readme.txt").write_text("ignored")
    elif case == "mismatch":
        make_folder(root, classes=("bird",), splits=("train",))
        make_folder(root, classes=("fish",), splits=("val",))
    with pytest.raises(DataError) as info:
        open_image_folder(root if case != "root" else root / "nowhere")
    message = str(info.value)
    for name in names:
        assert name in message


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_bad_image_file_is_named_at_load_time(tmp_path, damage):
    root = make_folder(tmp_path / "data")
    bad = root / "train" / "dog" / "broken.jpg"
    write_image(bad, np.random.default_rng(0).integers(0, 256, (64, 64, 3)), fmt="JPEG")
    data = bad.read_bytes()
    bad.write_bytes(b"this is not a JPEG" * 10 if damage == "garbage" else data[:len(data) // 2])
    train = ImageFolder(root, "train", crop=6, resize=10)
    index = [p.name for p in train.paths].index("broken.jpg")
    train.load([0, 1], np.random.default_rng(0))  # the good files still load
    with pytest.raises(DataError, match="broken.jpg"):
        train.load([0, index], np.random.default_rng(0))
    if damage == "garbage":  # a header check finds it
        with pytest.raises(DataError, match="1 of 5 files.*broken.jpg"):
            train.verify()
    else:  # only decoding the whole file does
        train.verify()
        with pytest.raises(DataError, match="broken.jpg"):
            train.verify(full=True)


def test_bad_settings_are_config_errors(tmp_path):
    root = make_folder(tmp_path / "data")
    with pytest.raises(ConfigError, match="split"):
        ImageFolder(root, "test")
    with pytest.raises(ConfigError, match="crop"):
        ImageFolder(root, "train", crop=80, resize=73)
    with pytest.raises(ConfigError, match="std"):
        ImageFolder(root, "train", std=(0.2, 0, 0.2))


def test_synthetic_images_have_the_folder_interface():
    data = SyntheticImages(50, classes=5, crop=8, seed=3)
    X, y = data.load([3, 7, 3])
    assert X.shape == (3, 3, 8, 8) and X.dtype == np.float32 and y.dtype == np.int64
    assert len(data) == 50 and len(data.classes) == 5 and set(data.labels) <= set(range(5))
    np.testing.assert_array_equal(X[0], X[2])
    np.testing.assert_array_equal(X[1], SyntheticImages(50, 5, 8, seed=3).load([7])[0][0])


def test_batches_cross_as_uint8_and_are_normalised_on_the_device_to_the_same_numbers(tmp_path):
    from types import SimpleNamespace

    from gpunn import backend
    from gpunn.data import Prefetcher
    from gpunn.train import ImageSource

    root = make_folder(tmp_path / "data", per_class=4)
    data = ImageFolder(root, "train", crop=4, resize=8)
    source = ImageSource(data, batch_size=4, seed=3, workers=1)
    crops, _ = source.prefetcher.dataset.load(np.arange(4), np.random.default_rng(0))
    assert crops.dtype == np.uint8 and crops.shape == (4, 4, 4, 3)  # what is copied over
    assert np.array_equal(data.normalise(crops),
                          data.load(np.arange(4), np.random.default_rng(0))[0])
    be = backend.select("cpu")
    net = SimpleNamespace(backend=be, xp=be.xp, dtype=np.float32)
    X, y = source.load(net, 1, source.order(1, None), 0, 4)
    source.close()
    with Prefetcher(data, 4, shuffle=True, seed=3, workers=1) as host:  # normalised on the host
        X_host, y_host = next(host.epoch(0))
    assert X.dtype == np.float32 and np.array_equal(X, X_host) and np.array_equal(y, y_host)
