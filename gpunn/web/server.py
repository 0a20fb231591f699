"""The local web server behind ``gpunn serve``: the page, and gpunn's forward pass as JSON.

Routes (nothing else; no route takes a path or a file name, the model is fixed at start):

- ``GET /`` the page, with the model's weights inlined (the same file ``export-web`` writes);
- ``POST /api/forward`` with ``{"pixels": [784 numbers in [0, 1]]}`` (the 28 x 28 image the
  network sees, row by row) returns ``{"layers": [{"type", "shape", "values"}, ...],
  "output", "prediction", "confidence"}``: every layer's activations from gpunn itself;
- ``GET /api/model`` the architecture and the name.

A malformed, oversized or unknown request gets a 4xx answer with ``{"error": "..."}`` and the
server keeps serving. The standard library only (``http.server``); one lock around the forward
pass, because layers keep what backward needs on themselves.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from gpunn.web import model as web_model

__all__ = ["MAX_BODY", "PageServer", "make_server", "forward_json"]

MAX_BODY = 64 * 1024  # 784 numbers written out at full float precision take about 20 kB


class BadRequest(Exception):
    """A request the server refuses with 400; the message goes back as ``{"error": ...}``."""


def parse_pixels(body: bytes) -> np.ndarray:
    """The (784,) float32 pixels of a ``/api/forward`` body, or :class:`BadRequest`."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the body is not JSON ({exc}); send {{\"pixels\": [784 numbers]}}"
                         ) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("pixels"), list):
        raise BadRequest('expected a JSON object {"pixels": [784 numbers in [0, 1]]}')
    pixels = payload["pixels"]
    if len(pixels) != web_model.PIXELS:
        raise BadRequest(f"expected 784 pixels (a 28x28 image, row by row); received "
                         f"{len(pixels)}")
    if not all(type(p) in (int, float) and math.isfinite(p) and 0 <= p <= 1 for p in pixels):
        raise BadRequest("every pixel must be a number in [0, 1]")
    return np.asarray(pixels, dtype=np.float32)


def forward_json(net, pixels: np.ndarray) -> dict:
    """gpunn's forward pass of one (784,) image as the JSON ``/api/forward`` returns."""
    layers = web_model.layer_activations(net, pixels[None])
    output = layers[-1][0]
    return {"layers": [{"type": layer.config()["type"], "shape": list(a.shape[1:]),
                        "values": a[0].reshape(-1).tolist()}
                       for layer, a in zip(net.layers, layers)],
            "output": output.tolist(), "prediction": int(output.argmax()),
            "confidence": float(output.max())}


class PageServer(ThreadingHTTPServer):
    """An HTTP server holding one network, its page and a lock for its forward pass."""

    daemon_threads = True

    def __init__(self, address, net, page: str, name: str):
        self.net, self.page, self.name = net, page.encode("utf-8"), name
        self.lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # the browser closed the tab or the connection mid-request: no one to answer
        logging.getLogger(__name__).exception("a request from %s failed", client_address[0])

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: PageServer
    timeout = 10  # a client that stops sending mid-request frees its thread
    server_version = "gpunn"
    sys_version = ""

    def log_message(self, format, *args):  # quiet: the CLI prints the address, not each hit
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def send_error(self, code, message=None, explain=None):
        # http.server's own refusals (a malformed request line, an oversized header) as JSON;
        # with headers even when the request line was too broken to name an HTTP version
        self.close_connection = True
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"
        self._error(code, message or "bad request")

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, self.server.page, "text/html; charset=utf-8")
        elif path == "/api/model":
            net = self.server.net
            self._json(200, {"name": self.server.name,
                             "input_shape": list(net.input_shape),
                             "layers": [layer.config() for layer in net.layers]})
        else:
            self._error(404, f"no such page {path[:100]!r}; the page is at /")

    do_HEAD = do_GET

    def do_POST(self):
        if self.path.split("?", 1)[0] != "/api/forward":
            self._error(404, "POST goes to /api/forward only")
            return
        try:
            pixels = parse_pixels(self._body())
        except BadRequest as exc:
            self.close_connection = True  # an unread body must not be taken for a request
            self._error(400, str(exc))
            return
        try:
            with self.server.lock:
                payload = forward_json(self.server.net, pixels)
        except Exception as exc:  # a bug in gpunn: answer, log it, keep serving
            logging.getLogger(__name__).exception("the forward pass failed")
            self._error(500, f"the forward pass failed ({type(exc).__name__}: {exc})")
            return
        self._json(200, payload)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise BadRequest("chunked bodies are not accepted; send Content-Length")
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            raise BadRequest("a Content-Length header (a byte count) is required")
        length = int(length)
        if length > MAX_BODY:
            raise BadRequest(f"the body is {length} bytes; at most {MAX_BODY} are accepted")
        try:
            body = self.rfile.read(length)
        except TimeoutError as exc:
            raise BadRequest(f"the body did not arrive within {self.timeout} s") from exc
        if len(body) != length:
            raise BadRequest(f"the body ended after {len(body)} of {length} bytes")
        return body

    def _not_allowed(self):
        self._error(405, f"{self.command} is not supported; use GET / or POST /api/forward")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed


def make_server(net, page: str, host: str = "127.0.0.1", port: int = 0,
                name: str = "") -> PageServer:
    """A :class:`PageServer` bound to ``host:port`` (port 0: a free one; see ``.url``),
    not yet serving: call ``serve_forever()`` (and ``shutdown()``/``server_close()``).

    The forward pass runs once here, so a slow first call (Numba compiling the conv kernels)
    happens before the first request.
    """
    web_model.check_servable(net)
    web_model.layer_activations(net, np.zeros((1, web_model.PIXELS), np.float32))
    return PageServer((host, port), net, page, name or web_model.describe(net))
