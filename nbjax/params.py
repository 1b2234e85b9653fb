"""Continuous parameters of a nanoBragg experiment, and the differentiable ``simulate``.

A :class:`Params` pytree holds every continuous quantity of a nanoBragg run in
the units its users think in; a hashable :class:`SimConfig` holds everything
that fixes array shapes or picks a code path.  :func:`simulate` maps the two to
an image (photons per pixel), jit-compiled once per configuration:

    params, config = from_args("-hkl P1.hkl -cell 78 84 92 88 93 91 ...".split())[:2]
    image = simulate(params, config)                        # (spixels, fpixels)
    grad = jax.grad(lambda p: jnp.sum(simulate(p, config)))(params)

The pieces (lengths in Å or mm, angles in degrees, as the names say):

* **crystal** -- the unit cell ``(a, b, c)`` Å and ``(α, β, γ)`` deg, nanoBragg's
  misset angles (rotations of the reciprocal vectors about lab x, then y, then
  z), an extra rotation vector ``rotation_deg`` applied after the misset
  (direction = axis, length = angle; zero by default), the number of cells
  ``Na, Nb, Nc`` as real numbers, the mosaic spread and the structure-factor
  table.  A crystal given by a MOSFLM ``-mat`` matrix keeps its reciprocal
  vectors (Å⁻¹, the matrix divided by the wavelength *of the command line*)
  as ``reciprocal_A``; refining the wavelength then does not change the cell.
* **detector** -- beam distance (or the close distance when ``-close_distance``
  was given), the beam centre ``(Xbeam, Ybeam)`` of the convention, the near
  point ``(Fclose, Sclose)`` the SAMPLE pivot uses, rotations about lab x, y, z
  and the two-theta angle, plus the unrotated axes of the convention.
* **beam** -- the wavelength (Å), the source directions and their relative
  wavelengths, polarization, fluence (photons/m²) and an overall ``scale``
  that multiplies the fluence (1 for nanoBragg's image).

Mosaic domains.  nanoBragg draws domain ``m``'s rotation from three uniform
deviates: a unit axis ``v_m`` and the angle ``spread · (1 − r₃²)^(1/3)``.  The
draws are fixed (the mosaic seed is a static choice), so the axes and the
factors ``(1 − r₃²)^(1/3)`` are array leaves and the matrices are rebuilt from
``mosaic_deg`` with Rodrigues' formula -- a smooth function of the spread.
nanoBragg.c rounds that angle to float32; here it is float64 (a relative
difference of the angle below 1e-7).

Everything derived -- detector placement (:func:`nbjax.geometry.detector.place_detector`),
the lattice (:mod:`nbjax.geometry.crystal`), the beam spot from the beam centre
(:mod:`nbjax.geometry.conventions`) -- is computed by :func:`scene_from_params`
with the same jnp functions :func:`nbjax.experiment.build` uses, so
``simulate(*from_args(argv)[:2])`` is the image ``nbjax`` renders for ``argv``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def _wide():
    """float64 where JAX has it (x64 on), else JAX's default float: no truncation warning."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)

from nbjax.renderer import engine
from nbjax.constants import RTD
from nbjax.geometry import conventions, crystal, detector
from nbjax.geometry.conventions import Convention, Pivot
from nbjax.geometry.rotation import axis_angle_rows, cross, dot, umat2misset
# the gradient strategies are part of the model's API (simulate(..., gradient=Adjoint()))
from nbjax.renderer.adjoint import (Adjoint, Autodiff, UnsupportedGradient, adjoint_supported,  # noqa: F401
                                    adjoint_unsupported, best_gradient)

__all__ = [
    "CrystalParams",
    "DetectorParams",
    "BeamParams",
    "Params",
    "SimConfig",
    "Model",
    "from_args",
    "from_experiment_args",
    "scene_from_params",
    "simulate",
    "simulate_core",
    "simulate_batch",
    "Adjoint",
    "Autodiff",
    "UnsupportedGradient",
    "best_gradient",
    "adjoint_unsupported",
    "batch_axes",
    "stack",
    "derived_geometry",
]


# --------------------------------------------------------------------------
# the parameter pytree


def _pytree(cls):
    return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls))


@_pytree
class CrystalParams:
    """The crystal: cell, orientation, size, mosaicity, structure factors."""

    cell_A: jax.Array             # (3,) a, b, c in Å
    cell_angles_deg: jax.Array    # (3,) α, β, γ in degrees
    misset_deg: jax.Array         # (3,) rotations about lab x, y, z (applied in that order)
    rotation_deg: jax.Array       # (3,) rotation vector applied after the misset (deg; 0 = none)
    reciprocal_A: jax.Array       # (3, 3) rows a*, b*, c* (Å⁻¹) of a -mat crystal (unused for -cell)
    n_cells: jax.Array            # (3,) Na, Nb, Nc (real numbers)
    fudge: jax.Array              # spot-shape fudge factor (round/gauss/tophat)
    mosaic_deg: jax.Array         # mosaic spread (deg)
    mosaic_axes: jax.Array        # (M, 3) unit rotation axis of each domain (fixed draws)
    mosaic_factors: jax.Array     # (M,) (1 − r₃²)^(1/3) of each domain; 0 for domain 0
    spindle: jax.Array            # (3,) phi rotation axis
    phi_rad: jax.Array            # (Φ,) phi angle of each step
    F_table: jax.Array            # (H, K, L) |F| on [hkl_min, hkl_max]
    default_F: jax.Array


@_pytree
class DetectorParams:
    """Detector position and orientation (mm, deg) and its fixed properties."""

    distance_mm: jax.Array        # sample to beam spot along the beam (ignored with -close_distance)
    close_distance_mm: jax.Array  # sample to detector plane (used only with -close_distance)
    beam_center_mm: jax.Array     # (2,) Xbeam, Ybeam in the convention's frame (BEAM pivot)
    near_point_mm: jax.Array      # (2,) Fclose, Sclose (SAMPLE pivot of XDS/DIALS: ORGX, ORGY)
    rotations_deg: jax.Array      # (3,) detector rotations about lab x, y, z
    twotheta_deg: jax.Array       # two-theta swing about twotheta_axis
    pixel_size_mm: jax.Array
    size_mm: jax.Array            # (2,) detector size, fast and slow (ADXV beam-centre mapping)
    fdet: jax.Array               # (3,) fast axis before rotations
    sdet: jax.Array               # (3,) slow axis before rotations
    odet: jax.Array               # (3,) normal before rotations
    twotheta_axis: jax.Array      # (3,)
    layer_thickness_m: jax.Array  # sensor layer thickness
    mu_per_m: jax.Array           # sensor attenuation coefficient


@_pytree
class BeamParams:
    """The incident beam."""

    wavelength_A: jax.Array       # central wavelength λ0 (Å)
    direction: jax.Array          # (3,) beam direction (direction of travel)
    incident: jax.Array           # (S, 3) incident unit vector of each source
    wavelength_factors: jax.Array  # (S,) each source's wavelength / λ0
    polar_axis: jax.Array         # (3,) E-vector direction
    kahn_factor: jax.Array        # polarization (0 = unpolarized)
    fluence: jax.Array            # photons / m²
    scale: jax.Array              # overall scale, multiplies the fluence
    background_I: jax.Array       # water background term of nanoBragg's accumulator
    dmin_m: jax.Array             # resolution cut-off (0 = none)


@_pytree
class Params:
    """All continuous parameters of an experiment (a frozen pytree)."""

    crystal: CrystalParams
    detector: DetectorParams
    beam: BeamParams

    def replace(self, **changes) -> "Params":
        """Copy with leaves replaced; keys are ``"section.field"`` or section names.

        A new leaf takes the old leaf's dtype (a Python float stays the array
        type it replaces, so :func:`simulate` does not recompile), and its shape
        must be the old one, possibly with leading batch axes added (or removed).
        """
        sections = {"crystal": self.crystal, "detector": self.detector, "beam": self.beam}
        for key, value in changes.items():
            section, _, field = key.partition(".")
            if section not in sections:
                raise KeyError(f"no parameter section {section!r}")
            if field:
                if field not in {f.name for f in dataclasses.fields(sections[section])}:
                    raise KeyError(f"no parameter {key!r}")
                value = _like(getattr(sections[section], field), value, key)
                sections[section] = dataclasses.replace(sections[section], **{field: value})
            else:
                sections[section] = value
        return Params(**sections)


def _like(old, value, key):
    """``value`` as an array of ``old``'s dtype, with ``old``'s shape up to leading batch axes.

    Trees that are not parameter values (``in_axes`` trees of ints and None) are left alone.
    """
    if not hasattr(old, "dtype"):
        return value
    new = jnp.asarray(value, dtype=old.dtype)
    old_shape, new_shape = jnp.shape(old), new.shape
    fits = (new_shape[len(new_shape) - len(old_shape):] == old_shape if len(new_shape) >= len(old_shape)
            else new_shape and old_shape[len(old_shape) - len(new_shape):] == new_shape)
    if not fits:
        raise ValueError(f"{key}: shape {new_shape} does not fit the parameter's shape {old_shape}")
    return new


def check_params(params: Params, config: "SimConfig") -> None:
    """Shapes and dtypes of one (unbatched) parameter set, checked with chex when a function is traced.

    Shapes are static, so this costs nothing when the compiled function runs;
    a wrong leaf fails here with its name instead of deep inside the renderer.
    """
    import chex

    c, d, b = params.crystal, params.detector, params.beam
    chex.assert_shape([c.cell_A, c.cell_angles_deg, c.misset_deg, c.rotation_deg, c.n_cells, c.spindle,
                       d.rotations_deg, d.fdet, d.sdet, d.odet, d.twotheta_axis,
                       b.direction, b.polar_axis], (3,))
    chex.assert_shape(c.reciprocal_A, (3, 3))
    chex.assert_shape([d.beam_center_mm, d.near_point_mm, d.size_mm], (2,))
    chex.assert_rank([c.fudge, c.mosaic_deg, c.default_F, d.distance_mm, d.close_distance_mm, d.twotheta_deg,
                      d.pixel_size_mm, d.layer_thickness_m, d.mu_per_m, b.wavelength_A, b.kahn_factor, b.fluence,
                      b.scale, b.background_I, b.dmin_m], 0)
    chex.assert_rank(c.F_table, 3)
    chex.assert_equal_shape_prefix([c.mosaic_axes, c.mosaic_factors], 1)
    chex.assert_shape(c.mosaic_axes, (None, 3))
    chex.assert_equal_shape_prefix([b.incident, b.wavelength_factors], 1)
    chex.assert_shape(b.incident, (None, 3))
    if config.render.phi_zero:
        chex.assert_shape(c.phi_rad, (len(config.render.phi_zero),))
    if config.render.has_hkls:
        lo, hi = config.render.hkl_min, config.render.hkl_max
        chex.assert_shape(c.F_table, tuple(b - a + 1 for a, b in zip(lo, hi)))
    chex.assert_type(jax.tree_util.tree_leaves(params), float)


# --------------------------------------------------------------------------
# the static configuration


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Static choices (hashable; a new value recompiles :func:`simulate`).

    ``render``: the engine's :class:`~nbjax.renderer.engine.RenderConfig` (sizes, shape,
    modes); ``convention``/``pivot``: detector convention and pivot (values of
    :class:`~nbjax.geometry.conventions.Convention` / ``Pivot``);
    ``close_distance_given``: the detector position comes from the close
    distance; ``crystal_from``: ``"cell"`` (cell constants) or ``"matrix"``
    (``reciprocal_A``); ``matrix_cell_lengths``: a -mat crystal whose real-space
    lengths are forced to ``cell_A`` (nanoBragg with both -mat and -cell).
    """

    render: engine.RenderConfig
    convention: str = "mosflm"
    pivot: str = "beam"
    close_distance_given: bool = False
    crystal_from: str = "cell"
    matrix_cell_lengths: bool = False

    def __post_init__(self):
        Convention(self.convention)
        Pivot(self.pivot)
        if self.crystal_from not in ("cell", "matrix"):
            raise ValueError(f"crystal_from must be 'cell' or 'matrix', got {self.crystal_from!r}")

    @property
    def shape(self):
        """Image shape (spixels, fpixels)."""
        return self.render.spixels, self.render.fpixels

    @property
    def sample_pivot_near_point(self) -> bool:
        """True when the beam-centre group moves the near point (XDS/DIALS SAMPLE pivot)."""
        return self.pivot == "sample" and self.convention != "custom"

    def with_render(self, **changes) -> "SimConfig":
        return dataclasses.replace(self, render=dataclasses.replace(self.render, **changes))


# --------------------------------------------------------------------------
# Params -> Scene (pure jnp)


def _rotation_vector_apply(rows, omega_deg):
    """Rotate each row of ``rows`` by the rotation vector ``omega_deg`` (Rodrigues).

    ``R v = v + A (ω × v) + B ω × (ω × v)`` with ``A = sin θ/θ`` and
    ``B = (1 − cos θ)/θ²``, θ = |ω|: the coefficients switch to their series
    below θ² = 1e-8 (double ``where``), so value and gradient are finite at ω = 0
    and a zero vector leaves ``rows`` bit-identical.
    """
    omega = omega_deg / RTD
    theta_sq = dot(omega, omega)
    small = theta_sq < 1e-8
    safe = jnp.where(small, 1.0, theta_sq)
    theta = jnp.sqrt(safe)
    half_sin = jnp.sin(0.5 * theta)
    a = jnp.where(small, 1.0 - theta_sq / 6.0 + theta_sq * theta_sq / 120.0, jnp.sin(theta) / theta)
    b = jnp.where(small, 0.5 - theta_sq / 24.0 + theta_sq * theta_sq / 720.0, 2.0 * half_sin * half_sin / safe)
    first = cross(omega, rows)
    second = cross(omega, first)
    return rows + a * first + b * second


def mosaic_umats(mosaic_deg, axes, factors):
    """Domain rotation matrices (M, 3, 3) from the spread and the fixed draws.

    Rodrigues' rotation about ``axes[m]`` by ``mosaic · factors[m]``, terms
    grouped as nanoBragg's ``mosaic_rotation_umat`` groups them.
    """
    rot = (mosaic_deg / RTD) * factors
    rows = axis_angle_rows(axes[:, 0], axes[:, 1], axes[:, 2], jnp.cos(rot), jnp.sin(rot))
    return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)


def _cell_radians(c: CrystalParams):
    return jnp.concatenate([c.cell_A, c.cell_angles_deg / RTD])


def lattice_vectors(params: Params, config: SimConfig) -> crystal.CrystalFrame:
    """Real and reciprocal lattice vectors (rows, Å / Å⁻¹) before phi and mosaic."""
    c = params.crystal
    misset_rad = c.misset_deg / RTD
    if config.crystal_from == "cell":
        frame = crystal.lattice_from_cell(_cell_radians(c), misset_rad)
    elif config.matrix_cell_lengths:
        cell = _cell_radians(c)
        _, volume = crystal.reciprocal_from_cell(cell)
        frame = crystal.lattice_from_reciprocal(c.reciprocal_A, misset_rad, cell=cell, cell_volume_A3=volume)
    else:
        frame = crystal.lattice_from_reciprocal(c.reciprocal_A, misset_rad)
    real = _rotation_vector_apply(frame.real_A, c.rotation_deg)
    recip = _rotation_vector_apply(frame.reciprocal_A, c.rotation_deg)
    return crystal.CrystalFrame(real_A=real, reciprocal_A=recip, volume_A3=frame.volume_A3)


def _detector_inputs(params: Params, config: SimConfig) -> detector.DetectorParams:
    d = params.detector
    pixel_m = d.pixel_size_mm / 1000.0
    xbeam, ybeam = d.beam_center_mm[0] / 1000.0, d.beam_center_mm[1] / 1000.0
    convention = Convention(config.convention)
    if convention is Convention.CUSTOM:
        fbeam, sbeam = xbeam, ybeam
        fclose, sclose = xbeam, ybeam
    else:
        fbeam, sbeam = conventions.beam_spot_from_center(convention, xbeam, ybeam, pixel_m, d.size_mm[1] / 1000.0)
        fclose, sclose = d.near_point_mm[0] / 1000.0, d.near_point_mm[1] / 1000.0
    return detector.DetectorParams(
        fdet=d.fdet, sdet=d.sdet, odet=d.odet, beam=params.beam.direction, twotheta_axis=d.twotheta_axis,
        pixel_size_m=pixel_m, distance_m=d.distance_mm / 1000.0, close_distance_m=d.close_distance_mm / 1000.0,
        beam_fast_m=fbeam, beam_slow_m=sbeam, close_fast_m=fclose, close_slow_m=sclose,
        rotations_rad=d.rotations_deg / RTD, twotheta_rad=d.twotheta_deg / RTD,
    )


def place(params: Params, config: SimConfig) -> detector.DetectorFrame:
    """The placed detector (rotated axes, pix0, derived distances and beam spot; m)."""
    return detector.place_detector(_detector_inputs(params, config), Pivot(config.pivot),
                                   close_distance_given=config.close_distance_given)


def scene_from_params(params: Params, config: SimConfig) -> engine.Scene:
    """The engine's :class:`~nbjax.renderer.engine.Scene` of ``params`` (pure, differentiable)."""
    frame = place(params, config)
    lat = lattice_vectors(params, config)
    c, d, b = params.crystal, params.detector, params.beam
    return engine.Scene(
        pix0_m=frame.pix0_m, fdet=frame.fdet, sdet=frame.sdet, odet=frame.odet,
        pixel_size_m=d.pixel_size_mm / 1000.0, close_distance_m=frame.close_distance_m,
        distance_m=frame.distance_m, beam=b.direction,
        layer_thickness_m=d.layer_thickness_m, mu_per_m=d.mu_per_m,
        incident=b.incident, wavelength_m=(b.wavelength_A / 1.0e10) * b.wavelength_factors,
        polar_axis=b.polar_axis, kahn_factor=b.kahn_factor, fluence=b.fluence * b.scale,
        background_I=b.background_I, dmin_m=b.dmin_m,
        cell_m=1e-10 * lat.real_A, reciprocal_A=lat.reciprocal_A,
        n_cells=c.n_cells, fudge=c.fudge, spindle=c.spindle, phi_rad=c.phi_rad,
        mosaic_umats=mosaic_umats(c.mosaic_deg, c.mosaic_axes, c.mosaic_factors),
        F_table=c.F_table, default_F=c.default_F,
    )


def derived_geometry(params: Params, config: SimConfig) -> dict:
    """Values a user may want to report: beam spot, near point, distances (mm), ORGX/ORGY."""
    frame = place(params, config)
    d = params.detector
    convention = Convention(config.convention)
    xbeam, ybeam = conventions.beam_center_from_spot(
        convention, frame.beam_fast_m, frame.beam_slow_m, d.pixel_size_mm / 1000.0, d.size_mm[1] / 1000.0)
    return dict(
        distance_mm=frame.distance_m * 1000.0,
        close_distance_mm=frame.close_distance_m * 1000.0,
        beam_center_mm=jnp.stack([xbeam, ybeam]) * 1000.0,
        near_point_mm=jnp.stack([frame.close_fast_m, frame.close_slow_m]) * 1000.0,
        orgx_orgy_px=jnp.stack([frame.xds_orgx, frame.xds_orgy]),
    )




# --------------------------------------------------------------------------
# simulate


def simulate_core(params: Params, config: SimConfig, mask=None, *, gradient=None):
    """The image (spixels, fpixels) in photons per pixel; pure, not jitted.

    ``mask``: optional (spixels, fpixels) array, 0 = skip the pixel.
    ``gradient``: how reverse mode goes through the render -- :class:`Adjoint`
    (cheap, reverse mode only), :class:`Autodiff` (every mode; ``checkpoint``
    bounds its memory), or None for :func:`best_gradient` of the configuration.
    The values are the same whichever is chosen.
    """
    check_params(params, config)
    scene = scene_from_params(params, config)
    strategy = best_gradient(config.render) if gradient is None else gradient
    return strategy.image(scene, config.render, mask)


#: :func:`simulate_core` compiled once per (config, gradient, array shapes and dtypes).
simulate = jax.jit(simulate_core, static_argnames=("config", "gradient"))


@functools.partial(jax.jit, static_argnames=("config", "in_axes", "gradient"))
def _simulate_batch(params, config, mask, in_axes, gradient):
    return jax.vmap(lambda p: simulate_core(p, config, mask, gradient=gradient), in_axes=(in_axes,))(params)


def simulate_batch(params: Params, config: SimConfig, mask=None, *, in_axes=0, gradient=None):
    """Images of a batch of parameter sets, (B, spixels, fpixels), in one call.

    ``in_axes``: 0 when every leaf has a leading batch axis (see :func:`stack`),
    or a :func:`batch_axes` tree saying which leaves are batched (the others,
    e.g. the F table, are shared).
    """
    return _simulate_batch(params, config, mask, in_axes, gradient)


def stack(params_list) -> Params:
    """Stack a list of :class:`Params` along a new leading axis (every leaf)."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *params_list)


def batch_axes(params: Params, *leaves: str) -> Params:
    """An ``in_axes`` tree for :func:`simulate_batch`: 0 for the named leaves, None elsewhere.

    ``leaves`` are ``"section.field"`` names, e.g. ``"crystal.misset_deg"``.
    """
    axes = jax.tree_util.tree_map(lambda _: None, params)
    for name in leaves:
        section, _, field = name.partition(".")
        axes = axes.replace(**{name: 0}) if field else axes.replace(**{section: jax.tree_util.tree_map(lambda _: 0, getattr(params, section))})
    return axes


# --------------------------------------------------------------------------
# from a nanoBragg command line


class Model(NamedTuple):
    """A starting model: parameters, static configuration, mask and the set-up it came from."""

    params: Params
    config: SimConfig
    mask: np.ndarray | None
    experiment: object   # nbjax.experiment.Experiment


def _exact_user_value(si_value, to_user, to_si):
    """A user-unit float whose conversion ``to_si`` gives back ``si_value`` exactly.

    ``to_user(si)`` is tried first, then its neighbours a few ulps away, so a
    parameter read from the command line reproduces nanoBragg's SI value bit
    for bit (e.g. 90° → π/2 rad).
    """
    si_value = float(si_value)
    guess = float(to_user(si_value))
    if not math.isfinite(guess) or to_si(guess) == si_value:
        return guess
    up = down = guess
    for _ in range(8):
        up, down = math.nextafter(up, math.inf), math.nextafter(down, -math.inf)
        for candidate in (up, down):
            if to_si(candidate) == si_value:
                return candidate
    return guess


def _deg(rad):
    return _exact_user_value(rad, lambda r: r * RTD, lambda d: d / RTD)


def _mm(m):
    return _exact_user_value(m, lambda x: x * 1000.0, lambda x: x / 1000.0)


def from_args(argv, *, accumulation: str = "spec", phi_carryover: str = "spec",
              interpolation_fallback: str = "c", dtype=None, block_rows: int | None = None,
              now: float | None = None, hkl_column: str | None = None, model: str | None = None,
              model_dmin=None) -> Model:
    """A :class:`Model` from nanoBragg command-line arguments.

    Runs :func:`nbjax.experiment.build` (which validates everything and
    raises :class:`~nbjax.errors.InputError` on bad input) and expresses its
    set-up as :class:`Params` + :class:`SimConfig`.  ``now`` fixes the
    time-based default seeds (``-misset random`` without ``-misset_seed``).
    ``hkl_column``, ``model``, ``model_dmin``: the structure-factor options of
    ``nbjax`` (``--hkl-column``, ``--model``, ``--model-dmin``), as for
    :func:`nbjax.experiment.build`.  ``dtype`` defaults to float64 when x64 is enabled, else float32.
    """
    from nbjax import experiment

    argv = list(argv)
    now = time.time() if now is None else now
    if dtype is None:
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    exp = experiment.build(argv, accumulation=accumulation, phi_carryover=phi_carryover,
                           interpolation_fallback=interpolation_fallback, dtype=jnp.float64,
                           block_rows=block_rows, now=now, hkl_column=hkl_column, model=model,
                           model_dmin=model_dmin)
    st, det = exp.settings, exp.detector_setup
    close_given = not math.isnan(st.close_distance)
    scene = exp.scene
    f64 = lambda x: np.asarray(x, np.float64)

    # crystal: the orientation and mosaic draws the set-up made, and the matrix it read (never redrawn or reread)
    xtal = exp.crystal_setup
    misset_rad = [float(x) for x in xtal.misset_rad]
    cell = list(xtal.cell) if xtal.cell is not None else list(st.cell)
    reciprocal = f64(xtal.matrix_reciprocal_A) if xtal.matrix_reciprocal_A is not None else np.zeros((3, 3))
    if not st.user_cell:  # report the cell of the matrix
        direct, _ = crystal.cell_parameters(*_matrix_lattice(reciprocal))
        cell = [float(x) for x in np.asarray(direct)]
    axes, factors = xtal.mosaic.axes, xtal.mosaic.factors
    spread = xtal.mosaic_spread_rad

    crystal_params = CrystalParams(
        cell_A=f64(cell[:3]), cell_angles_deg=f64([_deg(x) for x in cell[3:]]),
        misset_deg=f64([_deg(x) for x in misset_rad]),
        rotation_deg=np.zeros(3), reciprocal_A=reciprocal, n_cells=f64(scene.n_cells), fudge=f64(scene.fudge),
        mosaic_deg=f64(_deg(spread)), mosaic_axes=axes, mosaic_factors=factors,
        spindle=f64(scene.spindle), phi_rad=f64(scene.phi_rad), F_table=f64(scene.F_table),
        default_F=f64(scene.default_F),
    )
    detector_params = DetectorParams(
        distance_mm=f64(_mm(st.distance)),
        close_distance_mm=f64(_mm(st.close_distance) if close_given else 0.0),
        beam_center_mm=f64([_mm(det.Xbeam), _mm(det.Ybeam)]),
        near_point_mm=f64([_mm(det.Fclose), _mm(det.Sclose)]),
        rotations_deg=f64([_deg(st.detector_rotx), _deg(st.detector_roty), _deg(st.detector_rotz)]),
        twotheta_deg=f64(_deg(st.detector_twotheta)),
        pixel_size_mm=f64(_mm(st.pixel_size)), size_mm=f64([_mm(st.detsize_f), _mm(st.detsize_s)]),
        fdet=f64(det.fdet), sdet=f64(det.sdet), odet=f64(det.odet), twotheta_axis=f64(det.twotheta_axis),
        layer_thickness_m=f64(scene.layer_thickness_m), mu_per_m=f64(scene.mu_per_m),
    )
    beam_params = BeamParams(
        wavelength_A=f64(_exact_user_value(st.lambda0, lambda m: m * 1e10, lambda a: a / 1.0e10)), direction=f64(det.beam), incident=f64(scene.incident),
        wavelength_factors=f64(scene.wavelength_m) / st.lambda0, polar_axis=f64(scene.polar_axis),
        kahn_factor=f64(scene.kahn_factor), fluence=f64(scene.fluence), scale=f64(1.0),
        background_I=f64(scene.background_I), dmin_m=f64(scene.dmin_m),
    )
    params = Params(crystal=crystal_params, detector=detector_params, beam=beam_params)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params)
    config = SimConfig(
        render=exp.config, convention=det.convention.value, pivot=det.pivot.value,
        close_distance_given=close_given, crystal_from="matrix" if st.matfilename is not None else "cell",
        matrix_cell_lengths=st.matfilename is not None and st.user_cell,
    )
    mask = None if exp.mask is None else np.asarray(exp.mask)
    return Model(params=params, config=config, mask=mask, experiment=exp)


def from_experiment_args(argv, **kwargs):
    """``(params, config)`` of a nanoBragg command line (see :func:`from_args`)."""
    model = from_args(argv, **kwargs)
    return model.params, model.config


def _matrix_lattice(reciprocal):
    frame = crystal.lattice_from_reciprocal(jnp.asarray(reciprocal, _wide()), jnp.zeros(3, _wide()))
    return frame.real_A, frame.reciprocal_A, frame.volume_A3


def _gram(real):
    g = real @ real.T
    return jnp.stack([g[0, 0], g[1, 1], g[2, 2], g[1, 2], g[0, 2], g[0, 1]])


def as_cell_crystal(params: Params, config: SimConfig):
    """Re-express a -mat crystal as cell constants + misset (for refining the cell).

    nanoBragg's real vectors for ``-cell`` do not have exactly the angles given
    (its reciprocal-cell formula and length rescaling move them by up to ~0.1°
    for a triclinic cell), so the cell constants are found by Newton's method
    on the metric: the cell whose ``-cell`` lattice has the matrix crystal's
    real-space dot products.  The orientation is then the rotation (orthogonal
    Procrustes) taking that unrotated lattice onto the matrix crystal's, as
    misset angles.  The two crystals agree to rounding.  Returns ``(params, config)``.
    """
    if config.crystal_from == "cell":
        return params, config
    frame = lattice_vectors(params, config)
    real = jnp.asarray(frame.real_A, _wide())
    recip = jnp.asarray(frame.reciprocal_A, _wide())
    cell = jnp.asarray(crystal.cell_parameters(real, recip, frame.volume_A3)[0], _wide())
    target = _gram(real)
    metric = lambda p: _gram(crystal.lattice_from_cell(p, jnp.zeros(3, _wide())).real_A)
    for _ in range(8):
        residual = metric(cell) - target
        cell = cell - jnp.linalg.solve(jax.jacfwd(metric)(cell), residual)
    standard = np.asarray(crystal.lattice_from_cell(cell, jnp.zeros(3, _wide())).real_A)
    # rows: real = standard @ U.T; U.T from the SVD of standard.T @ real
    w, _, vt = np.linalg.svd(standard.T @ np.asarray(real))
    u = (w @ vt).T
    misset = np.asarray(umat2misset(u), np.float64)
    cell = np.asarray(cell)
    dtype = params.crystal.cell_A.dtype
    new = params.replace(**{
        "crystal.cell_A": jnp.asarray(cell[:3], dtype),
        "crystal.cell_angles_deg": jnp.asarray(cell[3:] * RTD, dtype),
        "crystal.misset_deg": jnp.asarray(misset * RTD, dtype),
        "crystal.rotation_deg": jnp.zeros(3, dtype),
    })
    return new, dataclasses.replace(config, crystal_from="cell", matrix_cell_lengths=False)
