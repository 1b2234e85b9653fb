"""The renderer: nanoBragg's pixel loop as vectorised, jit-compiled JAX.

What one pixel receives (nanoBragg's model).  For every sensor layer ``t``,
sub-pixel ``(subS, subF)``, source ``s``, phi step ``j`` and mosaic domain ``m``
(in that loop order), with the diffracted direction ``d``, incident direction
``i_s`` and wavelength ``λ_s``:

    q     = (d − i_s) / λ_s                        scattering vector, m⁻¹
    hkl   = A_jm q                                 A_jm = U_m R(φ_j) (a0, b0, c0), m
    term  = F_cell(hkl)² · F_latt(hkl)²             (see physics.structure_factors, .lattice)
    I     = I_bg + Σ term · w,    w = [C_t] [P] [Ω]   (factors only for the -oversample_* flags)
    pixel = r_e² · fluence · I / steps · [C_t] [P] [Ω]  (the factors *not* oversampled)

``steps = sources × domains × phi steps × oversample²``; ``C_t`` is the layer's
capture fraction, ``P`` the polarization factor, ``Ω`` the pixel solid angle.
Evaluations are skipped where ``dmin`` cuts the source (``d_min > 1/(2 stol)``)
or where ``F_latt == 0`` with no water background.  A factor that is not
oversampled is the value from the first sub-pixel (polarization: first
sub-pixel and source that was not cut; capture fraction: first sub-pixel of
the last layer), as in nanoBragg.

How it runs.  The detector (or its ``-roi`` rectangle) is cut into blocks of
``block_rows`` rows; a block's pixels form one flat vector ``P`` and every
quantity is an array over ``P``: single-pixel kernels (one pixel, one source,
one phi step, one domain) are batched with ``jax.vmap`` over the pixels, while
the small axes (layers, sub-pixels, sources, phi × domains) are ``lax.scan``
loops whose carry is the per-pixel accumulator.  Blocks follow each other in a
``lax.scan`` that carries the state nanoBragg keeps from one pixel to the next,
so memory stays bounded by one block:

* the phi-rotated cell vectors (``--phi-carryover-mode c-parity``): released
  nanoBragg skips the rotation where phi is exactly 0 and reuses the vectors
  of the previous evaluation -- the previous phi step, or the last step of the
  previously rendered pixel; the first rendered pixel starts from the
  unrotated cell.  The carry holds those vectors; within a block, the state
  before each pixel follows from an exclusive prefix-OR of "this pixel rendered
  something" over the pixels in raster order.
* whether tricubic interpolation is still on: nanoBragg switches it off for the
  rest of the image at the first evaluation whose 4×4×4 neighbourhood leaves the
  HKL table (that evaluation and all later ones use the nearest reflection).  A block first finds its
  first such evaluation (raster order, then layer, sub-pixel, source, phi,
  domain), then renders with interpolation before it and nearest-neighbour
  lookups after it.

In the default (spec) mode the oversample factors weight each contribution; with
``accumulation="c-parity"`` they multiply the running sum instead, as released
nanoBragg does (``I ← (I + term) · w``).
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from nbjax.constants import R_E_SQR_M2
from nbjax.geometry import pixels as pixel_geometry
from nbjax.geometry.rotation import apply_umat, rotate_about_axis
from nbjax.physics import absorption, lattice, polarization, structure_factors
from nbjax.renderer import modes


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Scene:
    """Everything the renderer needs about one experiment, as arrays (SI units).

    Lab-frame unit vectors are (3,) arrays.  A frozen pytree: differentiate
    or ``vmap`` over any leaf.
    """

    # detector
    pix0_m: jax.Array            # sample -> corner of the first pixel
    fdet: jax.Array              # fast axis
    sdet: jax.Array              # slow axis
    odet: jax.Array              # normal, away from the sample
    pixel_size_m: jax.Array
    close_distance_m: jax.Array  # sample to detector plane along odet
    distance_m: jax.Array        # sample to beam spot (curved detector radius)
    beam: jax.Array              # beam direction (curved detector)
    layer_thickness_m: jax.Array
    mu_per_m: jax.Array          # sensor attenuation coefficient
    # sources
    incident: jax.Array          # (S, 3) incident unit vectors (direction of travel)
    wavelength_m: jax.Array      # (S,)
    polar_axis: jax.Array        # incident E-vector direction
    kahn_factor: jax.Array
    fluence: jax.Array           # photons / m²
    background_I: jax.Array      # constant added to every pixel's accumulator (water)
    dmin_m: jax.Array            # resolution cut-off, 0 = none
    # crystal
    cell_m: jax.Array            # (3, 3) rows a0, b0, c0 before phi and mosaic
    reciprocal_A: jax.Array      # (3, 3) rows a*, b*, c* in 1/Å (gauss/tophat spots)
    n_cells: jax.Array           # (3,) Na, Nb, Nc
    fudge: jax.Array
    spindle: jax.Array           # phi rotation axis
    phi_rad: jax.Array           # (Φ,) phi of each step
    mosaic_umats: jax.Array      # (M, 3, 3)
    # structure factors
    F_table: jax.Array           # (H, K, L) on [hkl_min, hkl_max]; shape (1,1,1) when none
    default_F: jax.Array


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Static choices and sizes (hashable; changing one recompiles)."""

    fpixels: int
    spixels: int
    roi: tuple = None                 # (xmin, xmax, ymin, ymax) inclusive, clipped; None = all
    oversample: int = 1
    thicksteps: int = 1
    shape: modes.Shape = modes.Shape.SQUARE
    nopolar: bool = False             # -nopolar: polarization factor 1
    point_pixel: bool = False         # -point_pixel: solid angle 1/R², no obliquity
    curved_detector: bool = False     # -curved_det: pixels on a sphere about the sample
    oversample_thick: bool = False    # capture fraction taken per sub-pixel, not once per pixel
    oversample_polar: bool = False    # polarization taken per sub-pixel and source
    oversample_omega: bool = False    # solid angle taken per sub-pixel
    has_thickness: bool = False       # detector_thick > 0: capture fractions are computed
    has_water: bool = False           # water background != 0 (changes the F_latt == 0 skip)
    has_dmin: bool = False
    has_hkls: bool = False            # False: every F is default_F
    hkl_min: tuple = (0, 0, 0)
    hkl_max: tuple = (0, 0, 0)
    interpolate: bool = False
    interpolation_fallback: modes.InterpolationFallback = modes.InterpolationFallback.IMAGE_WIDE
    accumulation: modes.Mode = modes.Mode.SPEC    # how the -oversample_* factors weight the sum
    phi_carryover: modes.Mode = modes.Mode.SPEC   # phi = 0: rotate the cell / reuse the last state
    phi_zero: tuple = ()               # per phi step: is phi exactly 0.0 (host-evaluated)
    block_rows: int = 64
    evaluation_dtype: str | None = None  # e.g. "float32": per-(pixel, step) arithmetic and the pixel
                                         # factors in that dtype, rays beam-centred (see _pixel_rays)
    output_dtype: str | None = None      # image dtype, e.g. "float32" (default: the scene's, or a
                                         # narrower evaluation_dtype)

    _MODES = {
        "shape": modes.Shape,
        "interpolation_fallback": modes.InterpolationFallback,
        "accumulation": modes.Mode,
        "phi_carryover": modes.Mode,
    }

    def __post_init__(self):
        """Refuse a configuration the renderer cannot mean (outside jit, once per configuration).

        A mode given by its spelling (``"c-parity"``) is stored as its enum member.
        """
        for name, kind in self._MODES.items():
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, kind(value))
            except ValueError:
                raise ValueError(f"RenderConfig.{name}: {value!r} is not one of {', '.join(kind)}") from None
        for name in ("fpixels", "spixels", "oversample", "thicksteps", "block_rows"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"RenderConfig.{name}: must be a positive whole number, got {value!r}")

    @property
    def roi_bounds(self):
        if self.roi is None:
            return 0, self.fpixels - 1, 0, self.spixels - 1
        return self.roi

    @property
    def roi_shape(self):
        x0, x1, y0, y1 = self.roi_bounds
        return max(y1 - y0 + 1, 0), max(x1 - x0 + 1, 0)

    @property
    def uses_carryover(self) -> bool:
        """Released nanoBragg's phi = 0 carry-over shapes the image (c-parity mode and a phi step at exactly 0)."""
        return self.phi_carryover is modes.Mode.C_PARITY and any(self.phi_zero)

    @property
    def image_wide_fallback(self) -> bool:
        """Tricubic interpolation that switches itself off for the rest of the image (nanoBragg's rule)."""
        return self.has_hkls and self.interpolate and self.interpolation_fallback is modes.InterpolationFallback.IMAGE_WIDE


class Carry(NamedTuple):
    """State that flows from block to block in raster order."""

    phi_state: jax.Array     # (3, 3) phi-rotated cell rows of the last evaluation (c-parity)
    interpolating: jax.Array  # bool: tricubic interpolation still on
    omega_sum: jax.Array     # Σ Ω over rendered sub-pixels (nanoBragg's statistic)
    first_oob: jax.Array     # (7,) found?, h, k, l, h0, k0, l0 of the switch-off point


class RenderResult(NamedTuple):
    image: jax.Array         # (spixels, fpixels), photons per pixel, 0 outside roi/mask
    omega_sum: jax.Array
    interpolation_off_at: jax.Array  # (7,): [found, h, k, l, h0, k0, l0]


# --------------------------------------------------------------------------
# single-element kernels (scalars in, scalars out; batched over the block's
# (rows, columns) with _vmap2 so every quantity is a (rows, width) array)


def _vmap2(fun, in_axes):
    """vmap over rows and columns of (rows, width) arrays (``in_axes`` 0 or None)."""
    return jax.vmap(jax.vmap(fun, in_axes=in_axes), in_axes=in_axes)


def _ray(fast, slow, layer, sub_s, sub_f, scene: Scene, cfg: RenderConfig):
    """Unit diffracted vector (dx, dy, dz) and solid angle of one sub-pixel."""
    f_coord, s_coord = pixel_geometry.subpixel_coordinates(
        fast, slow, sub_f, sub_s, scene.pixel_size_m, cfg.oversample
    )
    position = pixel_geometry.lab_position(
        f_coord, s_coord, layer * scene.layer_thickness_m, scene.pix0_m, scene.fdet, scene.sdet, scene.odet
    )
    if cfg.curved_detector:
        position = pixel_geometry.curved_position(position, scene.distance_m, scene.beam, scene.fdet, scene.sdet)
    (dx, dy, dz), airpath = pixel_geometry.diffracted_ray(position)
    omega = pixel_geometry.solid_angle(scene.pixel_size_m, airpath, scene.close_distance_m, cfg.point_pixel)
    return dx, dy, dz, omega


def _scattering(dx, dy, dz, incident, wavelength):
    """Scattering vector q = (d − i)/λ (m⁻¹), as three components."""
    return (dx - incident[0]) / wavelength, (dy - incident[1]) / wavelength, (dz - incident[2]) / wavelength


def _dmin_cut(qx, qy, qz, dmin_m):
    """nanoBragg's resolution cut: skip when d_min > 1/(2 stol), stol = |q|/2."""
    stol = 0.5 * jnp.sqrt(qx * qx + qy * qy + qz * qz)
    return (dmin_m > 0.0) & (stol > 0.0) & (dmin_m > 0.5 / jnp.where(stol > 0, stol, 1.0))


def _polarization(dx, dy, dz, incident, scene: Scene):
    return polarization.polarization_factor(scene.kahn_factor, incident, (dx, dy, dz), scene.polar_axis)


def _capture(dx, dy, dz, layer, scene: Scene):
    return absorption.capture_fraction(layer, scene.layer_thickness_m, scene.mu_per_m, (dx, dy, dz), scene.odet)


def _evaluation(qx, qy, qz, cell_rows, scene: Scene, cfg: RenderConfig):
    """Miller indices and lattice factor of one (pixel, source, phi, domain)."""
    a, b, c = cell_rows[0], cell_rows[1], cell_rows[2]
    h = a[0] * qx + a[1] * qy + a[2] * qz
    k = b[0] * qx + b[1] * qy + b[2] * qz
    l = c[0] * qx + c[1] * qy + c[2] * qz
    as_q = lambda x: jnp.asarray(x).astype(qx.dtype)
    f_latt = lattice.lattice_factor(
        cfg.shape, h, k, l, as_q(scene.n_cells), as_q(scene.reciprocal_A), as_q(scene.fudge)
    )
    return h, k, l, f_latt


# --------------------------------------------------------------------------
# the pixel factors Ω, P, C: which value each keeps (nanoBragg's "first value"
# rules), which of them weight each evaluation (the -oversample_* flags) and
# which multiply the pixel at the end.  Stated once here; the adjoint
# (adjoint.py) replays the same rules.


class _Factors(NamedTuple):
    """Per-pixel solid angle, capture fraction and polarization as the loops carry them."""

    omega: jax.Array
    capture: jax.Array
    polar: jax.Array


def _factors_start(cfg: RenderConfig, zeros) -> _Factors:
    """Before the first sub-pixel: nothing kept yet (0), except factors that are off (1)."""
    return _Factors(omega=zeros, capture=zeros + (0.0 if cfg.has_thickness else 1.0),
                    polar=zeros + (1.0 if cfg.nopolar else 0.0))


def _run_takes(factors: _Factors, cfg: RenderConfig, sub_s, sub_f):
    """Whether sub-pixel (sub_s, sub_f) replaces the kept Ω and C by its own: when oversampled, else
    while none is kept (C: afresh at each layer's first sub-pixel).  Returns (take Ω, take C)."""
    layer_start = (sub_s == 0) & (sub_f == 0)
    take_omega = (factors.omega == 0.0) | cfg.oversample_omega
    take_capture = cfg.has_thickness & (layer_start | (factors.capture == 0.0) | cfg.oversample_thick)
    return take_omega, take_capture


def _factors_after_run(factors: _Factors, cfg: RenderConfig, omega_sub, capture_sub, sub_s, sub_f) -> _Factors:
    """After sub-pixel (sub_s, sub_f)'s ray: Ω and C of the current sub-pixel when oversampled, else the
    first one (C: the first of each layer, so the last layer's first sub-pixel in the end).
    ``capture_sub`` is the sub-pixel's capture fraction (None without -detector_thick)."""
    take_omega, take_capture = _run_takes(factors, cfg, sub_s, sub_f)
    omega = jnp.where(take_omega, omega_sub, factors.omega)
    capture = jnp.where(take_capture, capture_sub, factors.capture) if cfg.has_thickness else factors.capture
    return _Factors(omega=omega, capture=capture, polar=factors.polar)


def _polarization_computed(cfg: RenderConfig) -> bool:
    """Whether each (sub-pixel, source) computes a polarization factor."""
    return not cfg.nopolar or cfg.oversample_polar


def _source_takes(factors: _Factors, cfg: RenderConfig, cut):
    """Whether a (sub-pixel, source) replaces the kept P by its own: when oversampled, else while none
    is kept; never where the evaluation is cut (dmin, outside the roi or masked)."""
    return _polarization_computed(cfg) & ~cut & ((factors.polar == 0.0) | cfg.oversample_polar)


def _factors_after_source(factors: _Factors, cfg: RenderConfig, polar_src, cut) -> _Factors:
    """After a source: P of the current (sub-pixel, source) when oversampled, else the first one
    that was not cut.  ``polar_src`` is that source's polarization factor (None when
    :func:`_polarization_computed` is false)."""
    if not _polarization_computed(cfg):
        return factors
    return factors._replace(polar=jnp.where(_source_takes(factors, cfg, cut), polar_src, factors.polar))


def _evaluation_weight(cfg: RenderConfig, factors: _Factors):
    """The spec-mode weight of each evaluation: the product of the oversampled factors (None: 1)."""
    weight = None
    for flag, factor in ((cfg.oversample_thick, factors.capture), (cfg.oversample_polar, factors.polar),
                         (cfg.oversample_omega, factors.omega)):
        if flag:
            weight = factor if weight is None else weight * factor
    return weight


def _apply_pixel_factors(value, cfg: RenderConfig, factors: _Factors):
    """Multiply the pixel by the factors that were *not* oversampled (C, then P, then Ω)."""
    if not cfg.oversample_thick:
        value = value * factors.capture
    if not cfg.oversample_polar:
        value = value * factors.polar
    if not cfg.oversample_omega:
        value = value * factors.omega
    return value


def _evaluations_cut(q, active, scene: Scene, cfg: RenderConfig):
    """Per pixel: are the evaluations of a (sub-pixel, source) skipped -- outside the roi or masked
    (``active`` false), or cut by ``-dmin`` at scattering vector ``q``?"""
    cut = ~active
    if cfg.has_dmin:
        cut = cut | _vmap2(_dmin_cut, (0, 0, 0, None))(*q, scene.dmin_m)
    return cut


def _evaluation_base(r_index, s_index, n_sources, n_steps):
    """Index (within the pixel, in loop order) of the first step of sub-pixel run ``r_index``, source
    ``s_index``; step ``q`` of that (run, source) is evaluation ``base + q``."""
    return (r_index * n_sources + s_index) * n_steps


def _lookup_F(h, k, l, interpolate, table, cfg: RenderConfig):
    """F_cell with interpolation on: tricubic where ``interpolate``, else the nearest reflection."""
    flat, shape, _ = table
    nearest = structure_factors.table_lookup(flat, structure_factors.nearest_flat_index(h, k, l, shape, cfg.hkl_min))
    interp = structure_factors.tricubic_F(h, k, l, flat, shape, cfg.hkl_min)
    return jnp.where(interpolate, interp, nearest)


# --------------------------------------------------------------------------
# the rotated cells of every (phi, domain) step


def _phi_states(scene: Scene, cfg: RenderConfig, carried_state):
    """Per phi step: cell rows after the phi rotation, for pixels that have / have not
    had an evaluation yet, whether the step is a "leading zero" step, and the
    state every complete phi sweep ends in."""
    cell = scene.cell_m
    rotated = jax.vmap(lambda phi: rotate_about_axis(cell, scene.spindle, phi))(scene.phi_rad)
    n_phi = rotated.shape[0]
    if not cfg.uses_carryover:
        lead = jnp.zeros(n_phi, bool)
        return rotated, rotated, lead, carried_state
    nonzero = [j for j in range(n_phi) if not cfg.phi_zero[j]]
    end_state = rotated[nonzero[-1]] if nonzero else carried_state
    normal, alternative, lead = [], [], []
    last = None
    for j in range(n_phi):
        if not cfg.phi_zero[j]:
            last = j
            normal.append(rotated[j])
            alternative.append(rotated[j])
            lead.append(False)
        elif last is not None:
            normal.append(rotated[last])
            alternative.append(rotated[last])
            lead.append(False)
        else:  # phi == 0 before any rotation in this sweep: the state it enters with
            normal.append(end_state)
            alternative.append(carried_state)
            lead.append(True)
    return jnp.stack(normal), jnp.stack(alternative), jnp.asarray(lead), end_state


def _step_matrices(states, umats):
    """(Φ, 3, 3) phi states × (M, 3, 3) domains -> (Φ·M, 3, 3), phi-major."""
    per = jax.vmap(lambda s: jax.vmap(lambda u: apply_umat(s, u))(umats))(states)
    return per.reshape((-1, 3, 3))


# --------------------------------------------------------------------------
# one block of pixels


def _n_runs(cfg: RenderConfig) -> int:
    """Number of sub-pixel runs (layer, subS, subF) per pixel."""
    return cfg.thicksteps * cfg.oversample * cfg.oversample


def _run_indices(cfg: RenderConfig, r_index):
    """(layer, subS, subF) of run ``r_index`` in nanoBragg's loop order (layer outermost).

    Computed from the index inside the loop, so neither the trace nor the
    compiled program holds a table of oversample² entries.
    """
    o = cfg.oversample
    per_layer = o * o
    layer = r_index // per_layer
    within = r_index - layer * per_layer
    sub_s = within // o
    sub_f = within - sub_s * o
    return layer, sub_s, sub_f


class _Block(NamedTuple):
    """Per-block constants shared by the passes over a block; arrays are (rows, width)."""

    fast: jax.Array          # float pixel indices
    slow: jax.Array
    active: jax.Array        # inside roi, inside image, unmasked
    matrices: jax.Array      # (Q, 3, 3) cell rows per (phi, domain) step
    alt_matrices: jax.Array  # same, for pixels with no earlier evaluation (c-parity)
    lead: jax.Array          # (Q,) step uses the entering phi state
    ran_before: jax.Array    # an earlier pixel rendered something (c-parity)
    table: tuple             # (flat padded F table, padded shape, default_F)


def _block_pixels(cfg: RenderConfig, block_index):
    """Fast/slow indices (rows, width) of a block and whether each row exists."""
    x0, x1, y0, y1 = cfg.roi_bounds
    rows = y0 + block_index * cfg.block_rows + jnp.arange(cfg.block_rows)
    cols = x0 + jnp.arange(x1 - x0 + 1)
    slow = jnp.broadcast_to(rows[:, None], (cfg.block_rows, cols.shape[0]))
    fast = jnp.broadcast_to(cols[None, :], (cfg.block_rows, cols.shape[0]))
    return fast, slow, slow <= y1


# Scene leaves of the per-pixel geometry (ray, solid angle, capture fraction,
# polarization, scattering vector, dmin cut)
_GEOMETRY_LEAVES = ("pix0_m", "fdet", "sdet", "odet", "pixel_size_m", "close_distance_m", "distance_m", "beam",
                    "layer_thickness_m", "mu_per_m", "incident", "wavelength_m", "polar_axis", "kahn_factor",
                    "dmin_m")


class _Rays(NamedTuple):
    """A block's sub-pixel rays and scattering vectors, as the loops compute them (:func:`_pixel_rays`)."""

    scene: Scene        # what the per-pixel factors read (geometry leaves in the rays' precision)
    run: object         # (layer index, subS, subF) -> (d, e, Ω, layer): d as (x, y, z), e = d − i0 or None
    source_xs: tuple    # per source: (incident, wavelength, index, i0 − incident)
    scattering: object  # (d, e, incident, wavelength, i0 − incident) -> q as (x, y, z)


def _pixel_rays(scene: Scene, cfg: RenderConfig, blk: _Block) -> _Rays:
    """The rays of a block's pixels: in the scene's precision, or in a lower evaluation precision.

    With an evaluation dtype below the scene's (``--precision single``) on a
    flat detector: the rays in the scene's precision but in the beam-centred
    form of :mod:`nbjax.geometry.pixels` (per-row and per-column parts, a few
    sums per pixel; ``e = d − i0``, ``i0`` the first source's direction), the
    scattering vector ``q = (e + i0 − i)/λ`` rounded once to the evaluation
    dtype, and the solid angle, polarization and capture fraction (and the
    dmin cut) in the evaluation dtype.  Otherwise exactly as before, all in the
    scene's precision.
    """
    dtype = blk.fast.dtype
    n_src = scene.incident.shape[0]
    low = jnp.dtype(cfg.evaluation_dtype) if cfg.evaluation_dtype else dtype
    wavelengths = scene.wavelength_m
    if low == scene.pix0_m.dtype or cfg.curved_detector:
        ray = _vmap2(_ray, (0, 0) + (None,) * 5)
        scattering = _vmap2(_scattering, (0, 0, 0, None, None))

        def run(layer_i, sub_s, sub_f):
            layer = layer_i.astype(dtype)
            dx, dy, dz, omega = ray(blk.fast, blk.slow, layer, sub_s, sub_f, scene, cfg)
            return (dx, dy, dz), None, omega, layer

        return _Rays(scene, run, (scene.incident, scene.wavelength_m, jnp.arange(n_src, dtype=jnp.int32),
                                  scene.incident),
                     lambda d, e, incident, wavelength, offset: scattering(*d, incident, wavelength))

    frame = pixel_geometry.centred_frame(scene.pix0_m, scene.fdet, scene.sdet, scene.odet, scene.incident[0],
                                         scene.pixel_size_m, cfg.oversample)
    offsets = frame.i0[None, :] - scene.incident
    i0 = tuple(frame.i0[i].astype(low) for i in range(3))
    thickness = scene.layer_thickness_m
    cols, rows = blk.fast[0], blk.slow[:, 0]
    scene = dataclasses.replace(scene, **{k: jnp.asarray(getattr(scene, k)).astype(low) for k in _GEOMETRY_LEAVES})

    def run(layer_i, sub_s, sub_f):
        parts = pixel_geometry.centred_offsets(frame, cols, rows, sub_f, sub_s, layer_i.astype(dtype) * thickness,
                                               cfg.oversample)
        e, airpath, perp, shortfall = pixel_geometry.centred_ray(*parts, frame.i0, parts_too=True)
        omega = pixel_geometry.solid_angle(scene.pixel_size_m, airpath.astype(low), scene.close_distance_m,
                                           cfg.point_pixel)
        # d for the pixel factors, in the low precision from the rounded parts (so that e in the
        # scene's precision feeds q alone and XLA fuses it there instead of storing it)
        inverse, shortfall = (1.0 / airpath).astype(low), shortfall.astype(low)
        d = tuple(i0[i] + (perp[i].astype(low) - shortfall * i0[i]) * inverse for i in range(3))
        return d, e, omega, layer_i.astype(low)

    def scattering(d, e, incident, wavelength, offset):
        inverse = 1.0 / wavelength
        return tuple(((e[i] + offset[i]) * inverse).astype(low) for i in range(3))

    return _Rays(scene, run, (scene.incident, wavelengths, jnp.arange(n_src, dtype=jnp.int32), offsets), scattering)


def _loop_nest(scene: Scene, cfg: RenderConfig, blk: _Block, body, extra):
    """nanoBragg's inner loops for every pixel of a block at once.

    Three nested ``lax.scan`` loops -- sub-pixel runs (layer, subS, subF), then
    sources, then (phi, domain) steps -- each a single traced body, so the
    compiled program does not grow with the loop counts.
    ``body`` (a :class:`_Body`) folds one evaluation into the accumulator
    dict: ``prepare((h, k, l), f_latt, skip, e_index)`` (arrays over the
    block's pixels; ``e_index`` is the evaluation's index within the pixel, in
    loop order; ``skip`` is None unless ``body.uses_skip``) returns what
    ``apply(fields, pending, weight, in_loop=True)`` needs (``in_loop``: whether the
    step is inside a loop, a hint for XLA's fusion); ``apply`` updates only the
    accumulator entries named in ``body.fields``.  ``weight`` is the
    ``-oversample_*`` weight (None when it is 1); when the body does not use
    ``skip`` the dmin cut is folded into ``weight`` as a zero.
    ``extra`` adds fields to the accumulator.
    """
    prepare, apply = body.prepare, body.apply
    dtype = blk.fast.dtype
    eval_dtype = jnp.dtype(cfg.evaluation_dtype) if cfg.evaluation_dtype else dtype
    shape = blk.fast.shape
    n_src = scene.incident.shape[0]
    n_steps = blk.matrices.shape[0]
    carryover = cfg.uses_carryover
    # steps that may use the entering phi state: the leading phi == 0 steps (see _phi_states)
    n_lead = 0
    if carryover:
        n_lead_phi = next((j for j, zero in enumerate(cfg.phi_zero) if not zero), len(cfg.phi_zero))
        n_lead = n_lead_phi * scene.mosaic_umats.shape[0]
    rays = _pixel_rays(scene, cfg, blk)
    scene = rays.scene
    polar_factor = _vmap2(_polarization, (0, 0, 0, None, None))
    capture = _vmap2(_capture, (0, 0, 0, None, None))
    evaluation = _vmap2(_evaluation, (0, 0, 0, None, None, None))
    zeros = jnp.zeros(shape, dtype)
    acc = dict(
        I=(zeros + scene.background_I).astype(eval_dtype),
        **_factors_start(cfg, jnp.zeros(shape, scene.pix0_m.dtype))._asdict(),
        omega_sum=jnp.zeros(shape, scene.pix0_m.dtype),
        ran=blk.ran_before,
        **extra,
    )
    run_xs = jnp.arange(_n_runs(cfg), dtype=jnp.int32)
    single_pass = _n_runs(cfg) == 1 and scene.incident.shape[0] == 1  # one (run, source) per pixel
    step_xs = (blk.matrices, blk.alt_matrices, blk.lead, jnp.arange(n_steps, dtype=jnp.int32))

    def run_body(acc, r_index):
        layer_i, sub_s, sub_f = _run_indices(cfg, r_index)
        (dx, dy, dz), e, omega_sub, layer = rays.run(layer_i, sub_s, sub_f)
        acc = dict(acc)
        fraction = capture(dx, dy, dz, layer, scene) if cfg.has_thickness else None
        acc.update(_factors_after_run(_factors_of(acc), cfg, omega_sub, fraction, sub_s, sub_f)._asdict())
        acc["omega_sum"] = acc["omega_sum"] + acc["omega"]

        def source_body(acc, xs):
            incident, wavelength, s_index, offset = xs
            qx, qy, qz = rays.scattering((dx, dy, dz), e, incident, wavelength, offset)
            cut = _evaluations_cut((qx, qy, qz), blk.active, scene, cfg)
            qx, qy, qz = (x.astype(eval_dtype) for x in (qx, qy, qz))
            acc = dict(acc)
            pol = polar_factor(dx, dy, dz, incident, scene) if _polarization_computed(cfg) else None
            acc.update(_factors_after_source(_factors_of(acc), cfg, pol, cut)._asdict())
            weight = _evaluation_weight(cfg, _factors_of(acc))
            if not body.uses_skip and cfg.has_dmin:
                weight = jnp.where(cut, 0.0, 1.0 if weight is None else weight)
            if weight is not None:
                weight = weight.astype(eval_dtype)
            fresh = ~acc["ran"]
            e_base = _evaluation_base(r_index, s_index, n_src, n_steps)

            def evaluate(xs, leading):
                cell_rows, alt_rows, is_lead, q_index = xs
                h, k, l, f_latt = evaluation(qx, qy, qz, cell_rows, scene, cfg)
                if leading:
                    h2, k2, l2, f2 = evaluation(qx, qy, qz, alt_rows, scene, cfg)
                    pick = fresh & is_lead
                    h, k, l = jnp.where(pick, h2, h), jnp.where(pick, k2, k), jnp.where(pick, l2, l)
                    f_latt = jnp.where(pick, f2, f_latt)
                skip = None
                if body.uses_skip:
                    skip = cut
                    if not cfg.has_water:
                        skip = skip | (f_latt == 0.0)
                return prepare((h, k, l), f_latt, skip, e_base + q_index)

            # Lattice factor, table lookup and accumulation of a step form one
            # XLA fusion (see _accumulate), and two steps per iteration share
            # it: q and the accumulator are read once and the accumulator
            # written once per two steps; nothing else is carried.
            # The steps of the leading phi = 0 steps (c-parity carry-over, known
            # statically) evaluate both cell states; every later step has
            # is_lead False and evaluates only its own.
            # A block with one run, one source and one step has no loop at
            # all: XLA would fuse the step, |F_latt| and all, into the block's
            # output write, which XLA:CPU runs on one thread; with
            # in_loop=False the lattice factor stays a (multi-threaded) loop
            # of its own.  Inside a run or source loop a one-step scan is
            # cheaper (the fusion stays in the loop body).
            def steps(fields, first, stop, leading):
                def step_body(fields, xs):
                    return apply(fields, evaluate(xs, leading), weight), None

                if stop - first == 1 and single_pass:
                    xs = jax.tree_util.tree_map(lambda x: x[first], step_xs)
                    return apply(fields, evaluate(xs, leading), weight, in_loop=False)
                xs = jax.tree_util.tree_map(lambda x: x[first:stop], step_xs)
                return lax.scan(step_body, fields, xs, unroll=2)[0]

            fields = {k: acc[k] for k in body.fields}
            if n_lead:
                fields = steps(fields, 0, n_lead, True)
            if n_lead < n_steps:
                fields = steps(fields, n_lead, n_steps, False)
            acc.update(fields)
            acc["ran"] = acc["ran"] | ~cut
            return acc, None

        return lax.scan(source_body, acc, rays.source_xs)[0], None

    return lax.scan(run_body, acc, run_xs)[0]


def _factors_of(acc) -> _Factors:
    return _Factors(omega=acc["omega"], capture=acc["capture"], polar=acc["polar"])


class _Body(NamedTuple):
    """What the innermost loop does with each evaluation (see :func:`_loop_nest`)."""

    prepare: object
    apply: object
    fields: tuple
    uses_skip: bool


def _accumulate(cfg: RenderConfig, table, interpolate_here):
    """Loop body adding F_cell² F_latt² (weighted or compounding) to ``I``.

    Skipped evaluations (dmin cut, F_latt == 0) add nothing; only the
    compounding c-parity accumulation needs to know them explicitly, since
    there a skipped evaluation also skips the multiplication by the weight.
    Pixels outside the roi or masked are zeroed at the end, whatever they hold.
    """
    flat, shape, default_F = table
    plain_nearest = cfg.has_hkls and not cfg.interpolate
    compounding = cfg.accumulation is modes.Mode.C_PARITY and (
        cfg.oversample_thick or cfg.oversample_polar or cfg.oversample_omega
    )

    def prepare(hkl, f_latt, skip, e_index):
        pending = dict(f_latt=f_latt)
        if compounding:
            pending["skip"] = skip
        if plain_nearest:
            pending["index"] = structure_factors.nearest_flat_index(*hkl, shape, cfg.hkl_min)
        elif cfg.has_hkls:
            pending["hkl"] = hkl
            pending["interpolate"] = interpolate_here(e_index, hkl)
        return pending

    def apply(fields, pending, weight, in_loop=True):
        # |F_latt|: the same products bit for bit (only the square enters), but
        # XLA:CPU then fuses the lattice factor into this loop; it will not
        # fuse an expensive op (the division) that the loop reads twice.
        f_latt = jnp.abs(pending["f_latt"]) if in_loop else pending["f_latt"]
        if plain_nearest:
            f_cell = structure_factors.table_lookup(flat, pending["index"])
        elif cfg.has_hkls:
            f_cell = _lookup_F(*pending["hkl"], pending["interpolate"], table, cfg)
        else:
            f_cell = default_F
        term = f_cell * f_cell * f_latt * f_latt
        I = fields["I"]
        if compounding:
            I = jnp.where(pending["skip"], I, (I + term) * weight)
        else:
            I = I + (term if weight is None else term * weight)
        return dict(I=I)

    return _Body(prepare, apply, ("I",), compounding)


def _probe_out_of_range(cfg: RenderConfig, big):
    """Loop body recording each pixel's first evaluation that leaves the table."""

    def prepare(hkl, f_latt, skip, e_index):
        oob = structure_factors.interpolation_out_of_range(*hkl, cfg.hkl_min, cfg.hkl_max) & ~skip
        return dict(oob=oob, hkl=hkl, e_index=e_index)

    def apply(fields, pending, weight, in_loop=True):
        new = pending["oob"] & (fields["first_e"] == big)
        return dict(
            first_e=jnp.where(new, pending["e_index"], fields["first_e"]),
            first_hkl=tuple(jnp.where(new, x, old) for x, old in zip(pending["hkl"], fields["first_hkl"])),
        )

    return _Body(prepare, apply, ("first_e", "first_hkl"), True)


def _block_active(cfg: RenderConfig, mask, block_index):
    """Fast/slow indices of a block and which of its pixels render (row exists, mask not 0)."""
    fast, slow, in_rows = _block_pixels(cfg, block_index)
    active = in_rows
    if mask is not None:
        rows = jnp.clip(slow[:, 0], 0, cfg.spixels - 1)
        active = active & (mask[rows][:, fast[0]] != 0)
    return fast, slow, active


def _prepare_block(scene: Scene, cfg: RenderConfig, mask, carry: Carry, block_index):
    dtype = scene.pix0_m.dtype
    fast, slow, active = _block_active(cfg, mask, block_index)
    states, alt_states, lead, end_state = _phi_states(scene, cfg, carry.phi_state)
    n_domains = scene.mosaic_umats.shape[0]
    eval_dtype = jnp.dtype(cfg.evaluation_dtype) if cfg.evaluation_dtype else dtype
    table = (None, None, scene.default_F.astype(eval_dtype))
    if cfg.has_hkls:
        flat, shape = structure_factors.padded_table(scene.F_table, scene.default_F)
        table = (flat.astype(eval_dtype), shape, scene.default_F.astype(eval_dtype))
    blk = _Block(
        fast=fast.astype(dtype),
        slow=slow.astype(dtype),
        active=active,
        matrices=_step_matrices(states, scene.mosaic_umats).astype(eval_dtype),
        alt_matrices=_step_matrices(alt_states, scene.mosaic_umats).astype(eval_dtype),
        lead=jnp.repeat(lead, n_domains),
        ran_before=jnp.zeros(fast.shape, bool),
        table=table,
    )
    has_run = active
    if cfg.uses_carryover:
        if cfg.has_dmin:
            has_run = active & _any_uncut(scene, cfg, blk)
        flat_run = has_run.ravel()
        blk = blk._replace(ran_before=((jnp.cumsum(flat_run) - flat_run) > 0).reshape(has_run.shape))
    return blk, has_run, end_state


def _any_uncut(scene: Scene, cfg: RenderConfig, blk: _Block):
    """Per pixel: does any sub-pixel/source combination survive the dmin cut?  (As the loops cut.)"""
    rays = _pixel_rays(scene, cfg, blk)
    dmin_cut = _vmap2(_dmin_cut, (0, 0, 0, None))
    runs = jnp.arange(_n_runs(cfg), dtype=jnp.int32)

    def run_body(survives, r_index):
        d, e, _, _ = rays.run(*_run_indices(cfg, r_index))

        def source_body(survives, xs):
            qx, qy, qz = rays.scattering(d, e, xs[0], xs[1], xs[3])
            return survives | ~dmin_cut(qx, qy, qz, rays.scene.dmin_m), None

        return lax.scan(source_body, survives, rays.source_xs)[0], None

    return lax.scan(run_body, jnp.zeros(blk.fast.shape, bool), runs)[0]


def _interpolation_switch(scene: Scene, cfg: RenderConfig, blk: _Block, interpolating, first_oob):
    """Which evaluations of a block look F up by tricubic interpolation, and the switch state after it.

    Returns ``(interpolate_here, interpolating, first_oob)``: the predicate
    ``interpolate_here(e_index, hkl)`` (per pixel, for evaluation ``e_index``
    of :func:`_evaluation_base` at Miller indices ``hkl``; None when F is never
    interpolated) and the carry entries after the block.  With nanoBragg's
    image-wide rule a probe pass over the block finds the first evaluation
    (raster order, then loop order) whose 4×4×4 neighbourhood leaves the
    table: interpolation is on before it and off from it on, for the rest of
    the image.  With the "point" rule only the evaluations whose neighbourhood
    leaves the table use the nearest reflection.  The forward render and the
    adjoint both take the decision from here, so they make the same one.
    """
    shape = blk.fast.shape
    n_pix = blk.fast.size
    if cfg.image_wide_fallback:
        big = jnp.iinfo(jnp.int32).max
        zeros = jnp.zeros(shape, blk.fast.dtype)
        extra = dict(first_e=jnp.full(shape, big, jnp.int32), first_hkl=(zeros, zeros, zeros))
        probe = _loop_nest(scene, cfg, blk, _probe_out_of_range(cfg, big), extra)
        first_e = probe["first_e"].ravel()
        pixel_has = interpolating & (first_e != big)
        found = jnp.any(pixel_has)
        p_star = jnp.where(found, jnp.argmax(pixel_has), n_pix)
        p_safe = jnp.clip(p_star, 0, n_pix - 1)
        e_star = first_e[p_safe]
        pixel_index = jnp.arange(n_pix).reshape(shape)
        on = interpolating

        def interpolate_here(e_index, hkl):
            # nanoBragg sets F = default_F at the switch-off point, but its
            # nearest-neighbour branch then runs for that same evaluation, so
            # the point itself gets the nearest reflection's F.
            return on & ((pixel_index < p_star) | ((pixel_index == p_star) & (e_index < e_star)))

        hkl_star = jnp.stack([x.ravel()[p_safe] for x in probe["first_hkl"]])
        record = jnp.concatenate([jnp.ones(1, hkl_star.dtype), hkl_star, lattice.nearest_index(hkl_star)])
        first_oob = jnp.where(found & (first_oob[0] == 0), record, first_oob)
        return interpolate_here, interpolating & ~found, first_oob
    if cfg.has_hkls and cfg.interpolate:
        def interpolate_here(e_index, hkl):
            return ~structure_factors.interpolation_out_of_range(*hkl, cfg.hkl_min, cfg.hkl_max)

        return interpolate_here, interpolating, first_oob
    return None, interpolating, first_oob


def _image_dtype(cfg: RenderConfig, scene_dtype):
    """The image's dtype when it is not the scene's: ``cfg.output_dtype``, else an evaluation dtype
    narrower than the scene's (a float32 evaluation has float32 precision), else None."""
    if cfg.output_dtype:
        return jnp.dtype(cfg.output_dtype)
    if cfg.evaluation_dtype and jnp.dtype(cfg.evaluation_dtype).itemsize < jnp.dtype(scene_dtype).itemsize:
        return jnp.dtype(cfg.evaluation_dtype)
    return None


def _block(scene: Scene, cfg: RenderConfig, mask, carry: Carry, block_index):
    """Render one block; returns (new carry, (block_rows, roi width) intensities)."""
    blk, has_run, end_state = _prepare_block(scene, cfg, mask, carry, block_index)
    interpolate_here, interpolating, first_oob = _interpolation_switch(
        scene, cfg, blk, carry.interpolating, carry.first_oob)

    final = _loop_nest(scene, cfg, blk, _accumulate(cfg, blk.table, interpolate_here), {})

    out_dtype = _image_dtype(cfg, scene.pix0_m.dtype)

    def pixel_values(final):
        value = photons(scene, cfg, final["I"].astype(scene.fluence.dtype))
        value = _apply_pixel_factors(value, cfg, _factors_of(final))
        value = jnp.where(blk.active, value, 0.0)
        return value if out_dtype is None else value.astype(out_dtype)

    # in a fusion of its own: XLA would otherwise fuse these per-pixel factors (the polarization's
    # divisions and square root) into the write of the block into the image, an in-place update
    # that XLA:CPU runs on one thread
    value = _materialized(pixel_values, final, block_index >= 0)

    phi_state = carry.phi_state
    if cfg.uses_carryover:
        phi_state = jnp.where(jnp.any(has_run), end_state, carry.phi_state)
    new_carry = Carry(
        phi_state=phi_state,
        interpolating=interpolating,
        omega_sum=carry.omega_sum + jnp.sum(jnp.where(blk.active, final["omega_sum"], 0.0).astype(carry.omega_sum.dtype)),
        first_oob=first_oob,
    )
    return new_carry, value


def _materialized(fun, args, true_at_run_time):
    """``fun(args)`` computed in a fusion of its own.

    XLA:CPU dissolves ``lax.optimization_barrier`` before fusion; the branch of
    a conditional is a boundary it keeps.  ``true_at_run_time`` is a traced
    boolean that is always true (e.g. ``block_index >= 0``) but that XLA cannot
    fold, so the conditional stays; its other branch gives zeros without
    compiling ``fun`` a second time.  A loop index is such a boolean only while
    its loop has more than one iteration: XLA removes a loop of one, its index
    becomes the constant 0 and the conditional (harmlessly) goes with it.
    """
    return lax.cond(true_at_run_time, fun, lambda a: jax.tree_util.tree_map(
        lambda x: jnp.zeros(x.shape, x.dtype), jax.eval_shape(fun, a)), args)


def n_steps(scene: Scene, cfg: RenderConfig) -> int:
    """nanoBragg's ``steps``: sources × mosaic domains × phi steps × sub-pixels (oversample²)."""
    return scene.incident.shape[0] * scene.mosaic_umats.shape[0] * scene.phi_rad.shape[0] * cfg.oversample ** 2


def photons(scene: Scene, cfg: RenderConfig, accumulated):
    """Photons per pixel from the accumulated ``Σ F² F_latt²`` (times Ω P C where those are per
    evaluation): ``r_e² · fluence · accumulated / steps``, in nanoBragg's order of operations."""
    return R_E_SQR_M2 * scene.fluence * accumulated / n_steps(scene, cfg)


def initial_carry(scene: Scene) -> Carry:
    """Carry at the first pixel: unrotated cell, interpolation on, nothing summed."""
    dtype = scene.pix0_m.dtype
    return Carry(
        phi_state=scene.cell_m,
        interpolating=jnp.asarray(True),
        omega_sum=jnp.zeros((), dtype),
        first_oob=jnp.zeros(7, dtype),
    )


def n_blocks(cfg: RenderConfig) -> int:
    rows, _ = cfg.roi_shape
    return -(-rows // cfg.block_rows)


def _assemble(cfg: RenderConfig, blocks, dtype):
    """Place (n_blocks, block_rows, width) block outputs into the full image."""
    x0, x1, y0, y1 = cfg.roi_bounds
    rows, width = cfg.roi_shape
    roi_image = blocks.reshape(-1, width)
    if roi_image.shape[0] != rows:
        roi_image = roi_image[:rows]
    if (rows, width) == (cfg.spixels, cfg.fpixels):
        return roi_image.astype(dtype)
    image = jnp.zeros((cfg.spixels, cfg.fpixels), dtype)
    return image.at[y0:y1 + 1, x0:x1 + 1].set(roi_image)


def render_core(scene: Scene, cfg: RenderConfig, mask=None, *, checkpoint: bool = False) -> RenderResult:
    """Render the whole image (pure; jit it with ``cfg`` static).

    A ``lax.scan`` over row blocks carries nanoBragg's pixel-to-pixel state.
    With ``checkpoint=True`` each block is rematerialised in the backward
    pass, so a gradient needs the memory of one block, not of the image.
    """
    block = functools.partial(_block, scene, cfg, mask)
    if checkpoint:
        block = jax.checkpoint(block)
    carry, blocks = lax.scan(block, initial_carry(scene), jnp.arange(n_blocks(cfg)))
    image = _assemble(cfg, blocks, blocks.dtype)
    return RenderResult(image=image, omega_sum=carry.omega_sum, interpolation_off_at=carry.first_oob)


render = jax.jit(render_core, static_argnames=("cfg", "checkpoint"))


@functools.lru_cache(maxsize=32)
def _jitted_block(cfg: RenderConfig, has_mask: bool):
    def run(scene, mask, carry, index):
        return _block(scene, cfg, mask if has_mask else None, carry, index)

    return jax.jit(run)


def render_blocks(scene: Scene, cfg: RenderConfig, mask=None, *, on_block=None) -> RenderResult:
    """Same result as :func:`render`, driven block by block from Python.

    ``on_block(done, total)`` is called after each block (progress reporting).
    The per-block function is compiled once per configuration.
    """
    block = _jitted_block(cfg, mask is not None)
    mask_array = jnp.zeros((1, 1), bool) if mask is None else jnp.asarray(mask)
    carry = initial_carry(scene)
    total = n_blocks(cfg)
    outputs = []
    for index in range(total):
        carry, values = block(scene, mask_array, carry, jnp.asarray(index))
        outputs.append(values)
        if on_block is not None:
            values.block_until_ready()  # report blocks done, not merely queued
            on_block(index + 1, total)
    blocks = jnp.stack(outputs) if outputs else jnp.zeros(
        (0, cfg.block_rows, cfg.roi_shape[1]), _image_dtype(cfg, scene.pix0_m.dtype) or scene.pix0_m.dtype)
    image = _assemble(cfg, blocks, blocks.dtype)
    return RenderResult(image=image, omega_sum=carry.omega_sum, interpolation_off_at=carry.first_oob)
