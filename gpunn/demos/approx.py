"""Chapter 4's visual proof that neural nets can compute any function, made concrete.

The goal is the chapter's f(x) = 0.2 + 0.4x² + 0.3x·sin(15x) + 0.05·cos(50x) on [0, 1]. The
network has one input, one hidden layer of sigmoid "step" neurons and one sigmoid output:

* a hidden neuron with weight w = 999 and bias b = −w·s is (very nearly) a step at x = s;
* a pair of steps at s_j and s_{j+1}, with output weights +h_j and −h_j, is a bump of height
  h_j on [s_j, s_{j+1}]; n bumps take 2n hidden neurons;
* the output is σ(Σ_j h_j a_j + b), so the bumps must build σ⁻¹∘f, not f: h_j is the mean of
  σ⁻¹(f(x)) over the bump's interval, and the output bias is 0.

The book scores this by the *average deviation* between the goal σ⁻¹∘f and the weighted
output Σ h_j a_j + b (the σ⁻¹ scale), and asks for 0.40 or less. :func:`deviations` reports
that measure and, beside it, the deviation |σ(weighted output) − f| on the scale of f.

:func:`fit` trains an ordinary 1-H-1 network (sigmoid hidden and output neurons, quadratic
cost) on the same f by gradient descent, for comparison. ``Network.sgd`` trains classifiers
(it builds one-hot targets from labels), so the regression here is a short loop of
``Network.train_batch`` on fresh points and the one optimiser, :class:`gpunn.optim.SGD`.
"""

from __future__ import annotations

import numpy as np

from gpunn.errors import ConfigError

__all__ = ["BOOK_TARGET", "STEP_WEIGHT", "f", "goal", "construction", "network_output",
           "weighted_output", "deviation", "deviations", "fit"]

BOOK_TARGET = 0.40  # the chapter's target for the average deviation (σ⁻¹ scale)
STEP_WEIGHT = 999.0  # the chapter's weight for a hidden neuron that behaves like a step
#: where deviations are measured: 1,001 evenly spaced points of [0, 1]
GRID = np.linspace(0.0, 1.0, 1001)


def f(x):
    """The chapter's goal function, for x in [0, 1] (values lie in (0.1, 0.9))."""
    x = np.asarray(x, dtype=np.float64)
    return 0.2 + 0.4 * x**2 + 0.3 * x * np.sin(15 * x) + 0.05 * np.cos(50 * x)


def goal(x):
    """σ⁻¹(f(x)) = ln(f / (1 − f)): what the hidden layer's weighted output must build."""
    y = f(x)
    return np.log(y / (1.0 - y))


def construction(n_bumps: int, weight: float = STEP_WEIGHT, backend="cpu"):
    """The chapter's hand-built [1, 2·n_bumps, 1] network: n_bumps equal-width bumps on [0, 1].

    Hidden neurons 2j and 2j+1 step at s_j = j/n and s_{j+1}; their output weights are
    +h_j and −h_j with h_j the mean of σ⁻¹∘f over [s_j, s_{j+1}].
    """
    from gpunn.network import Network

    if not isinstance(n_bumps, (int, np.integer)) or n_bumps < 1:
        raise ConfigError(f"n_bumps must be an integer >= 1; received {n_bumps!r}")
    n = int(n_bumps)
    edges = np.linspace(0.0, 1.0, n + 1)
    steps = np.repeat(edges, 2)[1:-1]  # s_0, s_1, s_1, s_2, ..., s_{n-1}, s_n
    fine = np.linspace(0.0, 1.0, 100 * n + 1)
    heights = np.array([goal(fine[100 * j:100 * j + 101]).mean() for j in range(n)])
    net = Network([1, 2 * n, 1], cost="quadratic", activation="sigmoid", backend=backend)
    be = net.backend
    net.weights[0][...] = be.asarray(np.full((2 * n, 1), weight))
    net.biases[0][...] = be.asarray(-weight * steps)
    net.weights[1][...] = be.asarray(np.stack([heights, -heights], axis=1).reshape(1, 2 * n))
    net.biases[1][...] = 0.0
    return net


def weighted_output(net, x):
    """Σ_j w_j a_j + b of a [1, H, 1] network at points x (N,): σ⁻¹ of its output, float64."""
    a = network_output(net, x)
    a = np.clip(a, 1e-12, 1 - 1e-12)
    return np.log(a / (1.0 - a))


def network_output(net, x):
    """The output activation of a [1, H, 1] network at points x (N,), as float64 (N,)."""
    X = net.backend.asarray(np.asarray(x, dtype=np.float64).reshape(-1, 1))
    return net.backend.to_numpy(net.feedforward(X)).astype(np.float64).reshape(-1)


def deviation(net, x=GRID) -> dict:
    """Average deviations of a [1, H, 1] network from the goal at points ``x``.

    ``logit``: mean |weighted output − σ⁻¹(f)| (the book's measure); ``f``: mean
    |output − f| on the scale of f itself.
    """
    return {"logit": float(np.abs(weighted_output(net, x) - goal(x)).mean()),
            "f": float(np.abs(network_output(net, x) - f(x)).mean())}


def deviations(bumps=(5, 10, 20, 50, 100), backend="cpu") -> list[dict]:
    """For each number of bumps: ``{"bumps", "hidden", "logit", "f"}`` (see :func:`deviation`)."""
    rows = []
    for n in bumps:
        net = construction(n, backend=backend)
        rows.append({"bumps": int(n), "hidden": 2 * int(n), **deviation(net)})
    return rows


def fit(hidden: int = 30, steps: int = 40_000, mini_batch_size: int = 100, eta: float = 1.0,
        momentum: float = 0.9, seed: int = 1, backend="cpu"):
    """Train a [1, hidden, 1] sigmoid network on f by mini-batch gradient descent.

    Each step draws ``mini_batch_size`` fresh points x ~ U[0, 1] and descends the quadratic
    cost with momentum (v ← μv − η∇C, w ← w + v). Weights start at N(0, 1) (the default for
    one input). Returns ``(net, deviation(net))``.
    """
    from gpunn.network import Network
    from gpunn.optim import SGD

    for name, value in (("hidden", hidden), ("steps", steps),
                        ("mini_batch_size", mini_batch_size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1; received {value!r}")
    if not eta > 0 or not 0 <= momentum < 1:
        raise ConfigError(f"fit needs eta > 0 and momentum in [0, 1); received eta={eta!r}, "
                          f"momentum={momentum!r}")
    net = Network([1, hidden, 1], cost="quadratic", activation="sigmoid", seed=seed,
                  backend=backend)
    be = net.backend
    rng = np.random.default_rng(seed)
    optimizer = SGD(eta, momentum=momentum)
    for _ in range(steps):
        x = rng.random((mini_batch_size, 1))
        net.train_batch(be.asarray(x), be.asarray(f(x)))
        optimizer.step(net.layers, be.xp)
    return net, deviation(net)
