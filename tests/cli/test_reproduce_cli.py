"""`gpunn reproduce`: the list, and a quick run of every row on a tiny MNIST-format file."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gpunn import book
from gpunn.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_list_shows_every_row_with_the_books_figure():
    r = run("reproduce", "--list")
    assert r.exit_code == 0
    for row in book.ROWS.values():
        assert row.name in r.output and f"{row.book:.2f}%" in r.output
    assert "22.25%" in r.output and "94.35%" in r.output


@pytest.mark.parametrize("row", list(book.ROWS))
def test_every_row_runs_quick(row, data_dir, tmp_path):
    metrics = tmp_path / "r.json"
    r = run("reproduce", row, "--quick", "--data-dir", data_dir, "--device", "cpu",
            "--metrics-json", metrics)
    assert r.exit_code == 0, r.output
    m = json.loads(metrics.read_text())
    assert m["row"] == row and m["quick"] and len(m["seeds"]) == 1
    assert 0.0 <= m["median"] <= 1.0
    assert f"book {book.get(row).book:.2f}%" in r.output
    assert "epoch   1/1  " in r.output  # each epoch reports as it ends
    assert "smoke test" in r.output  # --quick says its figures are not the book's


def test_quick_refuses_seeds(data_dir):
    r = run("reproduce", "ch1", "--quick", "--seeds", 3, "--data-dir", data_dir)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "--quick trains one seed" in lines[0]


def test_network3_compat_runs(data_dir):
    r = run("reproduce", "ch6-dropout", "--quick", "--compat", "network3", "--data-dir",
            data_dir)
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args,needle", [
    (["reproduce"], "--list"),
    (["reproduce", "ch9-magic"], "unknown book row"),
    (["reproduce", "ch1", "--seeds", "0"], "--seeds"),
    (["reproduce", "ch1", "--compat", "theano"], "--compat"),
])
def test_bad_input_is_one_line_exit_2(args, needle):
    r = run(*args)
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and needle in lines[0], r.output


def test_ensemble_reports_members_and_the_vote(data_dir):
    r = run("ensemble", "--preset", "ch3-l2", "--members", 3, "--epochs", 2, "--data-dir",
            data_dir)
    assert r.exit_code == 0, r.output
    assert r.output.count(" (seed ") == 3  # one result per member
    for k in (1, 2, 3):  # and a line per epoch as each member trains
        assert f"member {k} epoch   1/2  test " in r.output
        assert f"member {k} epoch   2/2  test " in r.output
    assert "ensemble of 3 (ch3-l2): test accuracy" in r.output


def test_ensemble_refuses_unknown_presets_and_one_member(data_dir):
    for args, needle in ((["--preset", "ch9"], "unknown preset"), (["--members", "1"],
                                                                    "--members")):
        r = run("ensemble", *args, "--data-dir", data_dir)
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and needle in lines[0], r.output


def test_reproduce_interrupted_resumes_to_the_same_result(data_dir, tmp_path, monkeypatch):
    from gpunn.cli import main as cli_main

    args = ["reproduce", "ch3-l2", "--seeds", 2, "--epochs", 4, "--data-dir", data_dir]
    straight = json.loads(_metrics(run(*args, "--metrics-json", tmp_path / "a.json"),
                                   tmp_path / "a.json"))
    polls = {"n": 0}

    def stop_on_the_sixth_poll(self):
        polls["n"] += 1
        return polls["n"] >= 6  # seed 2, epoch 2 (one chunk per epoch of 400 images)

    monkeypatch.setattr(cli_main.InterruptGuard, "should_stop", stop_on_the_sixth_poll)
    monkeypatch.setattr(cli_main.InterruptGuard, "name", property(lambda self: "SIGINT"))
    monkeypatch.setattr(cli_main.InterruptGuard, "exit_code", property(lambda self: 130))
    ck = tmp_path / "ck"
    r = run(*args, "--checkpoint-dir", ck)
    assert r.exit_code == 130 and "resume with: the same command again" in r.output, r.output
    monkeypatch.undo()
    again = run(*args, "--checkpoint-dir", ck, "--metrics-json", tmp_path / "b.json")
    resumed = json.loads(_metrics(again, tmp_path / "b.json"))
    assert [s["figure"] for s in resumed["seeds"]] == [s["figure"] for s in straight["seeds"]]
    assert resumed["median"] == straight["median"]
    # seed 1 finished and seed 2 half-trained in the first run: the times say so
    assert [s["earlier_runs"] for s in resumed["seeds"]] == [True, True]
    assert not any(s["earlier_runs"] for s in straight["seeds"])
    assert again.output.count("earlier runs included") == 2, again.output
    assert "the rest evaluating" in run(*args).output  # a run from scratch


def _metrics(result, path):
    assert result.exit_code == 0, result.output
    return path.read_text()


def test_ensemble_with_checkpoints_does_not_retrain_finished_members(data_dir, tmp_path):
    args = ["ensemble", "--preset", "ch3-l2", "--members", 2, "--epochs", 1, "--data-dir",
            data_dir, "--checkpoint-dir", tmp_path / "ck"]
    first, again = run(*args), run(*args)
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert again.output.count("not retrained") == 2
    last = [line for line in first.output.splitlines() if line.startswith("ensemble of 2")]
    assert last and last[0].split(";")[0] in again.output


def test_ensemble_members_trained_apart_vote_as_one_run(data_dir, tmp_path):
    # --member spreads an ensemble over processes sharing a checkpoint directory; the vote
    # afterwards loads them and equals the vote of one run that trained them in turn
    base = ["reproduce", "ch6-ensemble", "--quick", "--data-dir", data_dir, "--device", "cpu"]
    straight = json.loads(_metrics(run(*base, "--metrics-json", tmp_path / "a.json"),
                                   tmp_path / "a.json"))
    ck = tmp_path / "ck"
    second = run(*base, "--checkpoint-dir", ck, "--member", 2)
    assert second.exit_code == 0, second.output
    assert "trained member 2 of 2" in second.output
    assert "test accuracy of the vote" not in second.output
    assert not (ck / "ch6-ensemble" / "seed-1-member-1").exists()
    first = run(*base, "--checkpoint-dir", ck, "--member", 1)
    assert first.exit_code == 0 and "trained member 1 of 2" in first.output, first.output
    again = run(*base, "--checkpoint-dir", ck, "--member", 1)  # finished: loaded, not trained
    assert "seed 1: found member 1 of 2 finished earlier; run the command again" in again.output
    vote = run(*base, "--checkpoint-dir", ck, "--metrics-json", tmp_path / "b.json")
    assert vote.output.count("not retrained") == 2, vote.output
    voted = json.loads(_metrics(vote, tmp_path / "b.json"))
    assert voted["seeds"][0]["figure"] == straight["seeds"][0]["figure"]
    assert voted["seeds"][0]["members"] == straight["seeds"][0]["members"]


def test_members_vote_from_their_recorded_test_outputs_without_their_networks(data_dir,
                                                                              tmp_path):
    # a finished member keeps its test-set outputs, so members trained in other sessions
    # or on other machines vote from result.json + test-outputs.npy alone
    import numpy as np

    from gpunn.data import load_dataset

    base = ["reproduce", "ch6-ensemble", "--quick", "--data-dir", data_dir, "--device", "cpu"]
    ck = tmp_path / "ck"
    straight = json.loads(_metrics(run(*base, "--checkpoint-dir", ck, "--metrics-json",
                                       tmp_path / "a.json"), tmp_path / "a.json"))
    test = load_dataset("mnist", data_dir=data_dir).test
    members = sorted((ck / "ch6-ensemble").glob("seed-1-member-*"))
    assert len(members) == 2
    for member in members:
        recorded = np.load(member / "test-outputs.npy")
        assert recorded.shape == (len(test), 10)
        # the final network's outputs: their accuracy is the member's final test accuracy
        final = json.loads((member / "result.json").read_text())["test"]
        assert np.mean(recorded.argmax(axis=1) == test.labels) == pytest.approx(final)
        (member / "model.npz").unlink()
    vote = run(*base, "--checkpoint-dir", ck, "--metrics-json", tmp_path / "b.json")
    voted = json.loads(_metrics(vote, tmp_path / "b.json"))
    assert vote.output.count("not retrained") == 2, vote.output
    assert voted["seeds"][0]["figure"] == straight["seeds"][0]["figure"]

    # outputs recorded on another test set cannot vote here, and without the network they
    # cannot be recomputed: a clear error, no traceback
    record = members[0] / "result.json"
    result = json.loads(record.read_text())
    record.write_text(json.dumps({**result, "test_set": "another"}))
    r = run(*base, "--checkpoint-dir", ck)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "but no model.npz, and its test-outputs.npy was " \
        "recorded on another test set; copy the run's model.npz there" in r.output


def test_members_finished_before_outputs_were_recorded_get_them_from_model_npz(data_dir,
                                                                                tmp_path):
    base = ["reproduce", "ch6-ensemble", "--quick", "--data-dir", data_dir, "--device", "cpu",
            "--checkpoint-dir", tmp_path / "ck"]
    first = json.loads(_metrics(run(*base, "--metrics-json", tmp_path / "a.json"),
                                tmp_path / "a.json"))
    for member in (tmp_path / "ck" / "ch6-ensemble").glob("seed-1-member-*"):
        (member / "test-outputs.npy").unlink()  # as a member finished before 2026-12-02
        record = member / "result.json"
        record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items()
                                      if k != "test_set"}))
    again = json.loads(_metrics(run(*base, "--metrics-json", tmp_path / "b.json"),
                                tmp_path / "b.json"))
    assert again["seeds"][0]["figure"] == first["seeds"][0]["figure"]
    for member in (tmp_path / "ck" / "ch6-ensemble").glob("seed-1-member-*"):
        assert (member / "test-outputs.npy").exists()
        assert "test_set" in json.loads((member / "result.json").read_text())


@pytest.mark.parametrize("args, needle", [
    (["ch6-relu", "--member", 1], "ch6-relu is a single network"),
    (["ch6-ensemble", "--member", 3], "--member 3: ch6-ensemble has members 1 to 2"),
    (["ch6-ensemble", "--member", 1, "--no-checkpoint-dir"], "--member needs --checkpoint-dir"),
    (["ch6-ensemble", "--member", 1, "--metrics-json", "m.json"], "records the vote"),
])
def test_member_refuses_what_it_cannot_do(data_dir, tmp_path, args, needle):
    if "--no-checkpoint-dir" in args:
        args = [a for a in args if a != "--no-checkpoint-dir"]
    else:
        args = [*args, "--checkpoint-dir", tmp_path / "ck"]
    r = run("reproduce", *args, "--quick", "--data-dir", data_dir)
    assert r.exit_code == 2 and needle in r.output, r.output
    assert not (tmp_path / "ck").exists()


def test_reproduce_expand_replaces_the_rows_own_data(data_dir, monkeypatch):
    from gpunn.data import expand as module

    asked = []
    real = module.expanded
    monkeypatch.setattr(module, "expanded", lambda split, names: asked.append(
        (len(split), names)) or real(split, names))
    r = run("reproduce", "ch6-expanded", "--quick", "--expand", "rotations", "--data-dir",
            data_dir)
    assert r.exit_code == 0, r.output
    assert "--expand rotations (the book: shifts)" in r.output
    assert asked == [(400, "rotations")]
    asked.clear()
    assert run("reproduce", "ch1", "--quick", "--data-dir", data_dir).exit_code == 0
    assert asked == [(400, "none")]


def test_runs_made_with_inverted_dropout_are_not_resumed_nor_voted(data_dir, tmp_path):
    # before 2026-12-02 the dropout rows trained with inverted dropout; their checkpoints
    # and finished members carry settings without "dropout" and must not mix with new ones
    ck = tmp_path / "ck"
    base = ["reproduce", "ch6-dropout", "--quick", "--data-dir", data_dir, "--device", "cpu",
            "--checkpoint-dir", ck]
    first = run(*base)
    assert first.exit_code == 0, first.output
    done = ck / "ch6-dropout" / "seed-1" / "result.json"
    result = json.loads(done.read_text())
    assert result["settings"]["dropout"] == "scale-at-eval"
    del result["settings"]["dropout"]
    done.write_text(json.dumps(result))
    again = run(*base)
    assert again.exit_code == 2, again.output
    assert "holds a run with other settings (dropout: none there, 'scale-at-eval' here)" \
        in again.output
    assert "use another --checkpoint-dir" in again.output and "Traceback" not in again.output
