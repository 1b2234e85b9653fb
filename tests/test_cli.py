"""The nbjax command: files, printed numbers and bad input, in-process."""

import gzip
import os
import re

import numpy as np
import pytest

from conftest import GOLDEN, case_args
from nbjax import cli


def run(args, capsys):
    code = cli.main(list(args) + ["--no-compile-cache"])
    out, err = capsys.readouterr()
    return code, out, err


def outputs(directory):
    return sorted(p.name for p in directory.iterdir() if not p.is_symlink())


def golden_bytes(name, filename):
    return gzip.open(GOLDEN / "cases" / name / (filename + ".gz")).read()


def test_intfile_scale_adc_bytes_match_nanobragg(in_inputs_dir, capsys):
    code, out, _ = run(case_args("p41_intfile_scale_adc"), capsys)
    assert code == 0
    assert (in_inputs_dir / "int.img").read_bytes() == golden_bytes("p41_intfile_scale_adc", "int.img")
    theirs = (GOLDEN / "cases" / "p41_intfile_scale_adc" / "stdout.txt").read_text()
    for key in ("max_I = ", "mean= ", "intfile_scale = ", "solid angle subtended"):
        mine = [l for l in out.splitlines() if l.startswith(key)]
        ref = [l for l in theirs.splitlines() if l.startswith(key)]
        assert mine == ref, key


def test_pgm_bytes_match_nanobragg(in_inputs_dir, capsys):
    code, _, _ = run(case_args("p48_pgm"), capsys)
    assert code == 0
    assert (in_inputs_dir / "image.pgm").read_bytes() == golden_bytes("p48_pgm", "image.pgm")


def test_noise_image_matches_nanobragg(in_inputs_dir, capsys):
    code, out, _ = run(case_args("p40_noise_seeded"), capsys)
    assert code == 0
    assert (in_inputs_dir / "noise.img").read_bytes() == golden_bytes("p40_noise_seeded", "noise.img")
    assert (in_inputs_dir / "int.img").read_bytes() == golden_bytes("p40_noise_seeded", "int.img")
    assert "47917251 photons on noise image (0 overloads)" in out


def test_default_file_names_and_fdump(in_inputs_dir, capsys):
    """Without file flags nbjax writes nanoBragg's default names; -hkl leaves Fdump.bin,
    and a second run without -hkl reads it back to the same image."""
    args = "-hkl small.hkl -cell 100 100 100 90 90 90 -lambda 1.2 -N 5 -detpixels 32 -pixel 0.4 -distance 100 -seed 3".split()
    code, _, _ = run(args, capsys)
    assert code == 0
    assert outputs(in_inputs_dir) == ["Fdump.bin", "floatimage.bin", "image.pgm", "intimage.img", "noiseimage.img"]
    first = np.fromfile(in_inputs_dir / "floatimage.bin", np.float32)
    code, out, _ = run([a for a in args if a not in ("-hkl", "small.hkl")], capsys)
    assert code == 0 and "reading Fs from Fdump.bin" in out
    np.testing.assert_array_equal(np.fromfile(in_inputs_dir / "floatimage.bin", np.float32), first)


GOOD = "-hkl small.hkl -cell 100 100 100 90 90 90 -lambda 1.2 -N 5 -detpixels 32 -pixel 0.4 -distance 100 -nonoise".split()


def replace(args, flag, *values):
    i = args.index(flag)
    n = 1 if flag != "-cell" else 6
    return args[:i] + [flag, *values] + args[i + 1 + n:]


BAD_INPUTS = {
    "missing hkl file": (replace(GOOD, "-hkl", "nothere.hkl"), "nothere.hkl"),
    "malformed hkl file": (replace(GOOD, "-hkl", "bad.hkl"), "bad.hkl"),
    "missing mat file": (["-mat", "nothere.mat"] + GOOD[:2] + GOOD[9:], "nothere.mat"),
    "malformed mat file": (["-mat", "bad.mat"] + GOOD[:2] + GOOD[9:], "bad.mat"),
    "missing img": (GOOD + ["-img", "nothere.img"], "nothere.img"),
    "missing mask": (GOOD + ["-mask", "nothere.img"], "nothere.img"),
    "malformed mask": (GOOD + ["-mask", "bad.hkl"], "bad.hkl"),
    "missing sourcefile": (GOOD + ["-sourcefile", "nothere.txt"], "nothere.txt"),
    "malformed sourcefile": (GOOD + ["-sourcefile", "bad.mat"], "bad.mat"),
    "flag without value": (GOOD + ["-distance"], "-distance"),
    "non-numeric value": (replace(GOOD, "-distance", "far"), "-distance"),
    "negative pixel count": (replace(GOOD, "-detpixels", "-32"), "-detpixels"),
    "zero wavelength": (replace(GOOD, "-lambda", "0"), "-lambda"),
    "roi xmin > xmax": (GOOD + ["-roi", "20", "10", "0", "5"], "-roi"),
    "incomplete cell": (GOOD[:2] + ["-cell", "100", "100"] + GOOD[9:], "-cell"),
    "unknown flag": (GOOD + ["-frobnicate"], "-frobnicate"),
    "stray value": (GOOD + ["17"], "17"),
    "unknown nbjax option": (GOOD + ["--frobnicate"], "--frobnicate"),
    "bad nbjax choice": (GOOD + ["--precision", "quad"], "--precision"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_files(case, in_inputs_dir, capsys):
    (in_inputs_dir / "bad.hkl").write_text("1 2 3 4\n1 2 x 4\n")
    (in_inputs_dir / "bad.mat").write_text("0.1 0.2 banana\n")
    before = outputs(in_inputs_dir)
    args, named = BAD_INPUTS[case]
    code, out, err = run(args, capsys)
    assert code == 2, (case, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbjax: error:"), err
    assert named in lines[0], (named, lines[0])
    assert "Traceback" not in err + out
    assert outputs(in_inputs_dir) == before
