"""gpunn.imagenet: top-k accuracy, the KSH training loop, checkpoints and resume, throughput."""

from __future__ import annotations

import numpy as np
import pytest

from gpunn import imagenet, models
from gpunn.data import SyntheticImages, make_toy, open_image_folder
from gpunn.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_toy(tmp_path_factory):
    """3 classes x (8 training + 4 validation) toy JPEGs."""
    return make_toy(tmp_path_factory.mktemp("data") / "toy", classes=3, per_class=8,
                    val_per_class=4)


def test_topk_accuracy_on_crafted_outputs():
    outputs = np.array([[0.10, 0.20, 0.30, 0.15, 0.05, 0.12, 0.08],   # label 2: rank 1
                        [0.30, 0.20, 0.10, 0.15, 0.05, 0.12, 0.08],   # label 3: rank 3
                        [0.30, 0.20, 0.10, 0.15, 0.05, 0.12, 0.08],   # label 6: rank 6
                        [0.25, 0.25, 0.10, 0.15, 0.05, 0.12, 0.08]])  # label 1: tied first
    labels = np.array([2, 3, 6, 1])
    assert imagenet.topk_accuracy(outputs, labels, 1) == 0.5
    assert imagenet.topk_accuracy(outputs, labels, 3) == 0.75
    assert imagenet.topk_accuracy(outputs, labels, 5) == 0.75
    assert imagenet.topk_accuracy(outputs, labels, 6) == 1.0
    diverged = np.full((2, 7), np.nan)
    assert imagenet.topk_accuracy(diverged, labels[:2], 5) == 0.0
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        imagenet.topk_accuracy(outputs, labels, 0)
    with pytest.raises(ConfigError, match=r"outputs \(N, classes\)"):
        imagenet.topk_accuracy(outputs, labels[:2], 1)


def test_a_few_steps_of_alexnet_small_reduce_the_loss():
    # SyntheticImages: noise plus a per-class colour shift, learnable within a dozen steps
    # (the toy shapes need ~100 steps before the loss moves from ln 10).
    data = SyntheticImages(24, classes=3, crop=64, seed=0)
    net = models.build("alexnet-small", classes=3, seed=1, backend="cpu")
    before = imagenet.evaluate(net, data, batch_size=24, workers=0)["loss"]
    history = imagenet.train(net, data, None, epochs=4, batch_size=8, eta=0.01, seed=2,
                             workers=0)
    after = imagenet.evaluate(net, data, batch_size=24, workers=0)["loss"]
    assert len(history) == 4 and history.stop_reason == "completed"
    assert after < 0.85 * before, (before, after)


def test_records_checkpoints_and_an_exact_resume(tiny_toy, tmp_path):
    from gpunn.checkpoint import list_checkpoints

    train_set, val_set = open_image_folder(tiny_toy, crop=64)
    steps = []
    net = models.build("alexnet-small", classes=3, seed=1, backend="cpu")
    history = imagenet.train(net, train_set, val_set, epochs=2, batch_size=8, seed=3,
                             workers=1, on_step=steps.append, checkpoint_dir=tmp_path)
    record = history[0]
    assert {"epoch", "eta", "seconds", "images_per_s", "train_loss", "train_top1", "val_top1",
            "val_top5", "val_loss", "checkpoint"} <= set(record)
    assert record["val_top5"] == 1.0  # 3 classes: every label is in the top 3 of 3
    assert [s["step"] for s in steps] == [1, 2, 3] * 2 and steps[2]["images"] == 24
    first, last = list_checkpoints(tmp_path)
    assert imagenet.resume(tmp_path, backend="cpu")[1]["checkpoint_path"] == str(last)
    # from the end of epoch 1, the second epoch again: momentum, dropout and batches continue
    net2, state = imagenet.resume(first, backend="cpu")
    assert state["epoch"] == 1
    again = imagenet.train(net2, train_set, val_set, epochs=2, batch_size=8, seed=3,
                           workers=1, state=state)
    assert [r["epoch"] for r in again.epochs] == [1, 2]
    assert again[1]["train_loss"] == history[1]["train_loss"]
    for a, b in zip(net.layers, net2.layers):
        if getattr(a, "w", None) is not None:
            assert np.array_equal(a.w, b.w) and np.array_equal(a.b, b.b)


def test_step_schedule_divides_eta_by_ten():
    data = SyntheticImages(8, classes=3, crop=64)
    net = models.build("alexnet-small", classes=3, seed=1, backend="cpu")
    history = imagenet.train(net, data, None, epochs=3, batch_size=8, eta=0.01,
                             schedule="step", step_epochs=1, workers=0)
    assert history.series("eta") == pytest.approx([0.01, 0.001, 0.0001])


def test_steps_stop_the_run_early():
    data = SyntheticImages(32, classes=3, crop=64)
    net = models.build("alexnet-small", classes=3, seed=1, backend="cpu")
    history = imagenet.train(net, data, data, epochs=5, batch_size=8, steps=2, workers=0)
    assert len(history) == 1 and history.stop_reason == "stopped after 2 steps"
    assert history[0]["images_per_s"] > 0 and 0 <= history[0]["val_top1"] <= 1


@pytest.mark.parametrize("kwargs, message", [
    ({"schedule": "plateau"}, "give a val_source"),
    ({"schedule": "cosine"}, "schedule must be one of"),
    ({"eta": 0.0}, "eta must be > 0"),
    ({"momentum": 1.0}, "momentum must be"),
    ({"batch_size": 0}, "batch_size must be"),
])
def test_bad_settings(kwargs, message):
    net = models.build("alexnet-small", classes=3, seed=1, backend="cpu")
    with pytest.raises(ConfigError, match=message):
        imagenet.train(net, SyntheticImages(8, 3, 64), None, **kwargs)


def test_classes_must_match_the_network(tiny_toy):
    train_set, _ = open_image_folder(tiny_toy, crop=64)
    net = models.build("alexnet-small", classes=5, seed=1, backend="cpu")
    with pytest.raises(ConfigError, match="the data has 3 classes but the network gives 5"):
        imagenet.train(net, train_set, None)


def test_throughput_reports_images_per_second():
    net = models.build("alexnet-small", classes=4, seed=1, backend="cpu")
    calls = []
    result = imagenet.throughput(net, SyntheticImages(4, 4, 64), batch_size=4, steps=2,
                                 on_step=lambda done, total: calls.append((done, total)))
    assert result["train_images_per_s"] > 0 and result["forward_images_per_s"] > 0
    assert calls[-1] == (6, 6)
