"""The adjoint render on -oversample_thick/_polar/_omega and the image-wide tricubic switch-off, in float64.

With an ``-oversample_*`` flag each evaluation ``e`` of sub-pixel ``r`` and
source ``s`` is weighted, ``I = I_bg + Σ_e T_e w_rs`` with ``w_rs`` the product
of the oversampled factors (capture fraction of the sub-pixel's layer,
polarization of the (sub-pixel, source), solid angle of the sub-pixel), and
the factors that are not oversampled multiply the pixel afterwards.  The
adjoint pulls ``c · w_rs`` through every ``T_e`` and ``c · Σ_e T_e`` through
``w_rs(θ)``.  With ``-interpolate`` and a table too small for the detector,
nanoBragg switches interpolation off for the rest of the image at the first
evaluation whose 4×4×4 neighbourhood leaves the table; the switch-off point is
piecewise constant in the parameters, so the adjoint differentiates with the
forward's own on/off decision per evaluation.

For each configuration (16×16 pixels, two phi steps, 2×2 sub-pixels) the
gradient of ``Σ w·image`` (fixed weights divided by ``image + mean``) through
``gradient=Adjoint()`` is compared with

* ``gradient=Autodiff()`` w.r.t. every leaf of :class:`~nbjax.params.Params`
  (the engine's scans differentiated by JAX: the same derivative, so agreement
  to rounding, 1e-9 relative), and
* central finite differences of the rendered image w.r.t. distance, cell,
  N, wavelength and beam centre: steps ``1e-4 · 2^-k`` of each parameter's
  physical unit (:func:`nbjax.fit.physical_units`), Richardson-extrapolated,
  the most self-consistent pair used (as in ``test_gradients.py``, whose
  docstring explains why), agreeing to 1e-4 relative.

The oversample cases use ``-default_F`` (a smooth model); the switch-off case
uses the golden ``small.hkl`` (h, k, l in −12…12) at 34 mm with the beam at
the top edge, so the first rows interpolate and the switch falls in row 10,
in the third of four 4-row blocks: the adjoint's block scan carries the
switch from block to block as the forward does.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import central_differences, compile_fast, model_from_args, richardson_best
from nbjax import groups as G
from nbjax import params as P
from nbjax.renderer import engine

fitmod = importlib.import_module("nbjax.fit")

BASE = ("-cell 78 84 92 88 93 91 -misset 4 -7 11 -lambda 1.2 -N 5 -detpixels 16 -pixel 0.5 "
        "-phisteps 2 -osc 0.5 -oversample 2 -nonoise").split()
SMOOTH = "-default_F 100 -distance 40 -Xbeam 4.1 -Ybeam 3.9".split()
THICK = "-detector_thick 100 -detector_abs 400 -detector_thicksteps 2"
POLAR = "-polar 0.7 -divergence 0.3 -divsteps 2"
CASES = {
    "oversample_thick": SMOOTH + f"{THICK} -oversample_thick".split(),
    "oversample_polar": SMOOTH + f"{POLAR} -oversample_polar".split(),
    "oversample_omega": SMOOTH + "-oversample_omega".split(),
    "oversample_all": SMOOTH + f"{THICK} {POLAR} -oversample_thick -oversample_polar -oversample_omega".split(),
    "image_wide_fallback": "-hkl small.hkl -interpolate -distance 34 -Xbeam 0.25 -Ybeam 4".split(),
}
FD_GROUPS = ("distance", "cell", "N", "wavelength", "beam_center")
TOLERANCE = 1e-4
FLOOR = 1e-6
STEPS = 1e-4 * 2.0 ** -np.arange(10)
_compile = compile_fast       # fast compiler options: see conftest.FAST_COMPILE


def _from_args(argv, **kwargs):
    return model_from_args(argv, block_rows=4, **kwargs)


class Case:
    def __init__(self, name):
        model = _from_args(BASE + CASES[name])
        self.params, self.config = model.params, model.config
        self.theta0 = G.get_groups(self.params, FD_GROUPS, self.config)
        self.names = [f"{g}[{i}]" for g in FD_GROUPS for i in range(G.group_size(g))]
        self.units = fitmod.physical_units(self.params, self.config, FD_GROUPS)
        self.render = _compile(lambda theta: P.simulate_core(self.unpack(theta), self.config), self.theta0)
        image = np.asarray(self.render(self.theta0))
        assert np.all(np.isfinite(image)) and image.max() > 0
        self.image0 = image
        self.weights = jnp.asarray(np.random.default_rng(7).uniform(0.5, 1.5, image.shape) / (image + image.mean()))
        self._grads = {}

    def unpack(self, theta):
        return G.set_groups(self.params, FD_GROUPS, self.config, theta)

    def gradient(self, strategy):
        """d/dParams of Σ w·image through ``strategy`` (every leaf)."""
        key = type(strategy).__name__
        if key not in self._grads:
            def functional(params, w):
                return jnp.sum(w * P.simulate_core(params, self.config, gradient=strategy))

            fun = _compile(jax.grad(functional), self.params, self.weights)
            self._grads[key] = jax.tree_util.tree_map(np.asarray, fun(self.params, self.weights))
        return self._grads[key]

    def finite_differences(self):
        w = np.asarray(self.weights)
        slopes = central_differences(lambda theta: np.sum(w * np.asarray(self.render(theta))),
                                     self.theta0, self.units, STEPS)
        return richardson_best(slopes), float(np.sum(w * self.image0))


@functools.lru_cache(maxsize=None)
def case(name) -> Case:
    return Case(name)


@pytest.mark.parametrize("name", list(CASES))
def test_adjoint_covers_the_configuration(name):
    c = case(name)
    assert P.adjoint_unsupported(c.config.render) is None
    assert P.best_gradient(c.config.render) == P.Adjoint()


def test_the_switch_off_falls_mid_image():
    """The fallback case really switches interpolation off inside the image, after whole blocks interpolated."""
    c = case("image_wide_fallback")
    render = c.config.render
    assert render.image_wide_fallback and render.block_rows == 4
    point_rule = dataclasses.replace(render, interpolation_fallback="point")

    def both(params):
        scene = P.scene_from_params(params, c.config)
        return engine.render_core(scene, render), engine.render_core(scene, point_rule).image

    result, point = _compile(both, c.params)(c.params)
    assert float(result.interpolation_off_at[0]) == 1.0
    # against the "point" rule (nearest only where the neighbourhood leaves the table): the same
    # image before the switch-off (rows 0-9, blocks 0-2; to rounding, the two loop nests are
    # compiled apart), another one after it (by 0.5% of the peak here)
    image, point = np.asarray(result.image), np.asarray(point)
    rows = np.max(np.abs(image - point), axis=1) / image.max()
    assert np.all(rows[:10] < 1e-12) and rows[10] > 1e-3, rows


@pytest.mark.parametrize("name", ["oversample_all", "image_wide_fallback"])
def test_adjoint_equals_autodiff(name):
    """Adjoint and autodiff through the engine's scans agree on every leaf, to rounding.

    The three -oversample_* weights together (each one alone is compared with
    finite differences below; a compilation of the autodiff gradient costs ~9 s).
    """
    c = case(name)
    adjoint, autodiff = c.gradient(P.Adjoint()), c.gradient(P.Autodiff())
    checked = 0
    for (where, a), b in zip(jax.tree_util.tree_leaves_with_path(adjoint), jax.tree_util.tree_leaves(autodiff)):
        label = f"{name}: d/d{jax.tree_util.keystr(where)}"
        assert np.all(np.isfinite(a)), label
        top = np.abs(b).max() if b.size else 0.0
        if top == 0.0:
            assert np.all(a == 0.0), label
            continue
        scale = np.maximum(np.abs(b), 1e-6 * top)
        np.testing.assert_array_less(np.abs(a - b) / scale, 1e-9, err_msg=label)
        checked += 1
    assert checked >= 10   # geometry, cell, N, beam, fluence, ... all move the image


@pytest.mark.parametrize("name", list(CASES))
def test_adjoint_matches_finite_differences(name):
    c = case(name)
    fd, f0 = c.finite_differences()
    grad = np.asarray(G.get_groups(c.gradient(P.Adjoint()), FD_GROUPS, c.config))
    scale = np.maximum(np.abs(fd), FLOOR * abs(f0) / c.units)
    err = np.abs(grad - fd) / scale
    report = "\n".join(f"  {n:16s} grad {g: .10e}  fd {d: .10e}  err {e:.1e}"
                       for n, g, d, e in zip(c.names, grad, fd, err))
    assert np.all(np.abs(fd) > FLOOR * abs(f0) / c.units), report   # every parameter moves the functional
    assert err.max() <= TOLERANCE, f"{name}: off by {err.max():.2e}\n" + report


@pytest.mark.parametrize("accumulation, carryover, reason", [
    ("c-parity", "spec", "c-parity accumulation of the -oversample_"),
    ("spec", "c-parity", "phi = 0 carry-over of released nanoBragg.c"),
])
def test_adjoint_still_refuses_c_parity_accumulation_and_carryover(accumulation, carryover, reason):
    argv = BASE + SMOOTH + "-oversample_omega -phi 0".split()
    model = _from_args(argv, accumulation=accumulation, phi_carryover=carryover)
    assert reason in P.adjoint_unsupported(model.config.render)
    assert P.best_gradient(model.config.render) == P.Autodiff()
    with pytest.raises(P.UnsupportedGradient, match=f"does not cover .*{re.escape(reason)}.*use gradient=Autodiff"):
        P.simulate_core(model.params, model.config, gradient=P.Adjoint())
