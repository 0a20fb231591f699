"""The page in Chromium: drawing with the mouse and by touch, MNIST's preprocessing, every
layer against gpunn's forward pass, test images, the weight inspector, the exported copy,
and bad requests sent from the page."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from gpunn import web
from gpunn.images import load_digit

pytestmark = pytest.mark.browser

TOLERANCE = 1e-5  # the page computes in float64 from float32 weights; gpunn in float32
SEVEN = [(80, 70), (200, 70), (170, 130), (140, 200), (125, 240)]  # in pad pixels
SLASH = [(90, 220), (190, 60)]


def draw(page, points):
    """One stroke with the mouse through ``points`` (pad coordinates)."""
    box = page.locator("#pad").bounding_box()
    x0, y0 = box["x"] + 2, box["y"] + 2  # inside the 2 px border
    page.mouse.move(x0 + points[0][0], y0 + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(x0 + x, y0 + y, steps=6)
    page.mouse.up()
    page.wait_for_function("gpunn.state().prediction !== null")


def state(page):
    page.wait_for_timeout(50)  # the redraw runs on the next animation frame
    return page.evaluate("gpunn.state()")


def pad_png(page, tmp_path):
    url = page.evaluate("document.getElementById('pad').toDataURL('image/png')")
    path = tmp_path / "pad.png"
    path.write_bytes(base64.b64decode(url.split(",", 1)[1]))
    return path


def test_a_mouse_stroke_is_preprocessed_as_mnist_and_changes_the_prediction(
        page, serve, fc_net, tmp_path):
    page.goto(serve(fc_net))
    assert state(page)["prediction"] is None
    assert page.locator("#digit").text_content() == "–"
    draw(page, SEVEN)
    first = state(page)
    x = np.float32(first["input"])
    # what the page feeds the network is exactly what gpunn predict makes of the drawing
    # (Pillow's fixed-point Lanczos and Python's rounding, reproduced in the page)
    np.testing.assert_array_equal(x, load_digit(pad_png(page, tmp_path)))
    assert x.max() == pytest.approx(1.0) and (x > 0).sum() > 30
    assert first["prediction"] == int(fc_net.predict(x[None])[0])
    assert page.locator("#digit").text_content() == str(first["prediction"])
    draw(page, SLASH)
    second = state(page)
    assert not np.allclose(second["layers"][-1]["values"], first["layers"][-1]["values"])
    assert second["prediction"] == int(fc_net.predict(np.float32(second["input"])[None])[0])
    page.click("#undo")
    np.testing.assert_array_equal(state(page)["input"], first["input"])
    page.click("#clear")
    assert state(page)["prediction"] is None and max(state(page)["input"]) == 0


def test_a_touch_stroke_draws_too(page, serve, fc_net):
    page.goto(serve(fc_net))
    box = page.locator("#pad").bounding_box()
    cdp = page.context.new_cdp_session(page)

    def touch(kind, x, y):
        points = [] if kind == "touchEnd" else [{"x": box["x"] + x, "y": box["y"] + y}]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})

    touch("touchStart", 60, 140)
    for i in range(1, 11):
        touch("touchMove", 60 + 16 * i, 140 - 6 * i)
    touch("touchEnd", 0, 0)
    page.wait_for_function("gpunn.state().prediction !== null")
    assert sum(state(page)["input"]) > 5


@pytest.mark.parametrize("name", ["fc_net", "conv_net", "odd_net"])
def test_every_layer_the_page_shows_equals_gpunn_layer_by_layer(name, request, page, serve):
    net = request.getfixturevalue(name)
    page.goto(serve(net))
    draw(page, SEVEN)
    shown = state(page)
    x = np.float32(shown["input"])[None]
    expected = web.layer_activations(net, x)
    assert len(shown["layers"]) == len(expected)
    for i, (layer, want) in enumerate(zip(shown["layers"], expected)):
        assert layer["shape"] == list(want.shape[1:]), f"layer {i}"
        np.testing.assert_allclose(layer["values"], want[0].reshape(-1), rtol=0,
                                   atol=TOLERANCE, err_msg=f"layer {i} ({layer['type']})")
    np.testing.assert_allclose(shown["layers"][-1]["values"], net.feedforward(x)[0], rtol=0,
                               atol=TOLERANCE)
    # the page asks the server too, and says how far apart the two are
    page.wait_for_function("document.getElementById('check').textContent.includes('agrees')")
    largest = float(page.locator("#check").text_content().rsplit(" ", 1)[1])
    assert largest <= TOLERANCE


def test_a_conv_pool_layers_convolution_stage_is_sigma_of_conv_plus_bias(page, serve, conv_net):
    from gpunn import backend
    from gpunn.layers import Conv2D

    page.goto(serve(conv_net))
    draw(page, SEVEN)
    shown = state(page)["layers"][0]["conv"]
    cp, cpu = conv_net.layers[0], backend.select("cpu")
    conv = Conv2D(1, cp.out_channels, cp.kernel_size, activation="relu")
    conv.build((1, 28, 28), cpu, cpu.rng(0))
    conv.w[...], conv.b[...] = cp.w, cp.b
    want = conv.forward(np.float32(state(page)["input"]).reshape(1, 1, 28, 28)).reshape(-1)
    assert shown["shape"] == [cp.out_channels, 24, 24]
    np.testing.assert_allclose(shown["values"], want, rtol=0, atol=TOLERANCE)


def test_test_images_load_with_their_label_and_gpunns_prediction(page, serve, fc_net, bars):
    sample = web.mnist_sample(fc_net, bars.test, random=10, wrong=5)
    page.goto(serve(fc_net, sample))
    pixels = np.frombuffer(base64.b64decode(sample["pixels"]), "<f4").reshape(-1, 784)
    for button, wrong in (("#test-random", False), ("#test-wrong", True)):
        page.click(button)
        shown = state(page)
        i = next(i for i in range(len(pixels)) if np.array_equal(pixels[i], shown["input"]))
        assert sample["wrong"][i] is wrong
        label = sample["labels"][i]
        assert f"labelled {label}" in page.locator("#test-info").text_content()
        assert shown["prediction"] == sample["predicted"][i] == int(
            fc_net.predict(pixels[i][None])[0])
        assert (shown["prediction"] != label) is wrong


def test_clicking_a_neuron_shows_its_incoming_weights(page, serve, fc_net):
    page.goto(serve(fc_net))
    centre = page.evaluate("gpunn.neuronCentre(1, 5)")
    page.mouse.click(centre["x"], centre["y"])
    assert page.evaluate("gpunn.selected()") == {"layer": 1, "index": 5}
    assert "layer 2, neuron 5: 16 incoming weights" in page.locator("#inspect-title").text_content()
    image = page.locator("#inspect").screenshot()
    assert len(np.unique(png_pixels(image).reshape(-1, 3), axis=0)) > 5


def png_pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def test_a_screenshot_of_the_page_is_not_blank(page, serve, conv_net):
    page.goto(serve(conv_net))
    draw(page, SEVEN)
    pixels = png_pixels(page.screenshot())
    assert pixels.shape[:2] == (800, 1400)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    net_picture = png_pixels(page.locator("#net").screenshot())
    assert (net_picture.max(axis=2) > 100).mean() > 0.01  # bright feature maps and neurons


def test_bad_requests_from_the_page_get_400_and_json(page, serve, fc_net, page_errors):
    page.goto(serve(fc_net))
    answers = page.evaluate("""async () => {
        const post = async (body) => {
            const r = await fetch("api/forward", {method: "POST", body});
            return [r.status, await r.json()];
        };
        return [await post("{not json"), await post(JSON.stringify({pixels: [1, 2]})),
                await post("x".repeat(70000)),
                await post(JSON.stringify({pixels: new Array(784).fill(0.5)}))];
    }""")
    assert [status for status, _ in answers] == [400, 400, 400, 200]
    assert len(page_errors) == 3 and all("status of 400" in e for e in page_errors)
    page_errors.clear()
    assert "not JSON" in answers[0][1]["error"] and "received 2" in answers[1][1]["error"]
    assert answers[3][1]["prediction"] == int(fc_net.predict(np.full((1, 784), 0.5))[0])


def test_the_exported_page_works_from_a_file(page, fc_net, bars, tmp_path):
    bundle = web.model_bundle(fc_net, tests=web.mnist_sample(fc_net, bars.test, 4, 2))
    path = web.export_web(bundle, tmp_path / "site")
    page.goto(path.as_uri())
    draw(page, SEVEN)
    shown = state(page)
    np.testing.assert_allclose(shown["layers"][-1]["values"],
                               fc_net.feedforward(np.float32(shown["input"])[None])[0],
                               rtol=0, atol=TOLERANCE)
    page.click("#test-wrong")
    assert "gpunn got wrong" in page.locator("#test-info").text_content()
    assert page.locator("#check").text_content() == ""  # no server to ask
    assert json.loads(json.dumps(page.evaluate("gpunn.benchmark(3, 1)")))["n"] == 3
