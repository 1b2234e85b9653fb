"""Rendering across devices: 4 fake CPU devices give the single-device pixels.

Runs in a subprocess because the device count must be set before JAX starts.
"""

import os
import subprocess
import sys
import textwrap

from conftest import INPUTS

SCRIPT = textwrap.dedent(
    r"""
    import os, shlex, sys
    import numpy as np, jax
    jax.config.update("jax_enable_x64", True)
    from nbjax import experiment
    from nbjax.renderer import engine, sharding
    assert len(jax.devices()) == 4, jax.devices()
    golden = sys.argv[1]
    def args(case):
        return shlex.split(open(os.path.join(golden, "cases", case, "args.txt")).read())
    cases = [
        (args("p16_phi_carryover"), dict(phi_carryover="c-parity", block_rows=7)),
        (args("p39_mask"), dict(block_rows=9)),
        (args("p38_roi"), dict(block_rows=4, phi_carryover="c-parity")),
        (args("p29_oversample_thick"), dict(accumulation="c-parity", block_rows=11)),
        # tricubic F switched off image-wide at the first out-of-range evaluation: row 71 of 96, on the
        # third of four devices (25 rows each), so the fourth must start with interpolation off
        (args("p52_interpolate_switch_off"), dict(block_rows=5)),
        ("-hkl small.hkl -cell 40 40 40 90 90 90 -misset 3 7 11 -lambda 1.0 -N 2 -detpixels 64 "
         "-pixel 0.5 -distance 60 -Xbeam 2 -Ybeam 3 -oversample 2 -phi 0 -osc 1 -phisteps 2 -nonoise".split(),
         dict(block_rows=3, phi_carryover="c-parity")),
    ]
    for argv, kw in cases:
        exp = experiment.build(argv, **kw)
        one = engine.render(exp.scene, exp.config, exp.mask)
        if "-interpolate" in argv:
            found, *_ = np.asarray(one.interpolation_off_at)
            assert exp.config.image_wide_fallback and found
        four = sharding.render_sharded(exp.scene, exp.config, exp.mask, devices=4)
        a, b = np.asarray(one.image), np.asarray(four.image)
        assert np.array_equal(a.astype(np.float32), b.astype(np.float32)), argv[:4]
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=0)
        np.testing.assert_allclose(float(four.omega_sum), float(one.omega_sum), rtol=1e-12)
        np.testing.assert_array_equal(np.asarray(four.interpolation_off_at), np.asarray(one.interpolation_off_at))
    # a batch of 8 orientations, sharded over the batch axis
    exp = experiment.build(args("p01_cubic_mosflm"), block_rows=32)
    import dataclasses, jax.numpy as jnp
    cells = jnp.stack([exp.scene.cell_m * (1 + 0.01 * i) for i in range(8)])
    batch = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (8,) + x.shape), exp.scene)
    batch = dataclasses.replace(batch, cell_m=cells)
    images = np.asarray(sharding.render_batch(batch, exp.config, devices=4).image)
    for i in (0, 5):
        single = engine.render(dataclasses.replace(exp.scene, cell_m=cells[i]), exp.config).image
        np.testing.assert_allclose(images[i], np.asarray(single), rtol=1e-12)
    # a second batch of the same configuration reuses the compiled renderer
    reversed_batch = jax.block_until_ready(dataclasses.replace(batch, cell_m=cells[::-1]))  # eager ops compile too
    jax.block_until_ready(jax.device_put(reversed_batch, jax.devices()[0]))
    compiled = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: compiled.append(event) if event == "/jax/core/compile/backend_compile_duration" else None)
    again = np.asarray(sharding.render_batch(reversed_batch, exp.config, devices=4).image)
    np.testing.assert_array_equal(again[::-1], images)
    assert compiled == [], compiled
    print("sharding ok")
    """
)


def test_sharded_render_equals_single_device(tmp_path):
    for f in INPUTS.iterdir():
        os.symlink(f, tmp_path / f.name)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    golden = os.path.join(os.path.dirname(__file__), "golden")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, golden], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sharding ok" in proc.stdout
