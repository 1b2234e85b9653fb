"""nbjax.params: simulate(params, config) is the image nbjax renders for the same command line,
compiles once per configuration, and batches with vmap."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import case_args
from nbjax.renderer import engine
from nbjax import groups as G
from nbjax import params as P
from nbjax.constants import RTD
from nbjax.errors import InputError
from nbjax.physics import rng

# Measured over all 51 golden cases in both modes: max |simulate - render| / max(render)
# is at most 1.1e-12 (XLA fuses the geometry into the render and contracts a few
# multiply-adds differently); the mosaic cases differ by ~3e-9 because nanoBragg
# rounds each domain's rotation angle to float32 and params rebuilds it in float64.
EQUIVALENCE_CASES = [
    ("p03_xds_orgx", "spec", 2e-12),              # XDS: SAMPLE pivot, near point from -ORGX/-ORGY
    ("p07_triclinic_misset_hkl", "spec", 2e-12),  # triclinic cell, misset, HKL table
    ("p08_mat_scaled_small", "spec", 2e-12),      # -mat crystal, 10 phi steps
    ("p13_close_distance", "spec", 2e-12),        # -close_distance, detector rotation
    ("p14_custom_vectors", "spec", 2e-12),        # custom convention
    ("p16_phi_carryover", "c", 2e-12),            # released nanoBragg's quirks
    ("p17_mosaic_seeded", "spec", 1e-8),          # mosaic domains (float32 angle in C)
    ("p39_mask", "spec", 2e-12),                  # -mask
]


def _modes(mode):
    return {} if mode == "spec" else dict(accumulation="c-parity", phi_carryover="c-parity")


@pytest.mark.parametrize("name,mode,tolerance", EQUIVALENCE_CASES)
def test_simulate_equals_render(name, mode, tolerance, in_inputs_dir):
    model = P.from_args(case_args(name), now=1.7e9, **_modes(mode))
    exp = model.experiment
    mask = None if model.mask is None else jnp.asarray(model.mask)
    reference = np.asarray(engine.render(exp.scene, exp.config, mask).image)
    image = np.asarray(P.simulate(model.params, model.config, mask))
    assert image.shape == reference.shape
    assert np.max(np.abs(image - reference)) <= tolerance * np.max(reference)
    if tolerance <= 2e-12:  # almost every pixel identical once rounded to float32
        assert np.mean(image.astype(np.float32) == reference.astype(np.float32)) > 0.99


def test_mosaic_draws_rebuild_nanobragg_domains(in_inputs_dir):
    """The stored axes and (1 − r3²)^(1/3) factors, with C's float32 angle, give nanoBragg's matrices."""
    model = P.from_args(case_args("p17_mosaic_seeded"))
    c = model.params.crystal
    spread32 = np.float32(float(c.mosaic_deg) / RTD)
    angles = np.array([float(np.float32(spread32 * np.float32(f))) for f in np.asarray(c.mosaic_factors)])
    rebuilt = np.asarray(P.mosaic_umats(jnp.asarray(1.0 * RTD), c.mosaic_axes, jnp.asarray(angles)))
    np.testing.assert_array_equal(rebuilt, np.asarray(model.experiment.scene.mosaic_umats))
    direct = rng.mosaic_domains(float(c.mosaic_deg) / RTD, c.mosaic_axes.shape[0], -12345).umats
    np.testing.assert_array_equal(rebuilt, direct)


def test_geometry_is_nanobragg_geometry(in_inputs_dir):
    """Scene pieces computed eagerly from the parameters are the set-up's doubles."""
    for name in ("p03_xds_orgx", "p10_twotheta_mosflm", "p14_custom_vectors", "p46_misset_random"):
        model = P.from_args(case_args(name))
        scene = P.scene_from_params(model.params, model.config)
        for field in ("pix0_m", "fdet", "sdet", "odet", "distance_m", "close_distance_m", "wavelength_m"):
            a, b = np.asarray(getattr(scene, field)), np.asarray(getattr(model.experiment.scene, field))
            assert np.allclose(a, b, rtol=1e-15, atol=1e-18), (name, field)
        np.testing.assert_allclose(np.asarray(scene.cell_m), np.asarray(model.experiment.scene.cell_m),
                                   rtol=0, atol=1e-23)


SMALL = ("-hkl small.hkl -cell 78 84 92 88 93 91 -misset 4 -7 11 -lambda 1.2 -N 9 -detpixels 32 -pixel 0.4 "
         "-distance 110 -Xbeam 6.5 -Ybeam 6.1 -phi 0 -osc 0.5 -phisteps 2 -oversample 1 -nonoise").split()


def test_new_parameter_values_do_not_recompile(in_inputs_dir):
    model = P.from_args(SMALL + ["-detpixels", "31"])  # a configuration no other test compiles
    params, config = model.params, model.config
    compiled = []

    def count(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(duration)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        first = P.simulate(params, config).block_until_ready()
        assert compiled, "the first call did not compile (or the compile event is no longer emitted)"
        # new values made on the host first (eager jnp arithmetic compiles its own small kernels)
        moved = params.replace(**{
            "crystal.misset_deg": jnp.asarray(np.asarray(params.crystal.misset_deg) + 0.2),
            "detector.distance_mm": jnp.asarray(np.asarray(params.detector.distance_mm) + 1.0),
            "crystal.n_cells": jnp.asarray(np.asarray(params.crystal.n_cells) * 1.1)})
        jax.block_until_ready(moved)
        before = len(compiled)
        second = P.simulate(moved, config).block_until_ready()
        assert len(compiled) == before, "the second call compiled again"
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert not np.array_equal(np.asarray(first), np.asarray(second))
    if hasattr(P.simulate, "_cache_size"):
        assert P.simulate._cache_size() >= 1


def test_batch_equals_loop(in_inputs_dir):
    model = P.from_args(SMALL)
    params, config = model.params, model.config
    rs = np.random.default_rng(0)
    missets = np.asarray(params.crystal.misset_deg) + rs.uniform(-2, 2, size=(8, 3))
    cells = np.asarray(params.crystal.cell_A) * (1 + rs.uniform(-0.01, 0.01, size=(8, 3)))
    batch = params.replace(**{"crystal.misset_deg": jnp.asarray(missets), "crystal.cell_A": jnp.asarray(cells)})
    axes = P.batch_axes(params, "crystal.misset_deg", "crystal.cell_A")
    images = np.asarray(P.simulate_batch(batch, config, in_axes=axes))
    assert images.shape == (8,) + config.shape
    for i in range(8):
        one = params.replace(**{"crystal.misset_deg": jnp.asarray(missets[i]), "crystal.cell_A": jnp.asarray(cells[i])})
        single = np.asarray(P.simulate(one, config))
        np.testing.assert_allclose(images[i], single, rtol=1e-12, atol=1e-12 * single.max())
    # every leaf batched (stack) gives the same images
    stacked = P.stack([params.replace(**{"crystal.misset_deg": jnp.asarray(m), "crystal.cell_A": jnp.asarray(c)})
                       for m, c in zip(missets[:3], cells[:3])])
    np.testing.assert_allclose(np.asarray(P.simulate_batch(stacked, config)), images[:3], rtol=1e-12,
                               atol=1e-12 * images.max())


def test_groups_and_replace(in_inputs_dir):
    model = P.from_args(SMALL)
    params, config = model.params, model.config
    np.testing.assert_allclose(np.asarray(G.get_group(params, "cell", config)), [78, 84, 92, 88, 93, 91])
    np.testing.assert_allclose(np.asarray(G.get_group(params, "misset", config)), [4, -7, 11])
    np.testing.assert_allclose(np.asarray(G.get_group(params, "beam_center", config)), [6.5, 6.1])
    moved = G.set_group(params, "distance", config, jnp.asarray([123.0]))
    assert float(moved.detector.distance_mm) == 123.0 and float(params.detector.distance_mm) == 110.0
    with pytest.raises(InputError, match="--refine: unknown group 'nonsense'"):
        G.get_group(params, "nonsense", config)
    assert hash(config) == hash(dataclasses.replace(config))


def test_sample_pivot_moves_the_near_point(in_inputs_dir):
    """XDS pivots about the sample: the beam-centre group is the near point (ORGX, ORGY)."""
    model = P.from_args(case_args("p03_xds_orgx"))
    config = model.config
    assert config.pivot == "sample" and config.sample_pivot_near_point
    near = np.asarray(G.get_group(model.params, "beam_center", config))
    np.testing.assert_allclose(near, [(70 - 0.5) * 0.1, (55 - 0.5) * 0.1], rtol=1e-12)
    geometry = P.derived_geometry(model.params, config)
    np.testing.assert_allclose(np.asarray(geometry["orgx_orgy_px"]), [70, 55], rtol=1e-12)


def test_matrix_crystal_as_cell_constants(in_inputs_dir):
    """A -mat crystal re-expressed as cell + misset renders the same image."""
    model = P.from_args(case_args("p08_mat_scaled_small") + ["-detpixels", "64", "-phisteps", "2"])
    assert model.config.crystal_from == "matrix"
    params2, config2 = P.as_cell_crystal(model.params, model.config)
    assert config2.crystal_from == "cell"
    a = np.asarray(P.simulate(model.params, model.config))
    b = np.asarray(P.simulate(params2, config2))
    assert np.max(np.abs(a - b)) <= 1e-9 * a.max()


def _rodrigues(vector_deg):
    """Rotation matrix of a rotation vector (axis times angle, degrees), by the Rodrigues formula."""
    v = np.asarray(vector_deg, float) / RTD
    angle = np.linalg.norm(v)
    k = v / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def test_rotation_vector_zero_is_identity_and_composes(in_inputs_dir):
    model = P.from_args(SMALL)
    params, config = model.params, model.config
    assert np.array_equal(np.asarray(params.crystal.rotation_deg), np.zeros(3))  # the default: no extra rotation
    base = P.lattice_vectors(params, config)
    real0, recip0 = np.asarray(base.real_A), np.asarray(base.reciprocal_A)
    # a full turn is the identity
    turned = P.lattice_vectors(params.replace(**{"crystal.rotation_deg": jnp.asarray([0.0, 0.0, 360.0])}), config)
    np.testing.assert_allclose(np.asarray(turned.real_A), real0, atol=1e-12)
    # 90 degrees about lab z maps x to y
    turned = P.lattice_vectors(params.replace(**{"crystal.rotation_deg": jnp.asarray([0.0, 0.0, 90.0])}), config)
    a0, a1 = real0[0], np.asarray(turned.real_A[0])
    np.testing.assert_allclose(a1, [-a0[1], a0[0], a0[2]], atol=1e-12)
    assert math.isclose(np.linalg.norm(a1), np.linalg.norm(a0), rel_tol=1e-14)
    # any rotation vector: the lab-frame rotation of the misset lattice (Rodrigues), real and reciprocal
    vector = [3.0, -17.0, 40.0]
    turned = P.lattice_vectors(params.replace(**{"crystal.rotation_deg": jnp.asarray(vector)}), config)
    R = _rodrigues(vector)
    np.testing.assert_allclose(np.asarray(turned.real_A), real0 @ R.T, atol=1e-12 * np.abs(real0).max())
    np.testing.assert_allclose(np.asarray(turned.reciprocal_A), recip0 @ R.T, atol=1e-12 * np.abs(recip0).max())


def test_replace_with_python_numbers_keeps_dtypes_and_does_not_recompile(in_inputs_dir):
    """A Python float given to Params.replace takes the leaf's dtype, so simulate reuses its executable."""
    model = P.from_args(SMALL)
    params, config = model.params, model.config
    P.simulate(params, config).block_until_ready()
    moved = params.replace(**{"detector.distance_mm": float(params.detector.distance_mm) + 1.0,
                              "crystal.misset_deg": [0.1, 0.2, 0.3]})
    assert moved.detector.distance_mm.dtype == params.detector.distance_mm.dtype
    assert not getattr(moved.detector.distance_mm, "weak_type", False)
    assert moved.crystal.misset_deg.dtype == params.crystal.misset_deg.dtype
    before = P.simulate._cache_size()
    P.simulate(moved, config).block_until_ready()
    assert P.simulate._cache_size() == before
    with pytest.raises(ValueError, match="crystal.cell_A"):
        params.replace(**{"crystal.cell_A": [1.0, 2.0]})
    with pytest.raises(KeyError, match="crystal.cell"):
        params.replace(**{"crystal.cell": 1.0})


def test_gradient_strategies_refuse_what_they_do_not_cover(in_inputs_dir):
    """Adjoint() names the c-parity configuration it cannot differentiate; the default then is Autodiff()."""
    model = P.from_args(SMALL, accumulation="c-parity", phi_carryover="c-parity")
    spec = P.from_args(SMALL)
    assert P.best_gradient(spec.config.render) == P.Adjoint()
    assert P.best_gradient(model.config.render) == P.Autodiff()
    with pytest.raises(P.UnsupportedGradient, match="c-parity accumulation"):
        P.simulate_core(model.params, model.config, gradient=P.Adjoint())
    # every strategy renders the same values
    a = np.asarray(P.simulate(spec.params, spec.config, gradient=P.Adjoint()))
    b = np.asarray(P.simulate(spec.params, spec.config, gradient=P.Autodiff(checkpoint=False)))
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * b.max())
    assert b.max() > 0


def test_adjoint_covers_mixed_precision(in_inputs_dir):
    """A float32 evaluation (--precision single) is differentiated by the adjoint in the scene's precision:
    its gradient equals the float64 model's to float32 accuracy."""
    model = P.from_args(SMALL)
    params, config = model.params, model.config
    mixed = config.with_render(evaluation_dtype="float32", output_dtype="float32")
    assert P.best_gradient(mixed.render) == P.Adjoint()

    def gradient(cfg, strategy):
        loss = lambda p: jnp.sum(jnp.sqrt(P.simulate_core(p, cfg, gradient=strategy).astype(jnp.float64) + 1.0))
        return jax.jit(jax.grad(loss))(params)

    reference = gradient(config, P.Adjoint())
    for got in (gradient(mixed, P.Adjoint()),):
        for leaf in ("cell_A", "misset_deg", "n_cells"):
            a, b = np.asarray(getattr(got.crystal, leaf)), np.asarray(getattr(reference.crystal, leaf))
            assert np.abs(b).max() > 0
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3 * np.abs(b).max())
        a, b = float(got.detector.distance_mm), float(reference.detector.distance_mm)
        assert b != 0 and abs(a - b) <= 2e-3 * abs(b)
