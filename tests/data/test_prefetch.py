"""Background loading: every item once per epoch, the same batches for a seed whatever the
threads' timing, bounded look-ahead, no thread left behind, and worker errors in the consumer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gpunn.data.folder import ImageFolder
from gpunn.data.prefetch import Prefetcher
from gpunn.data.toy import make_toy
from gpunn.errors import ConfigError, DataError


class Numbers:
    """A dataset whose images are their own indices plus one draw from the batch's generator.

    Loads sleep a random moment so that threads finish out of order.
    """

    def __init__(self, n, fail_at=None, jitter=0.002):
        self.n, self.fail_at, self.jitter = n, fail_at, jitter
        self.labels = np.arange(n, dtype=np.int64) % 3
        self.calls = 0
        self._lock = threading.Lock()
        self._sleep = np.random.default_rng()  # unseeded on purpose: timing must not matter

    def __len__(self):
        return self.n

    def load(self, indices, rng):
        with self._lock:
            self.calls += 1
            pause = self._sleep.uniform(0, self.jitter)
        time.sleep(pause)
        if self.fail_at is not None and self.fail_at in indices:
            raise DataError(f"/data/train/x/{self.fail_at}.jpg: the image is corrupt")
        noise = rng.random(len(indices))
        return np.stack([indices, noise], axis=1), self.labels[indices]


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith("gpunn-prefetch")]


def run_epoch(prefetcher, epoch):
    return [(X.copy(), y.copy()) for X, y in prefetcher.epoch(epoch)]


def test_a_shuffled_epoch_visits_every_item_once():
    loader = Prefetcher(Numbers(103), batch_size=10, shuffle=True, seed=1, workers=2)
    assert len(loader) == 11
    batches = list(loader)
    seen = np.concatenate([X[:, 0] for X, _ in batches]).astype(int)
    assert sorted(seen) == list(range(103)) and seen.tolist() != list(range(103))
    assert [len(y) for _, y in batches] == [10] * 10 + [3]
    for X, y in batches:
        np.testing.assert_array_equal(y, X[:, 0].astype(int) % 3)
    dropped = Prefetcher(Numbers(103), batch_size=10, drop_last=True)
    assert len(dropped) == 10 and sum(len(y) for _, y in dropped) == 100
    assert not prefetch_threads()


def test_the_same_seed_gives_the_same_batches_whatever_the_timing():
    runs = [run_epoch(Prefetcher(Numbers(64), 8, seed=5, workers=w, depth=d), epoch=2)
            for w, d in ((2, 2), (3, 5), (0, 1), (2, 2))]
    for other in runs[1:]:
        for (X0, y0), (X1, y1) in zip(runs[0], other):
            np.testing.assert_array_equal(X0, X1)
            np.testing.assert_array_equal(y0, y1)
    next_epoch = run_epoch(Prefetcher(Numbers(64), 8, seed=5), epoch=3)
    other_seed = run_epoch(Prefetcher(Numbers(64), 8, seed=6), epoch=2)
    assert not np.array_equal(runs[0][0][0], next_epoch[0][0])
    assert not np.array_equal(runs[0][0][0], other_seed[0][0])


def test_iterating_again_starts_the_next_epoch():
    loader = Prefetcher(Numbers(20), 5, seed=0)
    first, second = [X[:, 0].tolist() for X, _ in loader], [X[:, 0].tolist() for X, _ in loader]
    assert loader.epochs_started == 2 and first != second
    unshuffled = Prefetcher(Numbers(20), 5, shuffle=False)
    assert np.concatenate([X[:, 0] for X, _ in unshuffled]).tolist() == list(range(20))


def test_loading_runs_at_most_depth_batches_ahead():
    data = Numbers(200, jitter=0)
    for k, _ in enumerate(Prefetcher(data, 4, workers=2, depth=3)):
        time.sleep(0.002)  # give the workers time to run ahead if they could
        assert data.calls <= k + 1 + 3


@pytest.mark.parametrize("how", ["break", "close", "consumer error"])
def test_stopping_early_leaves_no_thread_behind(how):
    loader = Prefetcher(Numbers(1000), 10, workers=2, depth=4)
    if how == "break":
        for _ in loader:
            break
    elif how == "close":
        with loader:
            batches = iter(loader)
            next(batches)
            assert prefetch_threads()
        # the with-block closed it although `batches` is still referenced
    else:
        with pytest.raises(KeyError):
            for _ in loader:
                raise KeyError("the training step failed")
    assert not prefetch_threads()


def test_a_worker_error_reaches_the_consumer():
    loader = Prefetcher(Numbers(100, fail_at=37), 10, shuffle=False, workers=2)
    got = []
    with pytest.raises(DataError, match="37.jpg"):
        for X, _ in loader:
            got.append(X)
    assert len(got) == 3 and not prefetch_threads()


def test_a_corrupt_file_in_a_real_folder_is_named(tmp_path):
    root = make_toy(tmp_path / "toy", classes=2, per_class=6, val_per_class=1, size=24)
    bad = root / "train" / "square" / "square_0003.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    train = ImageFolder(root, "train", crop=16, resize=20)
    with pytest.raises(DataError, match="square_0003.jpg"):
        for _ in Prefetcher(train, 4, seed=0, workers=2):
            pass
    assert not prefetch_threads()


def test_real_folder_batches_are_reproducible(tmp_path):
    root = make_toy(tmp_path / "toy", classes=3, per_class=5, val_per_class=1, size=24)
    train = ImageFolder(root, "train", crop=16, resize=20)
    a = run_epoch(Prefetcher(train, 4, seed=9, workers=2), 0)
    b = run_epoch(Prefetcher(train, 4, seed=9, workers=0), 0)
    assert a[0][0].shape == (4, 3, 16, 16) and a[0][0].dtype == np.float32
    for (Xa, ya), (Xb, yb) in zip(a, b):
        np.testing.assert_array_equal(Xa, Xb)
        np.testing.assert_array_equal(ya, yb)


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="batch_size"):
        Prefetcher(Numbers(5), 0)
    with pytest.raises(ConfigError, match="seed"):
        Prefetcher(Numbers(5), 2, seed=-1)
