"""Comparison metrics against values worked out by hand, and the ``nbjax compare`` command."""

import json
import math

import numpy as np
import pytest

from nbjax import cli, compare
from nbjax.errors import InputError
from nbjax.io import nanobragg_header, write_float_image, write_pgm, write_smv


def test_scaled_copy():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    m = compare.metrics(a, 2 * a)
    assert m.pearson_r == pytest.approx(1.0)
    assert m.sum_ratio == pytest.approx(2.0)          # 20 / 10
    assert m.max_rel_err == pytest.approx(1.0)        # |2a - a| / a
    assert m.rmse == pytest.approx(math.sqrt(7.5))    # sqrt((1 + 4 + 9 + 16) / 4)
    assert m.mean_peak_distance == 0.0                # one maximum, at (1, 1), in both
    assert not m.strict


def test_pearson_r_by_hand():
    # deviations from the mean 2.5: a (-1.5, -0.5, 0.5, 1.5), b (-1.5, 0.5, -0.5, 1.5)
    # r = (2.25 - 0.25 - 0.25 + 2.25) / sqrt(5 * 5) = 0.8
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[1.0, 3.0], [2.0, 4.0]])
    m = compare.metrics(a, b)
    assert m.pearson_r == pytest.approx(0.8)
    assert m.sum_ratio == 1.0
    assert m.rmse == pytest.approx(math.sqrt(2 / 4))
    assert m.max_rel_err == pytest.approx(0.5)        # |3 - 2| / 2


def test_max_relative_error_ignores_pixels_below_one_thousandth_of_the_maximum():
    a = np.array([[1000.0, 0.5], [2.0, 0.0]])
    b = np.array([[1001.0, 5.0], [2.2, 7.0]])
    # threshold 1e-3 * 1000 = 1: only 1000 (error 1e-3) and 2 (error 0.1) count; 0.5 (error 9) and 0 do not
    m = compare.metrics(a, b)
    assert m.max_rel_err == pytest.approx(0.1)
    assert m.sum_ratio == pytest.approx(1015.2 / 1002.5)
    assert m.rmse == pytest.approx(math.sqrt((1 + 4.5 ** 2 + 0.2 ** 2 + 49) / 4))


def test_mean_peak_distance_with_known_shifts():
    a = np.zeros((40, 50))
    b = np.zeros((40, 50))
    a[5, 5], b[5, 8] = 100.0, 100.0          # moved 3 pixels along fast
    a[20, 30], b[24, 33] = 50.0, 50.0        # moved (4, 3): 5 pixels
    a[35, 10], b[35, 10] = 30.0, 30.0        # not moved
    a[30, 45] = 0.5                          # below 1 % of the maximum: not a peak
    m = compare.metrics(a, b)
    assert m.mean_peak_distance == pytest.approx((3 + 5 + 0) / 3)
    assert m.pearson_r < 0.5


def test_identical_images_are_strict_and_degenerate_cases():
    a = np.arange(12.0).reshape(3, 4)
    assert compare.metrics(a, a).strict
    assert compare.metrics(a, a).as_dict() == dict(pearson_r=1.0, sum_ratio=1.0, max_rel_err=0.0, rmse=0.0,
                                                   mean_peak_distance=0.0)
    zeros = np.zeros((3, 4))
    m = compare.metrics(zeros, zeros)
    assert m.pearson_r == 1.0 and math.isnan(m.sum_ratio) and m.max_rel_err == 0.0 and m.rmse == 0.0
    m = compare.metrics(np.ones((3, 4)), np.full((3, 4), 2.0))
    assert m.pearson_r == 0.0 and m.sum_ratio == 2.0
    m = compare.metrics(a, zeros)
    assert m.mean_peak_distance == math.inf  # A has peaks, B none
    with pytest.raises(InputError, match="differ in shape"):
        compare.metrics(zeros, np.zeros((4, 3)))


def test_not_finite_pixels_give_nan_not_errors():
    a = np.arange(12.0).reshape(3, 4)
    b = a.copy()
    b[1, 1] = np.nan
    m = compare.metrics(a, b)
    assert math.isnan(m.rmse) and not m.strict


# --------------------------------------------------------------------------- the command

def smv(path, image):
    header = nanobragg_header(
        fpixels=image.shape[1], spixels=image.shape[0], pixel_size_mm=0.1, distance_mm=100, wavelength_A=1,
        beam_center_x_mm=1, beam_center_y_mm=1, adxv_center_x_mm=1, adxv_center_y_mm=1, mosflm_center_x_mm=1,
        mosflm_center_y_mm=1, denzo_x_beam_mm=1, denzo_y_beam_mm=1, dials_origin_mm=(0, 0, 0), xds_orgx=1,
        xds_orgy=1, close_distance_mm=100, phi_deg=0, osc_start_deg=0, osc_range_deg=0, twotheta_deg=0)
    write_smv(path, image.astype(np.uint16), header)


@pytest.fixture
def images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    write_float_image("a.bin", a)
    write_float_image("b.bin", 2 * a)
    smv("a.img", a)
    write_pgm("a.pgm", a.astype(np.uint8), 1.0)
    np.save("a.npy", a)
    np.save("flat.npy", a.ravel())
    np.save("cube.npy", np.zeros((2, 2, 2)))
    np.save("other.npy", np.zeros((3, 2)))
    np.save("text.npy", np.array(["a", "b"]))
    (tmp_path / "trunc.npy").write_bytes(b"\x93NUMPY\x01\x00")
    return a


def run(args, capsys):
    code = cli.main(["compare", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_text_and_json(images, capsys):
    code, out, _ = run(["a.bin", "b.bin", "--shape", "2", "3"], capsys)
    assert code == 0
    values = dict(line.split() for line in out.strip().splitlines())
    assert float(values["sum_ratio"]) == pytest.approx(2.0) and float(values["pearson_r"]) == pytest.approx(1.0)
    code, out, _ = run(["a.bin", "b.bin", "--shape=2,3", "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and set(result) == {"pearson_r", "sum_ratio", "max_rel_err", "rmse", "mean_peak_distance"}
    assert result["rmse"] == pytest.approx(math.sqrt(np.mean(images ** 2)))


def test_compare_shape_from_nanobragg_flags(images, capsys):
    code, out, _ = run(["a.bin", "b.bin", "-detpixels_x", "3", "-detpixels_y", "2", "--json"], capsys)
    assert code == 0 and json.loads(out)["sum_ratio"] == pytest.approx(2.0)
    code, _, err = run(["a.bin", "b.bin", "-detpixels", "3"], capsys)
    assert code == 2 and "a.bin: holds 6 floats, expected 3x3" in err
    code, _, err = run(["a.bin", "b.bin", "-detpixels_x", "3"], capsys)
    assert code == 2 and "give both sizes" in err


@pytest.mark.parametrize("first, second", [("a.img", "a.bin"), ("a.bin", "a.img"), ("a.pgm", "a.npy"),
                                           ("a.npy", "a.img"), ("flat.npy", "a.img")])
def test_compare_reads_every_format(images, capsys, first, second):
    code, out, err = run([first, second, "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["pearson_r"] == pytest.approx(1.0) and result["rmse"] == pytest.approx(0.0)


def test_compare_json_writes_null_for_nan(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save("z.npy", np.zeros((2, 2)))
    code, out, _ = run(["z.npy", "z.npy", "--json"], capsys)
    assert code == 0 and json.loads(out)["sum_ratio"] is None and "NaN" not in out


@pytest.mark.parametrize("args, message", [
    (["a.bin", "b.bin"], "need --shape"),
    (["a.bin", "b.bin", "--shape", "3", "3"], "a.bin: holds 6 floats, expected 3x3"),
    (["a.bin", "b.bin", "--shape", "2"], "--shape: needs two integers"),
    (["a.bin", "b.bin", "--shape", "2", "x"], "--shape: expected an integer"),
    (["a.bin", "b.bin", "--shape", "0", "6"], "--shape: sizes must be positive"),
    (["a.bin"], "give two images"),
    (["a.bin", "b.bin", "c.bin", "--shape", "2", "3"], "give two images"),
    (["a.bin", "missing.bin", "--shape", "2", "3"], "missing.bin"),
    (["a.img", "cube.npy"], "cube.npy: expected a non-empty 2-D image"),
    (["a.img", "text.npy"], "text.npy: .npy file does not hold a real-valued array"),
    (["a.img", "trunc.npy"], "trunc.npy: not a readable .npy file"),
    (["a.img", "other.npy"], "images differ in shape"),
    (["a.img", "b.bin", "--png"], "--png: needs a value"),
    (["a.img", "a.bin", "--frob"], "--frob: unknown option"),
])
def test_compare_bad_input(images, capsys, args, message):
    code, out, err = run(args, capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_compare_png(images, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.image as mpimg

    from nbjax import pictures

    code, out, _ = run(["a.img", "b.bin", "--png", "cmp.png"], capsys)
    assert code == 0 and "pearson_r" in out
    from test_pictures import assert_comparison_draws

    pixels = mpimg.imread(tmp_path / "cmp.png")
    assert pixels.shape[:2] == pictures.COMPARISON_SIZE[::-1]
    assert_comparison_draws(tmp_path / "cmp.png", images, 2 * images)  # a.img holds a, b.bin 2a
