"""`gpunn demo`, `plot`, `show`, `predict --plot` and `baseline` through click's CliRunner,
on the tiny MNIST-format file of ``data_dir`` (tests/cli/conftest.py)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import gpunn
from gpunn import plots
from gpunn.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])







@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "net.npz"
    return gpunn.save(gpunn.Network([784, 12, 10], seed=0, backend="cpu"), path)


def test_demo_approx_prints_the_deviations_and_plots(mpl, tmp_path, png_of_size):
    out = tmp_path / "approx.png"
    r = run("demo", "approx", "--bumps", "5,20", "--steps", 300, "--plot", out)
    assert r.exit_code == 0, r.output
    assert "met from 5 bumps" in r.output and "trained 1-30-1" in r.output
    lines = [line.split() for line in r.output.splitlines() if line.strip()[:1].isdigit()]
    assert [int(cells[0]) for cells in lines] == [5, 20]
    assert float(lines[0][2]) > float(lines[1][2])
    png_of_size(out, plots.SIZES["approximation"])


def test_demo_vanishing_prints_the_table_and_plots(mpl, data_dir, tmp_path, png_of_size):
    out = tmp_path / "speeds.png"
    r = run("demo", "vanishing", "--data-dir", data_dir, "--hidden-layers", "1,3",
            "--images", 200, "--seeds", 2, "--epochs", 2, "--plot", out)
    assert r.exit_code == 0, r.output
    assert "784-30-10 " in r.output and "(0.012)" in r.output and "first/last" in r.output
    assert "after 2 epochs" in r.output
    png_of_size(out, plots.SIZES["layer_speeds"])


def test_plot_draws_the_training_curves(mpl, tmp_path, png_of_size):
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({
        "epochs": [{"epoch": e, "evaluation_accuracy": 0.9, "training_cost": 1 / e}
                   for e in (1, 2, 3)],
        "config": {"sizes": [784, 30, 10], "cost": "quadratic", "eta": 3.0}}))
    out = tmp_path / "curves.png"
    r = run("plot", metrics, "-o", out)
    assert r.exit_code == 0, r.output
    png_of_size(out, plots.SIZES["training_curves"])


def test_plot_of_a_file_that_is_not_json_is_one_line(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("not json")
    r = run("plot", bad, "-o", tmp_path / "c.png")
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "is not JSON" in r.output


def test_show_weights(mpl, model, tmp_path, png_of_size):
    out = tmp_path / "w.png"
    r = run("show", model, "--weights", "-o", out)
    assert r.exit_code == 0, r.output
    png_of_size(out, plots.SIZES["first_layer_weights"])
    r = run("show", model, "-o", out)
    assert r.exit_code == 2 and "--weights" in r.output


def test_predict_plots_the_output_and_every_layer(mpl, model, tmp_path, png_of_size):
    from PIL import Image

    digit = tmp_path / "seven.png"
    pixels_ = np.full((40, 40), 255, np.uint8)
    pixels_[8:11, 8:32] = 0
    pixels_[10:34, 28:31] = 0
    Image.fromarray(pixels_).save(digit)
    out = tmp_path / "p.png"
    r = run("predict", model, digit, "--plot", out)
    assert r.exit_code == 0, r.output
    png_of_size(out, plots.prediction_size(1))
    r = run("predict", model, digit, "--plot", out, "--layers")
    assert r.exit_code == 0, r.output
    png_of_size(out, plots.prediction_size(2))
    r = run("predict", model, digit, digit, "--plot", out)
    assert r.exit_code == 2 and "one image" in r.output


def test_a_plot_without_matplotlib_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    r = run("demo", "approx", "--bumps", "5", "--steps", 0, "--plot", tmp_path / "a.png")
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        'gpunn: error: plotting needs matplotlib; install it with pip install "gpunn[plot]"')


def test_baseline_darkness(data_dir):
    r = run("baseline", "darkness", "--data-dir", data_dir)
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output and "22.25%" in r.output


def test_baseline_svm_without_scikit_learn(monkeypatch, data_dir):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    r = run("baseline", "svm", "--data-dir", data_dir)
    assert r.exit_code == 2 and "pip install scikit-learn" in r.output
    assert r.output.count("\n") == 1


def test_baseline_svm(data_dir):
    pytest.importorskip("sklearn", reason="scikit-learn is optional")
    r = run("baseline", "svm", "--data-dir", data_dir, "--train-size", 200, "--test-size", 50)
    assert r.exit_code == 0, r.output
    assert "trained on 200 images" in r.output and "(" in r.output
