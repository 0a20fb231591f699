"""The book's network: feedforward, backpropagation and mini-batch SGD (chapters 1–3).

A :class:`Network` is a stack of layers on one backend. ``Network([784, 30, 10])`` builds
chapter 1's network of sigmoid neurons; the keyword arguments turn on each chapter-3
improvement. Examples are rows: ``X`` has shape (N, n_in) and ``feedforward`` returns
(N, n_out); the weights keep the book's shape (n_out, n_in), so z = X Wᵀ + b.

The training loop (:meth:`Network.sgd`) follows ``network2.py``: shuffle, split into
mini-batches, backpropagate the whole mini-batch at once (no per-example loop), update with
L2/L1 weight decay and optional momentum, and monitor cost and accuracy per epoch. It returns
a :class:`History` and reports through callbacks; it never prints.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from gpunn import backend as backend_module
from gpunn import costs
from gpunn.errors import ConfigError
from gpunn.layers import FullyConnected

__all__ = ["Network", "History"]

# Examples converted to float32 and moved to the device at a time: large enough to amortise
# the conversion, small enough to keep memory flat (1,000 MNIST images = 3 MB).
CHUNK = 1000
EVAL_BATCH = 2000  # bounded memory: 2,000 images at a time (6 MB for MNIST)


@dataclass
class History:
    """What :meth:`Network.sgd` did: one record per epoch, and why it stopped."""

    epochs: list = field(default_factory=list)
    stop_reason: str = "completed"

    def __len__(self) -> int:
        return len(self.epochs)

    def __getitem__(self, i):
        return self.epochs[i]

    def series(self, key: str) -> list:
        """The values of ``key`` (e.g. "evaluation_accuracy") over the epochs."""
        return [e.get(key) for e in self.epochs]

    def to_dict(self) -> dict:
        return {"epochs": list(self.epochs), "stop_reason": self.stop_reason}


class _Arrays:
    """Adapts an (X, y) pair of arrays to the Split interface used by training."""

    def __init__(self, X, y):
        self._X = np.asarray(X)
        self.labels = np.asarray(y)
        if self.labels.ndim == 2:  # one-hot targets, as in the book's training_data
            self.labels = self.labels.argmax(axis=1)
        if self._X.ndim != 2 or len(self._X) != len(self.labels):
            raise ConfigError(
                f"data must be X of shape (N, n_in) with N labels; received "
                f"X.shape={self._X.shape} and {len(self.labels)} labels"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def x(self, idx=None, dtype=np.float32):
        X = self._X if idx is None else self._X[idx]
        return X.astype(dtype, copy=False)


def as_split(data):
    """A training/evaluation set as an object with ``x(idx)``, ``labels`` and ``len``."""
    if hasattr(data, "x") and hasattr(data, "labels"):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return _Arrays(*data)
    raise ConfigError(
        "data must be a gpunn.data Split or a pair (X, y) with X of shape (N, n_in) and y "
        f"labels of shape (N,); received {type(data).__name__}"
    )


class Network:
    """A fully connected network ``sizes = [n_in, hidden..., n_out]``.

    Args:
        sizes: neurons per layer, input first, e.g. ``[784, 30, 10]``.
        cost: "quadratic" (chapter 1), "cross-entropy" or "log-likelihood" (softmax output).
        activation: hidden-layer activation: "sigmoid", "tanh", "relu", "linear" or "step".
        output_activation: defaults to the cost's partner (sigmoid, or softmax for
            log-likelihood).
        init: "default" (weights N(0, 1/n_in)) or "large" (N(0, 1), chapter 1).
        dropout: probability of dropping each hidden unit in training.
        seed: seeds initialisation, shuffling and dropout; the same seed gives the same
            weights on CPU and GPU, and bit-identical training on the CPU.
        backend: a :class:`gpunn.backend.Backend` or a device string ("auto", "cpu", "cuda").
        dtype: float32 (default) or float64 (for gradient checks).
    """

    def __init__(self, sizes, cost="quadratic", activation="sigmoid", output_activation=None,
                 init="default", dropout=0.0, seed=None, backend="auto", dtype=np.float32):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ConfigError(f"sizes must list at least two layer sizes, each >= 1; "
                              f"received {sizes}")
        self.backend = (backend if isinstance(backend, backend_module.Backend)
                        else backend_module.select(backend))
        self.xp = self.backend.xp
        self.dtype = np.dtype(dtype)
        self.sizes = sizes
        self.cost = costs.get(cost)
        self.init = init
        self.seed = seed
        output_activation = output_activation or self.cost.default_output
        self.layers = [
            FullyConnected(n_in, n_out,
                           activation if i < len(sizes) - 2 else output_activation,
                           dropout if i < len(sizes) - 2 else 0.0)
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))
        ]
        self.cost.check_output(self.layers[-1].activation)
        self.rng = self.backend.rng(seed)
        for layer in self.layers:
            layer.init_params(self.rng, init, self.dtype)
        self._eye = self.xp.eye(sizes[-1], dtype=self.dtype)
        self.velocities = None

    # -- the book's attributes -------------------------------------------------------------
    @property
    def weights(self) -> list:
        """``weights[l]`` of shape (n_out, n_in), as in the book."""
        return [layer.w for layer in self.layers]

    @property
    def biases(self) -> list:
        return [layer.b for layer in self.layers]

    @property
    def num_layers(self) -> int:
        return len(self.sizes)

    @property
    def num_params(self) -> int:
        return sum(layer.num_params for layer in self.layers)

    @property
    def activation(self):
        return self.layers[0].activation if len(self.layers) > 1 else None

    @property
    def dropout(self) -> float:
        return self.layers[0].dropout

    def config(self) -> dict:
        """The architecture, enough to rebuild the network (see ``gpunn.load``)."""
        return {
            "sizes": self.sizes,
            "cost": self.cost.name,
            "activation": self.layers[0].activation.name if len(self.layers) > 1 else
            self.layers[-1].activation.name,
            "output_activation": self.layers[-1].activation.name,
            "init": self.init,
            "dropout": self.dropout,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        return (f"Network({self.sizes}, cost={self.cost.name!r}, "
                f"backend={self.backend.name!r}, params={self.num_params:,})")

    # -- forward and backward --------------------------------------------------------------
    def _input(self, X):
        backend_module.check_same_module(self.xp, X, where="Network")
        X = self.xp.asarray(X, dtype=self.dtype)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ConfigError(f"the network expects X of shape (N, {self.sizes[0]}); "
                              f"received X.shape={tuple(X.shape)}")
        return X

    def feedforward(self, X, train: bool = False):
        """Output activations (N, n_out) for inputs X of shape (N, n_in)."""
        a = self._input(X)
        for layer in self.layers:
            a = layer.forward(a, train, self.rng)
        return a

    def _targets(self, y):
        """One-hot rows for integer labels (N,), or y itself when already (N, n_out)."""
        y = self.xp.asarray(y)
        if y.ndim == 1:
            return self._eye[y]
        return y.astype(self.dtype, copy=False)

    def _backprop(self, X, Y, scale: float):
        """Forward then backward over the mini-batch; sets each layer's nabla_w/nabla_b to
        ``scale`` times the summed gradient (scale=1/m gives the mean)."""
        a = X
        for layer in self.layers:
            a = layer.forward(a, True, self.rng)
        out = self.layers[-1]
        delta = self.cost.delta(out._z, a, Y, out.activation)
        delta *= scale
        for i in range(len(self.layers) - 1, -1, -1):
            grad_a = self.layers[i].backward(delta, need_grad_input=i > 0)
            if i > 0:
                delta = self.layers[i - 1].delta_from(grad_a)
        return a

    def backprop(self, X, y):
        """Gradient of the mean cost over the mini-batch (no regularisation term).

        X: (m, n_in); y: labels (m,) or one-hot targets (m, n_out). Returns
        ``(nabla_b, nabla_w)`` shaped like ``biases`` and ``weights`` (BP1–BP4, whole batch).
        Dropout, if set, is applied as in training.
        """
        X = self._input(X)
        self._backprop(X, self._targets(y), 1.0 / X.shape[0])
        return [layer.nabla_b for layer in self.layers], [layer.nabla_w for layer in self.layers]

    def gradients(self, X, y, lmbda: float = 0.0, l1: float = 0.0, n: int | None = None):
        """Gradient of the regularised cost C = mean cost + (λ/2n)Σw² + (λ₁/n)Σ|w|.

        ``n`` is the training-set size (defaults to the batch size). This is the gradient
        that :meth:`update_mini_batch` descends; biases are not regularised.
        """
        nabla_b, nabla_w = self.backprop(X, y)
        n = n or len(X)
        nabla_w = [gw + (lmbda / n) * w + (l1 / n) * self.xp.sign(w)
                   for gw, w in zip(nabla_w, self.weights)]
        return nabla_b, nabla_w

    # -- training ---------------------------------------------------------------------------
    def update_mini_batch(self, X, Y, eta: float, lmbda: float = 0.0, n: int = 1,
                          l1: float = 0.0, momentum: float = 0.0) -> None:
        """One SGD step on mini-batch (X, Y) with Y one-hot; ``n`` is the training-set size.

        w ← w − η(∇C + (λ/n)w + (λ₁/n)sgn w), b ← b − η∇C (biases are not decayed);
        with momentum μ, v ← μv − η(...), w ← w + v.
        """
        self._backprop(X, Y, 1.0 / X.shape[0])
        decay = 1.0 - eta * lmbda / n
        xp = self.xp
        for i, layer in enumerate(self.layers):
            gw, gb = layer.nabla_w, layer.nabla_b
            if l1:
                gw += (l1 / n) * xp.sign(layer.w)
            if momentum:
                vw, vb = self.velocities[i]
                if lmbda:
                    gw += (lmbda / n) * layer.w
                vw *= momentum
                vw -= eta * gw
                vb *= momentum
                vb -= eta * gb
                layer.w += vw
                layer.b += vb
            else:
                if lmbda:
                    layer.w *= decay
                gw *= eta
                layer.w -= gw
                gb *= eta
                layer.b -= gb

    def sgd(self, training_data, epochs: int, mini_batch_size: int, eta: float,
            lmbda: float = 0.0, evaluation_data=None, *, l1: float = 0.0,
            momentum: float = 0.0, monitor_evaluation_cost: bool = False,
            monitor_evaluation_accuracy: bool = True, monitor_training_cost: bool = False,
            monitor_training_accuracy: bool = False, early_stopping_n: int = 0,
            schedule_n: int = 0, schedule_floor: float = 1 / 128,
            on_epoch=None, on_progress=None) -> History:
        """Mini-batch stochastic gradient descent, as in the book's ``network2.SGD``.

        training_data / evaluation_data: a ``gpunn.data`` Split or a pair (X, y).
        early_stopping_n: stop when evaluation accuracy has not improved in that many epochs.
        schedule_n: halve η whenever evaluation accuracy has not improved in that many
            epochs; stop when η falls below ``schedule_floor`` times its first value.
        on_epoch(record): called after each epoch with the epoch's record (a dict).
        on_progress(done, total): called as examples of the epoch are processed.
        """
        _check_positive_int("epochs", epochs, allow_zero=True)
        _check_positive_int("mini_batch_size", mini_batch_size)
        for name, value in (("eta", eta), ("lmbda", lmbda), ("l1", l1)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0; received {value!r}")
        if eta <= 0:
            raise ConfigError(f"eta must be > 0; received {eta!r}")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1); received {momentum!r}")
        if (early_stopping_n or schedule_n) and evaluation_data is None:
            raise ConfigError("early stopping and the eta schedule need evaluation_data")

        train = as_split(training_data)
        evaluation = as_split(evaluation_data) if evaluation_data is not None else None
        n = len(train)
        if n == 0:
            raise ConfigError("training_data is empty")
        xp, backend = self.xp, self.backend
        # Whole chunks of SGD steps go through the dense_sgd kernel: one Numba call per chunk
        # on the CPU, the NumPy reference (update_mini_batch in a loop) wherever it can't.
        trainer = backend.kernel("dense_sgd")
        if not trainer.supports(self, self.dropout):
            trainer = backend.kernel("dense_sgd", reference=True)
        state = trainer.prepare(self, momentum)
        history = History()
        eta0, best, best_epoch = eta, -1.0, 0
        chunk = max(mini_batch_size, (CHUNK // mini_batch_size) * mini_batch_size)
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            order = self.rng.permutation(n)
            for c0 in range(0, n, chunk):
                idx = order[c0:c0 + chunk]
                Xc = backend.asarray(train.x(idx), dtype=self.dtype)
                Yc = self._eye[xp.asarray(train.labels[idx])]
                trainer.run(state, Xc, Yc, mini_batch_size, eta, lmbda, l1, n, momentum)
                if on_progress is not None:
                    on_progress(min(c0 + chunk, n), n)
            backend.synchronize()
            record = {"epoch": epoch, "seconds": time.perf_counter() - start, "eta": eta}
            if monitor_training_cost or monitor_training_accuracy:
                record.update(self._monitor(train, "training", monitor_training_cost,
                                            monitor_training_accuracy, lmbda, l1, n))
            if evaluation is not None and (monitor_evaluation_cost or monitor_evaluation_accuracy
                                           or early_stopping_n or schedule_n):
                record.update(self._monitor(evaluation, "evaluation", monitor_evaluation_cost,
                                            True, lmbda, l1, n))
            history.epochs.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if early_stopping_n or schedule_n:
                acc = record["evaluation_accuracy"]
                if acc > best:
                    best, best_epoch = acc, epoch
                elif early_stopping_n and epoch - best_epoch >= early_stopping_n:
                    history.stop_reason = (f"early stopping: no improvement in "
                                           f"{early_stopping_n} epochs")
                    break
                elif schedule_n and epoch - best_epoch >= schedule_n:
                    eta /= 2
                    best_epoch = epoch  # wait another schedule_n epochs at the new eta
                    if eta < eta0 * schedule_floor:
                        history.stop_reason = (f"eta schedule: eta fell below eta0 x "
                                               f"{schedule_floor:g}")
                        break
        return history

    # -- evaluation -------------------------------------------------------------------------
    def _monitor(self, data, prefix, want_cost, want_accuracy, lmbda, l1, n) -> dict:
        out = {}
        correct, total_cost = 0, 0.0
        for start in range(0, len(data), EVAL_BATCH):
            idx = np.arange(start, min(start + EVAL_BATCH, len(data)))
            a = self.feedforward(self.backend.asarray(data.x(idx), dtype=self.dtype))
            labels = self.xp.asarray(data.labels[idx])
            if want_accuracy:
                correct += int((a.argmax(axis=1) == labels).sum())
            if want_cost:
                total_cost += self.cost.fn(a, self._eye[labels]) * len(idx)
        if want_cost:
            cost = total_cost / len(data)
            if lmbda:
                cost += 0.5 * (lmbda / n) * sum(float((w * w).sum()) for w in self.weights)
            if l1:
                cost += (l1 / n) * sum(float(abs(w).sum()) for w in self.weights)
            out[f"{prefix}_cost"] = cost
        if want_accuracy:
            out[f"{prefix}_accuracy"] = correct / len(data)
            out[f"{prefix}_correct"] = correct
        return out

    def accuracy(self, data) -> float:
        """Fraction of ``data`` (a Split or (X, y)) classified correctly."""
        data = as_split(data)
        return self._monitor(data, "", False, True, 0.0, 0.0, 1)["_accuracy"]

    def total_cost(self, data, lmbda: float = 0.0, n: int | None = None) -> float:
        """Mean cost over ``data`` plus the L2 term (λ/2n)Σw² when ``lmbda`` is given."""
        data = as_split(data)
        return self._monitor(data, "", True, False, lmbda, 0.0, n or len(data))["_cost"]

    def predict(self, X):
        """Most active output neuron for each row of X: labels (N,) on the backend."""
        return self.feedforward(X).argmax(axis=1)


def _check_positive_int(name, value, allow_zero=False) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):
        raise ConfigError(f"{name} must be an integer >= {0 if allow_zero else 1}; "
                          f"received {value!r}")
