"""gpunn.web.model: per-layer activations, the JSON bundle the page runs, the test-image
sample, the default network cached on first use, and the page written as one file."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

import gpunn
from gpunn import web
from gpunn.errors import ConfigError
from gpunn.layers import LRN, Conv2D, Flatten, FullyConnected, Softmax

NETS = ["fc_net", "conv_net", "odd_net"]


def floats(b64, shape):
    return np.frombuffer(base64.b64decode(b64), dtype="<f4").reshape(shape)


@pytest.mark.parametrize("name", NETS)
def test_layer_activations_are_each_layers_output_ending_in_feedforward(name, request, bars):
    net = request.getfixturevalue(name)
    X = bars.test.x(np.arange(7))
    acts = web.layer_activations(net, X)
    assert len(acts) == len(net.layers)
    assert [a.shape[1:] for a in acts] == [tuple(layer.output_shape) for layer in net.layers]
    np.testing.assert_array_equal(acts[-1], net.feedforward(X))


def test_layer_activations_refuses_a_wrong_shape(fc_net):
    with pytest.raises(ConfigError, match=r"\(N, 784\); received X.shape=\(2, 28, 28\)"):
        web.layer_activations(fc_net, np.zeros((2, 28, 28)))


@pytest.mark.parametrize("name", NETS)
def test_the_bundle_carries_every_layer_and_its_float32_weights(name, request):
    net = request.getfixturevalue(name)
    bundle = json.loads(json.dumps(web.model_bundle(net, "a name")))  # plain JSON, no pickle
    assert bundle["format"] == "gpunn-web" and bundle["name"] == "a name"
    assert bundle["input_shape"] == list(net.input_shape)
    assert len(bundle["layers"]) == len(net.layers)
    for entry, layer in zip(bundle["layers"], net.layers):
        assert entry["type"] == layer.config()["type"]
        assert entry["output_shape"] == list(layer.output_shape)
        if layer.w is None:
            assert "w" not in entry
        else:
            np.testing.assert_array_equal(floats(entry["w"], entry["w_shape"]), layer.w)
            np.testing.assert_array_equal(floats(entry["b"], entry["b_shape"]), layer.b)


def test_check_servable_refuses_what_the_page_cannot_draw():
    rgb = gpunn.Network([Conv2D(3, 2, 3), Flatten(), Softmax(2 * 6 * 6, 10)],
                        cost="log-likelihood", input_shape=(3, 8, 8), backend="cpu")
    with pytest.raises(ConfigError, match=r"28x28 grey digit.*takes \(3, 8, 8\)"):
        web.check_servable(rgb)
    lrn = gpunn.Network([Conv2D(1, 2, 3), LRN(), Flatten(), Softmax(2 * 26 * 26, 10)],
                        cost="log-likelihood", input_shape=(1, 28, 28), backend="cpu")
    with pytest.raises(ConfigError, match="layer 1 is LRN, which the page cannot run"):
        web.model_bundle(lrn)


def test_the_sample_holds_random_images_and_ones_the_network_gets_wrong(fc_net, bars):
    sample = web.mnist_sample(fc_net, bars.test, random=20, wrong=5, seed=3)
    n = len(sample["labels"])
    pixels = floats(sample["pixels"], (n, 784))
    index = np.array(sample["index"])
    np.testing.assert_array_equal(pixels, bars.test.x(index))
    assert sample["labels"] == bars.test.labels[index].tolist()
    predicted = fc_net.predict(pixels)
    assert sample["predicted"] == predicted.tolist()
    wrong = np.array(sample["wrong"])
    assert wrong.sum() == 5 and (~wrong).sum() == 20
    assert (predicted[wrong] != bars.test.labels[index][wrong]).all()


def test_the_default_network_is_trained_once_then_loaded(tmp_path, bars):
    calls = []

    def load_data():
        calls.append(1)
        return bars

    path = tmp_path / "cache" / "3b1b.npz"
    net, trained = web.default_model(path, load_data, epochs=1)
    assert trained and path.is_file() and len(calls) == 1
    assert [layer.n_out for layer in net.layers] == [16, 16, 10]
    again, trained = web.default_model(path, load_data, epochs=1)
    assert not trained and len(calls) == 1
    X = bars.test.x(np.arange(5))
    np.testing.assert_array_equal(again.feedforward(X), net.feedforward(X))


def test_export_web_writes_one_page_with_everything_inside(tmp_path, fc_net, bars):
    bundle = web.model_bundle(fc_net, "net </script><script>alert(1)</script>",
                              web.mnist_sample(fc_net, bars.test, 3, 2))
    path = web.export_web(bundle, tmp_path / "site")
    assert path == tmp_path / "site" / "index.html"
    assert [p.name for p in path.parent.iterdir()] == ["index.html"]  # no temporary left
    page = path.read_text(encoding="utf-8")
    assert page.count("<script>") == 2 and page.count("</script>") == 2  # name escaped
    assert bundle["layers"][0]["w"] in page and "function forward(" in page
    assert "/*MODEL*/" not in page and "/*APP*/" not in page and "/*STYLE*/" not in page
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched: works from file://


def test_a_softmax_output_with_scale_at_eval_dropout_is_described():
    net = gpunn.Network([FullyConnected(784, 8, "tanh"),
                         Softmax(8, 10, dropout=0.5, dropout_mode="scale-at-eval")],
                        cost="log-likelihood", backend="cpu")
    entry = web.model_bundle(net)["layers"][1]
    assert entry["activation"] == "softmax" and entry["dropout_mode"] == "scale-at-eval"
    assert web.describe(net) == "FullyConnected → Softmax"
