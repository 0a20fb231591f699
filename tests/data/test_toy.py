"""The toy image folder: counts, decodable JPEGs, the same files for a seed, and atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from gpunn.data.folder import open_image_folder
from gpunn.data.toy import TOY_CLASSES, FolderNotEmpty, make_toy
from gpunn.errors import ConfigError, DataError


def test_writes_the_expected_folders_and_counts(tmp_path):
    calls = []
    root = make_toy(tmp_path / "toy", classes=4, per_class=5, val_per_class=2, size=32,
                    progress=lambda done, total: calls.append((done, total)))
    assert root == tmp_path / "toy" and not (tmp_path / "toy.part").exists()
    for split, count in (("train", 5), ("val", 2)):
        folders = sorted((root / split).iterdir())
        assert [f.name for f in folders] == sorted(TOY_CLASSES[:4])
        assert all(len(list(f.glob("*.jpg"))) == count for f in folders)
    assert calls[-1] == (28, 28) and len(calls) == 28
    train, val = open_image_folder(root, crop=24, resize=28)
    assert len(train) == 20 and len(val) == 8 and train.classes == val.classes


def test_images_decode_as_rgb_of_the_asked_size(tmp_path):
    root = make_toy(tmp_path / "toy", classes=10, per_class=1, val_per_class=1, size=40)
    files = sorted(root.rglob("*.jpg"))
    assert len(files) == 20
    for path in files:
        with Image.open(path) as image:
            image.load()
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (40, 40)
            assert np.asarray(image).std() > 10  # a drawn shape, not a flat square


def test_the_same_seed_writes_the_same_files(tmp_path):
    a = make_toy(tmp_path / "a", classes=2, per_class=2, val_per_class=1, size=24, seed=3)
    b = make_toy(tmp_path / "b", classes=2, per_class=2, val_per_class=1, size=24, seed=3)
    c = make_toy(tmp_path / "c", classes=2, per_class=2, val_per_class=1, size=24, seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    target = tmp_path / "toy"
    target.mkdir()
    make_toy(target, classes=2, per_class=1, val_per_class=1, size=16)  # empty: fine
    (target / "mine.txt").write_text("keep me")
    with pytest.raises(FolderNotEmpty, match=f"{target}: not empty.*overwrite=True") as info:
        make_toy(target, classes=2, per_class=1, val_per_class=1, size=16)
    assert isinstance(info.value, DataError) and info.value.path == target
    assert info.value.words("--overwrite") == (  # what `gpunn imagenet make-toy` says
        f"{target}: not empty; the toy set is written only into a new or empty folder, so "
        f"choose another path or pass --overwrite to replace it")
    assert (target / "mine.txt").exists()
    make_toy(target, classes=3, per_class=1, val_per_class=1, size=16, overwrite=True)
    assert not (target / "mine.txt").exists() and len(list(target.rglob("*.jpg"))) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]  # no .part, no old copy
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="not a folder"):
        make_toy(tmp_path / "file")


def test_an_interrupted_run_leaves_nothing(tmp_path):
    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_toy(tmp_path / "toy", classes=2, per_class=4, val_per_class=1, size=16,
                 progress=stop)
    assert list(tmp_path.iterdir()) == []


def test_bad_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="classes"):
        make_toy(tmp_path / "toy", classes=11)
    with pytest.raises(ConfigError, match="size"):
        make_toy(tmp_path / "toy", size=8)
