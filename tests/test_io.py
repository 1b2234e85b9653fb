"""Tests of nbjax.io: the file formats, checked against files written by nanoBragg.c."""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import pytest

from nbjax.errors import InputError
from nbjax.io import (
    HKLTable,
    atomic_open,
    atomic_write,
    c_atof,
    c_atoi,
    c_strtod,
    is_number,
    nanobragg_header,
    parse_float,
    parse_int,
    read_fdump,
    read_float_image,
    read_hkl,
    read_mosflm_matrix,
    read_pgm,
    read_smv,
    read_sourcefile,
    smv_value,
    write_fdump,
    write_float_image,
    write_pgm,
    write_smv,
)

GOLDEN = Path(__file__).parent / "golden"
INPUTS = GOLDEN / "inputs"
CASES = GOLDEN / "cases"


def gunzip(path: Path) -> bytes:
    with gzip.open(path, "rb") as handle:
        return handle.read()


def write_text(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def leftover_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- numbers

@pytest.mark.parametrize(
    "text, expected",
    [
        ("1.5e3x", 1500.0),
        ("-", 0.0),
        ("", 0.0),
        ("abc", 0.0),
        ("1e", 1.0),
        ("1e+", 1.0),
        (".5", 0.5),
        ("-.5e-1", -0.05),
        ("  +42abc", 42.0),
        ("\t\n 7", 7.0),
        ("1.", 1.0),
        (".", 0.0),
        ("0x1p3", 8.0),
        ("-0x1.8p1", -3.0),
        ("0x", 0.0),
        ("0xg", 0.0),
        ("1e999", math.inf),
        ("-1e999", -math.inf),
        ("1e-999", 0.0),
        ("inf", math.inf),
        ("-Infinity", -math.inf),
        ("INFx", math.inf),
        ("1_000", 1.0),
        ("١٢", 0.0),  # non-ASCII digits are not digits to C
    ],
)
def test_c_atof(text, expected):
    assert c_atof(text) == expected


def test_c_atof_nan_and_consumed_length():
    assert math.isnan(c_atof("nan"))
    assert math.isnan(c_atof("NaN(123)rest"))
    assert c_strtod("  12.5kg") == (12.5, 6)
    assert c_strtod("x") == (0.0, 0)
    assert c_strtod("1e5e5") == (1e5, 3)


@pytest.mark.parametrize(
    "text, expected",
    [("  42abc", 42), ("abc", 0), ("-17", -17), ("+3.9", 3), ("-", 0), ("", 0), (" \t-0", 0),
     ("1e3", 1), ("9" * 30, (1 << 63) - 1), ("-" + "9" * 5000, -(1 << 63))],
)
def test_c_atoi(text, expected):
    assert c_atoi(text) == expected


def test_strict_parsers():
    assert parse_float("1.5e3", "-distance") == 1500.0
    assert parse_float(" 2 ", "-distance") == 2.0
    assert parse_float("0x10", "-x") == 16.0
    assert parse_int("-12", "-N") == -12
    for bad in ["1.5e3x", "", "abc", "1_000", "-", "1e"]:
        with pytest.raises(InputError, match=r"-distance: expected a number"):
            parse_float(bad, "-distance")
    for bad in ["1.5", "1e3", "", "x", "9" * 40]:
        with pytest.raises(InputError, match=r"-N: "):
            parse_int(bad, "-N")
    assert is_number("-.5e-1") and is_number("inf") and not is_number("5 6") and not is_number("")


# --------------------------------------------------------------------------- hkl

def test_read_small_hkl():
    table = read_hkl(INPUTS / "small.hkl")
    assert table.hkl_min == (-12, -12, -12)
    assert table.hkl_max == (12, 12, 12)
    assert table.ranges == (25, 25, 25)
    assert table.count == 15625
    assert table.values.shape == (26, 26, 26)
    assert table.values.dtype == np.float64
    assert table.values[12, 12, 12] == 1000.0  # F(0,0,0)
    assert table.values[0, 0, 0] == 76.14  # first line: -12 -12 -12 76.14
    assert table.values[0, 0, 1] == 162.80
    # the extra high-end slabs C allocates stay zero
    assert not table.values[25].any() and not table.values[:, 25].any() and not table.values[:, :, 25].any()
    assert not table.values.flags.writeable


def test_read_sparse_hkl_with_default_F():
    table = read_hkl(INPUTS / "sparse.hkl", default_F=10.0)
    assert table.hkl_min == (-6, -6, -6) and table.hkl_max == (6, 6, 6)
    assert table.count == 553
    v = table.values
    assert v[0, 0, 0] == 181.363  # -6 -6 -6 is listed
    assert v[0, 0, 1] == 10.0  # -6 -6 -5 is not
    assert v[13, 0, 0] == 0.0 and v[0, 13, 0] == 0.0 and v[0, 0, 13] == 0.0 and v[13, 13, 13] == 0.0
    listed = (v[:13, :13, :13] != 10.0).sum()
    assert listed == 553
    without_default = read_hkl(INPUTS / "sparse.hkl")
    assert without_default.values[0, 0, 1] == 0.0


def test_read_scaled_hkl():
    """The large table (64,333 reflections; its reading speed is in benchmarks/)."""
    table = read_hkl(INPUTS / "scaled.hkl")
    assert table.count == 64333
    assert table.values[23 - table.hkl_min[0], 15 - table.hkl_min[1], -1 - table.hkl_min[2]] == 23.00
    # every line of the file lands in its slot
    rows = np.loadtxt(INPUTS / "scaled.hkl")
    assert rows.shape[0] == 64333
    hkl = rows[:, :3].astype(int) - np.asarray(table.hkl_min)
    np.testing.assert_array_equal(table.values[hkl[:, 0], hkl[:, 1], hkl[:, 2]], rows[:, 3])
    assert tuple(rows[:, :3].min(0).astype(int)) == tuple(table.hkl_min)
    assert tuple(rows[:, :3].max(0).astype(int)) == tuple(table.hkl_max)


def test_hkl_extra_columns_negative_indices_comments_commas(tmp_path):
    path = write_text(
        tmp_path,
        "extra.hkl",
        "# h k l F sigma phase\n"
        "-2 0 3 10.5 0.3 90.0\n"
        "\n"
        "  1, -1, 0, 20  # trailing comment\n"
        "0 0 0 5 1 2 3 4 5 6 7\r\n"
        "-2 0 3 11.5\n",  # duplicate: the later line wins
    )
    table = read_hkl(path)
    assert table.hkl_min == (-2, -1, 0) and table.hkl_max == (1, 0, 3)
    assert table.count == 4
    assert table.values.shape == (5, 3, 5)
    assert table.values[0, 1, 3] == 11.5
    assert table.values[3, 0, 0] == 20.0
    assert table.values[2, 1, 0] == 5.0


def test_hkl_fast_and_slow_paths_agree(tmp_path):
    text = "1 2 3 4\n-1 0 2 7.5 9\n1 2 3 6\n"
    fast = read_hkl(write_text(tmp_path, "a.hkl", text))
    slow = read_hkl(write_text(tmp_path, "b.hkl", text + "# é\n"))  # non-ASCII forces the line reader
    assert fast == slow
    assert fast.values[2, 2, 1] == 6.0


@pytest.mark.parametrize(
    "content, message",
    [
        ("1 2 3 4\n1 2 3\n", r"line 2: expected 'h k l F'"),
        ("1 2 3 4\n1 2 x 4\n", r"line 2: .*'x' is not a finite number"),
        ("1 2 3 abc\n", r"line 1: .*'abc'"),
        ("1 2 3 nan\n", r"line 1: .*'nan'"),
        ("1 2 3 1e999\n", r"line 1: "),
        ("", r"no reflections"),
        ("# only a comment\n\n", r"no reflections"),
        ("1 2 3 4\n1.5 2 3 4\n", r"line 2: Miller indices must be integers, got h=1.5"),
        ("0 0 0 1\n100000 100000 100000 1\n", r"too large"),
        ("1e300 0 0 1\n", r"out of range"),
        ("1 2 3 4\n\xff 2 3 4\n", r"line 2"),
    ],
)
def test_hkl_malformed(tmp_path, content, message):
    path = tmp_path / "bad.hkl"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(InputError, match=message) as info:
        read_hkl(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_hkl_integer_valued_indices_accepted(tmp_path):
    table = read_hkl(write_text(tmp_path, "f.hkl", "1.0 -2.0 3e0 4\n"))
    assert table.hkl_min == (1, -2, 3)


def test_missing_file_is_input_error(tmp_path):
    for reader in (read_hkl, read_fdump, read_mosflm_matrix, read_smv, read_pgm, read_sourcefile, read_float_image):
        with pytest.raises(InputError, match="nope.txt: cannot read"):
            reader(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="cannot read"):
        read_hkl(tmp_path)  # a directory


# --------------------------------------------------------------------------- Fdump.bin

def test_fdump_round_trip(tmp_path):
    table = read_hkl(INPUTS / "sparse.hkl", default_F=3.0)
    write_fdump(tmp_path / "Fdump.bin", table)
    back = read_fdump(tmp_path / "Fdump.bin")
    assert np.array_equal(back.values, table.values)
    assert back.hkl_min == table.hkl_min and back.hkl_max == table.hkl_max
    assert back.count == 13 * 13 * 13  # what C sets after reading a dump
    assert leftover_files(tmp_path) == ["Fdump.bin"]


def test_fdump_has_the_c_layout(tmp_path):
    table = read_hkl(INPUTS / "small.hkl")
    path = tmp_path / "Fdump.bin"
    write_fdump(path, table)
    raw = path.read_bytes()
    header = b"-12 12 -12 12 -12 12\n\f"
    assert raw.startswith(header)
    assert len(raw) == len(header) + 26 * 26 * 26 * 8
    grid = np.frombuffer(raw[len(header):], dtype="<f8").reshape(26, 26, 26)
    assert grid[12, 12, 12] == 1000.0 and grid[0, 0, 0] == 76.14
    assert np.array_equal(grid, table.values)


def test_fdump_malformed(tmp_path):
    table = read_hkl(INPUTS / "sparse.hkl")
    good = tmp_path / "good.bin"
    write_fdump(good, table)
    raw = good.read_bytes()
    cases = {
        "truncated.bin": raw[:-1],
        "extra.bin": raw + b"\0",
        "noheader.bin": raw[raw.index(b"\f") + 1:],
        "text.bin": b"hello\n",
        "empty.bin": b"",
        "inverted.bin": b"1 0 0 0 0 0\n\f" + bytes(8 * 2 * 2 * 2),
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(InputError, match=name):
            read_fdump(path)


# --------------------------------------------------------------------------- MOSFLM matrix

def test_read_mosflm_matrix():
    matrix = read_mosflm_matrix(INPUTS / "A.mat")
    assert matrix.shape == (3, 3)
    a_star, b_star, c_star = matrix[:, 0], matrix[:, 1], matrix[:, 2]
    assert a_star.tolist() == [-0.02837711, -0.02871390, 0.01050048]
    assert b_star.tolist() == [-0.00305386, 0.01019549, -0.03209440]
    assert c_star.tolist() == [0.02535816, -0.01400049, -0.01036054]


def test_mosflm_matrix_is_a_stream_and_ignores_trailing_lines(tmp_path):
    path = write_text(tmp_path, "m.mat", "1 2 3 4\n5 6\n7 8 9\n 0.000 0.000 0.000\nSYMM P1\n")
    assert read_mosflm_matrix(path).tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


@pytest.mark.parametrize(
    "content, message",
    [("1 2 3\n4 5 6\n7 8\n", "expected 9 numbers"), ("1 2 3\n4 x 6\n7 8 9\n", "line 2: .*'x'"),
     ("", "found 0"), ("1 2 3\n4 5 6\n7 8 nan\n", "line 3")],
)
def test_mosflm_matrix_malformed(tmp_path, content, message):
    path = write_text(tmp_path, "bad.mat", content)
    with pytest.raises(InputError, match=message) as info:
        read_mosflm_matrix(path)
    assert "bad.mat" in str(info.value)


# --------------------------------------------------------------------------- SMV

def test_read_smv_header_img():
    image = read_smv(INPUTS / "header.img")
    assert (image.width, image.height, image.header_bytes) == (160, 120, 512)
    assert image.data.shape == (120, 160) and image.data.dtype == np.uint16
    assert smv_value(image.header, "PIXEL_SIZE") == 0.15
    assert smv_value(image.header, "DISTANCE") == 120.0
    assert smv_value(image.header, "PHI") == 3.0
    assert math.isnan(smv_value(image.header, "CLOSE_DISTANCE"))
    assert "\0" not in image.header and image.header.startswith("{\nHEADER_BYTES=512;")


def test_smv_value_quirks():
    header = gunzip(CASES / "p40_noise_seeded" / "int.img.gz")[:512].decode("ascii")
    # DISTANCE=100 comes first, CLOSE_DISTANCE=100 later: the last match wins.
    changed = header.replace("CLOSE_DISTANCE=100;", "CLOSE_DISTANCE=55;")
    assert smv_value(header, "DISTANCE") == 100.0
    assert smv_value(changed, "DISTANCE") == 55.0
    assert smv_value(header, "ORGX") == 81.5  # matches XDS_ORGX
    assert math.isnan(smv_value(header, "NO_SUCH_KEY"))
    assert smv_value("A=1;\nKEY", "KEY") == 0.0  # no '=' after the key
    assert smv_value("KEY=abc;", "KEY") == 0.0  # atof of text that is no number
    assert smv_value("KEY= 2.5mm;", "KEY") == 2.5


def test_read_mask_img():
    mask = read_smv(INPUTS / "mask.img")
    assert (mask.width, mask.height) == (128, 128)
    zero = mask.data == 0
    assert zero.sum() == 1028  # column 5 (128 pixels) and a 30x30 block
    assert zero[:, 5].all()
    assert zero[10:40, 60:90].all()
    assert set(np.unique(mask.data).tolist()) == {0, 1}


def p40_header_values(**changes):
    values = dict(
        fpixels=160, spixels=160, pixel_size_mm=0.2, distance_mm=100.0, wavelength_A=1.2,
        beam_center_x_mm=16.1, beam_center_y_mm=16.1, adxv_center_x_mm=16.2, adxv_center_y_mm=15.8,
        mosflm_center_x_mm=16.1, mosflm_center_y_mm=16.1, denzo_x_beam_mm=16.2, denzo_y_beam_mm=16.2,
        dials_origin_mm=(-16.2, 16.2, -100.0), xds_orgx=81.5, xds_orgy=81.5, close_distance_mm=100.0,
        phi_deg=0.0, osc_start_deg=0.0, osc_range_deg=0.0, twotheta_deg=0.0,
    )
    values.update(changes)
    return values


@pytest.mark.parametrize(
    "case_file",
    ["p40_noise_seeded/int.img.gz", "p40_noise_seeded/noise.img.gz", "p41_intfile_scale_adc/int.img.gz"],
)
def test_nanobragg_header_and_write_smv_match_c(tmp_path, case_file):
    golden = gunzip(CASES / case_file)
    # The values as nanoBragg computes them (in metres, then times 1000 as C does).
    pixel, detsize, beam = 0.0002, 0.032, 0.0161
    fbeam = sbeam = beam + 0.5 * pixel
    header = nanobragg_header(
        **p40_header_values(
            pixel_size_mm=pixel * 1000.0, distance_mm=0.1 * 1000.0, wavelength_A=1.2e-10 * 1e10,
            beam_center_x_mm=beam * 1000.0, beam_center_y_mm=beam * 1000,
            adxv_center_x_mm=fbeam * 1000.0, adxv_center_y_mm=(detsize - sbeam) * 1000,
            mosflm_center_x_mm=(sbeam - 0.5 * pixel) * 1000.0, mosflm_center_y_mm=(fbeam - 0.5 * pixel) * 1000,
            denzo_x_beam_mm=sbeam * 1000.0, denzo_y_beam_mm=fbeam * 1000,
        )
    )
    assert len(header) == 512
    assert header == golden[:512]
    image = np.frombuffer(golden[512:], dtype="<u2").reshape(160, 160)
    path = tmp_path / "int.img"
    write_smv(path, image.copy(), header)
    assert path.read_bytes() == golden
    back = read_smv(path)
    assert np.array_equal(back.data, image)
    assert smv_value(back.header, "BEAM_CENTER_Y") == 16.1


def test_nanobragg_header_grows_instead_of_overflowing():
    long_numbers = p40_header_values(
        **{key: -1.23456789e-100 for key in (
            "pixel_size_mm", "distance_mm", "wavelength_A", "beam_center_x_mm", "beam_center_y_mm",
            "adxv_center_x_mm", "adxv_center_y_mm", "mosflm_center_x_mm", "mosflm_center_y_mm",
            "denzo_x_beam_mm", "denzo_y_beam_mm", "xds_orgx", "xds_orgy", "close_distance_mm")},
    )
    header = nanobragg_header(**long_numbers)
    assert len(header) == 1024
    assert header.startswith(b"{\nHEADER_BYTES=1024;\n")
    assert header.rstrip(b" ").endswith(b"}\f")


def test_read_smv_big_endian_and_long_header(tmp_path):
    data = np.arange(12, dtype=np.uint16).reshape(3, 4) * 257 + 1
    text = "{\nHEADER_BYTES=1024;\nDIM=2;\nBYTE_ORDER=big_endian;\nTYPE=unsigned_short;\nSIZE1=4;\nSIZE2=3;\n}\f"
    path = tmp_path / "be.img"
    path.write_bytes(text.encode().ljust(1024, b"\0") + data.astype(">u2").tobytes() + b"trailing")
    image = read_smv(path)
    assert image.header_bytes == 1024 and (image.width, image.height) == (4, 3)
    assert np.array_equal(image.data, data)
    assert image.header == text


@pytest.mark.parametrize(
    "content, message",
    [
        (b"P5\n1 1\n255\n\0", "not an SMV image"),
        (b"", "not an SMV image"),
        (b"{\nHEADER_BYTES=512;\nSIZE1=4;\n}".ljust(512) + bytes(100), "SIZE2 is missing"),
        (b"{\nHEADER_BYTES=512;\nSIZE1=0;\nSIZE2=4;\n}".ljust(512), "SIZE1 is 0"),
        (b"{\nHEADER_BYTES=512;\nSIZE1=4;\nSIZE2=4;\n}".ljust(512) + bytes(31), "truncated"),
        (b"{\nHEADER_BYTES=4096;\nSIZE1=4;\nSIZE2=4;\n}".ljust(512), "claims 4096 bytes"),
        (b"{\nHEADER_BYTES=x;", "HEADER_BYTES is 0"),
    ],
)
def test_read_smv_malformed(tmp_path, content, message):
    refused_naming_the_file(read_smv, tmp_path / "bad.img", content, message)


def refused_naming_the_file(reader, path, content, message):
    """``reader`` refuses the file of ``content`` with an InputError that says ``message`` and names it."""
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        reader(path)
    assert path.name in str(info.value)


def test_write_smv_rejects_wrong_arrays(tmp_path):
    header = nanobragg_header(**p40_header_values())
    with pytest.raises(ValueError):
        write_smv(tmp_path / "x.img", np.zeros((160, 160), dtype=np.float32), header)
    with pytest.raises(ValueError, match="SIZE1"):
        write_smv(tmp_path / "x.img", np.zeros((160, 10), dtype=np.uint16), header)
    assert leftover_files(tmp_path) == []


# --------------------------------------------------------------------------- PGM

def test_write_pgm_matches_c(tmp_path):
    golden = gunzip(CASES / "p48_pgm" / "image.pgm.gz")
    header = b"P5\n128 128\n# pixels scaled by 2\n255\n"
    assert golden.startswith(header)
    pgm_scale = 2.0
    floats = np.frombuffer(gunzip(CASES / "p48_pgm" / "float.bin.gz"), dtype="<f4").reshape(128, 128)
    # C: test = float_pixel * pgm_scale (in double); if(test > 255) test = 255; (unsigned char) test
    pixels = np.minimum(floats.astype(np.float64) * pgm_scale, 255.0).astype(np.uint8)
    path = tmp_path / "image.pgm"
    write_pgm(path, pixels, pgm_scale)
    assert path.read_bytes() == golden
    assert np.array_equal(read_pgm(path), pixels)


def test_read_pgm_with_comments(tmp_path):
    path = tmp_path / "c.pgm"
    path.write_bytes(b"P5 # magic\n# a comment\n3\t2 # size\n200\n" + bytes([1, 2, 3, 4, 5, 10]) + b"extra")
    assert read_pgm(path).tolist() == [[1, 2, 3], [4, 5, 10]]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"P2\n1 1\n255\n0", "not a binary PGM"),
        (b"P5\n2 2\n255\n\0\0\0", "needs 4 bytes"),
        (b"P5\n2 2\n65535\n" + bytes(8), "only 8-bit"),
        (b"P5\n0 2\n255\n", "empty"),
        (b"P5\n2\n", "expected the height"),
        (b"P5\n2 2 255", "white-space character"),
        (b"P52 2 255\n", "expected the width"),
    ],
)
def test_read_pgm_malformed(tmp_path, content, message):
    refused_naming_the_file(read_pgm, tmp_path / "bad.pgm", content, message)


# --------------------------------------------------------------------------- source file

def test_read_sourcefile():
    sources = read_sourcefile(INPUTS / "sources.txt")
    expected = [
        [-10.0, 0.0, 0.0, 1.0, 6.2e-10],
        [-10.0, 0.020, 0.0, 0.5, 6.3e-10],
        [-10.0, 0.0, 0.015, 2.0, 6.1e-10],
    ]
    assert sources.shape == (3, 5)
    assert sources.tolist() == expected


def test_sourcefile_short_lines_separators_comments(tmp_path):
    path = write_text(
        tmp_path,
        "s.txt",
        "# X Y Z weight lambda\n"
        "1,2;3:4!5 6 7 words-after-the-fifth\n"
        " ,; \t\n"
        "-10 0.5\n"
        "1.5e-10m 2\r\n"
        "nan 1",
    )
    sources = read_sourcefile(path)
    assert sources.shape == (4, 5)
    assert sources[0].tolist() == [1, 2, 3, 4, 5]
    assert sources[1, :2].tolist() == [-10.0, 0.5] and np.isnan(sources[1, 2:]).all()
    assert sources[2, :2].tolist() == [1.5e-10, 2.0] and np.isnan(sources[2, 2:]).all()
    assert np.isnan(sources[3, 0]) and sources[3, 1] == 1.0


@pytest.mark.parametrize(
    "content, message",
    [("", "no source lines"), ("# nothing\n\n", "no source lines"), ("1 2 3\n1 two 3\n", "line 2: .*'two'"),
     ("-\n", "line 1")],
)
def test_sourcefile_malformed(tmp_path, content, message):
    path = write_text(tmp_path, "bad.txt", content)
    with pytest.raises(InputError, match=message) as info:
        read_sourcefile(path)
    assert "bad.txt" in str(info.value)


# --------------------------------------------------------------------------- float images

def test_float_image_round_trip(tmp_path):
    image = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    path = tmp_path / "f.bin"
    write_float_image(path, image)
    assert path.stat().st_size == 48
    assert path.read_bytes() == image.astype("<f4").tobytes()
    assert np.array_equal(read_float_image(path, (3, 4)), image.astype(np.float32))
    assert read_float_image(path).shape == (12,)
    golden = CASES / "p48_pgm" / "float.bin.gz"
    (tmp_path / "g.bin").write_bytes(gunzip(golden))
    g = read_float_image(tmp_path / "g.bin", (128, 128))
    assert g.shape == (128, 128) and g.dtype == np.float32
    # nanoBragg's own summary of that image: "max_I = 154.652  at 0.00645 0.00645" (the
    # centre of pixel (slow 64, fast 64) for 0.1 mm pixels), "mean= 6.85209"
    assert f"{g.max():g}" == "154.652" and np.unravel_index(np.argmax(g), g.shape) == (64, 64)
    assert f"{g.astype(np.float64).mean():g}" == "6.85209"


def test_float_image_size_mismatch(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(48))
    with pytest.raises(InputError, match="f.bin: holds 12 floats, expected 4x4"):
        read_float_image(path, (4, 4))
    path.write_bytes(bytes(47))
    with pytest.raises(InputError, match="not a whole number"):
        read_float_image(path)


# --------------------------------------------------------------------------- atomic writes

def test_atomic_write_replaces_existing(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert leftover_files(tmp_path) == ["out.bin"]


def test_atomic_open_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(target) as handle:
            handle.write(b"partial data")
            raise RuntimeError("boom")
    assert leftover_files(tmp_path) == []


def test_atomic_open_failure_keeps_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(target, "w") as handle:
            handle.write("partial")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert leftover_files(tmp_path) == ["out.txt"]


def test_atomic_write_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no_such_dir"):
        atomic_write(tmp_path / "no_such_dir" / "x.bin", b"data")
    (tmp_path / "adir").mkdir()
    with pytest.raises(InputError, match="adir"):
        atomic_write(tmp_path / "adir", b"data")  # cannot replace a directory with a file
    assert leftover_files(tmp_path) == ["adir"]
    assert leftover_files(tmp_path / "adir") == []


def test_atomic_write_file_mode_follows_umask(tmp_path):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    target = tmp_path / "m.bin"
    atomic_write(target, b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_hkl_table_equality():
    a = read_hkl(INPUTS / "sparse.hkl")
    b = read_hkl(INPUTS / "sparse.hkl")
    c = read_hkl(INPUTS / "sparse.hkl", default_F=1.0)
    assert a == b and a != c
    assert isinstance(a, HKLTable)
    # each field counts: one value, the bounds, the count; NaN equals NaN; other types are not equal
    values = np.array(a.values)
    values[1, 2, 3] += 0.5
    assert HKLTable(values, a.hkl_min, a.hkl_max, a.count) != a
    assert HKLTable(np.array(a.values), a.hkl_min, a.hkl_max, a.count) == a
    shifted = tuple(x + 1 for x in a.hkl_min), tuple(x + 1 for x in a.hkl_max)
    assert HKLTable(np.array(a.values), *shifted, a.count) != a
    assert HKLTable(np.array(a.values), a.hkl_min, a.hkl_max, a.count + 1) != a
    nan = np.array(a.values)
    nan[0, 0, 0] = np.nan
    assert HKLTable(nan, a.hkl_min, a.hkl_max, a.count) == HKLTable(nan.copy(), a.hkl_min, a.hkl_max, a.count)
    assert a != 5 and not (a == "sparse.hkl")
