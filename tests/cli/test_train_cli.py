"""`gpunn train`, `evaluate`, `predict` and `summary` through click's CliRunner, on a tiny
MNIST-format file the test writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gpunn.cli.main import cli


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def test_train_writes_metrics_and_a_model_that_evaluates(data_dir, tmp_path):
    metrics, model = tmp_path / "m.json", tmp_path / "net.npz"
    r = run("train", "--epochs", 10, "--data-dir", data_dir, "--metrics-json", metrics,
            "--save", model, "--sizes", "784,20,10", "--seed", 3)
    assert r.exit_code == 0, r.output
    assert "epoch  10/10" in r.output and "test accuracy" in r.output
    m = json.loads(metrics.read_text())
    assert [e["epoch"] for e in m["epochs"]] == list(range(1, 11))
    assert 0.9 <= m["test_accuracy"] <= 1.0
    assert 0.0 <= m["epochs"][-1]["evaluation_accuracy"] <= 1.0
    assert m["device"] == "cpu" and m["config"]["sizes"] == [784, 20, 10]
    r = run("evaluate", model, "--data-dir", data_dir, "--split", "test")
    assert r.exit_code == 0, r.output
    assert f"{m['test_accuracy']:.2%}" in r.output
    r = run("summary", model)
    assert r.exit_code == 0 and "15,910 parameters" in r.output


def test_presets_apply_and_options_override_them(data_dir, tmp_path):
    metrics = tmp_path / "m.json"
    r = run("train", "--preset", "ch3-l2", "--epochs", 1, "--eta", 0.25, "--data-dir",
            data_dir, "--metrics-json", metrics, "-q")
    assert r.exit_code == 0, r.output
    config = json.loads(metrics.read_text())["config"]
    assert config["cost"] == "cross-entropy" and config["lmbda"] == 5.0
    assert config["eta"] == 0.25 and config["epochs"] == 1


def test_list_presets_names_the_books_runs():
    r = run("train", "--list-presets")
    assert r.exit_code == 0
    for name in ("ch1", "ch1-100", "ch3-xent", "ch3-l2", "ch3-l2-100", "3b1b"):
        assert name in r.output


def test_summary_of_the_3b1b_preset_counts_13002():
    r = run("summary", "--preset", "3b1b")
    assert r.exit_code == 0
    assert "13,002 parameters" in r.output


def test_predict_classifies_an_image_file(data_dir, tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    model = tmp_path / "net.npz"
    assert run("train", "--epochs", 5, "--data-dir", data_dir, "--save", model, "-q",
               "--sizes", "784,30,10").exit_code == 0
    # a dark bar on a light background; made MNIST-like (inverted, scaled to 20 px wide,
    # centred) it lands on rows 12-14, columns 4-23: exactly where label 5's bar sits
    img = np.full((56, 56), 255, np.uint8)
    img[16:22, 8:48] = 0
    PIL.fromarray(img).save(tmp_path / "digit.png")
    r = run("predict", model, tmp_path / "digit.png")
    assert r.exit_code == 0, r.output
    line = next(line for line in r.output.splitlines() if "digit.png:" in line)
    assert line.split()[1] == "5", line
    assert "0:" in line and "9:" in line


@pytest.mark.parametrize("args,needle", [
    (["train", "--eta", "-1"], "--eta"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--sizes", "784,x,10"], "784,30,10"),
    (["train", "--sizes", "100,10"], "must start with 784"),
    (["train", "--preset", "ch9"], "unknown preset"),
    (["train", "--device", "tpu"], "device must be"),
    (["train", "--dataset", "cifar"], "--dataset"),
    (["evaluate", "no-such-model.npz"], "does not exist"),
    (["summary", "no-such-model.npz"], "does not exist"),
    (["info", "--device", "cuda:x"], "cuda:N"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(*args)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1, r.output
    assert lines[0].startswith("gpunn: error:") and needle in lines[0]


def test_bad_files_are_one_line_and_exit_2(data_dir, tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    image = tmp_path / "notes.png"
    image.write_text("not an image")
    model = tmp_path / "net.npz"
    assert run("train", "--epochs", 1, "--data-dir", data_dir, "--save", model,
               "-q").exit_code == 0
    other = tmp_path / "other.npz"
    with np.load(model) as z:
        arrays = dict(z)
    arrays["w0"] = np.zeros((5, 784), np.float32)  # mismatched with its architecture
    np.savez(other, **arrays)
    for args, needle in ((["evaluate", junk, "--data-dir", data_dir], "not a gpunn model"),
                         (["evaluate", other, "--data-dir", data_dir], "w0 should have shape"),
                         (["predict", model, image], "notes.png"),
                         (["train", "--data-dir", tmp_path / "empty", "--epochs", 1],
                          "--data-dir")):
        r = run(*args)
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and needle in lines[0], r.output


def test_info_reports_the_backend_and_why():
    r = run("info", "--device", "cpu")
    assert r.exit_code == 0
    assert "backend" in r.output and "numpy on cpu" in r.output and "NumPy" in r.output


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and "gpunn" in r.output


def test_train_plot_and_layer_speeds(data_dir, tmp_path):
    pytest.importorskip("matplotlib")
    metrics, png = tmp_path / "m.json", tmp_path / "curves.png"
    r = run("train", "--epochs", 2, "--data-dir", data_dir, "--sizes", "784,20,20,10",
            "--track-layer-speed", "--plot", png, "--metrics-json", metrics, "-q")
    assert r.exit_code == 0, r.output
    epochs = json.loads(metrics.read_text())["epochs"]
    assert all(len(e["layer_speeds"]) == 2 and e["layer_speeds"][0] > 0 for e in epochs)
    assert {"training_accuracy", "training_cost", "evaluation_cost"} <= set(epochs[0])
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("expand, rows", [("shifts,rotations", 2800), ("rotations", 1200),
                                          ("rotations,shifts", 2800), ("none", 400)])
def test_train_expand_adds_the_copies_asked_for(expand, rows, data_dir, tmp_path):
    metrics = tmp_path / "m.json"
    r = run("train", "--sizes", "784,10,10", "--epochs", 1, "--expand", expand, "--data-dir",
            data_dir, "--metrics-json", metrics)
    assert r.exit_code == 0, r.output
    assert f"{rows:,} training images" in r.output  # 400 images x (1 + 4 shifts + 2 turns)
    assert json.loads(metrics.read_text())["config"]["expand"] == (
        "shifts,rotations" if rows == 2800 else expand)


@pytest.mark.parametrize("value", ["twist", "shifts,shifts", "none,shifts", ""])
def test_train_expand_refuses_what_it_does_not_know(value):
    r = run("train", "--expand", value)
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert "expected shifts, rotations, shifts,rotations or none" in lines[0]
