"""Finite-difference gradient checks of backpropagation.

``gradcheck(net, X, y)`` compares every (or a sample of) weight and bias derivative of the
regularised mean cost with a central difference, (C(θ+ε) − C(θ−ε)) / 2ε, and raises
:class:`GradientCheckError` with the largest difference and where it is. Run it in float64
(``Network(..., dtype=np.float64, backend="cpu")``); in float32 the differences drown in
rounding. Dropout masks are held fixed by replaying the network's random state.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GradientCheckError", "gradcheck", "numerical_gradient"]


class GradientCheckError(AssertionError):
    """Backpropagation disagrees with the finite-difference gradient."""


def _objective(net, X, Y, lmbda, l1, n, rng_state):
    if rng_state is not None:
        net.rng.set_state(rng_state)
    a = X
    for layer in net.layers:
        a = layer.forward(a, True, net.rng)
    c = net.cost.fn(a, Y)
    if lmbda:
        c += 0.5 * (lmbda / n) * sum(float((w * w).sum()) for w in net.weights)
    if l1:
        c += (l1 / n) * sum(float(abs(w).sum()) for w in net.weights)
    return c


def numerical_gradient(net, X, y, param, index, eps=1e-6, lmbda=0.0, l1=0.0, n=None):
    """Central difference of the regularised mean cost with respect to ``param[index]``."""
    X = net.inputs(X)
    Y = net.targets(y)
    n = n or X.shape[0]
    state = net.rng.state
    old = float(param[index])
    param[index] = old + eps
    plus = _objective(net, X, Y, lmbda, l1, n, state)
    param[index] = old - eps
    minus = _objective(net, X, Y, lmbda, l1, n, state)
    param[index] = old
    net.rng.set_state(state)
    return (plus - minus) / (2 * eps)


def gradcheck(net, X, y, *, lmbda=0.0, l1=0.0, n=None, eps=1e-6, rtol=1e-5, atol=1e-7,
              max_per_param=50, seed=0) -> float:
    """Check ``net.gradients`` against finite differences; returns the largest difference.

    Checks up to ``max_per_param`` randomly chosen entries of each weight matrix and bias
    vector (all of them when the parameter is smaller). Raises GradientCheckError naming
    the parameter, the index, both values and the difference when one is out of tolerance.
    """
    n = n or len(X)
    state = net.rng.state
    nabla_b, nabla_w = net.gradients(X, y, lmbda=lmbda, l1=l1, n=n)
    net.rng.set_state(state)
    pick = np.random.default_rng(seed)
    worst = 0.0
    layers = [layer for layer in net.layers if layer.param_groups()]
    for l, layer in enumerate(layers):
        for name, param, grad in (("weights", layer.w, nabla_w[l]), ("biases", layer.b,
                                                                     nabla_b[l])):
            grad = net.backend.to_numpy(grad)
            flat = np.arange(param.size)
            if param.size > max_per_param:
                flat = pick.choice(param.size, max_per_param, replace=False)
            for f in flat:
                index = np.unravel_index(int(f), param.shape)
                numeric = numerical_gradient(net, X, y, param, index, eps, lmbda, l1, n)
                analytic = float(grad[index])
                diff = abs(numeric - analytic)
                worst = max(worst, diff)
                if diff > atol + rtol * max(abs(numeric), abs(analytic)):
                    raise GradientCheckError(
                        f"{name}[{l}]{tuple(int(i) for i in index)}: backprop={analytic:.10g} "
                        f"| finite difference={numeric:.10g} (difference {diff:.3g}, "
                        f"tolerance {atol} + {rtol} x value) for {net!r}"
                    )
    return worst
