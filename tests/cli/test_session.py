"""The CLI's side of a training run: the warning for a network stuck at chance level."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gpunn.cli.session import Session


def _epochs(accuracies, classes=10, capsys=None):
    session = Session(SimpleNamespace(n_out=classes), len(accuracies),
                      describe=lambda r: "", quiet=True, label="seed 1 member 1 ")
    for epoch, accuracy in enumerate(accuracies, 1):
        session.on_epoch({"epoch": epoch, "evaluation_accuracy": accuracy})
    return capsys.readouterr().err


def test_two_epochs_at_the_same_chance_accuracy_warn_once(capsys):
    err = _epochs([0.1064, 0.1064, 0.1064, 0.1064], capsys=capsys)
    assert err.count("warning") == 1, err
    assert ("seed 1 member 1 accuracy 10.64% after epochs 1 and 2, chance level for 10 "
            "classes: the network has probably stopped learning") in err


@pytest.mark.parametrize("accuracies, classes", [
    ([0.1064, 0.1135, 0.1010], 10),  # at chance but moving: a slow start
    ([0.2, 0.2], 10),  # stuck, but above chance
    ([0.97, 0.97], 10),  # converged
    ([0.80, 0.80], 2),  # two classes: chance is 50%
    ([None, None], 10),  # no evaluation data
])
def test_moving_or_learning_networks_do_not_warn(accuracies, classes, capsys):
    assert _epochs(accuracies, classes, capsys=capsys) == ""


def test_chance_level_depends_on_the_number_of_classes(capsys):
    assert "chance level for 2 classes" in _epochs([0.55, 0.55], 2, capsys=capsys)
    assert _epochs([0.55, 0.55], 1000, capsys=capsys) == ""
