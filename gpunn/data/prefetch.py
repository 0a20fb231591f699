"""Mini-batches loaded ahead by background threads, so the network is not left waiting for JPEGs.

    with Prefetcher(train, batch_size=128, shuffle=True, seed=1, workers=2) as batches:
        for epoch in range(epochs):
            for X, y in batches:          # one epoch per loop; the next loop is the next epoch
                ...

Threads suffice: Pillow releases the GIL while it decodes and resizes, and so does NumPy while
it normalises a batch. Each worker loads whole batches (``dataset.load(indices, rng)``); at most
``depth`` batches are loaded or loading ahead of the one the consumer holds, so memory stays
bounded. Keep ``depth >= workers`` or some workers sit idle.

Results do not depend on thread timing: batches come back in order, epoch ``e``'s order is a
permutation drawn from the seed ``(seed, e)``, and batch ``b`` is augmented by a generator seeded
with ``(seed, e, b)``, made in the consumer's thread. Stopping early (``break``, an exception,
:meth:`Prefetcher.close`) cancels what has not started and waits for what has: no thread
outlives the loop. An exception in a worker is raised in the consumer, unchanged (a bad image's
:class:`~gpunn.errors.DataError` names the file).

What it leaves out: processes (threads are enough while decoding releases the GIL), and
pinned-memory or device transfers, which belong to the backend.
"""

from __future__ import annotations

import itertools
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gpunn.errors import ConfigError

__all__ = ["Prefetcher"]


class Prefetcher:
    """Batches of ``dataset`` (anything with ``__len__`` and ``load(indices, rng) -> (X, y)``).

    Iterating gives one epoch of ``(X, y)`` batches and counts epochs from 0; :meth:`epoch`
    gives a chosen one. ``shuffle=False`` keeps the dataset's order. The last batch is smaller
    unless ``drop_last``. ``workers=0`` loads in the consumer's thread (for debugging).
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                 workers: int = 2, depth: int = 2, drop_last: bool = False):
        if batch_size < 1 or workers < 0 or depth < 1:
            raise ConfigError(f"Prefetcher needs batch_size >= 1, workers >= 0 and depth >= 1; "
                              f"received batch_size={batch_size}, workers={workers}, "
                              f"depth={depth}")
        if not (isinstance(seed, int | np.integer) and seed >= 0):
            raise ConfigError(f"seed should be a non-negative int; received {seed!r}")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.workers, self.depth, self.drop_last = workers, depth, drop_last
        self.epochs_started = 0
        self._live = weakref.WeakSet()  # open epoch generators, closed by close()

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The (N,) int64 order in which epoch ``epoch`` visits the dataset."""
        if not self.shuffle:
            return np.arange(len(self.dataset), dtype=np.int64)
        return np.random.default_rng([self.seed, epoch, 0]).permutation(len(self.dataset))

    def __iter__(self):
        epoch, self.epochs_started = self.epochs_started, self.epochs_started + 1
        return self.epoch(epoch)

    def epoch(self, epoch: int, start: int = 0):
        """A generator of epoch ``epoch``'s ``(X, y)`` batches from batch ``start`` on (a
        resumed epoch gets the very batches it would have had); close it to stop early."""
        batches = self._batches(epoch, start)
        self._live.add(batches)
        return batches

    def _batches(self, epoch: int, first: int = 0):
        order = self.order(epoch)
        jobs = ((order[b * self.batch_size:(b + 1) * self.batch_size],
                 np.random.default_rng([self.seed, epoch, 1, b]))
                for b in range(first, len(self)))
        if self.workers == 0:
            for indices, rng in jobs:
                yield self.dataset.load(indices, rng)
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gpunn-prefetch")
        pending = deque()
        try:
            for indices, rng in itertools.islice(jobs, self.depth):
                pending.append(pool.submit(self.dataset.load, indices, rng))
            while pending:
                batch = pending.popleft().result()  # a worker's exception is raised here
                for indices, rng in itertools.islice(jobs, 1):
                    pending.append(pool.submit(self.dataset.load, indices, rng))
                yield batch
        finally:  # also on break or close(): GeneratorExit arrives at the yield
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Stop every epoch still open; returns when their threads have ended."""
        for batches in list(self._live):
            batches.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
