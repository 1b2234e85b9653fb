"""The set-up's stages and the log made from them (nbjax.experiment).

The log is :func:`nbjax.experiment.summary_lines` of the stage results: it is
checked line for line against what nanoBragg.c printed for every golden case
(tests/golden/cases/*/stdout.txt), and shown to be formatting only (a changed
stage result changes just its own lines).  The stages read each input file
and draw each random number once; the differentiable model (params.from_args)
reuses them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from conftest import GOLDEN, all_case_names, case_args
from nbjax import experiment
from nbjax import params as P
from nbjax.constants import RTD

# Lines nanoBragg.c prints while it sets up that are not part of nbjax's log: its
# banner (nbjax prints its own), mmap addresses, the sparse-table fill, and the
# render's own warnings (they come after the set-up).
C_ONLY = ("nanoBragg nanocrystal diffraction simulator", "mmap(", "initializing to default_F", "done initializing:",
          "WARNING: out of range for three point interpolation", "WARNING: further warnings will not be printed")


def nanobragg_setup_log(name, warnings):
    """The set-up lines of a golden case's stdout (before the render's report), less C_ONLY and the warnings."""
    lines = (GOLDEN / "cases" / name / "stdout.txt").read_text().splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("solid angle subtended"))
    end -= lines[end - 1] == ""  # the blank line before the render's report
    start = max((i + 1 for i, line in enumerate(lines) if line.startswith("mmap(")), default=0)  # -mask/-img read first
    return [line for line in lines[start:end] if not line.startswith(C_ONLY) and line not in warnings]


@pytest.mark.parametrize("name", all_case_names())
def test_summary_lines_are_nanobragg_setup_log(name, in_inputs_dir):
    exp = experiment.build(case_args(name), now=0, argument_scan="c-parity")
    lines = list(experiment.summary_lines(exp.stages))
    assert lines == nanobragg_setup_log(name, exp.warnings)
    assert tuple(lines) == exp.log  # what the command prints


def test_summary_lines_only_format_the_stage_results(in_inputs_dir):
    """A changed stage result changes its own log lines and nothing else: no computation hides in the log."""
    stages = experiment.build(case_args("p21_dispersion"), now=0).stages
    before = experiment.summary_lines(stages)
    changed = experiment.summary_lines(stages._replace(roi=(1, 2, 3, 4), noise_seed=-99))
    differing = [(a, b) for a, b in zip(before, changed) if a != b]
    assert len(before) == len(changed) and differing == [(before[before.index("  roi: 0 < x < 128 && 0 < y < 128")],
                                                          "  roi: 1 < x < 2 && 3 < y < 4")]
    steps = stages.steps._replace(mosaic_domains=7)
    changed = experiment.summary_lines(stages._replace(steps=steps))
    assert [b for a, b in zip(before, changed) if a != b] == [
        "  created a total of 7 mosaic domains", "  7 mosaic domains over mosaic spread of 0 degrees"]


def test_stage_results_in_their_units(in_inputs_dir):
    """p21: 128 pixels of 0.1 mm, 3 dispersion steps over 2%, -N 5 of a 100 A cube."""
    exp = experiment.build(case_args("p21_dispersion"), now=0)
    s = exp.stages
    assert s.size == experiment.DetectorSize(fpixels=128, spixels=128, detsize_f_m=pytest.approx(0.0128),
                                             detsize_s_m=pytest.approx(0.0128))
    assert s.roi == (0, 128, 0, 128)
    assert s.steps.dispersion.count == 3 and s.steps.dispersion.span == pytest.approx(0.02)
    assert s.steps.dispersion.step == pytest.approx(0.02 / 2)   # fencepost: span / (count - 1)
    assert s.crystal.n_cells == (5.0, 5.0, 5.0)
    assert s.crystal.size_m == pytest.approx((5e-8, 5e-8, 5e-8))   # 5 cells of 100 A
    assert len(s.sources.wavelengths_m) == 3 and s.sources.divsteps == 1
    # the settings the Experiment carries hold the stages' values; the scene is made of them
    assert exp.settings.detsize_f == s.size.detsize_f_m and exp.settings.fluence == s.illumination.fluence_per_m2
    np.testing.assert_array_equal(np.asarray(exp.scene.wavelength_m), s.sources.wavelengths_m)


def test_beam_clipping_is_a_stage_result_not_a_mutation(in_inputs_dir):
    """-beamsize smaller than the crystal clips it: the parsed flags keep the crystal as given."""
    argv = case_args("p01_cubic_mosflm") + ["-beamsize", "0.01", "-xtal_size", "0.05"]
    parsed, _ = experiment.parse_args(argv)
    exp = experiment.build(argv, now=0)
    assert parsed.sample_y == parsed.sample_z == pytest.approx(5e-5)
    assert exp.stages.illumination.sample_y_m == exp.settings.sample_y == pytest.approx(1e-5)
    assert "WARNING: clipping sample (5e-05 m high) with beam (1e-05 m)" in exp.warnings
    # the crystal is sized from the clipped extent: ceil(1e-5 m / 100 A), 1001 as 1e-5 / 1e-8 rounds above 1000
    assert exp.stages.crystal.n_cells[1:] == (1001.0, 1001.0) and parsed.sample_y / 1e-8 > 4999


def test_from_args_reads_the_matrix_and_draws_the_misset_once(in_inputs_dir, monkeypatch):
    """params.from_args builds the Params from the stage results: one -mat read, one misset draw, one mosaic draw."""
    from nbjax.io import matrix as matrix_io
    from nbjax.physics import rng

    calls = {"mat": 0, "misset": 0, "mosaic": 0}

    def counting(key, function):
        def wrapped(*args, **kwargs):
            calls[key] += 1
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(matrix_io, "read_mosflm_matrix", counting("mat", matrix_io.read_mosflm_matrix))
    monkeypatch.setattr(rng, "random_misset", counting("misset", rng.random_misset))
    monkeypatch.setattr(rng, "mosaic_domains", counting("mosaic", rng.mosaic_domains))
    argv = ["-mat", "A.mat", "-default_F", "10", "-misset_seed", "3", "-misset", "random", "-mosaic", "0.5",
            "-mosaic_domains", "4", "-detpixels", "32", "-N", "3", "-nonoise"]
    model = P.from_args(argv, now=0)
    assert calls == {"mat": 1, "misset": 1, "mosaic": 1}
    xtal = model.experiment.stages.crystal
    np.testing.assert_array_equal(np.asarray(model.params.crystal.misset_deg), xtal.misset_rad * RTD)
    assert xtal.misset_drawn and not np.all(xtal.misset_rad == 0)
    np.testing.assert_array_equal(np.asarray(model.params.crystal.reciprocal_A), xtal.matrix_reciprocal_A)


def test_default_seeds_share_one_clock_reading(in_inputs_dir):
    """Without -seed/-misset_seed both default to minus the time in seconds, as nanoBragg.c (one time() call)."""
    exp = experiment.build(case_args("p01_cubic_mosflm") + ["-misset", "random"], now=1234.9)
    assert exp.outputs.noise_seed == -1234
    again = experiment.build(case_args("p01_cubic_mosflm") + ["-misset", "random", "-misset_seed", "1234"], now=0)
    np.testing.assert_array_equal(exp.stages.crystal.misset_rad, again.stages.crystal.misset_rad)
    assert math.isfinite(float(exp.stages.crystal.misset_rad[0]))
    assert dataclasses.is_dataclass(exp.settings)
