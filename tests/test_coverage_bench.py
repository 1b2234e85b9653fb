"""benchmarks/coverage_bench.py: its inputs are what it says (no timing here: timings are in the script)."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

from nbjax import cflags
from nbjax.io import read_hkl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    path = os.path.join(ROOT, "benchmarks", "coverage_bench.py")
    sys.path.insert(0, os.path.dirname(path))  # it imports benchmarks/run.py's helpers
    try:
        spec = importlib.util.spec_from_file_location("coverage_bench", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(os.path.dirname(path))
    return module


def test_generated_hkl_file_is_every_reflection_to_the_resolution(bench, tmp_path):
    path = str(tmp_path / "small.hkl")
    count = bench.make_hkl(path, 30.0, 3.0)
    # independently: the (h, k, l) of a 30 A cubic cell with d = 30/|hkl| >= 3 A, i.e. |hkl| <= 10
    r = np.arange(-10, 11)
    expected = int(((r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) <= 100).sum())
    assert count == expected == 4169
    table = read_hkl(path, cache=None)
    assert table.count == count
    assert table.hkl_min == (-10, -10, -10) and table.hkl_max == (10, 10, 10)
    rows = np.loadtxt(path)
    assert rows.shape == (count, 4) and (rows[:, 3] > 0).all()
    assert np.array_equal(rows[:, 3], np.round(rows[:, 3], 2))
    assert bench.make_hkl(str(tmp_path / "again.hkl"), 30.0, 3.0) == count
    assert (tmp_path / "again.hkl").read_bytes() == (tmp_path / "small.hkl").read_bytes()  # deterministic


@pytest.mark.parametrize("quick", [False, True])
def test_every_cell_is_a_valid_nanobragg_command(bench, quick):
    n = 512 if quick else 2048
    for name, (extra, _) in bench.CELLS.items():
        argv = bench.cell_argv(extra, n)
        settings = cflags.parse(argv)
        assert settings.hklfilename == "big.hkl", name
        assert settings.phisteps == 1, name
        assert abs(settings.pixel_size * n - 0.2048) < 1e-12, name  # a 204.8 mm detector
    roi = cflags.parse(bench.cell_argv(bench.CELLS["roi"][0], n)).roi
    assert list(roi) == [n // 4, 3 * n // 4 - 1, n // 4, 3 * n // 4 - 1]
