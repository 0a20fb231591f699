"""dense_sgd, the NumPy reference: SGD over one chunk of examples, one mini-batch at a time.

The oracle for :mod:`gpunn.kernels.dense_numba`. It works on arrays alone (weights, biases,
momentum buffers and one activation name per layer), so it knows nothing of layers,
networks or optimisers; plain ``xp`` operations, so it runs on CuPy arrays too.

Interface (shared by ``dense_numba``)::

    dense_sgd.supports(weights, biases, activations, cost) -> bool
    state = dense_sgd.prepare(weights, biases, activations, cost, vel_w=None, vel_b=None)
    dense_sgd.run(state, Xc, Yc, mini_batch_size, eta, lmbda, l1, n, momentum)

``weights[l] (n_out, n_in)`` and ``biases[l] (n_out,)`` for each layer, input first;
``activations[l]`` is layer l's activation ("sigmoid", "tanh", "relu", "linear"; the output
may also be "softmax" with the log-likelihood cost); ``cost`` is "quadratic",
"cross-entropy" (sigmoid output) or "log-likelihood" (softmax output). ``Xc (c, n_in)``
holds the chunk's examples, already shuffled; ``Yc (c, n_out)`` their one-hot targets;
``n`` is the training-set size (for the L2/L1 terms). Each mini-batch of m examples is the
book's step, updated in place::

    w ← (1 − ηλ/n) w − (η/n)λ₁ sgn w − (η/m) Σ δ aᵀ,    b ← b − (η/m) Σ δ
    with momentum μ:  v ← μ v − η((λ/n) w + (λ₁/n) sgn w + (1/m) Σ δ aᵀ),  w ← w + v
"""

from __future__ import annotations

from gpunn import activations
from gpunn.backend import array_module
from gpunn.errors import ConfigError

HIDDEN = ("sigmoid", "tanh", "relu", "linear")
#: (cost, output activation) pairs whose δ^L the fused step forms
OUTPUTS = frozenset({("quadratic", a) for a in HIDDEN}
                    | {("cross-entropy", "sigmoid"), ("log-likelihood", "softmax")})


def check_stack(weights, biases, activations, cost) -> None:
    """Raise ConfigError unless the arrays chain and every activation is one this step has."""
    if not (len(weights) == len(biases) == len(activations) >= 1):
        raise ConfigError(f"dense_sgd expects one weight, bias and activation per layer; "
                          f"received {len(weights)}, {len(biases)} and {len(activations)}")
    for l, (w, b) in enumerate(zip(weights, biases)):
        n_in = weights[l - 1].shape[0] if l else w.shape[1]
        if w.ndim != 2 or w.shape[1] != n_in or b.shape != (w.shape[0],):
            raise ConfigError(f"dense_sgd layer {l}: expected w of shape (n_out, {n_in}) and b "
                              f"of shape (n_out,); received w.shape={tuple(w.shape)}, "
                              f"b.shape={tuple(b.shape)}")
    bad = [a for a in activations[:-1] if a not in HIDDEN]
    if bad or (cost, activations[-1]) not in OUTPUTS:
        raise ConfigError(f"dense_sgd trains hidden layers of {', '.join(HIDDEN)} and the "
                          f"outputs {sorted(OUTPUTS)}; received activations {list(activations)} "
                          f"with cost {cost!r}")


class _State:
    def __init__(self, weights, biases, activations, cost, vel_w, vel_b):
        self.weights, self.biases = list(weights), list(biases)
        self.activations, self.cost = tuple(activations), cost
        self.vel_w, self.vel_b = vel_w, vel_b


class DenseSGDReference:
    """Mini-batch SGD for a fully connected stack in plain ``xp`` operations (any dtype)."""

    backend = "numpy"

    def supports(self, weights, biases, activations, cost) -> bool:
        try:
            check_stack(weights, biases, activations, cost)
        except ConfigError:
            return False
        return True

    def prepare(self, weights, biases, activations, cost, vel_w=None, vel_b=None) -> _State:
        """The state :meth:`run` updates in place: these very arrays (and velocities)."""
        check_stack(weights, biases, activations, cost)
        return _State(weights, biases, activations, cost, vel_w, vel_b)

    def run(self, state, Xc, Yc, mini_batch_size, eta, lmbda, l1, n, momentum) -> None:
        """One SGD step per mini-batch of ``Xc (c, n_in)`` / ``Yc (c, n_out)``, in order."""
        for k in range(0, Xc.shape[0], mini_batch_size):
            self._step(state, Xc[k:k + mini_batch_size], Yc[k:k + mini_batch_size],
                       eta, lmbda, l1, n, momentum)

    @staticmethod
    def _step(s, X, Y, eta, lmbda, l1, n, momentum) -> None:
        xp = array_module(X)
        m = X.shape[0]
        sigma = [activations.get(name) for name in s.activations]
        acts, zs = [X], [None]
        for w, b, f in zip(s.weights, s.biases, sigma):
            zs.append(acts[-1] @ w.T + b)
            acts.append(f.fn(zs[-1]))
        delta = acts[-1] - Y  # BP1; σ'(z) cancels for cross-entropy and log-likelihood
        if s.cost == "quadratic":
            delta = delta * sigma[-1].prime(zs[-1], acts[-1])
        for l in range(len(s.weights) - 1, -1, -1):
            w, b = s.weights[l], s.biases[l]
            nabla_w, nabla_b = delta.T @ acts[l] / m, delta.sum(axis=0) / m
            if l > 0:  # BP2 with the weights before their update
                delta = (delta @ w) * sigma[l - 1].prime(zs[l], acts[l])
            reg = (lmbda / n) * w if lmbda else 0
            if l1:
                reg = reg + (l1 / n) * xp.sign(w)
            if momentum:
                vw, vb = s.vel_w[l], s.vel_b[l]
                vw[...] = momentum * vw - eta * (reg + nabla_w)
                vb[...] = momentum * vb - eta * nabla_b
                w += vw
                b += vb
            else:
                w -= eta * (reg + nabla_w)
                b -= eta * nabla_b


DENSE_SGD = DenseSGDReference()


def check_update(w, delta, x) -> None:
    """Raise ConfigError unless δ (m, n_out) and x (m, n_in) fit W (n_out, n_in)."""
    if (w.ndim != 2 or delta.ndim != 2 or x.ndim != 2 or delta.shape[0] != x.shape[0]
            or delta.shape[1] != w.shape[0] or x.shape[1] != w.shape[1]):
        raise ConfigError(f"weight_update expects W (n_out, n_in), delta (m, n_out) and x "
                          f"(m, n_in); received W.shape={tuple(w.shape)}, "
                          f"delta.shape={tuple(delta.shape)}, x.shape={tuple(x.shape)}")


class WeightUpdateReference:
    """weight_update, the NumPy reference: one layer's SGD step from its backprop factors.

    ``weight_update(w, delta, x, alpha, beta)`` sets, in place, W ← β W − α δᵀx: the
    gradient δᵀx (BP4 summed over the mini-batch; δ already holds the 1/m) is never kept.
    ``alpha`` is η and ``beta`` the L2 decay 1 − ηλ/n. This is what :class:`gpunn.optim.SGD`
    does with a fully connected layer's gradient, in the same operations and order, so the
    two agree to the last bit; plain ``xp`` operations, so it runs on CuPy arrays too.
    """

    backend = "numpy"

    def supports(self, w, delta, x) -> bool:
        return True

    def __call__(self, w, delta, x, alpha: float, beta: float = 1.0) -> None:
        check_update(w, delta, x)
        if beta != 1.0:
            w *= w.dtype.type(beta)
        grad = delta.T @ x
        grad *= grad.dtype.type(alpha)
        w -= grad


WEIGHT_UPDATE = WeightUpdateReference()


class LinearReference:
    """linear, the NumPy reference: a fully connected layer's product before its bias.

    ``linear(x, w)`` is x Wᵀ (m, n_out) for x (m, n_in) and W (n_out, n_in), the book's
    layout: plain ``xp`` matmul, so it runs on CuPy arrays too.
    """

    backend = "numpy"

    def __call__(self, x, w):
        return x @ w.T


LINEAR = LinearReference()
