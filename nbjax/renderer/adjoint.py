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
from nbjax.renderer import engine

__all__ = ["Adjoint", "Autodiff", "UnsupportedGradient", "adjoint_supported", "adjoint_unsupported",
           "best_gradient"]


# --------------------------------------------------------------------------
# reverse mode without the engine's scan residuals (the adjoint render)
#
# Differentiating the engine with plain autodiff stores every intermediate of
# every (sub-pixel, source, phi, domain) iteration of its nested scans and
# costs tens of forward renders.  The adjoint below is the same model read
# backwards: for a cotangent image g,
#
#   image_p = K f Ω_p P_p C_p (I_bg + Σ_e T_e(p)),   T_e = F(hkl_e)² F_latt(hkl_e)², K = r_e²/steps
#   ∂⟨g, image⟩ = Σ_p g_p image_p ∂log(f Ω_p P_p C_p) + Σ_p c_p (∂I_bg + Σ_e ∂T_e(p)),
#   c_p = g_p K f Ω_p P_p C_p,
#
# evaluated in the engine's loop order with the engine's own single-element
# kernels: each (sub-pixel, source, step) takes the local VJP of its terms and
# adds the result into small accumulators (per-pixel dq, the 3×3 cell rows
# of each step, the crystal-size and structure-factor leaves), so nothing is
# stored per iteration.  Then dq is pulled back through the pixel rays, the
# step matrices through the phi and mosaic rotations, and the prefactors
# through their own VJP.  Covered: spec accumulation without the phi = 0
# carry-over, no -oversample_thick/_polar/_omega, nearest or tricubic F (not
# with the image-wide "c" interpolation fallback), any precision (mixed
# precision is differentiated in the scene's); Adjoint() refuses the rest.


def adjoint_unsupported(render: engine.RenderConfig) -> str | None:
    """Why the adjoint render cannot differentiate ``render``, or None when it can."""
    if render.accumulation != "spec":
        return "c-parity accumulation of the -oversample_* factors (--accumulation c-parity)"
    if render.uses_carryover:
        return "the phi = 0 carry-over of released nanoBragg.c (--phi-carryover-mode c-parity)"
    if render.oversample_thick or render.oversample_polar or render.oversample_omega:
        return "per-sub-pixel -oversample_thick/_polar/_omega factors"
    if render.image_wide_fallback:
        return "tricubic interpolation that switches itself off for the rest of the image (-interpolate)"
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
    Refuses, naming the reason, the configurations of :func:`adjoint_unsupported`.
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
    """Per pixel: Ω (first sub-pixel), P (first uncut sub-pixel and source), C (last layer)."""
    dtype = fast.dtype
    ray = engine._vmap2(engine._ray, (0, 0) + (None,) * 5)
    ones = jnp.ones(fast.shape, dtype)
    zero = jnp.zeros((), dtype)
    dx, dy, dz, omega = ray(fast, slow, zero, 0, 0, scene, cfg)
    capture = ones
    if cfg.has_thickness:
        last = jnp.asarray(cfg.thicksteps - 1, dtype)
        lx, ly, lz, _ = ray(fast, slow, last, 0, 0, scene, cfg)
        capture = engine._vmap2(engine._capture, (0, 0, 0, None, None))(lx, ly, lz, last, scene)
    polar = ones
    if not cfg.nopolar:
        polar_factor = engine._vmap2(engine._polarization, (0, 0, 0, None, None))
        if not cfg.has_dmin:
            polar = polar_factor(dx, dy, dz, scene.incident[0], scene)
        else:
            scattering = engine._vmap2(engine._scattering, (0, 0, 0, None, None))
            dmin_cut = engine._vmap2(engine._dmin_cut, (0, 0, 0, None))
            runs = jnp.arange(engine._n_runs(cfg), dtype=jnp.int32)

            def run_body(polar, r_index):
                layer, sub_s, sub_f = engine._run_indices(cfg, r_index)
                rx, ry, rz, _ = ray(fast, slow, layer.astype(dtype), sub_s, sub_f, scene, cfg)

                def source_body(polar, xs):
                    cut = dmin_cut(*scattering(rx, ry, rz, xs[0], xs[1]), scene.dmin_m)
                    value = polar_factor(rx, ry, rz, xs[0], scene)
                    return jnp.where(~cut & (polar == 0.0), value, polar), None

                return lax.scan(source_body, polar, (scene.incident, scene.wavelength_m))[0], None

            polar = lax.scan(run_body, jnp.zeros(fast.shape, dtype), runs)[0]
    return omega, polar, capture


def _step_rows(scene: engine.Scene, cfg: engine.RenderConfig):
    """(Q, 3, 3) cell rows of every (phi, domain) step, as the engine builds them."""
    states = engine._phi_states(scene, cfg, scene.cell_m)[0]
    return engine._step_matrices(states, scene.mosaic_umats)


_LATTICE_LEAVES = ("n_cells", "fudge", "reciprocal_A", "default_F")


def _adjoint_block(scene, cfg, mask, img_blk, g_blk, want_table, block_index):
    """Scene cotangent of ⟨g, image⟩ restricted to one row block (``mask``, ``img_blk``, ``g_blk``:
    the block's rows of the mask (or None), the image and its cotangent, from :func:`_row_blocks`)."""
    dtype = scene.pix0_m.dtype
    fast_i, slow_i, active = engine._block_pixels(cfg, block_index)
    if mask is not None:  # the block's rows of the mask (see _row_blocks)
        active = active & (mask != 0)
    fast, slow = fast_i.astype(dtype), slow_i.astype(dtype)
    g_blk = jnp.where(active, g_blk, 0.0)
    img_blk = jnp.where(active, img_blk, 0.0)

    # (1) prefactors: ∂image/∂θ = image ∂log(f Ω P C)/∂θ
    def log_prefactor(s):
        omega, polar, capture = _pixel_factors(s, cfg, fast, slow, active)
        return _safe_log(s.fluence) + _safe_log(omega) + _safe_log(polar) + _safe_log(capture)

    _, pull_prefactor = jax.vjp(log_prefactor, scene)
    (grad,) = pull_prefactor(g_blk * img_blk)

    # (2) the sum over evaluations
    omega, polar, capture = _pixel_factors(scene, cfg, fast, slow, active)
    c = jnp.where(active, engine.photons(scene, cfg, g_blk * omega * polar * capture), 0.0)
    grad = dataclasses.replace(grad, background_I=grad.background_I + jnp.sum(c))

    rows_q = _step_rows(scene, cfg)
    table_flat, table_shape = None, None
    if cfg.has_hkls:
        table_flat, table_shape = structure_factors.padded_table(scene.F_table, scene.default_F)
    lat0 = {k: getattr(scene, k) for k in _LATTICE_LEAVES}
    ray = engine._vmap2(engine._ray, (0, 0) + (None,) * 5)
    scattering = engine._vmap2(engine._scattering, (0, 0, 0, None, None))
    dmin_cut = engine._vmap2(engine._dmin_cut, (0, 0, 0, None))
    evaluation = engine._vmap2(engine._evaluation, (0, 0, 0, None, None, None))

    def weighted_terms(q, cell_rows, lat, flat, weights):
        s = dataclasses.replace(scene, **lat)
        h, k, l, f_latt = evaluation(*q, cell_rows, s, cfg)
        if cfg.has_hkls:
            f_cell = flat[structure_factors.nearest_flat_index(h, k, l, table_shape, cfg.hkl_min)]
            if cfg.interpolate:  # the "point" fallback: nearest only where the 4x4x4 block leaves the table
                inside = ~structure_factors.interpolation_out_of_range(h, k, l, cfg.hkl_min, cfg.hkl_max)
                f_cell = jnp.where(inside, structure_factors.tricubic_F(h, k, l, flat, table_shape, cfg.hkl_min),
                                   f_cell)
        else:
            f_cell = lat["default_F"]
        return jnp.sum(weights * (f_cell * f_cell * f_latt * f_latt))

    fast_square = cfg.shape == "square" and not cfg.interpolate and not want_table
    zero_lat = jax.tree_util.tree_map(jnp.zeros_like, lat0)
    zero_flat = jnp.zeros_like(table_flat) if (cfg.has_hkls and want_table) else None
    zeros3 = tuple(jnp.zeros(fast.shape, dtype) for _ in range(3))
    runs = jnp.arange(engine._n_runs(cfg), dtype=jnp.int32)

    def run_body(carry, r_index):
        g_scene, g_rows, g_lat, g_flat = carry
        layer, sub_s, sub_f = engine._run_indices(cfg, r_index)

        def ray_dirs(s):
            dx, dy, dz, _ = ray(fast, slow, layer.astype(dtype), sub_s, sub_f, s, cfg)
            return dx, dy, dz

        d, pull_ray = jax.vjp(ray_dirs, scene)

        def source_body(carry, xs):
            g_d, g_rows, g_lat, g_flat = carry
            incident, wavelength = xs
            q, pull_q = jax.vjp(lambda d, i, w: scattering(*d, i, w), d, incident, wavelength)
            weights = c
            if cfg.has_dmin:
                weights = jnp.where(dmin_cut(*q, scene.dmin_m), 0.0, c)

            if fast_square:
                def square_body(carry, cell_rows):
                    g_q, g_n, g_default = carry
                    dq, drows, dn, dd = _square_step(q, cell_rows, scene, cfg, table_flat, table_shape, weights)
                    return (tuple(x + y for x, y in zip(g_q, dq)), g_n + dn, g_default + dd), drows

                init = (zeros3, jnp.zeros_like(scene.n_cells), jnp.zeros_like(scene.default_F))
                (g_q, g_n, g_default), drows = lax.scan(square_body, init, rows_q)
                g_lat = dict(g_lat, n_cells=g_lat["n_cells"] + g_n, default_F=g_lat["default_F"] + g_default)
            else:
                def step_body(carry, cell_rows):
                    g_q, g_lat, g_flat = carry
                    if g_flat is not None:
                        _, pull = jax.vjp(lambda q, r, lat, fl: weighted_terms(q, r, lat, fl, weights),
                                          q, cell_rows, lat0, table_flat)
                        dq, drows, dlat, dflat = pull(jnp.ones((), dtype))
                        g_flat = g_flat + dflat
                    else:
                        _, pull = jax.vjp(lambda q, r, lat: weighted_terms(q, r, lat, table_flat, weights),
                                          q, cell_rows, lat0)
                        dq, drows, dlat = pull(jnp.ones((), dtype))
                    g_q = tuple(a + b for a, b in zip(g_q, dq))
                    g_lat = jax.tree_util.tree_map(jnp.add, g_lat, dlat)
                    return (g_q, g_lat, g_flat), drows

                (g_q, g_lat, g_flat), drows = lax.scan(step_body, (zeros3, g_lat, g_flat), rows_q)
            dd, dinc, dwav = pull_q(g_q)
            g_d = tuple(a + b for a, b in zip(g_d, dd))
            return (g_d, g_rows + drows, g_lat, g_flat), (dinc, dwav)

        (g_d, g_rows, g_lat, g_flat), (dinc, dwav) = lax.scan(
            source_body, (zeros3, g_rows, g_lat, g_flat), (scene.incident, scene.wavelength_m))
        (d_scene,) = pull_ray(g_d)
        d_scene = dataclasses.replace(d_scene, incident=d_scene.incident + dinc,
                                      wavelength_m=d_scene.wavelength_m + dwav)
        g_scene = jax.tree_util.tree_map(jnp.add, g_scene, d_scene)
        return (g_scene, g_rows, g_lat, g_flat), None

    zero_scene = jax.tree_util.tree_map(jnp.zeros_like, scene)
    init = (zero_scene, jnp.zeros_like(rows_q), zero_lat, zero_flat)
    (g_scene, g_rows, g_lat, g_flat), _ = lax.scan(run_body, init, jnp.asarray(runs))

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
    return grad


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


def _materialized(fun, args, witness):
    """``fun(args)`` computed in a fusion of its own.

    XLA:CPU dissolves ``lax.optimization_barrier`` before fusion; the branch of
    a conditional is a boundary it keeps.  The predicate (``witness`` has no
    NaN in its first element, always true for a weight array) is only known
    at run time, so the conditional is not folded away.
    """
    flag = ~jnp.isnan(witness.reshape(-1)[0])
    return lax.cond(flag, fun, fun, args)


def _square_step(q, cell_rows, scene, cfg, flat, table_shape, weights):
    """One (phi, domain) step of the VJP for a square crystal with nearest F.

    ``weights`` is the per-pixel cotangent times the prefactors.  With
    ``w = 2 weights F² F_latt`` the step contributes, per pixel,
    ``g_i = w (∂s_i/∂x_i) ∏_{j≠i} s_j`` to the Miller-index cotangent
    (i = h, k, l), which becomes ``dq = Σ_i g_i row_i`` and the cell-row
    cotangent ``Σ_pixels g_i q``; and ``w (∂s_i/∂N_i) ∏_{j≠i} s_j`` to N_i.
    Returns ``(dq, d cell rows, dN, d default_F)``.

    All of a step is done in one loop iteration: the engine's software
    pipeline (lookups of step j folded in while step j+1 is evaluated) made
    XLA copy every carried per-pixel array twice per step here, which cost
    more than it saved.  The table index is computed in a loop of its own
    (:func:`_materialized`) so that the gather loop, which XLA:CPU does not
    vectorise, holds only the loads.
    """
    qx, qy, qz = q
    x = [r[0] * qx + r[1] * qy + r[2] * qz for r in (cell_rows[0], cell_rows[1], cell_rows[2])]
    s, ds_dx, ds_dn = zip(*(_sincg_and_derivatives(x[i], scene.n_cells[i]) for i in range(3)))
    f_latt = s[0] * s[1] * s[2]
    if cfg.has_hkls:
        index = _materialized(lambda x: structure_factors.nearest_flat_index(*x, table_shape, cfg.hkl_min), x, weights)
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
    cfg = dataclasses.replace(cfg, evaluation_dtype=None, output_dtype=None)
    image, g = image.astype(dtype), g.astype(dtype)

    def body(acc, xs):
        block_index, img_blk, g_blk, mask_blk = xs
        part = _adjoint_block(scene, cfg, mask_blk, img_blk, g_blk, want_table, block_index)
        return jax.tree_util.tree_map(jnp.add, acc, part), None

    xs = (jnp.arange(engine.n_blocks(cfg)), _row_blocks(cfg, image), _row_blocks(cfg, g),
          None if mask is None else _row_blocks(cfg, mask))
    total = lax.scan(body, jax.tree_util.tree_map(jnp.zeros_like, scene), xs)[0]
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
