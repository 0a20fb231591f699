"""Chapter 6's pieces: expanded data, ensemble voting, the book's rows and network3 compat."""

from __future__ import annotations

import numpy as np
import pytest

from gpunn import book
from gpunn.data.dataset import Split
from gpunn.data.expand import BOOK_ROTATION, SHIFTS, expand_mnist, rotate_images, shift_images
from gpunn.ensemble import Ensemble, outputs, vote, vote_accuracy
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


def _rotate_reference(image, degrees):
    """Bilinear rotation written pixel by pixel: the output pixel (r, c) reads the input at
    the point turned by -θ about the centre; neighbours off the image count as zero."""
    h, w = image.shape
    t = np.radians(degrees)
    out = np.zeros((h, w))
    for r in range(h):
        for c in range(w):
            y, x = r - (h - 1) / 2, c - (w - 1) / 2
            sr = (h - 1) / 2 + x * np.sin(t) + y * np.cos(t)
            sc = (w - 1) / 2 + x * np.cos(t) - y * np.sin(t)
            r0, c0 = int(np.floor(sr)), int(np.floor(sc))
            for rr, cc in ((r0, c0), (r0, c0 + 1), (r0 + 1, c0), (r0 + 1, c0 + 1)):
                if 0 <= rr < h and 0 <= cc < w:
                    out[r, c] += (1 - abs(sr - rr)) * (1 - abs(sc - cc)) * image[rr, cc]
    return out


@pytest.mark.parametrize("degrees", [15.0, -15.0, 7.5, 33.0])
def test_rotate_images_against_a_pixel_by_pixel_bilinear_reference(degrees):
    r = np.random.default_rng(1).random((2, 28, 28)) * 255
    got = rotate_images(r, degrees)
    for k in range(2):
        np.testing.assert_allclose(got[k], _rotate_reference(r[k], degrees), rtol=0, atol=1e-9)
    # uint8 images come back as the reference rounded to the nearest level
    u = r.astype(np.uint8)
    want = np.floor(np.stack([_rotate_reference(img, degrees) for img in u]) + 0.5)
    got_u = rotate_images(u, degrees)
    assert got_u.dtype == np.uint8
    assert np.abs(got_u.astype(int) - want).max() <= 1  # a .5 may round either way
    assert (got_u == want).mean() > 0.99


def test_rotate_images_agrees_with_pillow_and_turns_anticlockwise():
    from PIL import Image

    img = np.zeros((28, 28), np.float32)
    img[6:22, 6:22] = np.random.default_rng(2).random((16, 16)) * 255  # zero near the edge
    pil = np.asarray(Image.fromarray(img, mode="F").rotate(BOOK_ROTATION,
                                                           resample=Image.BILINEAR))
    np.testing.assert_allclose(rotate_images(img[None], BOOK_ROTATION)[0], pil, atol=1e-3)
    u = np.random.default_rng(3).integers(0, 256, (2, 28, 28)).astype(np.uint8)
    assert np.array_equal(rotate_images(u, 90), np.rot90(u, 1, axes=(1, 2)))


def test_expanded_data_with_rotations_adds_two_rotated_copies_lazily():
    img = np.random.default_rng(4).integers(0, 256, (3, 784)).astype(np.uint8)
    split = Split(img, np.array([1, 2, 3]), 1 / 256)
    assert len(expand_mnist(split)) == 15  # unchanged by default: the book's five copies
    ex = expand_mnist(split, rotations=BOOK_ROTATION)
    assert len(ex) == 21 and list(ex.labels) == [1, 2, 3] * 7
    assert ex.copies[5:] == (("rotate", 15.0), ("rotate", -15.0))
    rows = ex.raw(np.arange(21)).reshape(7, 3, 28, 28)
    images = img.reshape(3, 28, 28)
    assert np.array_equal(rows[0], images)
    for k, (down, right) in enumerate(SHIFTS):
        assert np.array_equal(rows[k], shift_images(images, down, right))
    assert np.array_equal(rows[5], rotate_images(images, 15.0))
    assert np.array_equal(rows[6], rotate_images(images, -15.0))
    # rows gathered in any order are the same rows
    pick = np.array([20, 0, 16, 5])
    assert np.array_equal(ex.raw(pick), rows.reshape(21, 784)[pick])
    only = expand_mnist(split, shifts=False, rotations=True)
    assert len(only) == 9 and np.array_equal(only.raw([3]), rows[5, 0].reshape(1, 784))


@pytest.mark.parametrize("kwargs, words", [({"shifts": False}, "shifts=True, rotations"),
                                           ({"rotations": 0}, "0 < θ < 90"),
                                           ({"rotations": 120.0}, "received rotations=120.0"),
                                           ({"rotations": "15"}, "an angle in degrees")])
def test_expand_mnist_refuses_what_it_cannot_do(kwargs, words):
    split = Split(np.zeros((2, 784), np.uint8), np.array([0, 1]), 1 / 256)
    with pytest.raises(ConfigError, match=words):
        expand_mnist(split, **kwargs)


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


@pytest.mark.parametrize("batch", [1, 3, 2000])
def test_outputs_in_batches_equal_one_feedforward_and_vote_from_them(batch):
    from gpunn.network import Network

    rng = np.random.default_rng(0)
    X, y = rng.random((11, 6)).astype(np.float32), rng.integers(0, 4, 11)
    nets = [Network([6, 5, 4], seed=s, backend="cpu") for s in range(3)]
    outs = [outputs(net, (X, y), batch=batch) for net in nets]
    for net, out in zip(nets, outs):
        assert out.shape == (11, 4)
        np.testing.assert_allclose(out, net.feedforward(X), rtol=1e-6, atol=1e-7)
    # the vote from recorded outputs is the vote of the networks
    assert vote_accuracy(outs, y) == Ensemble(nets).accuracy((X, y))
    assert vote_accuracy(outs, y) == np.mean(vote(outs) == y)
    with pytest.raises(ConfigError, match="one label per example"):
        vote_accuracy(outs, y[:5])


def test_book_two_conv_pool_row_builds_the_books_shapes():
    net = book.build(book.get("ch6-conv2"), seed=0, backend="cpu")
    assert net.num_params == (20 * 1 * 5 * 5 + 20 + 40 * 20 * 5 * 5 + 40 + 640 * 100 + 100
                              + 100 * 10 + 10)
    drop = book.build(book.get("ch6-dropout"), seed=0, backend="cpu")
    assert [layer.dropout for layer in drop.layers] == [0.0, 0.0, 0.5, 0.5, 0.5]
    assert drop.num_params == (520 + 20040 + 640 * 1000 + 1000 + 1000 * 1000 + 1000
                               + 10 * 1000 + 10)


def test_network3_compat_changes_init_and_both_scale_dropout_at_evaluation():
    row = book.get("ch6-dropout")
    book_net = book.build(row, seed=1, backend="cpu")
    net3 = book.build(row, seed=1, backend="cpu", compat="network3")
    fc_book, fc_3 = book_net.layers[2], net3.layers[2]
    # the book halves the weights out of dropped neurons at evaluation, as network3 does
    for net in (book_net, net3):
        assert [getattr(layer, "dropout_mode", None) for layer in net.layers[2:]] == \
            ["scale-at-eval"] * 3
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
