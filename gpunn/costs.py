"""Cost functions as the book pairs them: a value ``fn(a, y)`` and the output error ``delta``.

``fn(a, y)`` is the mean cost over the mini-batch; ``delta(z, a, y, activation)`` is
δ^L = ∂C/∂z^L for one example per row (BP1), *not* divided by the batch size: the network
averages when it forms the gradients. ``y`` is one row of targets per example (one-hot for
classification); the log-likelihood cost also accepts integer labels.

- quadratic: C = ½‖y − a‖², δ = (a − y) ⊙ σ'(z)
- cross-entropy: C = −Σ [y ln a + (1 − y) ln(1 − a)], δ = a − y for sigmoid outputs
- log-likelihood with a softmax output: C = −ln a_y, δ = a − y
"""

from __future__ import annotations

from gpunn.backend import array_module
from gpunn.errors import ConfigError

__all__ = ["Cost", "QuadraticCost", "CrossEntropyCost", "LogLikelihoodCost", "get"]


class Cost:
    name = "cost"
    #: the output activation this cost is paired with by default
    default_output = "sigmoid"

    def check_output(self, activation) -> None:
        """Raise ConfigError when ``activation`` cannot be this cost's output layer."""

    def __repr__(self) -> str:
        return self.name


class QuadraticCost(Cost):
    name = "quadratic"

    @staticmethod
    def fn(a, y):
        d = a - y
        return 0.5 * float((d * d).sum()) / a.shape[0]

    @staticmethod
    def delta(z, a, y, activation):
        return (a - y) * activation.prime(z, a)

    def check_output(self, activation) -> None:
        if activation.name == "softmax":
            raise ConfigError("the quadratic cost needs an elementwise output activation, "
                              "not softmax; use cost='log-likelihood' with softmax")


class CrossEntropyCost(Cost):
    name = "cross-entropy"

    @staticmethod
    def fn(a, y):
        xp = array_module(a)
        # nan_to_num: 0·ln 0 is taken as 0, as in the book's network2.py.
        c = xp.nan_to_num(-y * xp.log(a) - (1 - y) * xp.log(1 - a))
        return float(c.sum()) / a.shape[0]

    @staticmethod
    def delta(z, a, y, activation):
        if activation.name == "sigmoid":
            return a - y  # σ'(z) cancels: the point of chapter 3
        return (a - y) / (a * (1 - a)) * activation.prime(z, a)

    def check_output(self, activation) -> None:
        if activation.name not in ("sigmoid",):
            raise ConfigError(
                f"the cross-entropy cost needs outputs in (0, 1): a sigmoid output layer; "
                f"received output activation {activation.name!r}"
            )


class LogLikelihoodCost(Cost):
    """−ln a_y with a softmax output; uses the fused softmax-cross-entropy kernel."""

    name = "log-likelihood"
    default_output = "softmax"

    @staticmethod
    def fn(a, y):
        xp = array_module(a)
        p = (a * y).sum(axis=1) if y.ndim == 2 else a[xp.arange(a.shape[0]), y]
        return float(-xp.log(xp.maximum(p, 1e-45)).sum()) / a.shape[0]

    @staticmethod
    def delta(z, a, y, activation):
        return a - y

    def check_output(self, activation) -> None:
        if activation.name != "softmax":
            raise ConfigError(
                f"the log-likelihood cost needs a softmax output layer; received output "
                f"activation {activation.name!r}"
            )


_BY_NAME = {
    "quadratic": QuadraticCost(),
    "cross-entropy": CrossEntropyCost(),
    "log-likelihood": LogLikelihoodCost(),
}
_ALIASES = {"xent": "cross-entropy", "crossentropy": "cross-entropy",
            "softmax": "log-likelihood", "nll": "log-likelihood", "mse": "quadratic"}
NAMES = tuple(_BY_NAME)


def get(cost) -> Cost:
    if isinstance(cost, Cost):
        return cost
    if isinstance(cost, type) and issubclass(cost, Cost):
        return cost()
    key = str(cost).lower()
    key = _ALIASES.get(key, key)
    try:
        return _BY_NAME[key]
    except KeyError:
        raise ConfigError(f"cost must be one of {', '.join(NAMES)}; received {cost!r}") from None

