"""See the network think: a page where you draw a digit and watch every layer.

    from gpunn.web import model_bundle, render_page, make_server, export_web
    page = render_page(model_bundle(net, tests=mnist_sample(net, mnist.test)))
    server = make_server(net, page)            # 127.0.0.1, a free port: server.url
    server.serve_forever()
    export_web(net, "site", tests=...)         # site/index.html, works from file://

The page is one self-contained HTML file (``static/page.html``, ``style.css``, ``app.js``
and the model as JSON, inlined), so the served page and the exported copy are the same file.
It preprocesses the drawing as MNIST did (:mod:`gpunn.images`), runs the forward pass in
JavaScript from the exported float32 weights, and draws every layer; the tests check it
against gpunn's forward pass (:func:`layer_activations`) layer by layer.
"""

from __future__ import annotations

import re
from pathlib import Path

from gpunn.web.model import (
    DEFAULT_SIZES,
    bundle_json,
    check_servable,
    default_model,
    describe,
    layer_activations,
    mnist_sample,
    model_bundle,
)
from gpunn.web.server import MAX_BODY, PageServer, forward_json, make_server

__all__ = [
    "DEFAULT_SIZES",
    "MAX_BODY",
    "PageServer",
    "check_servable",
    "default_model",
    "describe",
    "export_web",
    "forward_json",
    "layer_activations",
    "make_server",
    "mnist_sample",
    "model_bundle",
    "render_page",
]

STATIC = Path(__file__).with_name("static")


def render_page(bundle: dict) -> str:
    """The page as one HTML string: style, script and ``bundle`` (see :func:`model_bundle`)
    inlined, so it works from ``file://`` and from any static host."""
    page = (STATIC / "page.html").read_text(encoding="utf-8")
    parts = {"/*STYLE*/": (STATIC / "style.css").read_text(encoding="utf-8"),
             "/*MODEL*/": "window.GPUNN_MODEL = " + bundle_json(bundle) + ";",
             "/*APP*/": (STATIC / "app.js").read_text(encoding="utf-8")}
    # one pass over the template, so nothing inserted is searched for markers again
    return re.sub(r"/\*(STYLE|MODEL|APP)\*/",
                  lambda m: parts[m.group(0)].replace("</script", "<\\/script"), page)


def export_web(bundle: dict, directory) -> Path:
    """Write the page for ``bundle`` to ``directory/index.html`` (created if needed);
    returns the file's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "index.html"
    tmp = directory / ".index.html.part"
    tmp.write_text(render_page(bundle), encoding="utf-8")
    tmp.replace(path)
    return path
