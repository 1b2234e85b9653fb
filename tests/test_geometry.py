"""Detector and crystal geometry against hand calculations and nanoBragg.c's printout."""

import math
import re

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import GOLDEN, case_args
from nbjax import experiment
from nbjax.geometry import crystal, detector, rotation
from nbjax.geometry.conventions import Pivot


def params(**kw):
    base = dict(
        fdet=[0.0, 0.0, 1.0], sdet=[0.0, -1.0, 0.0], odet=[1.0, 0.0, 0.0], beam=[1.0, 0.0, 0.0],
        twotheta_axis=[0.0, 0.0, -1.0], pixel_size_m=1e-4, distance_m=0.1, close_distance_m=0.0,
        beam_fast_m=0.05125, beam_slow_m=0.05125, close_fast_m=0.0512, close_slow_m=0.0512,
        rotations_rad=[0.0, 0.0, 0.0], twotheta_rad=0.0,
    )
    base.update(kw)
    return detector.DetectorParams(**{k: jnp.asarray(v, jnp.float64) for k, v in base.items()})


def test_mosflm_pix0_by_hand():
    # MOSFLM: beam centre 51.2 mm on a 0.1 mm detector -> Fbeam = Sbeam = 51.25 mm;
    # pix0 = -Fbeam f - Sbeam s + d b with f = +z, s = -y, b = +x.
    frame = detector.place_detector(params(), Pivot.BEAM, close_distance_given=False)
    np.testing.assert_allclose(np.asarray(frame.pix0_m), [0.1, 0.05125, -0.05125], atol=1e-15)
    assert float(frame.close_distance_m) == pytest.approx(0.1)
    assert float(frame.xds_orgx) == pytest.approx(512.5 + 0.5)


def test_sample_pivot_rotation_keeps_near_point_distance():
    # SAMPLE pivot: the close distance is |b.o| * distance (o rotated 0.1 rad about y),
    # and rotating about the sample keeps the near point at that distance.
    frame = detector.place_detector(params(rotations_rad=[0.0, 0.1, 0.0]), Pivot.SAMPLE, close_distance_given=False)
    pix0, odet = np.asarray(frame.pix0_m), np.asarray(frame.odet)
    assert float(np.dot(pix0, odet)) == pytest.approx(0.1 * math.cos(0.1), rel=1e-12)
    # the near point is where the origin's in-plane offset vanishes
    near = pix0 + float(frame.close_fast_m) * np.asarray(frame.fdet) + float(frame.close_slow_m) * np.asarray(frame.sdet)
    np.testing.assert_allclose(near, float(frame.close_distance_m) * odet, atol=1e-15)


def test_beam_pivot_twotheta_keeps_beam_spot():
    """After a two-theta swing about the beam pivot the direct beam still crosses the
    detector plane at (Fbeam, Sbeam).  (The *reported* beam spot is recomputed,
    as nanoBragg does, with the pre-two-theta obliquity, so it differs -- compare
    Sbeam in case p10's printout.)"""
    frame = detector.place_detector(params(twotheta_rad=0.3), Pivot.BEAM, close_distance_given=False)
    pix0, f, s, o = (np.asarray(x) for x in (frame.pix0_m, frame.fdet, frame.sdet, frame.odet))
    beam = np.array([1.0, 0.0, 0.0])
    hit = np.dot(pix0, o) / np.dot(beam, o) * beam - pix0
    assert np.dot(f, hit) == pytest.approx(0.05125, abs=1e-14)
    assert np.dot(s, hit) == pytest.approx(0.05125, abs=1e-14)
    assert np.linalg.norm(hit + pix0) == pytest.approx(0.1, rel=1e-12)


def test_rotation_helpers():
    v = jnp.asarray([1.0, 2.0, 3.0])
    # 90 degrees about z: x -> y
    np.testing.assert_allclose(rotation.rotate_xyz(v, 0.0, 0.0, math.pi / 2), [-2.0, 1.0, 3.0], atol=1e-15)
    np.testing.assert_allclose(rotation.rotate_about_axis(v, jnp.asarray([0.0, 0.0, 1.0]), math.pi / 2),
                               [-2.0, 1.0, 3.0], atol=1e-15)
    unit, length = rotation.unitize(jnp.zeros(3))
    assert float(length) == 0.0 and not np.any(np.asarray(unit))


def test_cubic_cell_is_orthonormal_times_a():
    frame = crystal.lattice_from_cell(jnp.asarray([100.0, 100, 100, math.pi / 2, math.pi / 2, math.pi / 2]),
                                      jnp.zeros(3))
    np.testing.assert_allclose(np.asarray(frame.real_A), 100 * np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.asarray(frame.reciprocal_A), 0.01 * np.eye(3), atol=1e-15)
    assert float(frame.volume_A3) == pytest.approx(1e6)


def test_triclinic_cell_as_nanobragg_builds_it():
    """Lengths are exact and a_i . b*_j vanishes off the diagonal.  nanoBragg takes the
    volume from 2abc sqrt|sin s sin(s-a) sin(s-b) sin(s-g)| (not the exact triclinic
    volume), so the angles come out slightly off -- its printout for this cell
    (case p07) is 75.0391 85.0136 95.0081, and so is ours."""
    cell = jnp.asarray([70.0, 80.0, 90.0] + [math.radians(x) for x in (75.0, 85.0, 95.0)])
    frame = crystal.lattice_from_cell(cell, jnp.asarray([0.1, 0.2, 0.3]))
    real, recip = np.asarray(frame.real_A), np.asarray(frame.reciprocal_A)
    products = real @ recip.T
    np.testing.assert_allclose(products - np.diag(np.diag(products)), 0, atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(real, axis=1), [70, 80, 90], rtol=1e-13)
    direct, _ = crystal.cell_parameters(frame.real_A, frame.reciprocal_A, frame.volume_A3)
    assert ["%g" % math.degrees(x) for x in np.asarray(direct)[3:]] == ["75.0391", "85.0136", "95.0081"]


def _printed(stdout, key):
    match = re.search(rf"{key}=(\S+)\s+\S+=(\S+)", stdout)
    return float(match.group(1)), float(match.group(2))


GEOMETRY_CASES = ["p01_cubic_mosflm", "p02_cubic_default_convention", "p03_xds_orgx", "p04_dials", "p05_adxv",
                  "p06_denzo", "p09_detector_rotations", "p10_twotheta_mosflm", "p11_twotheta_axis",
                  "p12_pivot_sample", "p13_close_distance", "p14_custom_vectors", "p49_rectangular",
                  "p42_img_header", "supervisor"]


@pytest.mark.parametrize("name", GEOMETRY_CASES)
def test_printed_geometry_matches_nanobragg(name, in_inputs_dir):
    """Every convention and pivot: the geometry lines agree with nanoBragg.c's stdout."""
    exp = experiment.build(case_args(name))
    ours = "\n".join(exp.log)
    theirs = (GOLDEN / "cases" / name / "stdout.txt").read_text()
    for key in ("Fbeam", "Fclose", "Xbeam", "Xclose"):
        np.testing.assert_allclose(_printed(ours, key), _printed(theirs, key), rtol=2e-6, atol=1e-12)
    for line in ("convention selected", "pivoting detector", "DIRECTION_OF_DETECTOR_X-AXIS",
                 "DIRECTION_OF_DETECTOR_Y-AXIS", "DIRECTION_OF_DETECTOR_Z-AXIS", "INCIDENT_BEAM_DIRECTION",
                 "dials origin", "XDS incident beam", "distance=", "Unit Cell", "Recp Cell"):
        mine = [l for l in ours.splitlines() if line in l]
        ref = [l for l in theirs.splitlines() if line in l]
        assert mine[:1] == ref[:1], (line, mine, ref)


def test_xds_origin_and_close_distance(in_inputs_dir):
    """-xds -ORGX 70 -ORGY 55: the near point sits at (ORGX-0.5, ORGY-0.5) pixels."""
    exp = experiment.build(case_args("p03_xds_orgx"))
    assert exp.header["xds_orgx"] == pytest.approx(70.0)
    assert exp.header["xds_orgy"] == pytest.approx(55.0)
    assert exp.header["close_distance_mm"] == pytest.approx(100.0)


def test_pix0_vector_only_switches_the_convention(in_inputs_dir):
    """In nanoBragg.c -pix0_vector(_mm) sets the custom convention; the vector itself is
    overwritten by the pivot computation, so its values change nothing.  The supervisor
    command's origin is therefore the one derived from its beam centre and distance."""
    base = "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -detpixels 32 -pixel 0.4 -distance 100 -nonoise".split()
    first = experiment.build(base + "-pix0_vector 1 2 3".split())
    second = experiment.build(base + "-pix0_vector_mm -216.3 215.2 -230.2".split())
    custom = experiment.build(base + "-beam_vector 1 0 0".split())   # also just switches to custom
    for exp in (second, custom):
        np.testing.assert_array_equal(np.asarray(exp.scene.pix0_m), np.asarray(first.scene.pix0_m))
    mosflm = experiment.build(base)
    assert not np.array_equal(np.asarray(mosflm.scene.pix0_m), np.asarray(first.scene.pix0_m))
    # the supervisor command passes -pix0_vector_mm -216.336293 215.205512 -230.200866; the
    # origin nanoBragg actually uses is the one its stdout reports as the DIALS origin
    # (-230.192 216.343 216.476 = z, y, -x in mm), more than a millimetre away
    exp = experiment.build(case_args("supervisor"))
    pix0_mm = np.asarray(exp.scene.pix0_m) * 1000
    np.testing.assert_allclose([pix0_mm[2], pix0_mm[1], -pix0_mm[0]], [-230.192, 216.343, 216.476], atol=1e-3)
    assert np.linalg.norm(pix0_mm - [-216.336293, 215.205512, -230.200866]) > 1.0
