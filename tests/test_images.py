"""load_digit: a photo-like picture of a digit becomes an MNIST-like input vector."""

from __future__ import annotations

import numpy as np
import pytest

from gpunn.errors import DataError
from gpunn.images import load_digit

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageDraw  # noqa: E402


def draw_one(path, size=(300, 200), paper="white", ink="black", mode="RGB", fmt=None):
    """A '1'-like stroke, off-centre, on a larger canvas."""
    image = Image.new(mode, size, paper)
    ImageDraw.Draw(image).line([(40, 30), (70, 170)], fill=ink, width=12)
    image.save(path, format=fmt)
    return path


def ink_stats(vector):
    field = vector.reshape(28, 28)
    rows = np.flatnonzero((field > 0.2).any(axis=1))
    cols = np.flatnonzero((field > 0.2).any(axis=0))
    ys, xs = np.indices(field.shape)
    com = ((ys * field).sum() / field.sum(), (xs * field).sum() / field.sum())
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1, com


def test_dark_ink_on_paper_is_inverted_scaled_and_centred(tmp_path):
    vector = load_digit(draw_one(tmp_path / "one.png"))
    assert vector.shape == (784,) and vector.dtype == np.float32
    assert vector.min() == 0.0 and vector.max() <= 1.0 and vector.max() > 0.9
    field = vector.reshape(28, 28)
    assert field[0].max() == 0 and field[:, 0].max() == 0  # background is black, as in MNIST
    height, width, (cy, cx) = ink_stats(vector)
    assert 19 <= height <= 21 and width < height  # longer side 20 px, aspect kept
    assert abs(cy - 13.5) <= 0.6 and abs(cx - 13.5) <= 0.6  # centred by centre of mass


def test_light_ink_on_black_gives_the_same_vector(tmp_path):
    paper = load_digit(draw_one(tmp_path / "paper.png"))
    board = load_digit(draw_one(tmp_path / "board.png", paper="black", ink="white"))
    np.testing.assert_allclose(board, paper, atol=1e-6)


def test_grey_jpeg_and_transparent_png(tmp_path):
    jpeg = load_digit(draw_one(tmp_path / "one.jpg", paper=200, ink=40, mode="L", fmt="JPEG"))
    clear = load_digit(draw_one(tmp_path / "clear.png", paper=(0, 0, 0, 0),
                                ink=(0, 0, 0, 255), mode="RGBA"))
    reference = load_digit(draw_one(tmp_path / "one.png"))
    for vector in (jpeg, clear):
        height, _, (cy, cx) = ink_stats(vector)
        assert 19 <= height <= 21 and abs(cy - 13.5) <= 0.6 and abs(cx - 13.5) <= 0.6
        assert np.abs(vector - reference).mean() < 0.05


def test_not_an_image(tmp_path):
    path = tmp_path / "digit.png"
    path.write_text("not a picture")
    with pytest.raises(DataError, match=r"digit.png: not an image gpunn can read"):
        load_digit(path)
    with pytest.raises(DataError, match=r"absent.png: cannot read the image"):
        load_digit(tmp_path / "absent.png")


def test_blank_picture(tmp_path):
    path = tmp_path / "blank.png"
    Image.new("L", (40, 40), 255).save(path)
    with pytest.raises(DataError, match="blank.png: no digit found"):
        load_digit(path)
