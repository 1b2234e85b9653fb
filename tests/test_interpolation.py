"""Tricubic interpolation of structure factors and nanoBragg's switch-off.

nanoBragg interpolates F between reflections until the first evaluation whose
4×4×4 neighbourhood leaves the HKL table; from that evaluation on (raster
order of pixels, then sub-pixels, sources, phi, domains) it uses the nearest
reflection for the rest of the image.  The golden cases never reach that
point, so this command does: its beam centre sits near pixel (0, 0), so the
first pixels are at low resolution and later ones run off the table
(``small.hkl`` spans -12..12).  For this command nbjax's c-parity image was
checked against nanoBragg.c (built by hand under /tmp, single thread):
bit-identical float32 pixels, for block sizes 64, 5 and 1.

The golden case ``p52_interpolate_switch_off`` stores such an image from
nanoBragg.c itself (both builds give the same, single thread): beam centre
near the first row, the switch at pixel 6815 of 9216 (row 70).  It is rendered
with the other golden cases (STRICT, bit-identical); the test here checks that
the case really holds the switch-off.
"""

import re

import numpy as np
import pytest

from conftest import case_args, case_dir, reference_image
from nbjax import experiment
from nbjax.renderer import engine

ARGS = ("-hkl small.hkl -cell 40 40 40 90 90 90 -misset 3 7 11 -lambda 1.0 -N 2 -detpixels 64 "
        "-pixel 0.5 -distance 60 -Xbeam 2 -Ybeam 3 -oversample 2 -phi 0 -osc 1 -phisteps 2 -nonoise").split()


def render(args, **kw):
    exp = experiment.build(args, phi_carryover="c-parity", **kw)
    result = engine.render(exp.scene, exp.config, exp.mask)
    return np.asarray(result.image), np.asarray(result.interpolation_off_at), exp


@pytest.mark.parametrize("block_rows", [64, 5])
def test_switch_off_splits_the_image_in_raster_order(block_rows, in_inputs_dir):
    image, off_at, exp = render(ARGS, block_rows=block_rows)
    assert exp.config.interpolate and off_at[0] == 1
    # nanoBragg's warning: h,k,l,h0,k0,l0 of the first out-of-range evaluation
    assert ["%g" % x for x in off_at[1:4]] == ["-2.34903", "2.14743", "10.0665"]  # as nanoBragg prints
    np.testing.assert_array_equal(off_at[4:], [-2, 2, 10])
    everywhere, _, _ = render(ARGS, block_rows=block_rows, interpolation_fallback="point")
    nearest, _, _ = render(ARGS + ["-nointerpolate"], block_rows=block_rows)
    flat, before, after = image.ravel(), everywhere.ravel(), nearest.ravel()
    switch = int(np.argmax(flat != before))           # first pixel not interpolated throughout
    assert 0 < switch < flat.size - 1
    np.testing.assert_array_equal(flat[:switch], before[:switch])
    np.testing.assert_array_equal(flat[switch + 1:], after[switch + 1:])
    assert not np.array_equal(before[switch + 1:], after[switch + 1:])


def test_tricubic_reproduces_a_cubic_table():
    """Lagrange interpolation through 4 points is exact for cubic polynomials."""
    import jax.numpy as jnp

    from nbjax.physics import structure_factors

    h, k, l = np.meshgrid(np.arange(-5, 6), np.arange(-4, 5), np.arange(-6, 7), indexing="ij")
    poly = lambda h, k, l: 3 + 0.5 * h - 0.2 * k ** 2 + 0.01 * h * k * l + 0.03 * l ** 3
    table = poly(h, k, l).astype(float)
    flat, shape = structure_factors.padded_table(jnp.asarray(table), 0.0)
    points = np.array([[0.3, -1.7, 2.2], [1.5, 0.25, -3.9], [-2.01, 1.99, 0.5]])
    got = structure_factors.tricubic_F(*(jnp.asarray(points[:, i]) for i in range(3)), flat, shape, (-5, -4, -6))
    np.testing.assert_allclose(np.asarray(got), poly(*points.T), rtol=1e-12)
    oob = structure_factors.interpolation_out_of_range(
        *(jnp.asarray(x) for x in ([3.5, 2.9], [0.0, 0.0], [0.0, 0.0])), (-5, -4, -6), (5, 4, 6))
    assert list(np.asarray(oob)) == [True, False]


def test_tricubic_outside_a_small_table_is_finite_and_inside_matches_the_grid():
    """The 4x4x4 block is read from its clipped first corner: a table too small for
    any neighbourhood still gives finite values (the engine discards them), and at
    grid nodes inside the table the interpolation returns the table entry."""
    import jax.numpy as jnp

    from nbjax.physics import structure_factors

    small = jnp.asarray(np.arange(8.0).reshape(2, 2, 2) + 1.0)
    flat, shape = structure_factors.padded_table(small, 7.5)
    pts = [jnp.asarray(x) for x in ([0.2, -3.0, 9.0], [1.0, 0.5, -8.0], [0.7, 2.0, 0.0])]
    assert np.all(np.isfinite(np.asarray(structure_factors.tricubic_F(*pts, flat, shape, (0, 0, 0)))))
    rs = np.random.default_rng(2)
    table = rs.uniform(1, 50, (8, 9, 10))
    flat, shape = structure_factors.padded_table(jnp.asarray(table), 0.0)
    nodes = np.array([[2, 2, 2], [5, 3, 7], [3, 6, 4]])  # hkl_min (-1, 0, 1): indices - hkl_min
    got = structure_factors.tricubic_F(*(jnp.asarray(nodes[:, i] + [-1, 0, 1][i], float) for i in range(3)),
                                       flat, shape, (-1, 0, 1))
    np.testing.assert_allclose(np.asarray(got), table[nodes[:, 0], nodes[:, 1], nodes[:, 2]], rtol=1e-12)


def test_golden_switch_off_case_switches_mid_image(in_inputs_dir):
    """p52: nanoBragg warned, at the h,k,l nbjax finds, and its image is tricubic
    before the switch and nearest-reflection after it, the switch well inside.
    (Both oracles gave the same image; test_golden_cases renders it in both modes.)"""
    name, mode = "p52_interpolate_switch_off", "c"
    np.testing.assert_array_equal(reference_image(name, "c"), reference_image(name, "spec"))
    stdout = (case_dir(name, mode) / "stdout.txt").read_text()
    warned = re.search(r"out of range for three point interpolation: h,k,l,h0,k0,l0: (\S+)", stdout)
    assert warned, "the golden case has no switch-off"
    modes = {} if mode == "spec" else dict(accumulation="c-parity", phi_carryover="c-parity")
    exp = experiment.build(case_args(name), **modes)
    result = engine.render(exp.scene, exp.config, None)
    off_at = np.asarray(result.interpolation_off_at)
    assert off_at[0] == 1
    assert ",".join("%g" % x for x in off_at[1:4]) + "," + ",".join("%d" % x for x in off_at[4:]) == \
        warned.group(1).rstrip(",")
    reference = reference_image(name, mode)
    image = np.asarray(result.image, np.float32).ravel()
    np.testing.assert_array_equal(image, reference)
    # the C image against renders that interpolate everywhere / never
    everywhere = experiment.build(case_args(name), interpolation_fallback="point", **modes)
    everywhere = np.asarray(engine.render(everywhere.scene, everywhere.config, None).image, np.float32).ravel()
    nearest = experiment.build([a for a in case_args(name) if a != "-interpolate"] + ["-nointerpolate"], **modes)
    nearest = np.asarray(engine.render(nearest.scene, nearest.config, None).image, np.float32).ravel()
    switch = int(np.argmax(reference != everywhere))
    assert 0.5 * reference.size < switch < 0.9 * reference.size, switch
    np.testing.assert_array_equal(reference[:switch], everywhere[:switch])
    np.testing.assert_array_equal(reference[switch + 1:], nearest[switch + 1:])
    assert np.sum(reference[:switch] != nearest[:switch]) > 1000   # interpolation mattered before the switch
