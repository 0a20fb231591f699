"""softmax_cross_entropy: the backend's kernel against the reference, finite differences, torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpunn.errors import ConfigError
from gpunn.testing import assert_matches

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(
    n=st.integers(1, 40), k=st.integers(1, 300), spread=st.sampled_from([1.0, 30.0, 1e4]),
    dtype=st.sampled_from([np.float32, np.float64]), scale=st.floats(0.1, 10),
    seed=st.integers(0, 2**16),
)
def test_matches_reference(backend, oracle, n, k, spread, dtype, scale, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, k)) * spread).astype(dtype)
    labels = rng.integers(0, k, n)
    ref = oracle.reference("softmax_cross_entropy")
    loss_ref, probs_ref = ref.forward(logits, labels)
    xent = backend.kernel("softmax_cross_entropy")
    loss, probs = xent.forward(backend.asarray(logits, dtype=None), backend.asarray(labels, None))
    tol = oracle.tolerance(dtype)
    # a 0-d float64 array on the device (a NumPy float64 on the CPU): read when wanted
    assert loss.shape == () and loss.dtype == np.float64
    assert type(loss).__module__.split(".")[0] == backend.xp.__name__
    assert_matches("softmax_cross_entropy loss", np.float64(loss), np.float64(loss_ref), **tol)
    assert_matches("softmax_cross_entropy probs", probs, probs_ref, **tol)
    dlogits = xent.backward(probs, backend.asarray(labels, None), scale)
    assert_matches("softmax_cross_entropy dlogits", dlogits,
                   ref.backward(probs_ref, labels, scale), **tol)


def test_gradient_matches_finite_differences(backend, impl, oracle):
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((6, 5)) * 3, rng.integers(0, 5, 6)
    xent = impl("softmax_cross_entropy")
    y = backend.asarray(labels, dtype=None)

    def loss():
        return xent.forward(backend.asarray(logits, dtype=None), y)[0]

    _, probs = xent.forward(backend.asarray(logits, dtype=None), y)
    assert_matches("softmax_cross_entropy dlogits", xent.backward(probs, y),
                   oracle.numerical_gradient(loss, logits), rtol=1e-6, atol=1e-9)
    assert_matches("softmax_cross_entropy scaled", xent.backward(probs, y, scale=2.5),
                   2.5 * oracle.numerical_gradient(loss, logits), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_for_huge_logits(backend, impl, dtype):
    logits = backend.asarray([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]], dtype=dtype)
    labels = backend.asarray([1, 2], dtype=np.int64)
    loss, probs = impl("softmax_cross_entropy").forward(logits, labels)
    # Row 0 puts its label 2e4 below the maximum: loss 2e4; row 1 is certain and right: 0.
    assert np.isfinite(loss) and abs(loss - 1e4) < 1e-2
    assert np.isfinite(backend.to_numpy(probs)).all()


def test_reference_matches_torch(oracle):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    logits, labels = rng.standard_normal((64, 10)) * 5, rng.integers(0, 10, 64)
    ref = oracle.reference("softmax_cross_entropy")
    loss, probs = ref.forward(logits, labels)
    t = torch.tensor(logits, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(t, torch.tensor(labels))
    tloss.backward()
    assert_matches("loss vs torch", np.float64(loss), tloss.detach().numpy())
    assert_matches("dlogits vs torch", ref.backward(probs, labels), t.grad.numpy())


def test_bad_arguments_name_expected_and_received(backend, impl):
    xp, xent = backend.xp, impl("softmax_cross_entropy")
    z = xp.zeros((4, 3))
    with pytest.raises(ConfigError, match=r"\(N, K\); received logits.shape=\(4,\)"):
        xent.forward(xp.zeros(4), xp.zeros(4, dtype=xp.int64))
    with pytest.raises(ConfigError, match=r"labels of shape \(N,\)=\(4,\).*received labels.shape"):
        xent.forward(z, xp.zeros((4, 3), dtype=xp.int64))
    with pytest.raises(ConfigError, match="integer labels .*received labels.dtype=float64"):
        xent.forward(z, xp.zeros(4))
    with pytest.raises(ConfigError, match="received logits.dtype=int64"):
        xent.forward(xp.zeros((4, 3), dtype=xp.int64), xp.zeros(4, dtype=xp.int64))
    with pytest.raises(ConfigError, match=r"labels in \[0, K\)=\[0, 3\); received label 3"):
        xent.forward(z, xp.asarray([0, 1, 3, 2]))
    with pytest.raises(ConfigError, match="received label -1"):
        xent.forward(z, xp.asarray([0, -1, 1, 2]))
    with pytest.raises(ConfigError, match="probs of shape"):
        xent.backward(z, xp.zeros(3, dtype=xp.int64))
