"""Layers of a network: each keeps its parameters, runs forward and backward side by side.

A layer's ``forward(x, train)`` stores what ``backward`` needs under named attributes;
``backward(delta)`` takes δ = ∂C/∂z of this layer (one row per example, already divided by
the batch size) and sets ``nabla_w``/``nabla_b`` (BP3, BP4), returning ∂C/∂a of the layer
below (the first half of BP2). ``delta_from(grad_a)`` finishes BP2: δ = grad_a ⊙ σ'(z).

What it leaves out (for now): convolutional layers, which arrive with chapter 6.
"""

from __future__ import annotations

import math

import numpy as np

from gpunn import activations
from gpunn.errors import ConfigError

__all__ = ["FullyConnected", "INITS"]

INITS = ("default", "large")


class FullyConnected:
    """z = x Wᵀ + b, a = σ(z), for x of shape (N, n_in); W has the book's shape (n_out, n_in).

    ``dropout`` is the probability of dropping each unit during training (inverted dropout:
    kept units are scaled by 1/(1 - p), so evaluation needs no rescaling).
    """

    def __init__(self, n_in: int, n_out: int, activation="sigmoid", dropout: float = 0.0):
        if n_in < 1 or n_out < 1:
            raise ConfigError(f"a layer needs n_in >= 1 and n_out >= 1; received "
                              f"n_in={n_in}, n_out={n_out}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); received {dropout}")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.activation = activations.get(activation)
        self.dropout = float(dropout)
        self.w = self.b = None

    @property
    def num_params(self) -> int:
        return self.n_out * self.n_in + self.n_out

    def init_params(self, rng, init: str = "default", dtype=np.float32) -> None:
        """Gaussian weights: N(0, 1/n_in) for ``default`` (chapter 3), N(0, 1) for ``large``."""
        if init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}; received {init!r}")
        scale = 1.0 / math.sqrt(self.n_in) if init == "default" else 1.0
        self.w = rng.normal(0.0, scale, (self.n_out, self.n_in), dtype=dtype)
        self.b = rng.normal(0.0, 1.0, (self.n_out,), dtype=dtype)

    def forward(self, x, train: bool = False, rng=None):
        z = x @ self.w.T
        z += self.b
        a = self.activation.fn(z)
        self._x, self._z, self._a, self._mask = x, z, a, None
        if train and self.dropout:
            keep = 1.0 - self.dropout
            mask = rng.random(a.shape, dtype=a.dtype) < keep
            self._mask = mask * a.dtype.type(1.0 / keep)
            return a * self._mask
        return a

    def delta_from(self, grad_a):
        """δ = ∂C/∂a ⊙ (dropout mask) ⊙ σ'(z): BP2's elementwise half."""
        if self._mask is not None:
            grad_a = grad_a * self._mask
        return grad_a * self.activation.prime(self._z, self._a)

    def backward(self, delta, need_grad_input: bool = True):
        self.nabla_b = delta.sum(axis=0)
        self.nabla_w = delta.T @ self._x
        return delta @ self.w if need_grad_input else None

    def params(self) -> list:
        return [self.w, self.b]

    def grads(self) -> list:
        return [self.nabla_w, self.nabla_b]

    def describe(self) -> str:
        extra = f", dropout={self.dropout}" if self.dropout else ""
        return f"FullyConnected({self.n_in} -> {self.n_out}, {self.activation.name}{extra})"
