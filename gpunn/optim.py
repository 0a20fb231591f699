"""The optimiser: stochastic gradient descent as the book writes it, with its regularisers.

One update rule serves every network, command and demo (and the fused dense step reads its
hyperparameters from here)::

    w ← (1 − ηλ/n) w − η(λ₁/n) sgn w − η ∇C        b ← b − η ∇C_b   (biases are not decayed)
    with momentum μ:  v ← μ v − η(∇C + (λ/n) w + (λ₁/n) sgn w),   w ← w + v

``∇C`` is the layer's gradient of the mean cost over the mini-batch (``nabla_w``, set by
backpropagation). KSH 2012's weight decay, w ← w − η(∇C + 5·10⁻⁴ w) with momentum 0.9, is
``SGD(eta, lmbda=5e-4, n=1, momentum=0.9)``. What it leaves out: adaptive methods (Adam,
RMSProp), which the book mentions but does not use.
"""

from __future__ import annotations

import math

from gpunn.errors import ConfigError

__all__ = ["SGD"]


def _check(name, value, low=0.0, high=math.inf) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            and not hasattr(value, "__float__")):
        raise ConfigError(f"{name} must be a number; received {value!r}")
    value = float(value)  # a NumPy float64 would make float64 temporaries of float32 weights
    if not (math.isfinite(value) and low <= value < high):
        raise ConfigError(f"{name} must be a finite number in [{low:g}, {high:g}); received "
                          f"{value!r}")
    return value


class SGD:
    """Mini-batch SGD with L2 (λ), L1 (λ₁) and momentum (μ); ``n`` is the training-set size.

    ``eta`` may be changed between steps (schedules do). The momentum buffers
    (``velocities``, one list per layer of arrays shaped like its parameters) are made at the
    first step and kept, so a run continued by another ``sgd`` call or from a checkpoint
    carries on with them.
    """

    def __init__(self, eta: float, lmbda: float = 0.0, n: int = 1, l1: float = 0.0,
                 momentum: float = 0.0):
        self.eta = _check("eta", eta)
        if self.eta <= 0:
            raise ConfigError(f"eta must be > 0; received {eta!r}")
        self.lmbda, self.l1 = _check("lmbda", lmbda), _check("l1", l1)
        self.momentum = _check("momentum", momentum, 0.0, 1.0)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"n (the training-set size) must be an integer >= 1; received "
                              f"{n!r}")
        self.n = n
        self.velocities = None

    @property
    def eta(self) -> float:
        return self._eta

    @eta.setter
    def eta(self, value) -> None:
        # a Python float however it is set (schedules, callbacks): under NEP 50 a NumPy
        # float64 times float32 gradients makes float64 temporaries of every parameter
        self._eta = float(value)

    def __repr__(self) -> str:
        return (f"SGD(eta={self.eta:g}, lmbda={self.lmbda:g}, n={self.n}, l1={self.l1:g}, "
                f"momentum={self.momentum:g})")

    def init_velocities(self, layers, xp) -> list:
        """Zero momentum buffers for ``layers`` (kept when they exist already)."""
        if self.velocities is None:
            self.velocities = [[xp.zeros_like(p) for p, _, _ in layer.param_groups()]
                               for layer in layers]
        return self.velocities

    def step(self, layers, xp) -> None:
        """Update every layer's parameters in place along its gradients (``param_groups``)."""
        eta, mu, n = self.eta, self.momentum, self.n
        if mu:
            self.init_velocities(layers, xp)
        decay = 1.0 - eta * self.lmbda / n
        for i, layer in enumerate(layers):
            # plain SGD (L2 at most): a fully connected layer adds −η∂C/∂W to W in one
            # product, never forming ∂C/∂W; it then leaves its biases to the loop below
            skip = (not mu and not self.l1 and hasattr(layer, "descend")
                    and layer.descend(eta, decay))
            for k, (param, grad, decays) in enumerate(layer.param_groups()):
                if skip and decays:
                    continue
                if decays and self.l1:
                    grad += (self.l1 / n) * xp.sign(param)
                if mu:
                    v = self.velocities[i][k]
                    if decays and self.lmbda:
                        grad += (self.lmbda / n) * param
                    v *= mu
                    v -= eta * grad
                    param += v
                else:
                    if decays and self.lmbda:
                        param *= decay
                    grad *= eta
                    param -= grad
