"""PNG pictures: they exist, have the promised size, and draw the image they were given.

No screenshots are compared: the image panels of a PNG are read back pixel by
pixel and checked against the grey level the log scale asks for (gray_r: the
floor white, the brightest pixel black), so a blank, shifted or mis-scaled
panel fails.  Axis labels, titles and colour bars are not checked.
"""

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


def panel_mismatch(pixels, box, expected_grey, skip_red=True):
    """Screen pixels of the panel at ``box`` (left, bottom, width, height in figure
    fractions) whose grey level is that of neither its data cell nor a neighbour.

    ``expected_grey``: (rows, cols) grey level in [0, 1] of each drawn data cell.
    Returns (number of mismatching screen pixels beyond what resampling explains,
    number checked): where a cell is drawn smaller than two screen pixels,
    matplotlib's resampling blends a few of them (25 in 500,000 for the 2100 x
    1500 image), so up to 1e-4 of the pixels may differ there.  Two screen
    pixels along the panel's edges (the frame) are left out, and so are red
    pixels (the beam marker) when ``skip_red``.
    """
    height, width = pixels.shape[:2]
    left, bottom, w, h = box
    x0, x1 = left * width, (left + w) * width
    y0, y1 = (1 - bottom - h) * height, (1 - bottom) * height
    rows, cols = expected_grey.shape
    ys = np.arange(int(np.ceil(y0)) + 2, int(np.floor(y1)) - 2)
    xs = np.arange(int(np.ceil(x0)) + 2, int(np.floor(x1)) - 2)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    rgb = pixels[yy, xx, :3]
    grey = rgb[..., 0]
    row = np.clip(((yy + 0.5 - y0) / (y1 - y0) * rows).astype(int), 0, rows - 1)
    col = np.clip(((xx + 0.5 - x0) / (x1 - x0) * cols).astype(int), 0, cols - 1)
    ok = np.zeros(grey.shape, bool)
    # cells drawn smaller than two screen pixels are resampled: look one cell further
    reach = 1 if min((y1 - y0) / rows, (x1 - x0) / cols) >= 2 else 2
    for dr in range(-reach, reach + 1):
        for dc in range(-reach, reach + 1):
            near = expected_grey[np.clip(row + dr, 0, rows - 1), np.clip(col + dc, 0, cols - 1)]
            ok |= np.abs(grey - near) <= 2.5 / 255
    if skip_red:  # the marker and its anti-aliased rim (2 screen pixels)
        red = np.abs(rgb[..., 0] - rgb[..., 1]) > 0.02
        rim = red.copy()
        for shift in range(1, 3):
            for axis in (0, 1):
                rim |= np.roll(red, shift, axis) | np.roll(red, -shift, axis)
        ok |= rim
    allowed = 0 if reach == 1 else int(1e-4 * ok.size)
    return max(0, int((~ok).sum()) - allowed), ok.size


def log_grey(image, low=None, high=None):
    """Grey level of each displayed cell of ``image`` in a preview (gray_r, log scale)."""
    shown, lo, hi = pictures.log_scaled(pictures.block_max(pictures.finite_image(image)))
    lo = lo if low is None else low
    hi = hi if high is None else high
    return 1.0 - np.clip((shown - lo) / (hi - lo), 0, 1)


PREVIEW_AXES = (0.09, 0.07, 0.74, 0.85)


def assert_preview_draws(path, image):
    """The preview's image panel shows ``image`` on the promised grey scale."""
    pixels = mpimg.imread(path)
    bad, checked = panel_mismatch(pixels, PREVIEW_AXES, log_grey(image))
    assert bad == 0 and checked > 100_000, (bad, checked)


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
    shape, _ = png(path)
    assert shape == (height, width)
    assert_preview_draws(path, image)
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temporary file left


def test_preview_marks_the_beam_centre(tmp_path):
    """The red cross is drawn where the beam is: red pixels appear there and only there."""
    image = np.zeros((100, 100))
    pictures.write_preview(tmp_path / "a.png", image, beam_center_px=(25, 75))
    pictures.write_preview(tmp_path / "b.png", image)
    a, b = mpimg.imread(tmp_path / "a.png"), mpimg.imread(tmp_path / "b.png")
    red = lambda p: (p[..., 0] > 0.8) & (p[..., 1] < 0.3) & (p[..., 2] < 0.3)
    assert red(a).sum() > 10 and red(b).sum() == 0
    assert_preview_draws(tmp_path / "a.png", image)
    assert_preview_draws(tmp_path / "b.png", image)
    rows, cols = np.nonzero(red(a))
    # the axes span 0.09..0.83 of the width and 0.07..0.92 of the height (from the bottom)
    height, width = a.shape[:2]
    x = (cols.mean() / width - 0.09) / 0.74 * 100
    y = (rows.mean() / height - (1 - 0.92)) / 0.85 * 100
    assert abs(x - 25) < 3 and abs(y - 75) < 3


def test_beam_centre_off_the_image_is_left_out(tmp_path):
    pictures.write_preview(tmp_path / "p.png", spots(), beam_center_px=(1e6, -5))
    shape, _ = png(tmp_path / "p.png")
    assert shape == pictures.preview_size(spots().shape)[::-1]
    pixels = mpimg.imread(tmp_path / "p.png")
    red = (pixels[..., 0] > 0.8) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    assert red.sum() == 0  # no marker anywhere
    bad, _ = panel_mismatch(pixels, PREVIEW_AXES, log_grey(spots()), skip_red=False)
    assert bad == 0


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
    shape, _ = png(path)
    assert shape == pictures.COMPARISON_SIZE[::-1]
    assert_comparison_draws(path, first, np.nan_to_num(second))


def assert_comparison_draws(path, first, second):
    """Panels A and B show the two images on one log scale."""
    pixels = mpimg.imread(path)
    both = np.concatenate([pictures.block_max(pictures.finite_image(first)).ravel(),
                           pictures.block_max(pictures.finite_image(second)).ravel()])[None, :]
    _, low, high = pictures.log_scaled(both)
    for k, img in enumerate((first, second)):
        shown = np.log10(np.maximum(pictures.block_max(pictures.finite_image(img)), 10.0 ** low))
        grey = 1.0 - np.clip((shown - low) / (high - low), 0, 1)
        bad, checked = panel_mismatch(pixels, (0.03 + 0.245 * k, 0.12, 0.19, 0.72), grey, skip_red=False)
        assert bad == 0 and checked > 50_000, (k, bad, checked)


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
    shape, _ = png(in_inputs_dir / "prev.png")
    width, height = pictures.preview_size((24, 40))
    assert shape == (height, width)
    image = np.fromfile(in_inputs_dir / "floatimage.bin", np.float32).reshape(24, 40)
    assert image.max() > 100 * np.median(image)  # spots to draw
    assert_preview_draws(in_inputs_dir / "prev.png", image)
