"""The server behind `gpunn serve`: the page, gpunn's forward pass as JSON, and refusals.

Each bad request gets a 4xx answer with a JSON error, and the server answers the next one.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading

import numpy as np
import pytest

from gpunn import web


def start(net, bundle=None):
    server = web.make_server(net, web.render_page(bundle or web.model_bundle(net)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server(fc_net):
    server = start(fc_net)
    yield server
    server.shutdown()
    server.server_close()


def request(server, method, path, body=None, headers=None):
    """(status, parsed JSON or text, headers) of one request on a fresh connection."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    kind = response.getheader("Content-Type", "")
    return (response.status, json.loads(data) if kind == "application/json" else data.decode(),
            response)


def raw(server, data: bytes, more: bytes = b"") -> str:
    """Send bytes as they are (then ``more`` and the end of the stream); all of the reply."""
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=15) as s:
        s.sendall(data)
        if more:
            s.sendall(more)
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("latin-1")


def forward(server, pixels):
    return request(server, "POST", "/api/forward", json.dumps({"pixels": pixels}),
                   {"Content-Type": "application/json"})


def test_it_listens_on_the_loopback_address_and_a_free_port(server):
    host, port = server.server_address[:2]
    assert host == "127.0.0.1" and port > 0
    assert server.url == f"http://127.0.0.1:{port}/"


def test_the_page_is_served_with_the_model_inside(server, fc_net):
    status, page, response = request(server, "GET", "/")
    assert status == 200 and response.getheader("Content-Type").startswith("text/html")
    assert "window.GPUNN_MODEL = {" in page
    assert web.model_bundle(fc_net)["layers"][0]["w"] in page
    status, body, _ = request(server, "GET", "/api/model")
    assert status == 200 and body["layers"] == [layer.config() for layer in fc_net.layers]


@pytest.mark.parametrize("name", ["fc_net", "conv_net", "odd_net"])
def test_the_forward_endpoint_gives_every_layer_as_gpunn_computes_it(name, request, bars):
    net = request.getfixturevalue(name)
    server = start(net)
    try:
        x = bars.test.x([3])[0]
        status, body, _ = forward(server, x.tolist())
    finally:
        server.shutdown()
        server.server_close()
    assert status == 200
    expected = web.layer_activations(net, x[None])
    assert [layer["shape"] for layer in body["layers"]] == [list(a.shape[1:]) for a in expected]
    for got, want in zip(body["layers"], expected):
        np.testing.assert_array_equal(np.float32(got["values"]), want[0].reshape(-1))
    out = net.feedforward(x[None])[0]
    assert body["prediction"] == int(out.argmax())
    assert body["confidence"] == pytest.approx(float(out.max()))


BAD_BODIES = {
    "not JSON": (b"{pixels: [", "not JSON"),
    "not UTF-8": (b"\xff\xfe", "not JSON"),
    "a list": (b"[0.5]", "JSON object"),
    "no pixels": (b'{"pixel": []}', "JSON object"),
    "too few": (json.dumps({"pixels": [0.0] * 783}).encode(), "received 783"),
    "a string": (json.dumps({"pixels": ["0"] * 784}).encode(), "number in [0, 1]"),
    "a bool": (json.dumps({"pixels": [True] * 784}).encode(), "number in [0, 1]"),
    "NaN": (b'{"pixels": [NaN' + b", 0" * 783 + b"]}", "number in [0, 1]"),
    "above 1": (json.dumps({"pixels": [2.0] * 784}).encode(), "number in [0, 1]"),
    "a path": (json.dumps({"pixels": [0.0] * 784, "model": "/etc/passwd"}).encode(), None),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_a_bad_body_gets_400_with_a_json_error_and_the_server_keeps_serving(server, case):
    body, message = BAD_BODIES[case]
    status, answer, response = request(server, "POST", "/api/forward", body,
                                       {"Content-Type": "application/json"})
    if message is None:  # extra keys are ignored: no request chooses a model or a file
        assert status == 200 and len(answer["layers"]) == 3
    else:
        assert status == 400 and message in answer["error"], answer
        assert response.getheader("Content-Type") == "application/json"
    assert request(server, "GET", "/api/model")[0] == 200


def test_an_oversized_body_is_refused_without_being_read(server):
    status, answer, _ = request(server, "POST", "/api/forward", None,
                                {"Content-Length": str(100 * 2**20)})
    assert status == 400 and f"at most {web.MAX_BODY}" in answer["error"]
    status, answer, _ = request(server, "POST", "/api/forward", b"x" * (web.MAX_BODY + 1))
    assert status == 400 and "at most" in answer["error"]
    assert forward(server, [0.0] * 784)[0] == 200


@pytest.mark.parametrize("headers, message", [
    ({"Transfer-Encoding": "chunked"}, "chunked"),
    ({"Content-Length": "-5"}, "Content-Length"),
    ({"Content-Length": "12"}, "ended after"),  # the client stops sending
])
def test_a_body_without_a_usable_length_is_refused(server, headers, message):
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    reply = raw(server, f"POST /api/forward HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode(),
                b'{"pix' if message == "ended after" else b"")
    assert reply.startswith("HTTP/1.0 400") and message in reply
    assert request(server, "GET", "/api/model")[0] == 200


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/../../etc/passwd", 404),
    ("GET", "/static/app.js", 404),
    ("GET", "/api/forward", 404),
    ("POST", "/", 404),
    ("PUT", "/api/forward", 405),
    ("DELETE", "/", 405),
])
def test_unknown_routes_and_methods_get_json_errors(server, method, path, status):
    code, answer, _ = request(server, method, path, b"" if method != "GET" else None)
    assert code == status and answer["error"]
    assert request(server, "GET", "/")[0] == 200


def test_a_garbage_request_line_gets_a_json_400(server):
    reply = raw(server, b"\x16\x03\x01 hello there\r\n\r\n")
    assert reply.startswith("HTTP/1.0 400") and '{"error":' in reply
    assert request(server, "GET", "/api/model")[0] == 200


def test_concurrent_requests_each_get_their_own_answer(server, fc_net, bars):
    X = bars.test.x(np.arange(8))
    results = [None] * len(X)

    def ask(i):
        results[i] = forward(server, X[i].tolist())[1]["output"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(X))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(np.array(results), fc_net.feedforward(X), rtol=0, atol=1e-6)


def test_nothing_in_gpunn_web_imports_pickle():
    import ast
    import inspect

    from gpunn.web import model, server

    for module in (web, model, server):
        tree = ast.parse(inspect.getsource(module))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom))
                    for alias in node.names} | {
            (node.module or "").split(".")[0] for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)}
        assert not imported & {"pickle", "cPickle", "dill", "joblib"}, module.__name__


def test_a_failing_forward_pass_answers_500_and_the_server_keeps_serving(fc_net, monkeypatch,
                                                                        caplog):
    from gpunn.web import server as server_module

    server = start(fc_net)
    try:
        def broken(net, pixels):
            raise RuntimeError("a bug")

        monkeypatch.setattr(server_module, "forward_json", broken)
        status, answer, _ = forward(server, [0.0] * 784)
        assert status == 500 and "RuntimeError: a bug" in answer["error"]
        assert "the forward pass failed" in caplog.text
        monkeypatch.undo()
        assert forward(server, [0.0] * 784)[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_a_client_that_resets_mid_request_leaves_no_traceback(server, capfd):
    import struct

    host, port = server.server_address[:2]
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"POST /api/forward HTTP/1.1\r\nHost: x\r\nContent-Length: 9000\r\n\r\n{\"pix")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST: the server's read fails with ConnectionResetError
    assert request(server, "GET", "/api/model")[0] == 200
    assert "Traceback" not in capfd.readouterr().err
