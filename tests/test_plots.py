"""Each plot writes a PNG of the expected pixel size; matplotlib stays optional."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gpunn import plots
from gpunn.errors import ConfigError, GpunnError


def test_training_curves(mpl, tmp_path, png_of_size):
    epochs = [{"epoch": e, "training_accuracy": 0.8 + e / 100, "evaluation_accuracy": 0.8,
               "training_cost": 1 / e, "evaluation_cost": 1.2 / e} for e in range(1, 6)]
    out = plots.training_curves({"epochs": epochs}, tmp_path / "sub" / "c.png", title="t")
    png_of_size(out, plots.SIZES["training_curves"])


def test_training_curves_need_something_to_draw(mpl, tmp_path):
    with pytest.raises(ConfigError, match="no per-epoch accuracy or cost"):
        plots.training_curves({"epochs": [{"epoch": 1, "seconds": 2.0}]}, tmp_path / "c.png")
    with pytest.raises(ConfigError, match="'epochs'"):
        plots.training_curves({"epochs": 3}, tmp_path / "c.png")


def test_approximation_and_layer_speeds(mpl, tmp_path, png_of_size):
    x = np.linspace(0, 1, 50)
    out = plots.approximation(x, x, {"5 bumps": x}, x, {"5 bumps": x}, tmp_path / "a.png",
                              deviation=0.3)
    png_of_size(out, plots.SIZES["approximation"])
    results = [{"sizes": [784, 30, 30, 10], "speeds": [0.07, 0.3], "book": [0.07, 0.31]}]
    out = plots.layer_speeds(results, tmp_path / "s.png")
    png_of_size(out, plots.SIZES["layer_speeds"])
    results[0]["track"] = [[0.07, 0.3], [0.01, 0.02], [0.005, 0.01]]
    out = plots.layer_speeds(results, tmp_path / "t.png")
    png_of_size(out, plots.SIZES["layer_speeds"])


def test_weights_and_prediction(mpl, tmp_path, png_of_size):
    w = np.random.default_rng(0).standard_normal((12, 784))
    out = plots.first_layer_weights(w, tmp_path / "w.png")
    png_of_size(out, plots.SIZES["first_layer_weights"])
    with pytest.raises(ConfigError, match=r"\(n_hidden, 784\)"):
        plots.first_layer_weights(w[:, :100], tmp_path / "w.png")
    acts = [np.linspace(0, 1, 30), np.linspace(0, 1, 10)]
    out = plots.prediction(np.zeros(784), acts, tmp_path / "p.png")
    png_of_size(out, plots.prediction_size(2))


def test_a_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    with pytest.raises(GpunnError, match=r'pip install "gpunn\[plot\]"'):
        plots.training_curves({"epochs": [{"epoch": 1, "evaluation_accuracy": 0.9}]},
                              tmp_path / "c.png")


def test_importing_gpunn_and_its_demos_leaves_matplotlib_alone():
    code = ("import sys, gpunn, gpunn.plots, gpunn.demos.approx, gpunn.demos.vanishing, "
            "gpunn.demos.baselines, gpunn.cli.demo, gpunn.cli.plot, gpunn.cli.baseline; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
