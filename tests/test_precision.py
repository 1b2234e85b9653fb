"""float32: the evaluation mode (``--precision single``) and the library run without
float64 (JAX's default), each against nanoBragg.c.

In the evaluation mode the set-up stays float64 while the per-pixel geometry
(beam-centred rays, see nbjax.geometry.pixels) and the per-(pixel, step)
lattice arithmetic, table lookups and sums run in float32, into a float32
image; without float64 everything is float32.  Bound from the issue: r >= 0.999999 and max
relative error <= 1e-3 on pixels above 1e-3 of the maximum.
"""

import numpy as np
import pytest

from conftest import case_args, case_dir, reference_image
from nbjax import experiment
from nbjax.renderer import engine
from nbjax.compare import metrics


@pytest.mark.parametrize("name", ["p08_mat_scaled_small", "p07_triclinic_misset_hkl", "supervisor"])
def test_single_precision_meets_its_bound(name, in_inputs_dir):
    if not (case_dir(name, "c") / "float.bin.gz").exists():
        pytest.skip("reference image not available here")
    exp = experiment.build(case_args(name), accumulation="c-parity", phi_carryover="c-parity",
                           evaluation_dtype="float32")
    image = engine.render(exp.scene, exp.config, exp.mask).image
    assert image.dtype == np.float32   # a float32 evaluation renders a float32 image
    image = np.asarray(image)
    m = metrics(reference_image(name, "c").reshape(image.shape), image)
    assert m.pearson_r >= 0.999999, m
    assert m.max_rel_err <= 1e-3, m
    assert abs(m.sum_ratio - 1) <= 1e-4, m
    # and it really is not the float64 result
    assert m.max_rel_err > 0


def test_single_precision_scattering_vector_is_rounded_once(in_inputs_dir):
    """--precision single: the beam-centred rays give the float64 renderer's q rounded once to float32
    (relative error <= 2^-24 of |q|) on the block through the beam, and float32 pixel factors."""
    import dataclasses

    import jax.numpy as jnp

    exp = experiment.build(case_args("supervisor"), accumulation="c-parity", phi_carryover="c-parity",
                           evaluation_dtype="float32")
    cfg = dataclasses.replace(exp.config, block_rows=32)
    beam_row = 1243                                   # -Ybeam 213.907 mm / 0.172 mm
    index = jnp.asarray(beam_row // cfg.block_rows)
    got = {}
    for name, config in (("low", cfg), ("plain", dataclasses.replace(cfg, evaluation_dtype=None))):
        blk = engine._prepare_block(exp.scene, config, exp.mask, engine.initial_carry(exp.scene), index)[0]
        rays = engine._pixel_rays(exp.scene, config, blk)
        zero = jnp.asarray(0, jnp.int32)
        d, ray, omega, _ = rays.run(zero, zero, zero)
        incident, wavelength, _, offset = (x[0] for x in rays.source_xs)
        got[name] = (rays.scattering(d, ray, incident, wavelength, offset), d, omega)
    (q32, d32, omega32), (q64, d64, omega64) = got["low"], got["plain"]
    assert all(x.dtype == jnp.float32 for x in (*q32, *d32, omega32))
    q32 = np.stack([np.asarray(x, np.float64) for x in q32])
    q64 = np.stack([np.asarray(x) for x in q64])
    size = np.sqrt((q64 ** 2).sum(0))
    assert size.min() < 5e-3 * size.max()             # pixels next to the beam are in the block
    assert np.abs(q32 - q64).max(axis=0).max() > 0
    assert (np.abs(q32 - q64) / size).max() <= 2.0 ** -24
    np.testing.assert_allclose(np.stack([np.asarray(x, np.float64) for x in d32]), np.stack(d64), rtol=0, atol=3e-7)
    np.testing.assert_allclose(np.asarray(omega32, np.float64), np.asarray(omega64), rtol=3e-7)


def test_beam_centred_ray_keeps_q_relative_precision(in_inputs_dir):
    """The beam-centred ray even in float32 keeps d − i0 (so q) to a relative error of a few float32
    units on every pixel, near the beam too, where the plain float32 ray (the unit vector less i0) has
    lost most of its digits: why the rays are beam-centred."""
    import jax
    import jax.numpy as jnp

    from nbjax.geometry import pixels

    exp = experiment.build(case_args("supervisor"), accumulation="c-parity", phi_carryover="c-parity")
    s = exp.scene
    i0 = np.asarray(s.incident[0])
    frame = pixels.centred_frame(s.pix0_m, s.fdet, s.sdet, s.odet, s.incident[0], s.pixel_size_m, 1)
    # every 7th pixel of the image, and the 40 x 40 pixels around the beam
    centre_f, centre_s = int(frame.f_centre), int(frame.s_centre)
    fs = np.unique(np.concatenate([np.arange(0, 2463, 7), np.arange(centre_f - 20, centre_f + 20)]))
    ss = np.unique(np.concatenate([np.arange(0, 2527, 7), np.arange(centre_s - 20, centre_s + 20)]))
    fast, slow = np.meshgrid(fs.astype(np.float64), ss.astype(np.float64))
    parts = pixels.centred_offsets(frame, jnp.asarray(fs, jnp.float64), jnp.asarray(ss, jnp.float64), 0, 0, 0.0, 1)
    parts = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), parts)  # each part rounded once
    e32, airpath32 = pixels.centred_ray(*parts, tuple(frame.i0[i].astype(jnp.float32) for i in range(3)))
    assert all(x.dtype == jnp.float32 for x in e32)
    f_coord, s_coord = pixels.subpixel_coordinates(fast, slow, 0, 0, s.pixel_size_m, 1)
    position = pixels.lab_position(f_coord, s_coord, 0.0, s.pix0_m, s.fdet, s.sdet, s.odet)
    d64, airpath64 = pixels.diffracted_ray(position)
    e64 = np.stack([np.asarray(d64[i]) - i0[i] for i in range(3)])
    size = np.sqrt((e64 ** 2).sum(0))
    assert size.min() < 1e-3             # the pixel the beam hits is included (0.3 mrad off its centre)
    err = np.sqrt(((np.stack([np.asarray(x, np.float64) for x in e32]) - e64) ** 2).sum(0)) / size
    assert err.max() < 1e-6, err.max()       # 2.4e-7 here
    np.testing.assert_allclose(np.asarray(airpath32, np.float64), np.asarray(airpath64), rtol=3e-7)
    # the plain float32 ray loses q near the beam (why the beam-centred form exists)
    d_plain, _ = pixels.diffracted_ray(tuple(jnp.asarray(x, jnp.float32) for x in position))
    plain = np.stack([np.asarray(d_plain[i], np.float64) - np.float32(i0[i]) for i in range(3)])
    plain_err = np.sqrt(((plain - e64) ** 2).sum(0)) / size
    assert plain_err.max() > 100 * err.max()


# The library as a user without float64 runs it: JAX's default precision (float32
# everywhere, geometry included), in a fresh process since these tests run in float64.
FLOAT32_SCRIPT = r"""
import json, shlex, sys
import numpy as np
import jax
assert not jax.config.jax_enable_x64
from nbjax import experiment
from nbjax.renderer import engine
out = {}
for name, args in json.loads(sys.argv[1]).items():
    exp = experiment.build(shlex.split(args), accumulation="c-parity", phi_carryover="c-parity")
    image = np.asarray(engine.render(exp.scene, exp.config, exp.mask).image)
    dtypes = sorted({str(x.dtype) for x in jax.tree_util.tree_leaves(exp.scene) if hasattr(x, "dtype")})
    np.save(name + ".npy", image)
    out[name] = dict(image=str(image.dtype), scene=dtypes)
print(json.dumps(out))
"""
FLOAT32_CASES = ["p01_cubic_mosflm",          # a pixel centred on the direct beam (h = k = l = 0)
                 "p07_triclinic_misset_hkl", "p17_mosaic_seeded", "p52_interpolate_switch_off"]


def test_library_in_float32_meets_the_bound(in_inputs_dir):
    import json
    import os
    import subprocess
    import sys
    import warnings

    from conftest import ROOT

    env = dict(os.environ, JAX_ENABLE_X64="0", PYTHONPATH=os.pathsep.join(
        [str(ROOT.parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    cases = {name: (case_dir(name, "c") / "args.txt").read_text() for name in FLOAT32_CASES}
    done = subprocess.run([sys.executable, "-c", FLOAT32_SCRIPT, json.dumps(cases)], env=env, cwd=in_inputs_dir,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    kinds = json.loads(done.stdout.strip().splitlines()[-1])
    for name in FLOAT32_CASES:
        assert kinds[name]["image"] == "float32" and "float64" not in kinds[name]["scene"], (name, kinds[name])
        image = np.load(in_inputs_dir / (name + ".npy"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")   # a NaN or infinite pixel fails here
            m = metrics(reference_image(name, "c").reshape(image.shape), image)
        assert np.all(np.isfinite(image)), name
        assert m.pearson_r >= 0.999999, (name, m)
        assert m.max_rel_err <= 1e-3, (name, m)
        assert abs(m.sum_ratio - 1) <= 1e-4, (name, m)
