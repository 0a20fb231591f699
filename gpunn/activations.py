"""Activation functions: a value ``fn(z)`` and its derivative ``prime(z, a)``.

``prime`` receives both ``z`` and ``a = fn(z)`` because for sigmoid and tanh the derivative
is cheapest from ``a`` (σ' = a(1 - a), tanh' = 1 - a²). Every function uses the array
module of its argument, so the same code runs on NumPy and CuPy.

The perceptron's step unit is here for chapter 1's demonstrations; its derivative is zero
almost everywhere, so a network of step units cannot learn by gradient descent.
"""

from __future__ import annotations

from gpunn.backend import array_module
from gpunn.errors import ConfigError

__all__ = ["Activation", "Sigmoid", "Tanh", "ReLU", "Linear", "Step", "Softmax", "get"]


class Activation:
    name = "activation"

    @staticmethod
    def fn(z):
        raise NotImplementedError

    @staticmethod
    def prime(z, a):
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


class Sigmoid(Activation):
    """σ(z) = 1 / (1 + e^{-z})."""

    name = "sigmoid"

    @staticmethod
    def fn(z):
        xp = array_module(z)
        # 0.5 * (1 + tanh(z/2)) is σ without overflow in exp(-z) for very negative z.
        a = xp.multiply(z, 0.5)
        xp.tanh(a, out=a)
        a *= 0.5
        a += 0.5
        return a

    @staticmethod
    def prime(z, a):
        return a * (1 - a)


class Tanh(Activation):
    name = "tanh"

    @staticmethod
    def fn(z):
        return array_module(z).tanh(z)

    @staticmethod
    def prime(z, a):
        return 1 - a * a


class ReLU(Activation):
    """max(0, z); its derivative is taken as 0 at z = 0."""

    name = "relu"

    @staticmethod
    def fn(z):
        return array_module(z).maximum(z, 0)

    @staticmethod
    def prime(z, a):
        return (z > 0).astype(z.dtype)


class Linear(Activation):
    name = "linear"

    @staticmethod
    def fn(z):
        return z.copy()

    @staticmethod
    def prime(z, a):
        return array_module(z).ones_like(z)


class Step(Activation):
    """The perceptron: 1 if z > 0 else 0 (chapter 1). Not trainable by gradient descent."""

    name = "step"

    @staticmethod
    def fn(z):
        return (z > 0).astype(z.dtype)

    @staticmethod
    def prime(z, a):
        return array_module(z).zeros_like(z)


class Softmax(Activation):
    """a_j = e^{z_j} / Σ_k e^{z_k} over each row; only an output layer, with log-likelihood."""

    name = "softmax"

    @staticmethod
    def fn(z):
        xp = array_module(z)
        e = xp.exp(z - z.max(axis=1, keepdims=True))
        e /= e.sum(axis=1, keepdims=True)
        return e

    @staticmethod
    def prime(z, a):
        raise ConfigError(
            "softmax has no elementwise derivative; use it as the output layer with the "
            "log-likelihood cost (cost='log-likelihood'), whose delta is a - y"
        )


_BY_NAME = {cls.name: cls() for cls in (Sigmoid, Tanh, ReLU, Linear, Step, Softmax)}
NAMES = tuple(_BY_NAME)


def get(activation) -> Activation:
    """An activation from its name ("sigmoid", "tanh", "relu", ...) or an instance."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, type) and issubclass(activation, Activation):
        return activation()
    try:
        return _BY_NAME[str(activation).lower()]
    except KeyError:
        raise ConfigError(
            f"activation must be one of {', '.join(NAMES)}; received {activation!r}"
        ) from None
