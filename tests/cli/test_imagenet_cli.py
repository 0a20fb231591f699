"""`gpunn imagenet` through click's CliRunner: synthetic speed, a tiny folder, bad folders."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gpunn.cli.main import cli
from gpunn.data import make_toy


def run(*args):
    return CliRunner().invoke(cli, ["imagenet", *[str(a) for a in args]])


def one_line_error(result, *words):
    """Exit 2, one `gpunn: error:` line naming ``words``, no traceback."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("gpunn: error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in errors[0], errors[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_toy(tmp_path_factory.mktemp("data") / "toy", classes=3, per_class=4,
                    val_per_class=2)


def test_synthetic_reports_images_per_second(tmp_path):
    metrics = tmp_path / "speed.json"
    r = run("--synthetic", "--steps", 5, "--batch-size", 8, "--classes", 10, "--device", "cpu",
            "--metrics-json", metrics)
    assert r.exit_code == 0, r.output
    assert "training:" in r.output and "forward:" in r.output and "images/s" in r.output
    m = json.loads(metrics.read_text())
    assert m["train_images_per_s"] > 0 and m["steps"] == 5 and m["arch"] == "alexnet-small"


def test_toy_folder_trains_evaluates_checkpoints_and_resumes(tiny, tmp_path):
    metrics, ckpt = tmp_path / "m.json", tmp_path / "ckpt"
    r = run("--toy", "--data", tiny, "--epochs", 1, "--batch-size", 4, "--workers", 1,
            "--device", "cpu", "--checkpoint-dir", ckpt, "--metrics-json", metrics)
    assert r.exit_code == 0, r.output
    assert "epoch   1/1" in r.output and "validation: top-1" in r.output
    m = json.loads(metrics.read_text())
    assert 0 <= m["val_top1"] <= 1 and m["val_top5"] == 1.0 and m["config"]["batch_size"] == 4
    r = run("--data", tiny, "--epochs", 2, "--batch-size", 4, "--device", "cpu",
            "--resume", ckpt, "--metrics-json", metrics)
    assert r.exit_code == 0, r.output
    assert "after epoch 1" in r.output and "epoch   2/2" in r.output
    assert [e["epoch"] for e in json.loads(metrics.read_text())["epochs"]] == [1, 2]


def test_pca_noise_and_ten_crop_on_the_toy_folder(tiny, tmp_path):
    metrics, ckpt = tmp_path / "m.json", tmp_path / "ckpt"
    r = run("--toy", "--data", tiny, "--epochs", 1, "--batch-size", 4, "--workers", 1,
            "--device", "cpu", "--pca-noise", "--ten-crop", "--checkpoint-dir", ckpt,
            "--metrics-json", metrics)
    assert r.exit_code == 0, r.output
    assert "PCA colour noise α ~ N(0, 0.1)" in r.output
    assert "validation, ten crops: top-1" in r.output and "(6 images)" in r.output
    m = json.loads(metrics.read_text())
    assert m["config"]["pca_noise"] == 0.1 and m["val_ten_crop"]["images"] == 6
    assert 0 <= m["val_ten_crop"]["top1"] <= 1 and m["val_ten_crop"]["top5"] == 1.0
    # resumed, the run keeps its settings: the noise and the ten-crop test
    r = run("--data", tiny, "--epochs", 2, "--device", "cpu", "--resume", ckpt,
            "--metrics-json", metrics)
    assert r.exit_code == 0, r.output
    assert "PCA colour noise" in r.output and "validation, ten crops" in r.output
    assert json.loads(metrics.read_text())["val_ten_crop"]["images"] == 6
    one_line_error(run("--synthetic", "--pca-noise"), "--pca-noise needs images",
                   "--data DIR or --toy")
    one_line_error(run("--synthetic", "--ten-crop"), "--ten-crop needs images")


def test_make_toy_and_summary(tmp_path):
    r = run("make-toy", tmp_path / "t", "--classes", 2, "--per-class", 2, "--val-per-class", 1)
    assert r.exit_code == 0, r.output
    assert "6 images in 2 classes" in r.output
    assert len(list((tmp_path / "t" / "train" / "circle").glob("*.jpg"))) == 2
    r = run("summary", "--arch", "alexnet")
    assert r.exit_code == 0 and "62,378,344 parameters" in r.output


def test_one_source_is_required():
    one_line_error(run("--device", "cpu"), "one of --data DIR, --toy or --synthetic")
    one_line_error(run("--synthetic", "--toy"), "one of --data DIR")


def _folder(root, train, val):
    for split, classes in (("train", train), ("val", val)):
        for name in classes:
            (root / split / name).mkdir(parents=True)
    return root


def test_empty_folder(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    one_line_error(run("--data", tmp_path, "--device", "cpu"), "no class folders")


def test_one_class(tiny, tmp_path):
    root = _folder(tmp_path, ["a"], ["a"])
    one_line_error(run("--data", root, "--device", "cpu"), "only one class folder")


def test_mismatched_classes(tiny, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(tiny, root)
    shutil.rmtree(root / "val" / "circle")
    one_line_error(run("--data", root, "--device", "cpu"), "different classes",
                   "missing from val/: circle")


def test_a_file_that_is_not_an_image(tiny, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(tiny, root)
    (root / "train" / "circle" / "notes.txt").write_text("skipped: not an image extension")
    (root / "train" / "circle" / "broken.jpg").write_text("not a JPEG")
    one_line_error(run("--data", root, "--device", "cpu", "--batch-size", 16, "--workers", 1),
                   "broken.jpg")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow on the way to NaN
def test_a_diverging_run_stops_with_exit_status_3(tiny):
    r = run("--data", tiny, "--epochs", 3, "--batch-size", 4, "--eta", 1e6, "--workers", 0,
            "--device", "cpu")
    assert r.exit_code == 3, r.output
    assert "gpunn: error: training diverged in epoch 1, mini-batch " in r.output
    assert "at eta 1e+06" in r.output


def test_interrupted_mid_epoch_writes_a_checkpoint_and_resumes_to_the_same_result(
        tiny, tmp_path, monkeypatch):
    """Ctrl-C after the 2nd of 3 mini-batches of epoch 1: a checkpoint and exit 130; the
    resumed run ends with the weights and top-1 of a run never stopped."""
    from gpunn.cli import main as cli_main

    args = ["--data", tiny, "--epochs", 2, "--batch-size", 4, "--workers", 1, "--device",
            "cpu"]
    r = run(*args, "--metrics-json", tmp_path / "straight.json")
    assert r.exit_code == 0, r.output
    polls = {"n": 0}

    def stop_on_the_second_poll(self):
        polls["n"] += 1
        return polls["n"] >= 2  # one poll per mini-batch of images

    monkeypatch.setattr(cli_main.InterruptGuard, "should_stop", stop_on_the_second_poll)
    monkeypatch.setattr(cli_main.InterruptGuard, "name", property(lambda self: "SIGINT"))
    monkeypatch.setattr(cli_main.InterruptGuard, "exit_code", property(lambda self: 130))
    ck = tmp_path / "ck"
    r = run(*args, "--checkpoint-dir", ck)
    assert r.exit_code == 130, r.output
    assert "stopped in epoch 1 after 8/12 images" in r.output, r.output
    assert f"resume with: gpunn imagenet --resume {ck} --data {tiny}" in r.output
    monkeypatch.undo()
    r = run("--resume", ck, "--data", tiny, "--metrics-json", tmp_path / "resumed.json")
    assert r.exit_code == 0, r.output
    assert "in epoch 1 after 8 images" in r.output
    straight, resumed = (json.loads((tmp_path / f"{n}.json").read_text())
                         for n in ("straight", "resumed"))
    assert resumed["val_top1"] == straight["val_top1"]
    assert [e["training_cost"] for e in resumed["epochs"]] == \
        [e["training_cost"] for e in straight["epochs"]]
