"""Cost functions as the book pairs them: a value ``fn(a, y)`` and the output error ``delta``.

``fn(a, y, z=None)`` is the mean cost over the mini-batch; ``delta(z, a, y, activation)`` is
δ^L = ∂C/∂z^L for one example per row (BP1), *not* divided by the batch size: the network
averages when it forms the gradients. ``y`` is one row of targets per example (one-hot for
classification); the log-likelihood cost also accepts integer labels.

- quadratic: C = ½‖y − a‖², δ = (a − y) ⊙ σ'(z)
- cross-entropy: C = −Σ [y ln a + (1 − y) ln(1 − a)], δ = a − y for sigmoid outputs
- log-likelihood with a softmax output: C = −ln a_y, δ = a − y

A numerical trap the book's code falls into: in float32 a saturated sigmoid or softmax output
is exactly 0 or 1, so ln a is −inf; network2.py's ``nan_to_num`` turns that into −3.4e38 and
the sum overflows to inf, a "divergence" of a network whose weights are all finite. So
``fn`` takes the output layer's weighted input ``z`` (a = σ(z) or softmax(z)) when it is
known and computes the cost from it in a form that cannot overflow: cross-entropy as
Σ [softplus(z) − y z] (softplus(z) = ln(1 + e^z) = ``logaddexp(0, z)``), log-likelihood as
ln Σ_k e^{z_k} − z_y (log-sum-exp, shifted by max z). Both are the true cost however
saturated the outputs are. Without ``z`` the outputs are clamped into [tiny, 1 − ε] first: no
overflow and no warning, but a saturated term counts at most −ln ε (16.6 in float32).
A non-finite ``z`` or ``a`` still gives a non-finite cost, for the divergence guard.
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
    def fn(a, y, z=None):
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
    def fn(a, y, z=None):
        xp = array_module(a)
        if z is not None:
            # −y ln σ(z) − (1 − y) ln(1 − σ(z)) = softplus(z) − y z, exact when σ(z) rounds to
            # 0 or 1; logaddexp(0, z) neither overflows nor warns.
            return float((xp.logaddexp(0, z) - y * z).sum()) / z.shape[0]
        # Without z: keep ln a and ln(1 − a) finite, so 0·ln 0 is 0 as in network2.py.
        info = xp.finfo(a.dtype)
        a = xp.clip(a, info.tiny, 1 - info.epsneg)
        return float((-y * xp.log(a) - (1 - y) * xp.log1p(-a)).sum()) / a.shape[0]

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
    def fn(a, y, z=None):
        xp = array_module(a)
        rows = xp.arange(a.shape[0])
        if z is not None:
            # −ln softmax(z)_y = ln Σ_k e^{z_k} − z_y, shifted by max z so e^{...} <= 1.
            m = z.max(axis=1)
            lse = m + xp.log(xp.exp(z - m[:, None]).sum(axis=1))
            z_y = (z * y).sum(axis=1) if y.ndim == 2 else z[rows, y]
            return float((lse - z_y).sum()) / z.shape[0]
        p = (a * y).sum(axis=1) if y.ndim == 2 else a[rows, y]
        return float(-xp.log(xp.maximum(p, xp.finfo(a.dtype).tiny)).sum()) / a.shape[0]

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

