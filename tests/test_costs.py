"""gpunn.costs: each cost's value against an oracle, on ordinary and on saturated outputs.

The oracle for saturated outputs is the exact cost, −ln σ(±z) and ln Σ e^{z_k} − z_y, in
50-digit decimal arithmetic: float32 rounds σ(40) to exactly 1, which is where network2.py's
``nan_to_num`` form overflowed to inf.
"""

from __future__ import annotations

import warnings
from decimal import Decimal, getcontext

import numpy as np
import pytest

from gpunn import activations, costs
from gpunn.testing import assert_matches

getcontext().prec = 50


def exact_cross_entropy(z, y) -> float:
    """Mean over rows of Σ −y ln σ(z) − (1 − y) ln(1 − σ(z)), with ln σ(z) = −ln(1 + e^{−z})."""
    total = Decimal(0)
    for zi, yi in zip(np.asarray(z, np.float64).ravel(), np.asarray(y, np.float64).ravel()):
        zi, yi = Decimal(float(zi)), Decimal(float(yi))
        total += yi * (1 + (-zi).exp()).ln() + (1 - yi) * (1 + zi.exp()).ln()
    return float(total / z.shape[0])


def exact_log_likelihood(z, labels) -> float:
    total = Decimal(0)
    for row, label in zip(np.asarray(z, np.float64), labels):
        total += sum(Decimal(float(v)).exp() for v in row).ln() - Decimal(float(row[label]))
    return float(total / z.shape[0])


def no_warnings(fn, *args, **kwargs):
    """``fn(*args)``, failing on any warning (RuntimeWarning: overflow, divide by zero...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # NumPy's defaults, stated: warn on what a user sees (÷0, overflow, invalid), not on
        # underflow to 0, which is exact enough for a cost.
        with np.errstate(divide="warn", over="warn", invalid="warn", under="ignore"):
            return fn(*args, **kwargs)


def one_hot(labels, n=10):
    return np.eye(n, dtype=np.float32)[labels]


def forward(z, backend, activation):
    z = backend.asarray(z)
    return z, activations.get(activation).fn(z)


# -- ordinary outputs: with and without z, against the book's formula in float64 -------------------
def test_cross_entropy_matches_the_books_formula(backend):
    r = np.random.default_rng(0)
    z64, y = r.normal(0, 2, (50, 10)), one_hot(r.integers(0, 10, 50))
    a64 = 1 / (1 + np.exp(-z64))
    book = float(np.sum(-y * np.log(a64) - (1 - y) * np.log(1 - a64))) / 50
    z, a = forward(z64, backend, "sigmoid")
    yb = backend.asarray(y)
    cost = costs.get("cross-entropy")
    assert_matches("cross-entropy from z", np.float64(no_warnings(cost.fn, a, yb, z=z)),
                   np.float64(book), rtol=1e-5)
    assert_matches("cross-entropy from a", np.float64(no_warnings(cost.fn, a, yb)),
                   np.float64(book), rtol=1e-5)


def test_log_likelihood_matches_the_books_formula(backend):
    r = np.random.default_rng(1)
    z64, labels = r.normal(0, 3, (50, 10)), r.integers(0, 10, 50)
    a64 = np.exp(z64) / np.exp(z64).sum(axis=1, keepdims=True)
    book = float(-np.log(a64[np.arange(50), labels]).sum()) / 50
    z, a = forward(z64, backend, "softmax")
    cost = costs.get("log-likelihood")
    for y in (backend.asarray(one_hot(labels)), backend.asarray(labels, dtype=None)):
        assert_matches("log-likelihood from z", np.float64(no_warnings(cost.fn, a, y, z=z)),
                       np.float64(book), rtol=1e-5)
        assert_matches("log-likelihood from a", np.float64(no_warnings(cost.fn, a, y)),
                       np.float64(book), rtol=1e-5)


def test_quadratic_takes_z_and_ignores_it(backend):
    a, y = backend.asarray([[0.5, 1.0], [0.0, 0.25]]), backend.asarray([[1.0, 1.0], [0.0, 0.0]])
    cost = costs.get("quadratic")
    assert cost.fn(a, y) == cost.fn(a, y, z=a) == pytest.approx(0.5 * (0.25 + 0.0625) / 2)


# -- saturated outputs: exactly 0 and 1 in float32 --------------------------------------------
SATURATED_Z = np.array([[40.0, -40.0, 40.0, -40.0],
                        [-40.0, 40.0, 40.0, -40.0],
                        [40.0, 40.0, -40.0, -40.0]], np.float32)
SATURATED_Y = np.array([[0, 1, 1, 0],  # wrong by 40 in the first two, right in the others
                        [0, 1, 1, 0],  # right everywhere: cost ~ 4·e^{-40}
                        [1, 0, 0, 1]], np.float32)  # wrong by 40 in the second and fourth


def test_cross_entropy_of_saturated_outputs_is_the_true_finite_cost(backend):
    z, a = forward(SATURATED_Z, backend, "sigmoid")
    assert set(np.unique(backend.to_numpy(a))) == {0.0, 1.0}  # saturated in float32
    y = backend.asarray(SATURATED_Y)
    cost = costs.get("cross-entropy")
    exact = exact_cross_entropy(SATURATED_Z, SATURATED_Y)  # four terms of 40, over 3 rows
    got = no_warnings(cost.fn, a, y, z=z)
    assert got == pytest.approx(exact, rel=1e-6) and exact == pytest.approx(160 / 3, rel=1e-6)
    # without z the terms are bounded (−ln tiny for a = 0, −ln ε for a = 1), finite, silent
    clamped = no_warnings(cost.fn, a, y)
    info = np.finfo(np.float32)
    bound = (2 * -np.log(info.tiny) + 2 * -np.log(info.epsneg)) / 3
    assert np.isfinite(clamped) and clamped == pytest.approx(bound, rel=1e-3)


def test_the_book_form_overflowed_on_these_outputs():
    # the failure this module mends: network2.py's form gives inf (and warns) on the same input
    a = activations.get("sigmoid").fn(SATURATED_Z)
    y = SATURATED_Y
    with np.errstate(all="ignore"):
        book = np.nan_to_num(-y * np.log(a) - (1 - y) * np.log(1 - a)).sum()
    assert not np.isfinite(book)


def test_log_likelihood_of_saturated_softmax_is_the_true_finite_cost(backend):
    z64 = np.array([[200.0, 0.0, -200.0], [-200.0, 200.0, 0.0], [0.0, -300.0, 300.0]])
    labels = np.array([1, 1, 0])  # wrong by 200, right, wrong by 300
    z, a = forward(z64.astype(np.float32), backend, "softmax")
    assert float(backend.to_numpy(a)[0, 1]) == 0.0  # the book's −ln a_y is −ln 0 here
    cost = costs.get("log-likelihood")
    exact = exact_log_likelihood(z64, labels)
    for y in (backend.asarray(one_hot(labels, 3)), backend.asarray(labels, dtype=None)):
        got = no_warnings(cost.fn, a, y, z=z)
        assert got == pytest.approx(exact, rel=1e-6) and exact == pytest.approx(500 / 3, rel=1e-6)
        assert np.isfinite(no_warnings(cost.fn, a, y))


@pytest.mark.parametrize("name", ["cross-entropy", "log-likelihood", "quadratic"])
def test_a_nan_output_still_gives_a_nan_cost_for_the_divergence_guard(name):
    z = np.array([[np.nan, 0.0, 1.0]], np.float32)
    a = np.array([[np.nan, 0.5, 0.25]], np.float32)
    y = np.array([[1.0, 0.0, 0.0]], np.float32)
    cost = costs.get(name)
    with np.errstate(all="ignore"):  # NumPy may warn about the NaN: the run has diverged
        assert np.isnan(cost.fn(a, y)) and np.isnan(cost.fn(a, y, z=z))


# -- activations: silent and correct at the extremes ---------------------------------------------
@pytest.mark.parametrize("name,expected", [
    ("sigmoid", [0.0, 0.0, 0.5, 1.0, 1.0]),
    ("tanh", [-1.0, -1.0, 0.0, 1.0, 1.0]),
    ("relu", [0.0, 0.0, 0.0, 1e4, 3e38]),
])
def test_activations_at_extreme_inputs_are_silent_and_exact(name, expected):
    z = np.array([-3e38, -1e4, 0.0, 1e4, 3e38], np.float32)
    got = no_warnings(activations.get(name).fn, z)
    assert_matches(name, got, np.array(expected, np.float32), rtol=0, atol=0)


def test_softmax_of_huge_logits_is_silent_and_sums_to_one():
    z = np.array([[1e30, 0.0, -1e30], [1e4, 1e4, -1e4]], np.float32)
    a = no_warnings(activations.get("softmax").fn, z)
    assert_matches("softmax", a, np.array([[1, 0, 0], [0.5, 0.5, 0]], np.float32), rtol=0,
                   atol=0)
