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
                        [0.25, 0.25, 0.10, 0.15, 0.05, 0.12, 0.08]])  # label 0: tied first
    labels = np.array([2, 3, 6, 0])  # top-1 is the argmax: of a tie, the first
    assert imagenet.topk_accuracy(outputs, labels, 1) == 0.5
    assert imagenet.topk_accuracy(outputs, labels, 3) == 0.75
    assert imagenet.topk_accuracy(outputs, labels, 5) == 0.75
    assert imagenet.topk_accuracy(outputs, labels, 6) == 1.0
    assert imagenet.topk_accuracy(outputs[3:], np.array([1]), 1) == 0.0
    assert imagenet.topk_accuracy(outputs[3:], np.array([1]), 2) == 1.0  # ties count for k > 1
    diverged = np.full((2, 7), np.nan)
    assert imagenet.topk_accuracy(diverged, labels[:2], 5) == 0.0
    assert imagenet.topk_accuracy(diverged, np.array([0, 0]), 1) == 0.0
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
    from gpunn.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

    train_set, val_set = open_image_folder(tiny_toy, crop=64)
    progress = []
    net = models.build("alexnet-small", classes=3, seed=1, backend="cpu")
    history = imagenet.train(net, train_set, val_set, epochs=2, batch_size=8, seed=3,
                             workers=1, on_progress=lambda done, n: progress.append(done),
                             on_checkpoint=lambda state: save_checkpoint(tmp_path, net, state))
    record = history[0]
    assert {"epoch", "eta", "seconds", "images_per_s", "training_cost", "training_accuracy",
            "evaluation_accuracy", "evaluation_top5", "evaluation_cost"} <= set(record)
    assert record["evaluation_top5"] == 1.0  # 3 classes: every label is in the top 5
    # the validation loss is the data's alone (no weight-decay term), as KSH report it
    assert history[-1]["evaluation_cost"] == pytest.approx(
        imagenet.evaluate(net, val_set, batch_size=8, workers=1)["loss"], rel=1e-5)
    assert progress == [8, 16, 24] * 2
    first, last = list_checkpoints(tmp_path)
    assert load_checkpoint(tmp_path, backend="cpu")[1]["checkpoint_path"] == str(last)
    # from the end of epoch 1, the second epoch again: momentum, dropout and batches continue
    net2, state = load_checkpoint(first, backend="cpu")
    assert state["epoch"] == 1
    again = imagenet.train(net2, train_set, val_set, epochs=2, batch_size=8, seed=3,
                           workers=1, resume=state)
    assert [r["epoch"] for r in again.epochs] == [1, 2]
    assert again[1]["training_cost"] == history[1]["training_cost"]
    for a, b in zip(net.layers, net2.layers):
        if getattr(a, "w", None) is not None:
            assert np.array_equal(a.w, b.w) and np.array_equal(a.b, b.b)


def test_interrupted_mid_epoch_resumes_bit_identically(tiny_toy, tmp_path):
    """Stopped after the 2nd of 3 mini-batches of epoch 1, resumed: the same weights and
    figures as a run never stopped (batches, augmentation, dropout and momentum continue)."""
    from gpunn.checkpoint import load_checkpoint, save_checkpoint

    train_set, val_set = open_image_folder(tiny_toy, crop=64)
    kw = dict(epochs=2, batch_size=8, seed=3, workers=1)
    straight = models.build("alexnet-small", classes=3, seed=1, backend="cpu")
    reference = imagenet.train(straight, train_set, val_set, **kw)
    polls = []
    net = models.build("alexnet-small", classes=3, seed=1, backend="cpu")
    stopped = imagenet.train(net, train_set, val_set, **kw,
                             should_stop=lambda: polls.append(1) or len(polls) == 2,
                             on_checkpoint=lambda state: save_checkpoint(tmp_path, net, state))
    assert stopped.stop_reason == "interrupted" and len(stopped) == 0
    resumed, state = load_checkpoint(tmp_path, backend="cpu")
    assert (state["epoch"], state["examples_done"]) == (0, 16)
    history = imagenet.train(resumed, train_set, val_set, **kw, resume=state)
    for a, b in zip(straight.weights + straight.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(a, b)
    untimed = [[{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
                for r in h.epochs] for h in (history, reference)]
    assert untimed[0] == untimed[1]


def test_ten_crop_evaluation_averages_the_softmax_of_ten_crops(tiny_toy):
    _, val_set = open_image_folder(tiny_toy, crop=64)
    net = models.build("alexnet-small", classes=3, seed=4, backend="cpu")
    out = net.layers[-1]  # the softmax starts at zero weights: give it some, so the crops'
    out.w[...] = np.random.default_rng(0).normal(0, 0.5, out.w.shape)  # outputs differ
    got = imagenet.evaluate(net, val_set, batch_size=40, workers=1, ten_crop=True)
    # the reference takes the ten crops through the training crop code: draws that put the
    # crop in each corner (0 and just under 1) and in the middle, flips by the third number
    room = val_set.resize - 64 + 1
    middle = ((val_set.resize - 64) // 2 + 0.5) / room
    places = [(0, 0), (0, 0.999), (0.999, 0), (0.999, 0.999), (middle, middle)]
    probs = []
    for image in range(len(val_set)):
        draws = np.array([[u, v, flip] for flip in (0.9, 0.1) for u, v in places])
        X = val_set.normalise(val_set.load_uint8([image] * 10, draws))
        probs.append(np.asarray(net.feedforward(X), dtype=np.float64).mean(axis=0))
    probs, y = np.array(probs), val_set.labels
    assert got["images"] == len(y) == 12
    assert got["top1"] == np.mean(probs.argmax(axis=1) == y)
    assert got["top5"] == 1.0  # 3 classes
    assert got["loss"] == pytest.approx(-np.log(probs[np.arange(12), y]).mean(), rel=1e-5)
    centre = imagenet.evaluate(net, val_set, batch_size=40, workers=1)
    assert got["loss"] != pytest.approx(centre["loss"], rel=1e-3)  # it is not the centre crop
    with pytest.raises(ConfigError, match="needs an image folder.*SyntheticImages"):
        imagenet.evaluate(net, SyntheticImages(4, 3, 64), ten_crop=True)


def test_pca_noise_changes_training_and_resumes_exactly(tiny_toy, tmp_path):
    from gpunn.checkpoint import load_checkpoint, save_checkpoint

    train_set, val_set = open_image_folder(tiny_toy, crop=64)
    kw = dict(epochs=1, batch_size=8, seed=3, workers=1)
    plain = imagenet.train(models.build("alexnet-small", classes=3, seed=1, backend="cpu"),
                           train_set, None, **kw)
    straight = models.build("alexnet-small", classes=3, seed=1, backend="cpu")
    reference = imagenet.train(straight, train_set, None, pca_noise=0.1, **kw)
    assert reference[0]["training_cost"] != plain[0]["training_cost"]
    polls = []
    net = models.build("alexnet-small", classes=3, seed=1, backend="cpu")
    imagenet.train(net, train_set, None, pca_noise=0.1, **kw,
                   should_stop=lambda: polls.append(1) or len(polls) == 2,
                   on_checkpoint=lambda state: save_checkpoint(tmp_path, net, state))
    resumed, state = load_checkpoint(tmp_path, backend="cpu")
    assert state["examples_done"] == 16 and state["settings"]["pca_noise"] == 0.1
    history = imagenet.train(resumed, train_set, None, pca_noise=0.1, **kw, resume=state)
    for a, b in zip(straight.weights + straight.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(a, b)
    assert history[0]["training_cost"] == reference[0]["training_cost"]


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
    assert history[0]["images_per_s"] > 0 and 0 <= history[0]["evaluation_accuracy"] <= 1


@pytest.mark.parametrize("kwargs, message", [
    ({"schedule": "plateau"}, "give a val_source"),
    ({"schedule": "cosine"}, "schedule must be one of"),
    ({"eta": 0.0}, "eta must be > 0"),
    ({"momentum": 1.0}, "momentum must be"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"pca_noise": -0.1}, r"pca_noise must be a number in \[0, inf\)"),
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
