"""Gradient strategies for the renderer, and the adjoint render: reverse mode without scan residuals.

A strategy object says how reverse mode goes through a render, as diffrax's
``adjoint=`` does for an ODE solve: :class:`Autodiff` differentiates the
engine's scans (every mode and configuration; ``checkpoint`` rematerialises each
row block), :class:`Adjoint` runs the hand-written adjoint below, built from the
engine's own single-element kernels, and refuses (:class:`UnsupportedGradient`)
the configurations it does not cover.  Both render the same values; units are
the engine's (SI, photons per pixel).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from nbjax.physics import lattice, structure_factors
from nbjax.renderer import engine, modes

__all__ = ["Adjoint", "Autodiff", "UnsupportedGradient", "adjoint_supported", "adjoint_unsupported",
           "best_gradient"]


# --------------------------------------------------------------------------
# reverse mode without the engine's scan residuals (the adjoint render)
#
# Differentiating the engine with plain autodiff stores every intermediate of
# every (sub-pixel, source, phi, domain) iteration of its nested scans and
# costs tens of forward renders.  The adjoint below is the same model read
# backwards: for a cotangent image g, with the evaluations e of sub-pixel r
# and source s weighted by w_rs (the product of the -oversample_* factors,
# 1 without them) and the pixel multiplied by the factors not oversampled, A_p,
#
#   image_p = K f A_p (I_bg + Σ_rs w_rs Σ_{e ∈ rs} T_e),   T_e = F(hkl_e)² F_latt(hkl_e)², K = r_e²/steps
#   ∂⟨g, image⟩ = Σ_p g_p image_p ∂log(f A_p)
#               + Σ_p c_p (∂I_bg + Σ_rs [w_rs Σ_e ∂T_e + (Σ_e T_e) ∂w_rs]),   c_p = g_p K f A_p,
#
# evaluated in the engine's loop order with the engine's own single-element
# kernels: each (sub-pixel, source, step) takes the local VJP of its terms
# (weighted by c w_rs) and adds the result into small accumulators (per-pixel
# dq, the 3×3 cell rows of each step, the crystal-size and structure-factor
# leaves, and per pixel Σ_e T_e when there is a weight), so nothing is stored
# per iteration.  After each source's steps, c Σ_e T_e is pulled back through
# w_rs (the ray's solid angle and capture fraction, the polarization) with
# its VJP; dq through the scattering vector and the pixel rays; the step
# matrices through the phi and mosaic rotations; the prefactors A_p through
# their own VJP (each kept factor recomputed from the sub-pixel and source it
# was taken from, which a forward sweep records).  Which value each of Ω, P, C keeps, which weight the
# evaluations and which multiply the pixel are the engine's rules
# (engine._factors_after_run/_after_source with their _run_takes/_source_takes,
# _evaluation_weight, _apply_pixel_factors), replayed here, not restated.  Tricubic F uses the
# forward's own per-evaluation on/off decision (engine._interpolation_switch):
# with nanoBragg's image-wide switch-off the blocks are scanned carrying the
# switch as the forward does; the switch-off point is piecewise constant, so
# it contributes no derivative.  Covered: spec accumulation without the
# phi = 0 carry-over, with or without -oversample_thick/_polar/_omega, nearest
# or tricubic F with either fallback rule, any precision (mixed precision is
# differentiated in the scene's; the switch-off point is still found in the
# forward's precision); Adjoint() refuses the rest.


def adjoint_unsupported(render: engine.RenderConfig) -> str | None:
    """Why the adjoint render cannot differentiate ``render``, or None when it can.

    Not covered: released nanoBragg's accumulation (the -oversample_* factors
    multiply the running sum, so every later evaluation's weight depends on
    the earlier ones) and its phi = 0 carry-over (an evaluation's cell depends
    on the previously rendered pixel).
    """
    if render.accumulation is not modes.Mode.SPEC:
        return "c-parity accumulation of the -oversample_* factors (--accumulation c-parity)"
    if render.uses_carryover:
        return "the phi = 0 carry-over of released nanoBragg.c (--phi-carryover-mode c-parity)"
    return None


def adjoint_supported(render: engine.RenderConfig) -> bool:
    """Whether :class:`Adjoint` can differentiate renders of ``render``."""
    return adjoint_unsupported(render) is None


class UnsupportedGradient(ValueError):
    """A gradient strategy was asked for a configuration it does not cover."""


@dataclasses.dataclass(frozen=True)
class Autodiff:
    """Plain autodiff through the engine's scans: every mode (forward and reverse), every configuration.

    Reverse mode stores each iteration's intermediates; with ``checkpoint``
    (the default) each row block is recomputed in the backward pass, so memory
    is one block's worth, at tens of forward renders per gradient.
    """

    checkpoint: bool = True

    def image(self, scene, config: engine.RenderConfig, mask):
        return engine.render_core(scene, config, mask, checkpoint=self.checkpoint).image


@dataclasses.dataclass(frozen=True)
class Adjoint:
    """Reverse mode through the adjoint render: the same model read backwards, nothing stored per evaluation.

    Several times cheaper than :class:`Autodiff` for ``jax.grad``/``jax.vjp``;
    forward mode (``jax.jvp``, ``jax.jacfwd``) is not available through it.
    Covers the spec accumulation, -oversample_thick/_polar/_omega included, and
    tricubic interpolation with either switch-off rule; refuses, naming the
    reason, the configurations of :func:`adjoint_unsupported` (the c-parity
    accumulation and the phi = 0 carry-over).
    """

    def image(self, scene, config: engine.RenderConfig, mask):
        reason = adjoint_unsupported(config)
        if reason is not None:
            raise UnsupportedGradient(f"gradient=Adjoint() does not cover {reason}; use gradient=Autodiff()")
        return _render_adjoint(config, scene, mask)


def best_gradient(render: engine.RenderConfig):
    """The cheapest reverse-mode strategy that covers ``render``: :class:`Adjoint`, else :class:`Autodiff`."""
    return Adjoint() if adjoint_supported(render) else Autodiff()


def _safe_log(x):
    positive = x > 0
    return jnp.where(positive, jnp.log(jnp.where(positive, x, 1.0)), 0.0)


def _pixel_factors(scene: engine.Scene, cfg: engine.RenderConfig, fast, slow, active):
    """Per pixel: Ω, C and P after every sub-pixel and source, kept by the engine's own rules, and
    where each was taken from: the run (and, for P, the source) whose value it is, -1 for none.

    A forward sweep only (nothing to differentiate here); :func:`_taken_factors`
    recomputes the kept values differentiably from where they were taken.
    """
    dtype = fast.dtype
    ray = engine._vmap2(engine._ray, (0, 0) + (None,) * 5)
    capture = engine._vmap2(engine._capture, (0, 0, 0, None, None))
    polar_factor = engine._vmap2(engine._polarization, (0, 0, 0, None, None))
    runs = jnp.arange(engine._n_runs(cfg), dtype=jnp.int32)
    none = jnp.full(fast.shape, -1, jnp.int32)

    def run_body(carry, r_index):
        factors, (r_omega, r_capture, r_polar, s_polar) = carry
        layer_i, sub_s, sub_f = engine._run_indices(cfg, r_index)
        layer = layer_i.astype(dtype)
        dx, dy, dz, omega_sub = ray(fast, slow, layer, sub_s, sub_f, scene, cfg)
        fraction = capture(dx, dy, dz, layer, scene) if cfg.has_thickness else None
        take_omega, take_capture = engine._run_takes(factors, cfg, sub_s, sub_f)
        r_omega = jnp.where(take_omega, r_index, r_omega)
        r_capture = jnp.where(take_capture, r_index, r_capture)
        factors = engine._factors_after_run(factors, cfg, omega_sub, fraction, sub_s, sub_f)
        if engine._polarization_computed(cfg):
            def source_body(carry, xs):
                factors, r_polar, s_polar = carry
                cut = _cut(dx, dy, dz, xs[:2], active, scene, cfg)
                take = engine._source_takes(factors, cfg, cut)
                r_polar, s_polar = jnp.where(take, r_index, r_polar), jnp.where(take, xs[2], s_polar)
                factors = engine._factors_after_source(factors, cfg, polar_factor(dx, dy, dz, xs[0], scene), cut)
                return (factors, r_polar, s_polar), None

            xs = (scene.incident, scene.wavelength_m, jnp.arange(scene.incident.shape[0], dtype=jnp.int32))
            factors, r_polar, s_polar = lax.scan(source_body, (factors, r_polar, s_polar), xs)[0]
        return (factors, (r_omega, r_capture, r_polar, s_polar)), None

    start = (engine._factors_start(cfg, jnp.zeros(fast.shape, dtype)), (none, none, none, none))
    return lax.scan(run_body, start, runs)[0]


def _taken_factors(scene, cfg, fast, slow, factors, taken):
    """The kept Ω, C, P that multiply the pixel, recomputed as functions of ``scene`` from the
    sub-pixel (and source) each was taken from (values as kept where none was taken)."""
    dtype = fast.dtype
    r_omega, r_capture, r_polar, s_polar = taken
    ray = engine._vmap2(engine._ray, (0, 0, 0, 0, 0, None, None))

    def ray_of(r_index):
        layer, sub_s, sub_f = engine._run_indices(cfg, jnp.maximum(r_index, 0))
        return layer.astype(dtype), ray(fast, slow, layer.astype(dtype), sub_s, sub_f, scene, cfg)

    omega, capture, polar = factors
    if not cfg.oversample_omega:
        omega = jnp.where(r_omega >= 0, ray_of(r_omega)[1][3], omega)
    if cfg.has_thickness and not cfg.oversample_thick:
        layer, (dx, dy, dz, _) = ray_of(r_capture)
        fraction = engine._vmap2(engine._capture, (0, 0, 0, 0, None))(dx, dy, dz, layer, scene)
        capture = jnp.where(r_capture >= 0, fraction, capture)
    if engine._polarization_computed(cfg) and not cfg.oversample_polar:
        _, (dx, dy, dz, _) = ray_of(r_polar)
        # the source each pixel's factor was taken from; with one source, its vector unbatched
        # (gathered per pixel, the incident E/B frame and its derivative would run per pixel)
        one_source = scene.incident.shape[0] == 1
        incident = scene.incident[0] if one_source else scene.incident[jnp.maximum(s_polar, 0)]
        value = engine._vmap2(engine._polarization, (0, 0, 0, None if one_source else 0, None))(
            dx, dy, dz, incident, scene)
        polar = jnp.where(r_polar >= 0, value, polar)
    return engine._Factors(omega, capture, polar)


def _cut(dx, dy, dz, source, active, scene, cfg):
    """Evaluations the engine skips for a (sub-pixel, source) with ray ``d`` (engine._evaluations_cut)."""
    q = engine._vmap2(engine._scattering, (0, 0, 0, None, None))(dx, dy, dz, source[0], source[1])
    return engine._evaluations_cut(q, active, scene, cfg)


def _step_rows(scene: engine.Scene, cfg: engine.RenderConfig):
    """(Q, 3, 3) cell rows of every (phi, domain) step, as the engine builds them."""
    states = engine._phi_states(scene, cfg, scene.cell_m)[0]
    return engine._step_matrices(states, scene.mosaic_umats)


_LATTICE_LEAVES = ("n_cells", "fudge", "reciprocal_A", "default_F")
_POLAR_LEAVES = ("kahn_factor", "polar_axis")


def _adjoint_block(scene, cfg, switch_cfg, mask, mask_blk, img_blk, g_blk, want_table, switch, block_index):
    """Scene cotangent of ⟨g, image⟩ restricted to one row block, and the interpolation switch after it.

    ``mask_blk``, ``img_blk``, ``g_blk``: the block's rows of the mask (or
    None), the image and its cotangent, from :func:`_row_blocks`; ``mask`` the
    whole mask (or None), for the engine's own block preparation.  ``switch``
    is the engine's ``(interpolating, first_oob)`` carry before the block;
    ``switch_cfg`` the configuration the forward rendered with (its
    evaluation precision), so that the switch-off point is the forward's own.
    """
    dtype = scene.pix0_m.dtype
    fast_i, slow_i, active = engine._block_pixels(cfg, block_index)
    if mask_blk is not None:  # the block's rows of the mask (see _row_blocks)
        active = active & (mask_blk != 0)
    fast, slow = fast_i.astype(dtype), slow_i.astype(dtype)
    g_blk = jnp.where(active, g_blk, 0.0)
    img_blk = jnp.where(active, img_blk, 0.0)
    ones = jnp.ones(fast.shape, dtype)

    # which evaluations interpolate F: the engine's decision, taken as the forward took it
    interpolate_here = None
    if cfg.has_hkls and cfg.interpolate:
        carry = engine.initial_carry(scene)._replace(interpolating=switch[0], first_oob=switch[1])
        blk = engine._prepare_block(scene, switch_cfg, mask, carry, block_index)[0]
        interpolate_here, interpolating, first_oob = engine._interpolation_switch(
            scene, switch_cfg, blk, switch[0], switch[1])
        switch = (interpolating, first_oob)

    # (1) prefactors: ∂image/∂θ = image ∂log(f · the factors not oversampled)/∂θ
    factors, taken = _pixel_factors(scene, cfg, fast, slow, active)

    def log_prefactor(s):
        kept = _taken_factors(s, cfg, fast, slow, factors, taken)
        return _safe_log(s.fluence) + _safe_log(engine._apply_pixel_factors(ones, cfg, kept))

    _, pull_prefactor = jax.vjp(log_prefactor, scene)
    (grad,) = pull_prefactor(g_blk * img_blk)

    # (2) the sum over evaluations
    c = jnp.where(active, engine.photons(scene, cfg, engine._apply_pixel_factors(g_blk, cfg, factors)), 0.0)
    grad = dataclasses.replace(grad, background_I=grad.background_I + jnp.sum(c))
    # -oversample_*: the evaluations of a (sub-pixel, source) are weighted by w(θ) (engine._evaluation_weight)
    weighted = engine._evaluation_weight(cfg, factors) is not None

    rows_q = _step_rows(scene, cfg)
    n_src, n_steps = scene.incident.shape[0], rows_q.shape[0]
    table_flat, table_shape = None, None
    if cfg.has_hkls:
        table_flat, table_shape = structure_factors.padded_table(scene.F_table, scene.default_F)
    lat0 = {k: getattr(scene, k) for k in _LATTICE_LEAVES}
    ray = engine._vmap2(engine._ray, (0, 0) + (None,) * 5)
    scattering = engine._vmap2(engine._scattering, (0, 0, 0, None, None))
    capture = engine._vmap2(engine._capture, (0, 0, 0, None, None))
    polar_factor = engine._vmap2(engine._polarization, (0, 0, 0, None, None))
    evaluation = engine._vmap2(engine._evaluation, (0, 0, 0, None, None, None))

    def terms(q, cell_rows, lat, flat, e_index):
        """F_cell² F_latt² of one step, per pixel."""
        s = dataclasses.replace(scene, **lat)
        h, k, l, f_latt = evaluation(*q, cell_rows, s, cfg)
        if interpolate_here is not None:
            f_cell = engine._lookup_F(h, k, l, interpolate_here(e_index, (h, k, l)), (flat, table_shape, None), cfg)
        elif cfg.has_hkls:
            f_cell = flat[structure_factors.nearest_flat_index(h, k, l, table_shape, cfg.hkl_min)]
        else:
            f_cell = lat["default_F"]
        return f_cell * f_cell * f_latt * f_latt

    def weighted_terms(q, cell_rows, lat, flat, weights, e_index):
        t = terms(q, cell_rows, lat, flat, e_index)
        return jnp.sum(weights * t), t

    fast_square = cfg.shape is modes.Shape.SQUARE and not cfg.interpolate and not want_table
    zero_lat = jax.tree_util.tree_map(jnp.zeros_like, lat0)
    zero_flat = jnp.zeros_like(table_flat) if (cfg.has_hkls and want_table) else None
    zeros = jnp.zeros(fast.shape, dtype)
    zeros3 = (zeros, zeros, zeros)
    zero_factors = engine._Factors(zeros, zeros, zeros)
    zero_scene = jax.tree_util.tree_map(jnp.zeros_like, scene)
    polar0 = {k: getattr(scene, k) for k in _POLAR_LEAVES}   # what engine._polarization reads
    zero_polar = jax.tree_util.tree_map(jnp.zeros_like, polar0)
    runs = jnp.arange(engine._n_runs(cfg), dtype=jnp.int32)
    step_index = jnp.arange(n_steps, dtype=jnp.int32)

    def run_body(carry, r_index):
        g_scene, g_rows, g_lat, g_flat, kept = carry
        layer_i, sub_s, sub_f = engine._run_indices(cfg, r_index)
        layer = layer_i.astype(dtype)

        def run_geometry(s):
            dx, dy, dz, omega_sub = ray(fast, slow, layer, sub_s, sub_f, s, cfg)
            if not weighted:
                return (dx, dy, dz), kept
            fraction = capture(dx, dy, dz, layer, s) if cfg.has_thickness else None
            return (dx, dy, dz), engine._factors_after_run(kept, cfg, omega_sub, fraction, sub_s, sub_f)

        (d, run_factors), pull_run = jax.vjp(run_geometry, scene)

        def source_body(carry, xs):
            g_d, g_factors, g_src, g_rows, g_lat, g_flat, kept = carry
            incident, wavelength, s_index = xs
            q, pull_q = jax.vjp(lambda d, i, w: scattering(*d, i, w), d, incident, wavelength)
            cut = _cut(*d, (incident, wavelength), active, scene, cfg)
            c_eval = jnp.where(cut, 0.0, c)
            if weighted:
                def source_weight(d, run_factors, incident, polar_leaves):
                    s = dataclasses.replace(scene, **polar_leaves)
                    pol = polar_factor(*d, incident, s) if engine._polarization_computed(cfg) else None
                    entering = run_factors._replace(polar=kept.polar)
                    after = engine._factors_after_source(entering, cfg, pol, cut)
                    return engine._evaluation_weight(cfg, after), after

                w, pull_w, kept = jax.vjp(source_weight, d, run_factors, incident, polar0, has_aux=True)
                weights = c_eval * w
            else:
                weights = c_eval
            e_base = engine._evaluation_base(r_index, s_index, n_src, n_steps)

            if fast_square:
                def square_body(carry, cell_rows):
                    g_q, g_n, g_default, sum_t = carry
                    # always true, and not foldable while either loop has more than one iteration
                    # (a loop of one is removed and its index becomes the constant 0)
                    dq, drows, dn, dd = _square_step(q, cell_rows, scene, cfg, table_flat, table_shape, weights,
                                                     (block_index >= 0) & (r_index >= 0))
                    if weighted:
                        sum_t = sum_t + terms(q, cell_rows, lat0, table_flat, None)
                    return (tuple(x + y for x, y in zip(g_q, dq)), g_n + dn, g_default + dd, sum_t), drows

                init = (zeros3, jnp.zeros_like(scene.n_cells), jnp.zeros_like(scene.default_F),
                        zeros if weighted else None)
                (g_q, g_n, g_default, sum_t), drows = lax.scan(square_body, init, rows_q)
                g_lat = dict(g_lat, n_cells=g_lat["n_cells"] + g_n, default_F=g_lat["default_F"] + g_default)
            else:
                def step_body(carry, xs):
                    g_q, g_lat, g_flat, sum_t = carry
                    cell_rows, q_index = xs
                    e_index = e_base + q_index
                    if g_flat is not None:
                        _, pull, t = jax.vjp(lambda q, r, lat, fl: weighted_terms(q, r, lat, fl, weights, e_index),
                                             q, cell_rows, lat0, table_flat, has_aux=True)
                        dq, drows, dlat, dflat = pull(jnp.ones((), dtype))
                        g_flat = g_flat + dflat
                    else:
                        _, pull, t = jax.vjp(lambda q, r, lat: weighted_terms(q, r, lat, table_flat, weights, e_index),
                                             q, cell_rows, lat0, has_aux=True)
                        dq, drows, dlat = pull(jnp.ones((), dtype))
                    g_q = tuple(a + b for a, b in zip(g_q, dq))
                    g_lat = jax.tree_util.tree_map(jnp.add, g_lat, dlat)
                    if weighted:
                        sum_t = sum_t + t
                    return (g_q, g_lat, g_flat, sum_t), drows

                init = (zeros3, g_lat, g_flat, zeros if weighted else None)
                (g_q, g_lat, g_flat, sum_t), drows = lax.scan(step_body, init, (rows_q, step_index))
            dd, dinc, dwav = pull_q(g_q)
            g_d = tuple(a + b for a, b in zip(g_d, dd))
            if weighted:  # ∂w: Σ_q T_q · c pulled back through the weight of this (sub-pixel, source)
                dd, dfac, dinc_w, dscene = pull_w(c_eval * sum_t)
                g_d = tuple(a + b for a, b in zip(g_d, dd))
                g_factors = jax.tree_util.tree_map(jnp.add, g_factors, dfac)
                g_src = jax.tree_util.tree_map(jnp.add, g_src, dscene)
                dinc = dinc + dinc_w
            return (g_d, g_factors, g_src, g_rows + drows, g_lat, g_flat, kept), (dinc, dwav)

        init = (zeros3, zero_factors, zero_polar, g_rows, g_lat, g_flat, run_factors)
        xs = (scene.incident, scene.wavelength_m, jnp.arange(n_src, dtype=jnp.int32))
        (g_d, g_factors, g_src, g_rows, g_lat, g_flat, kept), (dinc, dwav) = lax.scan(source_body, init, xs)
        (d_scene,) = pull_run((g_d, g_factors))
        d_scene = dataclasses.replace(d_scene, incident=d_scene.incident + dinc,
                                      wavelength_m=d_scene.wavelength_m + dwav,
                                      **{k: getattr(d_scene, k) + g_src[k] for k in _POLAR_LEAVES})
        g_scene = jax.tree_util.tree_map(jnp.add, g_scene, d_scene)
        return (g_scene, g_rows, g_lat, g_flat, kept), None

    init = (zero_scene, jnp.zeros_like(rows_q), zero_lat, zero_flat, engine._factors_start(cfg, zeros))
    (g_scene, g_rows, g_lat, g_flat, _), _ = lax.scan(run_body, init, runs)

    # step matrices -> cell, spindle, phi, mosaic; lattice leaves; F table
    _, pull_rows = jax.vjp(lambda s: _step_rows(s, cfg), scene)
    (d_rows_scene,) = pull_rows(g_rows)
    grad = jax.tree_util.tree_map(jnp.add, grad, g_scene)
    grad = jax.tree_util.tree_map(jnp.add, grad, d_rows_scene)
    grad = dataclasses.replace(grad, **{k: getattr(grad, k) + g_lat[k] for k in _LATTICE_LEAVES})
    if g_flat is not None:
        _, pull_table = jax.vjp(lambda t, d: structure_factors.padded_table(t, d)[0], scene.F_table, scene.default_F)
        d_table, d_default = pull_table(g_flat)
        grad = dataclasses.replace(grad, F_table=grad.F_table + d_table, default_F=grad.default_F + d_default)
    return grad, switch


def _sincg_and_derivatives(x, n):
    """Numerator, ∂/∂x and ∂/∂n of ``sincg(x, n)``, all over the common denominator ``sin πδ``.

    With ``δ = x − round(x)`` and ``t = nδ − round(nδ)`` (|δ|, |t| ≤ 1/2):
    ``sincg = sin πt / sin πδ``,
    ``∂/∂x = π (n cos πt − sincg · cos πδ) / sin πδ``, ``∂/∂n = πδ cos πt / sin πδ``;
    at a node (δ = 0) ``sincg = n`` with ``∂/∂x = 0`` and ``∂/∂n = 1``; an axis
    with ``n ≤ 1`` is the constant 1.  Returns ``(sincg, ∂/∂x, ∂/∂n)``; one
    division per axis.
    """
    counted = n > 1
    n_eff = jnp.where(counted, n, 1.0)
    delta = x - lattice.nearest_index(x)
    nd = n_eff * delta
    t = nd - lattice.nearest_index(nd)
    node = delta == 0
    # the engine's sin(πx) polynomial; cos(πx) = sin(π(1/2 − |x|)) on |x| ≤ 1/2
    st, ct = lattice.sin_pi(t), lattice.sin_pi(0.5 - jnp.abs(t))
    cd = lattice.sin_pi(0.5 - jnp.abs(delta))
    inv_sd = 1.0 / jnp.where(node, 1.0, lattice.sin_pi(delta))
    s = jnp.where(node, n_eff, st * inv_sd)
    ds_dx = jnp.where(node, 0.0, jnp.pi * (n_eff * ct - s * cd) * inv_sd)
    ds_dn = jnp.where(node, 1.0, jnp.pi * delta * ct * inv_sd)
    return jnp.where(counted, s, 1.0), jnp.where(counted, ds_dx, 0.0), jnp.where(counted, ds_dn, 0.0)


def _square_step(q, cell_rows, scene, cfg, flat, table_shape, weights, true_at_run_time):
    """One (phi, domain) step of the VJP for a square crystal with nearest F.

    ``weights`` is the per-pixel cotangent times the prefactors.  With
    ``w = 2 weights F² F_latt`` the step contributes, per pixel,
    ``g_i = w (∂s_i/∂x_i) ∏_{j≠i} s_j`` to the Miller-index cotangent
    (i = h, k, l), which becomes ``dq = Σ_i g_i row_i`` and the cell-row
    cotangent ``Σ_pixels g_i q``; and ``w (∂s_i/∂N_i) ∏_{j≠i} s_j`` to N_i.
    Returns ``(dq, d cell rows, dN, d default_F)``.

    All of a step is done in one loop iteration: a software pipeline
    (lookups of step j folded in while step j+1 is evaluated) made
    XLA copy every carried per-pixel array twice per step here, which cost
    more than it saved.  The table index is computed in a loop of its own
    (:func:`engine._materialized`) so that the gather loop, which XLA:CPU does not
    vectorise, holds only the loads.
    """
    qx, qy, qz = q
    x = [r[0] * qx + r[1] * qy + r[2] * qz for r in (cell_rows[0], cell_rows[1], cell_rows[2])]
    s, ds_dx, ds_dn = zip(*(_sincg_and_derivatives(x[i], scene.n_cells[i]) for i in range(3)))
    f_latt = s[0] * s[1] * s[2]
    if cfg.has_hkls:
        index = engine._materialized(lambda x: structure_factors.nearest_flat_index(*x, table_shape, cfg.hkl_min), x,
                                     true_at_run_time)
        f_cell = flat[index]
    else:
        f_cell = scene.default_F
    w = 2.0 * weights * f_cell * f_cell * f_latt
    others = (s[1] * s[2], s[0] * s[2], s[0] * s[1])
    g = [w * ds_dx[i] * others[i] for i in range(3)]
    dn = [jnp.sum(w * ds_dn[i] * others[i]) for i in range(3)]
    a, b, c = cell_rows[0], cell_rows[1], cell_rows[2]
    dq = tuple(a[j] * g[0] + b[j] * g[1] + c[j] * g[2] for j in range(3))
    drows = jnp.stack([jnp.stack([jnp.sum(gi * qc) for qc in q]) for gi in g])
    d_default = jnp.zeros_like(scene.default_F)
    if not cfg.has_hkls:
        d_default = jnp.sum(2.0 * weights * f_cell * f_latt * f_latt)
    return dq, drows, jnp.stack(dn), d_default


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _render_adjoint(cfg: engine.RenderConfig, scene: engine.Scene, mask):
    return engine.render_core(scene, cfg, mask).image


def _render_adjoint_fwd(cfg, scene, mask):
    values = jax.tree_util.tree_map(lambda x: x.value, scene, is_leaf=lambda x: hasattr(x, "perturbed"))
    want_table = bool(getattr(scene.F_table, "perturbed", True)) or (
        cfg.has_hkls and bool(getattr(scene.default_F, "perturbed", True)))
    mask_value = None if mask is None else mask.value
    image = engine.render_core(values, cfg, mask_value).image
    # the flag travels as a residual's static shape
    return image, (values, mask_value, image, jnp.zeros((int(want_table),)))


def _render_adjoint_bwd(cfg, residuals, g):
    scene, mask, image, flag = residuals
    want_table = flag.shape[0] == 1
    if isinstance(g, jax.custom_derivatives.SymbolicZero):
        return jax.tree_util.tree_map(jnp.zeros_like, scene), None
    # mixed precision (a float32 evaluation or image): the reverse pass runs in the scene's
    # precision -- the derivative of the model, not of its rounding
    dtype = scene.pix0_m.dtype
    switch_cfg = cfg  # where tricubic interpolation switches off: decided as the forward decided it
    cfg = dataclasses.replace(cfg, evaluation_dtype=None, output_dtype=None)
    image, g = image.astype(dtype), g.astype(dtype)

    def body(carry, xs):
        acc, switch = carry
        block_index, img_blk, g_blk, mask_blk = xs
        part, switch = _adjoint_block(scene, cfg, switch_cfg, mask, mask_blk, img_blk, g_blk, want_table, switch,
                                      block_index)
        return (jax.tree_util.tree_map(jnp.add, acc, part), switch), None

    start = engine.initial_carry(scene)
    init = (jax.tree_util.tree_map(jnp.zeros_like, scene), (start.interpolating, start.first_oob))
    xs = (jnp.arange(engine.n_blocks(cfg)), _row_blocks(cfg, image), _row_blocks(cfg, g),
          None if mask is None else _row_blocks(cfg, mask))
    total = lax.scan(body, init, xs)[0][0]
    return total, None


def _row_blocks(cfg: engine.RenderConfig, image):
    """The roi of a (spixels, fpixels) image as (n_blocks, block_rows, roi width) row blocks,
    the rows past the roi zero: the inverse of the engine's assembly.  A slice and a reshape,
    so each block is read contiguously (indexing rows and columns per block made XLA gather
    the block through a transposed copy)."""
    x0, x1, y0, y1 = cfg.roi_bounds
    rows, width = cfg.roi_shape
    total = engine.n_blocks(cfg) * cfg.block_rows
    roi = image[y0:y0 + rows, x0:x0 + width]
    if total != rows:
        roi = jnp.pad(roi, ((0, total - rows), (0, 0)))
    return roi.reshape(-1, cfg.block_rows, width)


_render_adjoint.defvjp(_render_adjoint_fwd, _render_adjoint_bwd, symbolic_zeros=True)
