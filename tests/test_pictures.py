"""PNG pictures: they exist, have the promised size and are not blank (no screenshots compared)."""

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import matplotlib.image as mpimg  # noqa: E402

from nbjax import cli, compare, pictures  # noqa: E402
from nbjax.errors import InputError  # noqa: E402


def png(path):
    """(height, width) of a PNG and the variance of its pixels."""
    pixels = mpimg.imread(path)
    return pixels.shape[:2], float(pixels[..., :3].var())


def spots(shape=(60, 80)):
    image = np.full(shape, 0.01)
    slow, fast = shape
    image[slow // 6, fast // 4] = 500.0
    image[2 * slow // 3, 5 * fast // 8] = 50.0
    image[slow // 2, -fast // 4:] = 5.0
    return image


@pytest.mark.parametrize("image", [
    spots(),
    np.zeros((32, 32)),                              # all zero
    np.ones((1, 1)),                                 # one pixel
    np.full((3, 200), -1.0),                         # negative, very wide
    spots((300, 4)),                                 # very tall
    np.array([[np.nan, np.inf], [-np.inf, 1.0]]),    # not finite
    np.random.default_rng(1).exponential(1.0, (2100, 1500)),  # reduced for display
], ids=["spots", "zeros", "1x1", "wide-negative", "tall", "nan-inf", "large"])
def test_preview_size_and_not_blank(image, tmp_path):
    path = tmp_path / "p.png"
    pictures.write_preview(path, image, beam_center_px=(image.shape[1] / 2, image.shape[0] / 2))
    width, height = pictures.preview_size(image.shape)
    shape, variance = png(path)
    assert shape == (height, width)
    assert variance > 0
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temporary file left


def test_preview_marks_the_beam_centre(tmp_path):
    """The red cross is drawn where the beam is: red pixels appear there and only there."""
    image = np.zeros((100, 100))
    pictures.write_preview(tmp_path / "a.png", image, beam_center_px=(25, 75))
    pictures.write_preview(tmp_path / "b.png", image)
    a, b = mpimg.imread(tmp_path / "a.png"), mpimg.imread(tmp_path / "b.png")
    red = lambda p: (p[..., 0] > 0.8) & (p[..., 1] < 0.3) & (p[..., 2] < 0.3)
    assert red(a).sum() > 10 and red(b).sum() == 0
    rows, cols = np.nonzero(red(a))
    # the axes span 0.09..0.83 of the width and 0.07..0.92 of the height (from the bottom)
    height, width = a.shape[:2]
    x = (cols.mean() / width - 0.09) / 0.74 * 100
    y = (rows.mean() / height - (1 - 0.92)) / 0.85 * 100
    assert abs(x - 25) < 3 and abs(y - 75) < 3


def test_beam_centre_off_the_image_is_left_out(tmp_path):
    pictures.write_preview(tmp_path / "p.png", spots(), beam_center_px=(1e6, -5))
    shape, variance = png(tmp_path / "p.png")
    assert shape == pictures.preview_size(spots().shape)[::-1] and variance > 0


@pytest.mark.parametrize("pair", [
    (spots(), spots() * 1.1),
    (np.zeros((8, 8)), np.zeros((8, 8))),
    (np.ones((1, 1)), np.full((1, 1), np.nan)),
    (spots((1200, 1100)), spots((1200, 1100))),
], ids=["spots", "zeros", "1x1-nan", "large"])
def test_comparison_size_and_not_blank(pair, tmp_path):
    first, second = pair
    path = tmp_path / "c.png"
    pictures.write_comparison(path, first, second, compare.metrics(first, np.nan_to_num(second)))
    shape, variance = png(path)
    assert shape == pictures.COMPARISON_SIZE[::-1]
    assert variance > 0


def test_radial_profile_by_hand():
    image = np.zeros((4, 4))
    image[1:3, 1:3] = 4.0
    r, profile = pictures.radial_profile(image, bins=2)
    # pixel-centre radii from the middle (2, 2): 0.71 (the four set pixels), 1.58 (8 pixels), 2.12 (4 corners);
    # two rings split at 2.12 / 2 = 1.06
    assert profile.tolist() == pytest.approx([4.0, 0.0])
    assert r.tolist() == pytest.approx([2.1213203 / 4, 3 * 2.1213203 / 4])
    # about another centre
    _, profile = pictures.radial_profile(image, center=(0, 0), bins=1)
    assert profile.tolist() == pytest.approx([1.0])


def test_without_matplotlib_the_message_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(InputError, match=r"pip install 'nbjax\[plot\]'"):
        pictures.write_preview(tmp_path / "p.png", spots())


def test_cli_preview_without_matplotlib_is_refused_before_rendering(in_inputs_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    before = sorted(p.name for p in in_inputs_dir.iterdir())
    args = "-hkl small.hkl -cell 100 100 100 90 90 90 -N 5 -detpixels 8 --preview p.png --no-compile-cache".split()
    assert cli.main(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and "pip install 'nbjax[plot]'" in err
    assert sorted(p.name for p in in_inputs_dir.iterdir()) == before


def test_cli_preview(in_inputs_dir, capsys):
    args = ("-hkl small.hkl -cell 100 100 100 90 90 90 -lambda 1.2 -N 5 -detpixels 40 -pixel 0.4 -distance 100 "
            "-detpixels_y 24 -nonoise --preview prev.png --no-compile-cache").split()
    assert cli.main(args) == 0
    shape, variance = png(in_inputs_dir / "prev.png")
    width, height = pictures.preview_size((24, 40))
    assert shape == (height, width) and variance > 0
