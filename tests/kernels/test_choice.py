"""kernels.choice: the faster candidate is kept per key, on disk, and not measured again."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from gpunn.kernels import choice


def _candidates(calls):
    def slow():
        calls.append("slow")
        time.sleep(0.02)

    def fast():
        calls.append("fast")

    return {"slow": slow, "fast": fast}


def test_faster_is_chosen_and_remembered_on_disk(store, monkeypatch):
    calls = []
    assert choice.choose("conv k", _candidates(calls)) == "fast"
    assert calls.count("slow") == calls.count("fast") == 4  # warm-up + 3 timed each
    assert "conv k" in store.read_text()
    monkeypatch.setattr(choice, "_MEMORY", {})  # a new process: the file answers
    calls.clear()
    assert choice.choose("conv k", _candidates(calls)) == "fast" and calls == []


@pytest.mark.parametrize("ratio, want", [(0.95, "default"), (1.5, "default"), (0.8, "other")])
def test_the_first_candidate_wins_unless_another_is_clearly_faster(store, monkeypatch, ratio,
                                                                   want):
    # 5% faster is within noise: the default (first) stays; 20% faster wins
    def default():
        pass

    def other():
        pass

    cost = {default: 1.0, other: ratio}
    monkeypatch.setattr(choice, "_timed", lambda run: cost[run])
    assert choice.choose("k", {"default": default, "other": other}) == want


def test_candidates_take_turns(store, monkeypatch):
    # a burst of load during one stretch of time must not fall on one candidate only
    order = []
    monkeypatch.setattr(choice, "_timed", lambda run: (run(), 1.0)[1])
    cands = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    choice.choose("turns", cands)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-ups, then turns


def test_damaged_or_stale_file_is_measured_again(store):
    store.write_text("{not json")
    calls = []
    assert choice.choose("k", _candidates(calls)) == "fast" and calls
    store.write_text(json.dumps({f"{choice.cpu_model()} | k": "gone"}))  # no longer offered
    choice._MEMORY.clear()
    calls.clear()
    assert choice.choose("k", _candidates(calls)) == "fast" and calls


def test_conv_kernels_choose_a_layout_per_shape_and_keep_it(store, monkeypatch):
    from gpunn.kernels import conv_numba

    monkeypatch.setattr(conv_numba, "_CHOSEN", {})
    kernel = conv_numba.Conv2dNumba()
    x = np.ones((2, 1, 9, 9), np.float32)
    w = np.ones((3, 1, 3, 3), np.float32)
    out, cache = kernel.forward(x, w, np.zeros(3, np.float32))
    assert cache[0] in (conv_numba.Pixels, conv_numba.Taps)
    assert len(conv_numba._CHOSEN) == 1 and "conv2d (2, 1, 9, 9) (3, 1, 3, 3)" in store.read_text()
    np.testing.assert_allclose(out, 9.0)
    with pytest.raises(ValueError, match="layout must be one of"):
        conv_numba.Conv2dNumba("rows")
