"""gpunn.models: KSH's AlexNet and alexnet-small — shapes, parameter counts — and the LRN layer."""

from __future__ import annotations

import numpy as np
import pytest

from gpunn import models
from gpunn.errors import ConfigError
from gpunn.layers import LRN
from gpunn.testing import assert_matches


def conv(f, c, k):
    return f * c * k * k + f


def fc(n_in, n_out):
    return n_in * n_out + n_out


# By hand from the layer shapes. alexnet, 224 -> conv 11/4 pad 2: 55 -> pool 27 -> conv 5
# pad 2: 27 -> pool 13 -> three 3x3 pad 1: 13 -> pool 6, so FC 6 enters 256 * 6 * 6 values.
ALEXNET_1000 = (conv(96, 3, 11) + conv(256, 96, 5) + conv(384, 256, 3) + conv(384, 384, 3)
                + conv(256, 384, 3) + fc(256 * 6 * 6, 4096) + fc(4096, 4096) + fc(4096, 1000))
# alexnet-small, 64 -> conv 5/2 pad 2: 32 -> pool 15 -> conv 5 pad 2: 15 -> pool 7 -> three
# 3x3: 7 -> pool 3, so FC 1 enters 128 * 3 * 3 values.
SMALL_10 = (conv(48, 3, 5) + conv(128, 48, 5) + conv(192, 128, 3) + conv(192, 192, 3)
            + conv(128, 192, 3) + fc(128 * 3 * 3, 512) + fc(512, 512) + fc(512, 10))


def total(rows):
    return sum(r["weights"] + r["biases"] for r in rows)


def test_alexnet_summary_counts_the_papers_layers_without_allocating():
    rows = models.summary("alexnet", classes=1000)
    assert ALEXNET_1000 == 62_378_344  # the paper's 60M is its two-GPU split
    assert total(rows) == ALEXNET_1000
    shapes = [r["output_shape"] for r in rows]
    assert shapes[0] == (96, 55, 55) and shapes[1] == (96, 27, 27)
    assert (256, 6, 6) in shapes and shapes[-1] == (1000,)
    assert total(models.summary("alexnet", classes=1000, lrn=True)) == ALEXNET_1000


def test_alexnet_small_shapes_and_count(backend):
    net = models.build("alexnet-small", classes=10, lrn=True, seed=1, backend=backend)
    assert net.num_params == SMALL_10 == total(models.summary("alexnet-small", 10, lrn=True))
    assert sum(isinstance(layer, LRN) for layer in net.layers) == 2
    x = backend.asarray(np.random.default_rng(0).standard_normal((3, 3, 64, 64)))
    p = backend.to_numpy(net.feedforward(x))
    assert p.shape == (3, 10)
    assert_matches("row sums", p.sum(axis=1), np.ones(3, np.float32), atol=1e-5)


def test_init_is_seeded_and_scaled():
    a = models.build("alexnet-small", classes=10, seed=3, backend="cpu")
    b = models.build("alexnet-small", classes=10, seed=3, backend="cpu")
    for la, lb in zip(a.layers, b.layers):
        if getattr(la, "w", None) is not None:
            assert np.array_equal(la.w, lb.w)
    w = a.layers[2].w  # conv 2: fan-in 48 * 5 * 5, N(0, 1/fan_in)
    assert abs(w.std() - 1200 ** -0.5) < 0.05 * 1200 ** -0.5
    assert not a.layers[2].b.any() and not a.layers[-1].w.any()


@pytest.mark.parametrize("arch, kwargs, message", [
    ("vgg", {}, "unknown architecture 'vgg'"),
    ("alexnet-small", {"classes": 1}, "classes >= 2"),
    ("alexnet-small", {"size": 16}, "needs inputs larger than 16x16"),
])
def test_bad_architecture_settings(arch, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        models.build(arch, backend="cpu", **kwargs)


def _lrn_reference(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """KSH's formula, channel by channel, in float64."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    c = x.shape[1]
    for i in range(c):
        lo, hi = max(0, i - size // 2), min(c, i + size // 2 + 1)
        out[:, i] = x[:, i] / (k + alpha * (x[:, lo:hi] ** 2).sum(axis=1)) ** beta
    return out


def test_lrn_matches_ksh_formula_and_its_gradient(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 3, 4)) * 30  # large enough that the normaliser matters
    layer = LRN(alpha=1e-3)
    assert layer.build((7, 3, 4), backend, None) == (7, 3, 4)
    out = layer.forward(backend.asarray(x, dtype=np.float64))
    assert_matches("lrn forward", out, _lrn_reference(x, alpha=1e-3))
    g = rng.standard_normal(x.shape)
    dx = backend.to_numpy(layer.backward(backend.asarray(g, dtype=np.float64)))
    # the directional derivative along a random v, by central differences
    v, h = rng.standard_normal(x.shape), 1e-5
    numeric = ((_lrn_reference(x + h * v, alpha=1e-3) - _lrn_reference(x - h * v, alpha=1e-3))
               * g).sum() / (2 * h)
    assert abs((dx * v).sum() - numeric) < 1e-6 * max(1.0, abs(numeric))


def test_lrn_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((2, 9, 5, 5)) * 20
    layer = LRN()
    layer.build((9, 5, 5), None, None)
    t = torch.tensor(x, requires_grad=True)
    ref = torch.nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)(t)
    ref.sum().backward()
    assert_matches("lrn vs torch", layer.forward(x), ref.detach().numpy())
    assert_matches("lrn grad vs torch", layer.backward(np.ones_like(x)), t.grad.numpy())


def test_lrn_saves_and_loads(tmp_path):
    import gpunn

    net = models.build("alexnet-small", classes=3, lrn=True, seed=1, backend="cpu")
    path = gpunn.save(net, tmp_path / "net.npz")
    again = gpunn.load(path, backend="cpu")
    assert [type(layer).__name__ for layer in again.layers].count("LRN") == 2
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    assert_matches("reloaded", again.feedforward(x), net.feedforward(x))
