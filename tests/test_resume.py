"""Exact resume: a run stopped anywhere and resumed from its checkpoint equals the run that
was never stopped, bit for bit on the CPU (weights and history, timing aside)."""

from __future__ import annotations

import numpy as np
import pytest

import gpunn
from gpunn.checkpoint import load_checkpoint, save_checkpoint
from gpunn.errors import ConfigError, TrainingDiverged


def digits(n, seed):
    """n separable 'digits' (a bar whose place is the label), as rows of 784 pixels."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 10, n)
    X = 0.1 * r.random((n, 28, 28), dtype=np.float32)
    for i, label in enumerate(y):
        X[i, 2 + 2 * label: 5 + 2 * label, 4:24] += 0.8
    return X.reshape(n, 784), y

TRAIN, VALID = digits(1200, 0), digits(200, 1)
SETTINGS = {
    # the Numba kernel: momentum, L2, the eta schedule
    "numba": dict(sizes=[784, 20, 10], cost="cross-entropy", dropout=0.0,
                  kw=dict(momentum=0.5, lmbda=1.0, schedule_n=1)),
    # the NumPy reference path (dropout draws from the generator every mini-batch)
    "reference": dict(sizes=[784, 16, 10], cost="quadratic", dropout=0.2, kw=dict()),
}
EPOCHS, BATCH, ETA = 4, 10, 0.5


def network(setting):
    s = SETTINGS[setting]
    return gpunn.Network(s["sizes"], cost=s["cost"], dropout=s["dropout"], seed=7,
                         backend="cpu")


def train(net, setting, **extra):
    return net.sgd(TRAIN, EPOCHS, BATCH, ETA, evaluation_data=VALID,
                   monitor_evaluation_cost=True, **SETTINGS[setting]["kw"], **extra)


def untimed(history):
    return [{k: v for k, v in e.items() if k not in ("seconds", "images_per_s")}
            for e in history.epochs]


@pytest.fixture(scope="module")
def uninterrupted():
    return {s: (net := network(s), train(net, s)) for s in SETTINGS}


class StopAfter:
    """should_stop that says yes at its k-th poll (one poll per chunk of examples)."""

    def __init__(self, k):
        self.k, self.polls = k, 0

    def __call__(self):
        self.polls += 1
        return self.polls == self.k


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("stop_at, every", [(2, 0), (5, 0), (6, 0), (3, 45), (8, 45)])
def test_stopped_and_resumed_equals_uninterrupted(setting, stop_at, every, uninterrupted,
                                                  tmp_path):
    # 1,200 examples in chunks of 1,000: polls 2, 4, 6 end epochs 1-3, odd ones fall
    # mid-epoch; every=45 cuts chunks at each 45th mini-batch (450 examples)
    net = network(setting)
    history = train(net, setting, should_stop=StopAfter(stop_at), checkpoint_every=every,
                    on_checkpoint=lambda state: save_checkpoint(tmp_path, net, state))
    assert history.stop_reason == "interrupted"
    resumed, state = load_checkpoint(tmp_path, backend="cpu")
    assert (state["order"] is None) == (state["examples_done"] == 0)
    history = train(resumed, setting, resume=state, checkpoint_every=every)
    reference, reference_history = uninterrupted[setting]
    for a, b in zip(reference.weights + reference.biases, resumed.weights + resumed.biases):
        np.testing.assert_array_equal(a, b)
    assert untimed(history) == untimed(reference_history)
    assert history.stop_reason == reference_history.stop_reason


def test_the_mid_epoch_state_records_the_order_and_position(tmp_path):
    net = network("numba")
    states = []
    train(net, "numba", checkpoint_every=45, should_stop=StopAfter(1),
          on_checkpoint=states.append)
    (state,) = states
    assert state["epoch"] == 0 and state["examples_done"] == 450 and state["steps"] == 45
    assert sorted(state["order"]) == list(range(len(TRAIN[1])))
    assert [len(v) for v in state["velocities"]] == [2, 2]


def test_resume_refuses_another_architecture_or_settings(tmp_path):
    states = []
    train(network("numba"), "numba", should_stop=StopAfter(1), on_checkpoint=states.append)
    other = gpunn.Network([784, 30, 10], cost="cross-entropy", seed=7, backend="cpu")
    with pytest.raises(ConfigError, match="784-20-10.*784-30-10"):
        train(other, "numba", resume=states[0])
    with pytest.raises(ConfigError, match="mini_batch_size=10 in the state, 20 now"):
        network("numba").sgd(TRAIN, EPOCHS, 20, ETA, evaluation_data=VALID,
                              **SETTINGS["numba"]["kw"], resume=states[0])


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_a_non_finite_weight_stops_with_epoch_batch_and_eta(setting):
    net = network(setting)
    with pytest.raises(TrainingDiverged, match=r"mini-batch \d+ of epoch 1 \(eta 1e\+39") as e:
        net.sgd(TRAIN, 2, BATCH, 1e39, evaluation_data=VALID)
    assert e.value.epoch == 1 and e.value.batch >= 1 and e.value.eta == 1e39
    assert all(np.isfinite(w).all() for w in net.weights)  # the last finite weights


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_on_nan_halve_eta_and_skip_batch_keep_training():
    net = network("numba")
    history = net.sgd(TRAIN, 2, BATCH, 1e39, evaluation_data=VALID, on_nan="halve-eta")
    assert len(history) == 2 and history[0]["eta"] < 1e39
    assert all(np.isfinite(w).all() for w in net.weights)
    net = network("numba")
    history = net.sgd(TRAIN, 1, BATCH, 1e39, evaluation_data=VALID, on_nan="skip-batch")
    assert history[0]["skipped_batches"] >= 1
    assert all(np.isfinite(w).all() for w in net.weights)
