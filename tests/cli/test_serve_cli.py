"""`gpunn serve` and `gpunn export-web` on the tiny MNIST-format file of tests/cli/conftest.py:
the address printed, the page served, the default network trained once and cached, and one
line with exit status 2 for bad input."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest
from click.testing import CliRunner

import gpunn
from gpunn.cli.main import cli
from gpunn.layers import Conv2D, Flatten, Softmax


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    net = gpunn.Network([784, 12, 10], seed=1, backend="cpu")
    return gpunn.save(net, tmp_path_factory.mktemp("model") / "net.npz")


def cached_default(cache_home, net=None):
    """Put a network where `gpunn serve` keeps its default one, under ``cache_home``."""
    net = net or gpunn.Network([784, 16, 16, 10], seed=4, backend="cpu")
    return gpunn.save(net, cache_home / "gpunn" / "serve" / "3b1b-784-16-16-10.npz")


def test_export_web_writes_a_page_with_the_weights_and_test_images(model, data_dir, tmp_path):
    r = run("export-web", model, "-o", tmp_path / "site", "--data-dir", data_dir)
    assert r.exit_code == 0, r.output
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert f"wrote {tmp_path / 'site' / 'index.html'}" in r.output
    assert '"name":"net.npz: 784-12-10"' in page and '"tests":{"pixels":' in page


def test_export_web_without_test_images_still_writes_the_page(model, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GPUNN_DATA", raising=False)
    r = run("export-web", model, "-o", tmp_path / "site", "--data-dir", tmp_path)
    assert r.exit_code == 0, r.output
    assert "gpunn: warning: no MNIST test images" in r.output
    assert '"tests":null' in (tmp_path / "site" / "index.html").read_text(encoding="utf-8")


def test_without_a_model_the_3b1b_network_is_trained_once_and_cached(data_dir, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    r = run("export-web", "-o", tmp_path / "a", "--data-dir", data_dir)
    assert r.exit_code == 0, r.output
    assert "training 3Blue1Brown's 784-16-16-10 network once" in r.output
    assert "epoch 30:" in r.output
    cache = tmp_path / "cache" / "gpunn" / "serve" / "3b1b-784-16-16-10.npz"
    assert [layer.n_out for layer in gpunn.load(cache, backend="cpu").layers] == [16, 16, 10]
    r = run("export-web", "-o", tmp_path / "b", "--data-dir", data_dir)
    assert r.exit_code == 0 and "training" not in r.output, r.output
    assert ((tmp_path / "a" / "index.html").read_text()
            == (tmp_path / "b" / "index.html").read_text())


@pytest.mark.parametrize("args, message", [
    (["export-web", "missing.npz", "-o", "site"], "missing.npz"),
    (["export-web", "{rgb}", "-o", "site"], "28x28 grey digit"),
    (["export-web", "{model}"], "Missing option '-o'"),
    (["serve", "{model}", "--port", "70000"], "70000"),
    (["serve", "{model}", "--host", "256.1.1.1"], "cannot listen on 256.1.1.1:0"),
])
def test_bad_input_is_one_line_and_exit_status_2(args, message, model, tmp_path, monkeypatch):
    rgb = gpunn.save(gpunn.Network([Conv2D(3, 2, 3), Flatten(), Softmax(72, 10)],
                                   cost="log-likelihood", input_shape=(3, 8, 8),
                                   backend="cpu"), tmp_path / "rgb.npz")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    r = run(*[a.format(model=model, rgb=rgb) for a in args], "--data-dir", tmp_path)
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("gpunn: error:")]
    assert len(errors) == 1 and message in errors[0], r.output
    assert not (tmp_path / "site").exists()


def test_every_option_has_help():
    for command in ("serve", "export-web"):
        r = run(command, "--help")
        assert r.exit_code == 0
        for option in re.findall(r"^\s+(-[-\w, ]+?)\s{2,}(.*)$", r.output, re.M):
            assert option[1].strip(), f"{command} {option[0]} has no help"


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def serve(*args, env=None):
    """Start `gpunn serve ARGS`; returns (process, url) once the address is printed."""
    # SIGINT as a terminal's Ctrl-C finds it: a shell that runs pytest in the background
    # without job control makes its children ignore SIGINT, and Python then keeps ignoring it
    proc = subprocess.Popen([sys.executable, "-m", "gpunn.cli.main", "serve", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, preexec_fn=_default_sigint)
    line = proc.stdout.readline()
    found = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
    if not found:
        proc.kill()
        raise AssertionError(f"no address printed: {line!r} {proc.stderr.read()!r}")
    return proc, found.group(1)


def stop(proc):
    """Ctrl-C: SIGINT, then (code, stdout, stderr); a server still up after 30 s is killed."""
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("gpunn serve was still running 30 s after SIGINT") from None
    return proc.returncode, out, err


def test_serve_prints_its_address_serves_the_page_and_stops_on_ctrl_c(model, data_dir):
    proc, url = serve(model, "--data-dir", data_dir)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            page = response.read().decode("utf-8")
    finally:
        code, out, err = stop(proc)
    assert "window.GPUNN_MODEL" in page and "net.npz: 784-12-10" in page
    assert code == 0 and "stopped" in out, err
    assert err == ""


def test_serve_without_a_model_serves_the_cached_3b1b_network(tmp_path, data_dir):
    cached_default(tmp_path / "cache")
    proc, url = serve("--data-dir", data_dir, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    try:
        with urllib.request.urlopen(url + "api/model", timeout=10) as response:
            body = response.read().decode("utf-8")
    finally:
        code, _, err = stop(proc)
    assert "3Blue1Brown's 784-16-16-10" in body and '"n_out": 16' in body
    assert code == 0 and "training" not in err
