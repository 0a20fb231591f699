"""`gpunn export`: a checkpoint file or directory becomes a model file that `evaluate` and
`predict` take; an existing output is kept unless --force; errors are one line, exit 2."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import gpunn
from gpunn.checkpoint import list_checkpoints, save_checkpoint
from gpunn.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def small_net(seed=1):
    return gpunn.Network([784, 8, 10], seed=seed, backend="cpu")


def test_export_of_a_directory_writes_its_latest_checkpoint_as_a_model(tmp_path, data_dir):
    ck = tmp_path / "ck"
    save_checkpoint(ck, small_net(1), {"epoch": 1})
    newest = small_net(2)
    save_checkpoint(ck, newest, {"epoch": 2, "config": {"eta": 0.5}})
    r = run("export", ck, "-o", tmp_path / "model")
    assert r.exit_code == 0, r.output
    model = tmp_path / "model.npz"
    assert f"wrote {model} from {ck / 'ckpt-000002.npz'} (after epoch 2)" in r.output
    back = gpunn.load(model, backend="cpu")
    for a, b in zip(newest.weights + newest.biases, back.weights + back.biases):
        np.testing.assert_array_equal(a, b)
    assert back.training["eta"] == 0.5
    assert back.training["exported_from"]["checkpoint"] == str(ck / "ckpt-000002.npz")
    r = run("evaluate", model, "--data-dir", data_dir, "--split", "test")
    assert r.exit_code == 0, r.output
    data = gpunn.data.load_dataset("mnist", data_dir=data_dir)
    assert f"test accuracy {newest.accuracy(data.test):.2%}" in r.output


def test_an_exported_model_predicts_as_the_checkpointed_network(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    from gpunn.images import load_digit

    net = small_net(3)
    path = save_checkpoint(tmp_path / "ck", net, {"epoch": 1})
    assert run("export", path, "-o", tmp_path / "m.npz").exit_code == 0
    img = np.full((40, 40), 255, np.uint8)
    img[8:32, 18:22] = 0
    PIL.fromarray(img).save(tmp_path / "one.png")
    r = run("predict", tmp_path / "m.npz", tmp_path / "one.png", "--device", "cpu")
    assert r.exit_code == 0, r.output
    expected = int(net.feedforward(load_digit(tmp_path / "one.png")[None])[0].argmax())
    assert r.output.split()[1] == str(expected), r.output


def test_a_damaged_newest_checkpoint_is_skipped_and_said(tmp_path):
    ck = tmp_path / "ck"
    save_checkpoint(ck, small_net(1), {"epoch": 1})
    save_checkpoint(ck, small_net(2), {"epoch": 2})
    first, second = list_checkpoints(ck)
    second.write_bytes(second.read_bytes()[:500])
    r = run("export", ck, "-o", tmp_path / "m.npz")
    assert r.exit_code == 0, r.output
    assert (f"gpunn: skipped damaged checkpoint {second} (is not a gpunn checkpoint: it is "
            f"not an .npz archive") in r.output
    assert f"; exporting {first}" in r.output


def test_an_existing_output_is_kept_unless_force(tmp_path):
    path = save_checkpoint(tmp_path / "ck", small_net(), {"epoch": 1})
    out = tmp_path / "m.npz"
    out.write_bytes(b"keep me")
    r = run("export", path, "-o", out)
    assert r.exit_code == 2
    assert r.output.strip() == (f"gpunn: error: -o {out} exists; pass --force to overwrite "
                                f"it, or choose another file")
    assert out.read_bytes() == b"keep me"
    r = run("export", path, "-o", out, "--force")
    assert r.exit_code == 0, r.output
    assert gpunn.load(out, backend="cpu").sizes == [784, 8, 10]


@pytest.mark.parametrize("source,output,needle", [
    ("missing", "m.npz", "checkpoint {tmp}/missing does not exist; give a ckpt-NNNNNN.npz"),
    ("empty", "m.npz", "no checkpoint (ckpt-NNNNNN.npz) in {tmp}/empty"),
    ("ck", "file/m.npz", "-o {tmp}/file/m.npz: {tmp}/file is a file, not a directory"),
    ("ck", "dir.npz", "-o {tmp}/dir.npz is a directory; give a file name"),
])
def test_errors_are_one_line_and_exit_2(tmp_path, source, output, needle):
    save_checkpoint(tmp_path / "ck", small_net(), {"epoch": 1})
    (tmp_path / "empty").mkdir()
    (tmp_path / "dir.npz").mkdir()
    (tmp_path / "file").write_text("x")
    r = run("export", tmp_path / source, "-o", tmp_path / output)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("gpunn: error: ") and r.output.count("\n") == 1
    assert needle.format(tmp=tmp_path) in r.output
    assert "Traceback" not in r.output
