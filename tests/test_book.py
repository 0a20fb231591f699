"""Chapter 6's pieces: expanded data, ensemble voting, the book's rows and network3 compat."""

from __future__ import annotations

import numpy as np
import pytest

from gpunn import book
from gpunn.data.dataset import Split
from gpunn.data.expand import SHIFTS, expand_mnist, shift_images
from gpunn.ensemble import Ensemble, vote
from gpunn.errors import ConfigError


def test_expanded_data_shifts_exactly_one_pixel_with_zero_fill():
    img = np.zeros((2, 784), np.uint8)
    img[0, 0 * 28 + 5] = 200  # a pixel on the top row: moving up pushes it out
    img[1, 10 * 28 + 10] = 7
    ex = expand_mnist(Split(img, np.array([3, 4]), 1 / 256))
    assert len(ex) == 10 and list(ex.labels) == [3, 4] * 5
    rows = ex.raw(np.arange(10)).reshape(10, 28, 28)
    # image 1 (value 7 at row 10, col 10) in each of its five copies
    where = [tuple(np.argwhere(rows[k * 2 + 1])[0]) for k in range(5)]
    assert where == [(10 + d, 10 + r) for d, r in SHIFTS]
    # image 0 moved up loses its only pixel; moved down keeps it at row 1
    assert rows[2].sum() == 0 and rows[4][1, 5] == 200
    x = ex.x([4], shape="image")
    assert x.shape == (1, 1, 28, 28) and x.dtype == np.float32 and x.max() == 200 / 256


def test_shift_images_against_np_roll_with_zeroed_edge():
    r = np.random.default_rng(0).integers(0, 255, (3, 28, 28)).astype(np.uint8)
    rolled = np.roll(r, 1, axis=2)
    rolled[:, :, 0] = 0  # the book's expand_mnist.py: roll, then zero what wrapped round
    assert np.array_equal(shift_images(r, 0, 1), rolled)


def test_vote_is_plurality_with_activation_tie_break():
    a = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]])
    b = np.array([[0.1, 0.8, 0.0], [0.1, 0.2, 0.75]])
    c = np.array([[0.6, 0.3, 0.0], [0.3, 0.2, 0.4]])
    # example 0: votes 0, 1, 0 -> 0; example 1: votes 1, 2, 2 -> 2
    assert list(vote([a, b, c])) == [0, 2]
    # a two-way tie goes to the label with the larger summed activation
    assert list(vote([a[:1], b[:1]])) == [0]
    with pytest.raises(ConfigError, match="one shape"):
        vote([a, a[:, :2]])


def test_ensemble_accuracy_on_crafted_members():
    class Fixed:
        def __init__(self, out):
            from gpunn.backend import select

            self.backend, self.out = select("cpu"), out

        def feedforward(self, X):
            return self.out[: len(X)]

    y = np.array([0, 1, 2, 2])
    right = np.eye(3)[y]
    wrong = np.eye(3)[[1, 1, 0, 2]]
    ens = Ensemble([Fixed(right), Fixed(right), Fixed(wrong)])
    assert ens.accuracy((np.zeros((4, 5)), y)) == 1.0


def test_book_two_conv_pool_row_builds_the_books_shapes():
    net = book.build(book.get("ch6-conv2"), seed=0, backend="cpu")
    assert net.num_params == (20 * 1 * 5 * 5 + 20 + 40 * 20 * 5 * 5 + 40 + 640 * 100 + 100
                              + 100 * 10 + 10)
    drop = book.build(book.get("ch6-dropout"), seed=0, backend="cpu")
    assert [layer.dropout for layer in drop.layers] == [0.0, 0.0, 0.5, 0.5, 0.5]
    assert drop.num_params == (520 + 20040 + 640 * 1000 + 1000 + 1000 * 1000 + 1000
                               + 10 * 1000 + 10)


def test_network3_compat_changes_init_and_dropout_mode():
    row = book.get("ch6-dropout")
    book_net = book.build(row, seed=1, backend="cpu")
    net3 = book.build(row, seed=1, backend="cpu", compat="network3")
    fc_book, fc_3 = book_net.layers[2], net3.layers[2]
    assert fc_3.dropout_mode == "scale-at-eval" and fc_book.dropout_mode == "inverted"
    # N(0, 1/n_in) with n_in=640 vs N(0, 1/n_out) with n_out=1000
    assert abs(fc_book.w.std() - 1 / np.sqrt(640)) < 2e-3
    assert abs(fc_3.w.std() - 1 / np.sqrt(1000)) < 2e-3
    with pytest.raises(ConfigError, match="compat"):
        book.build(row, compat="theano")


def test_every_row_is_listed_with_its_book_figure():
    names = set(book.ROWS)
    for expected in ("ch1", "ch3-l2-100", "ch5-4", "ch6-shallow", "ch6-conv1", "ch6-conv2",
                     "ch6-relu", "ch6-expanded", "ch6-extra-fc", "ch6-dropout",
                     "ch6-ensemble"):
        assert expected in names
    assert book.get("ch6-ensemble").book == 99.67 and book.get("ch6-ensemble").ensemble == 5
    with pytest.raises(ConfigError, match="reproduce --list"):
        book.get("ch7")
