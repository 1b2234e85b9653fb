"""The phi = 0 carry-over of released nanoBragg.c (C-PARITY-001), checked against
independent spec-mode renders with substituted phi angles.

Released nanoBragg skips the spindle rotation when phi is exactly 0.0 and reuses
the cell vectors of the previous evaluation: the previous phi step of the same
sweep, or the last step of the previously rendered pixel; the first rendered
pixel starts from the unrotated cell.  So, for a sweep whose step 0 is phi = 0,
the c-parity image equals a spec image whose step 0 uses the last step's
angle -- everywhere except the first rendered pixel.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from nbjax import experiment
from nbjax.renderer import engine

BASE = ("-hkl small.hkl -cell 100 100 100 90 90 90 -misset 3 7 11 -lambda 1.2 -N 10 "
        "-detpixels 48 -pixel 0.6 -distance 120 -oversample 1 -nonoise").split()


def build(extra, **kw):
    return experiment.build(BASE + extra.split(), **kw)


def render(exp, scene=None):
    return np.asarray(engine.render(scene or exp.scene, exp.config, exp.mask).image)


def with_phi(exp, phis_rad):
    return dataclasses.replace(exp.scene, phi_rad=jnp.asarray(phis_rad, exp.scene.phi_rad.dtype))


def spec_and_carryover(extra):
    """The experiment of ``extra`` in spec mode and with the c-parity carry-over, and its phi steps."""
    spec = build(extra)
    return spec, build(extra, phi_carryover="c-parity"), np.asarray(spec.scene.phi_rad)


def test_sweep_from_zero_reuses_last_step_of_previous_pixel(in_inputs_dir):
    spec, carry, phis = spec_and_carryover("-phi 0 -osc 1 -phisteps 4")
    assert carry.config.phi_zero == (True, False, False, False)
    substituted = render(spec, with_phi(spec, [phis[-1], phis[1], phis[2], phis[3]]))
    plain = render(spec)
    image = render(carry)
    first = (0, 0)
    assert image[first] == plain[first]                     # first pixel: unrotated cell
    rest = np.ones(image.shape, bool)
    rest[first] = False
    np.testing.assert_array_equal(image[rest], substituted[rest])
    assert not np.array_equal(image, plain)


def test_phi_hitting_zero_mid_sweep_reuses_previous_step(in_inputs_dir):
    # -0.5 + 2 * 0.25 is exactly 0.0 in doubles: step 2 reuses step 1's vectors
    spec, carry, phis = spec_and_carryover("-phi -0.5 -osc 1 -phisteps 4")
    assert carry.config.phi_zero == (False, False, True, False)
    assert phis[2] == 0.0
    expected = render(spec, with_phi(spec, [phis[0], phis[1], phis[1], phis[3]]))
    np.testing.assert_array_equal(render(carry), expected)   # no pixel depends on its neighbours here


def test_roi_and_mask_skipped_pixels_leave_the_vectors_untouched(in_inputs_dir):
    spec, carry, phis = spec_and_carryover("-phi 0 -osc 1 -phisteps 3 -roi 10 30 5 20")
    substituted = render(spec, with_phi(spec, [phis[-1], phis[1], phis[2]]))
    plain, image = render(spec), render(carry)
    first = (5, 10)                                          # first pixel inside the roi
    assert image[first] == plain[first] != substituted[first]
    others = (image != 0)
    others[first] = False
    np.testing.assert_array_equal(image[others], substituted[others])
    assert np.all(image[:5] == 0) and np.all(image[:, :10] == 0)


def test_carry_crosses_block_boundaries(in_inputs_dir):
    """Rendering in 1-row or 7-row blocks gives the same c-parity image."""
    extra = "-phi 0 -osc 1 -phisteps 3"
    one = build(extra, phi_carryover="c-parity", block_rows=1)
    seven = build(extra, phi_carryover="c-parity", block_rows=7)
    np.testing.assert_array_equal(render(one), render(seven))


def test_no_zero_step_means_no_difference(in_inputs_dir):
    extra = "-phi 10 -osc 2 -phisteps 4"
    np.testing.assert_array_equal(render(build(extra)), render(build(extra, phi_carryover="c-parity")))
