"""From nanoBragg's settings to a renderable experiment.

:func:`build` runs nanoBragg.c's set-up as a chain of stages, in nanoBragg's
order, each a function of the parsed flags (:func:`parse_args`) and of the
results before it, returning a named result:

1. :func:`detector_size` -- :class:`DetectorSize` (pixel counts, extent in m);
2. :func:`illumination` -- :class:`Illumination` (fluence in photons/m², the
   crystal clipped by the beam);
3. :func:`region_of_interest` -- the roi in pixels;
4. :func:`detector_setup` -- :class:`DetectorSetup` (convention, axes, beam
   centre and near point);
5. :func:`step_counts` -- :class:`StepCounts` (phi, divergence, dispersion,
   sensor layers by :func:`nbjax.physics.sources.resolve_steps`; mosaic domains);
6. :func:`place_detector` -- the placed detector frame (m);
7. :func:`crystal_stage` -- :class:`Crystal` (orientation with its random
   draw, unit cell from -cell or the -mat file, size in cells and m);
8. :func:`oversampling` -- :class:`Oversampling`;
9. :func:`structure_factors` -- :class:`StructureFactors` (-hkl or Fdump.bin;
   :func:`model_structure_factors` after the sources for ``--model``);
10. :func:`source_stage` -- :class:`Sources` (-sourcefile or divergence x dispersion);
11. :func:`mosaic_stage` -- the mosaic domains, drawn after the misset from
    the same random-number state.

Each stage validates its own inputs (one :class:`InputError` naming the flag),
reads its own files and makes its own random draws, so the first error, the
files read and the numbers drawn are nanoBragg's.  The results are kept
together as :class:`Stages`; :func:`summary_lines` and :func:`warning_lines`
format them into what nanoBragg prints (no computation there), and the
Experiment is assembled from them:

* ``scene`` -- a :class:`nbjax.renderer.engine.Scene` (arrays; differentiable inputs),
* ``config`` -- a :class:`nbjax.renderer.engine.RenderConfig` (static sizes and switches),
* ``mask`` -- optional (spixels, fpixels) array, 0 = skip the pixel,
* ``outputs`` -- what to write where (:class:`Outputs`),
* ``log`` -- the set-up lines nanoBragg prints, and values needed for headers,
* ``stages`` -- the :class:`Stages` themselves (:func:`nbjax.params.from_args`
  builds its Params from them, never re-reading a file or redrawing a number).

Every decision nanoBragg makes with an exact floating-point comparison (is phi
exactly 0? is the normal vector exactly unit length?) is made here on the host
in float64, with the same arithmetic.  Geometry itself is computed with the
same jnp functions :func:`nbjax.simulate` differentiates.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import math
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nbjax import cflags
from nbjax.constants import AVOGADRO, R_E_SQR_M2, RTD, WATER_F, WATER_MW_G_PER_MOL
from nbjax.renderer.engine import RenderConfig, Scene, n_steps
from nbjax.errors import InputError
from nbjax.geometry import conventions, crystal, detector
from nbjax.geometry import pixels as pixel_geometry
from nbjax.geometry.conventions import Convention, Pivot
from nbjax.io import reflections
from nbjax.io import matrix as matrix_io
from nbjax.io import smv as smv_io
from nbjax.io.fdump import read_fdump, write_fdump
from nbjax.io.numbers import parse_float
from nbjax.io.sourcefile import read_sourcefile
from nbjax.physics import rng, sources
from nbjax.physics.ran1 import CStatics

DBL_MIN = 2.2250738585072014e-308
FLOAT32_MAX = 3.4028234663852886e38
_C_INT_MAX = 2**31 - 1

#: Largest oversampling nbjax selects by itself (nanoBragg.c has no bound: a
#: large crystal asks for thousands of sub-pixels per side).  An explicit
#: ``-oversample`` is bounded by :data:`WORK_LIMIT` only.
AUTO_OVERSAMPLE_MAX = 64

#: Most evaluations of the structure factor one render may need: pixels (in
#: the roi) x sub-pixels (oversample²) x sensor layers x sources x phi steps x
#: mosaic domains.  About 1e13 is hours on a large GPU and days on a CPU core;
#: a larger count is refused before anything runs (``--allow-huge`` lifts it).
WORK_LIMIT = 1e13

#: Most evaluations per pixel: the renderer counts them in 32-bit integers.
PIXEL_WORK_LIMIT = _C_INT_MAX


def recommended_oversample(xtalsize_max_m: float, reciprocal_pixel_m: float) -> int:
    """nanoBragg's recommended oversampling, ``ceil(3 · xtal size / reciprocal pixel)``, as C computes it.

    C converts the double to an ``int``; where the value is not a finite number
    that fits (infinite, NaN, beyond 2³¹−1: a degenerate matrix, a distance of
    1e-308) x86-64 gives INT_MIN, which nanoBragg then raises to 1.  nbjax
    follows that, so such set-ups pick 1, as nanoBragg.c does.
    """
    value = 3.0 * xtalsize_max_m / reciprocal_pixel_m if reciprocal_pixel_m != 0.0 else math.nan
    value = math.ceil(value) if math.isfinite(value) else math.nan
    if math.isnan(value) or not -_C_INT_MAX - 1 <= value <= _C_INT_MAX:
        return 1
    return int(value) if value > 0 else 1


def roi_clipped_size(roi, fpixels, spixels) -> int:
    """Number of pixels nanoBragg visits for an (xmin, xmax, ymin, ymax) roi."""
    width = min(roi[1], fpixels - 1) - roi[0] + 1
    height = min(roi[3], spixels - 1) - roi[2] + 1
    return max(width, 0) * max(height, 0)


def check_work(*, pixels, oversample, thicksteps, n_sources, phisteps, mosaic_domains, limit=None):
    """Refuse a render that needs more evaluations than nbjax allows (InputError naming the flags).

    ``pixels`` is the number of pixels rendered.  Per pixel the count must
    fit the renderer's 32-bit counters (:data:`PIXEL_WORK_LIMIT`, always);
    the whole render must stay under ``limit`` (None: :data:`WORK_LIMIT`;
    ``math.inf``: no limit).
    """
    per_pixel = oversample * oversample * thicksteps * n_sources * phisteps * mosaic_domains
    flags = "-oversample, -thicksteps, sources (-divergence/-dispersion/-sourcefile), -phisteps, -mosaic_domains"
    breakdown = (f"{oversample}² sub-pixels x {thicksteps} layers x {n_sources} sources x {phisteps} phi steps "
                 f"x {mosaic_domains} mosaic domains")
    if per_pixel > PIXEL_WORK_LIMIT:
        raise InputError(f"{flags}: {breakdown} = {per_pixel:.3g} evaluations per pixel; "
                         f"nbjax renders at most {PIXEL_WORK_LIMIT} per pixel")
    limit = WORK_LIMIT if limit is None else limit
    total = per_pixel * pixels
    if total > limit:
        raise InputError(f"{flags}: {pixels} pixels x {breakdown} = {total:.3g} evaluations, "
                         f"more than nbjax's limit of {limit:.3g} (--allow-huge lifts it)")


def _regular(matrix) -> bool:
    """A finite 3x3 matrix with a finite, nonzero determinant."""
    if not np.all(np.isfinite(matrix)):
        return False
    det = float(np.linalg.det(matrix))
    return math.isfinite(det) and det != 0.0

# The set-up geometry runs on the host with numpy (the geometry functions accept
# numpy or JAX arrays): the C library's sin/cos/sqrt, as in nanoBragg, so that
# decisions such as Nc = ceil(sample_z / |c|) come out the same.
_place_detector = detector.place_detector


def _lattice(recip, misset, cell, volume):
    return crystal.lattice_from_reciprocal(recip, misset, cell=cell, cell_volume_A3=volume)


_reciprocal_from_cell = crystal.reciprocal_from_cell
_cell_parameters = crystal.cell_parameters


@dataclasses.dataclass(frozen=True)
class Outputs:
    """Files to write and how to scale them (nanoBragg's names and defaults)."""

    floatfile: str
    intfile: str
    pgmfile: str | None
    noisefile: str | None
    intfile_scale: float
    pgm_scale: float
    adc_offset: float
    noise_seed: int


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A set-up ready to render: the scene and configuration, and what the command prints and writes.

    ``log`` is :func:`summary_lines` and ``warnings`` :func:`warning_lines` of
    ``stages``; ``detector_setup`` and ``crystal_setup`` are parts of the
    stages kept under the names :func:`nbjax.params.from_args` reads.
    """

    scene: Scene
    config: RenderConfig
    mask: np.ndarray | None
    outputs: Outputs
    log: tuple
    header: dict            # values for SMV headers and printed statistics
    rng_state: object       # nanoBragg's shared random-number state after set-up
    warnings: tuple
    notes: tuple
    fdump: tuple | None = None   # (path, HKLTable) nanoBragg caches after reading -hkl
    settings: object = None      # the parsed flags (cflags.CSettings) after set-up
    detector_setup: object = None  # the DetectorSetup the detector was placed from
    crystal_setup: object = None   # the CrystalSetup: orientation and mosaic draws, as drawn and read once
    stages: object = None          # the Stages: every set-up stage's result (what the log is made of)


class CrystalSetup(NamedTuple):
    """What the crystal stage drew and read, for the differentiable model to reuse (never redraw).

    ``misset_rad``: misset angles after a ``-misset random`` draw; ``cell``: the
    completed ``-cell`` constants (Å, radians) or None; ``matrix_reciprocal_A``:
    the ``-mat`` file's reciprocal vectors as rows (Å⁻¹) or None;
    ``mosaic``: the domains (:class:`nbjax.physics.rng.MosaicDomains`) and
    ``mosaic_spread_rad`` their spread after nanoBragg's defaulting.
    """

    misset_rad: np.ndarray
    cell: np.ndarray | None
    matrix_reciprocal_A: np.ndarray | None
    mosaic: object
    mosaic_spread_rad: float


# --------------------------------------------------------------------------
# small host-side helpers (float64, nanoBragg's arithmetic)


def _unitize(v):
    mag = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    if mag != 0.0:
        return [v[0] / mag, v[1] / mag, v[2] / mag], mag
    return [0.0, 0.0, 0.0], mag


def _cross(x, y):
    return [x[1] * y[2] - x[2] * y[1], x[2] * y[0] - x[0] * y[2], x[0] * y[1] - x[1] * y[0]]


def _g(x):
    return "%g" % x


class DetectorSetup(NamedTuple):
    """The detector as nanoBragg sets it up before placing it (host floats, m).

    ``Xbeam/Ybeam``: beam centre in the convention's frame; ``Fbeam/Sbeam``: the
    beam spot on the detector's fast/slow axes; ``Xclose/Yclose`` and
    ``Fclose/Sclose``: the near point (foot of the normal from the sample) as
    given and as used by the SAMPLE pivot; unit vectors as lists.
    """

    convention: Convention
    pivot: Pivot
    beam: list
    fdet: list
    sdet: list
    odet: list
    polar: list
    spindle: list
    twotheta_axis: list
    Xbeam: float
    Ybeam: float
    Xclose: float
    Yclose: float
    Fbeam: float
    Sbeam: float
    Fclose: float
    Sclose: float
    odet_generated: bool   # -odet_vector was not a unit vector: fdet x sdet used instead


def completed_cell(cell) -> list:
    """A -cell with nanoBragg's defaults filled in: b, c = a and angles = 90° where not positive."""
    cell = list(cell)
    for k in (1, 2):
        if cell[k] <= 0.0:
            cell[k] = cell[0]
    for k in (3, 4, 5):
        if cell[k] <= 0.0:
            cell[k] = math.pi / 2
    return cell


def detector_setup(st: cflags.CSettings) -> DetectorSetup:
    """Convention axes, pivot, beam centre and near point from the parsed flags.

    Defaults follow nanoBragg: the near point from -ORGX/-ORGY (pixels, centre
    of the first pixel at 0.5) or the detector centre; the beam centre from
    -Xbeam/-Ybeam or the convention's default; the CUSTOM convention takes the
    user's vectors and uses the beam centre as the near point.  ``st.detsize_f``
    and ``st.detsize_s`` must already hold the detector size.
    """
    nan = math.isnan
    Fclose = (st.ORGX - 0.5) * st.pixel_size if not nan(st.ORGX) else (st.detsize_f - 0 * st.pixel_size) / 2.0
    Sclose = (st.ORGY - 0.5) * st.pixel_size if not nan(st.ORGY) else (st.detsize_s + 0 * st.pixel_size) / 2.0
    Xclose = Fclose if nan(st.Xclose) else st.Xclose
    Yclose = Sclose if nan(st.Yclose) else st.Yclose
    convention = Convention(st.convention)
    pivot = Pivot(st.pivot)
    vectors = dict(beam=st.beam_vector, fdet=st.fdet_vector, sdet=st.sdet_vector, odet=st.odet_vector,
                   twotheta_axis=st.twotheta_axis, polar=st.polar_vector, spindle=st.spindle_vector)
    Xbeam, Ybeam = st.Xbeam, st.Ybeam
    if convention is not Convention.CUSTOM:
        axes = conventions.AXES[convention]
        dx, dy = conventions.default_beam_center(convention, st.detsize_f, st.detsize_s, st.pixel_size, Xclose, Yclose)
        Xbeam = dx if nan(Xbeam) else Xbeam
        Ybeam = dy if nan(Ybeam) else Ybeam
        vectors = {k: [float(c) for c in getattr(axes, k)] for k in vectors}
        Fbeam, Sbeam = conventions.beam_spot_from_center(convention, Xbeam, Ybeam, st.pixel_size, st.detsize_s)
        pivot = axes.pivot
    else:
        Xbeam = Xclose if nan(Xbeam) else Xbeam
        Ybeam = Yclose if nan(Ybeam) else Ybeam
        Fbeam, Sbeam = Xbeam, Ybeam
        Fclose, Sclose = Xbeam, Ybeam
    beam, _ = _unitize(vectors["beam"])
    fdet, _ = _unitize(vectors["fdet"])
    sdet, _ = _unitize(vectors["sdet"])
    odet, mag = _unitize(vectors["odet"])
    generated = mag != 1.0
    if generated:
        odet, _ = _unitize(_cross(fdet, sdet))
    polar, _ = _unitize(vectors["polar"])
    spindle, _ = _unitize(vectors["spindle"])
    return DetectorSetup(convention=convention, pivot=pivot, beam=beam, fdet=fdet, sdet=sdet, odet=odet,
                         polar=polar, spindle=spindle, twotheta_axis=list(vectors["twotheta_axis"]),
                         Xbeam=Xbeam, Ybeam=Ybeam, Xclose=Xclose, Yclose=Yclose, Fbeam=Fbeam, Sbeam=Sbeam,
                         Fclose=Fclose, Sclose=Sclose, odet_generated=generated)


def _read_header(st: cflags.CSettings, path: str, is_mask: bool):
    """Apply an SMV header as nanoBragg does before reading the command line."""
    image = smv_io.read_smv(path)
    st.fpixels, st.spixels = image.width, image.height
    flag = "-mask" if is_mask else "-img"

    def value(key):
        number = smv_io.smv_value(image.header, key)
        if math.isinf(number) or (math.isnan(number) and key in image.header):
            raise InputError(f"{flag}: {path}: header field {key}={number:g} is not a finite number")
        return number

    test = value("PIXEL_SIZE")
    if not math.isnan(test):
        st.pixel_size = test / 1000.0
    st.detsize_f = st.pixel_size * st.fpixels
    st.detsize_s = st.pixel_size * st.spixels
    for key, field, scale in (("DISTANCE", "distance", 1000.0), ("CLOSE_DISTANCE", "close_distance", 1000.0),
                              ("WAVELENGTH", "lambda0", 1e10)):
        test = value(key)
        if not math.isnan(test):
            setattr(st, field, test / scale)
    test = value("BEAM_CENTER_X")
    if not math.isnan(test):
        st.Xbeam = test / 1000.0
    test = value("BEAM_CENTER_Y")
    if not math.isnan(test):
        st.Ybeam = st.detsize_s - test / 1000.0 if is_mask else test / 1000.0
    for key in ("ORGX", "ORGY"):
        test = value(key)
        if not math.isnan(test):
            setattr(st, key, test)
    test = value("PHI")
    if not math.isnan(test):
        st.phi0 = test / RTD
    test = value("OSC_RANGE")
    if not math.isnan(test):
        st.osc = test / RTD
    # TWOTHETA is read into a variable nanoBragg never uses for the detector.
    return image


def parse_args(argv, *, read_headers=True, argument_scan="spec"):
    """Parse nanoBragg arguments; SMV headers of -mask/-img are applied first.

    ``argument_scan``: "spec" (nbjax refuses stray values, unknown options and
    missing values) or "c-parity" (skipped with a warning, as nanoBragg.c
    skips them; see :func:`nbjax.cflags.parse`).  Returns ``(settings, mask_image)``.
    """
    c_parity = argument_scan == "c-parity"
    probe = cflags.parse(argv, c_parity=c_parity)  # validates, and finds -mask / -img
    if not read_headers or (probe.maskfilename is None and probe.imginfilename is None):
        return probe, None  # no header to apply first: the scan from the defaults is the answer
    st = cflags.CSettings()
    mask_image = None
    if read_headers and probe.maskfilename is not None:
        mask_image = _read_header(st, probe.maskfilename, is_mask=True)
    if read_headers and probe.imginfilename is not None:
        _read_header(st, probe.imginfilename, is_mask=False)
    final = cflags.parse(argv, initial=st, c_parity=c_parity)
    return final, mask_image


# --------------------------------------------------------------------------
# The set-up as stages.  Each stage is a function of the parsed flags and the
# results of the stages before it; it validates its own inputs (raising
# InputError), reads its own files and makes its own random draws, and returns
# a named result.  build() runs them in nanoBragg.c's order -- so that the
# first error, the files read and the random numbers drawn are the ones
# nanoBragg meets -- and summary_lines() / warning_lines() report them after.


class DetectorSize(NamedTuple):
    """Pixel counts along the fast/slow axes and the detector's extent (m).

    The extent is ``-detpixels`` x ``-pixel`` where counts are given, else
    ``-detsize``; the counts are the extent over the pixel size, rounded.
    """

    fpixels: int
    spixels: int
    detsize_f_m: float
    detsize_s_m: float


class Illumination(NamedTuple):
    """The beam's fluence and the crystal it clips.

    ``fluence_per_m2``: photons/m² (``-flux`` x ``-exposure`` / ``-beamsize``²
    where all three are given, else ``-fluence``); ``sample_y_m`` /
    ``sample_z_m``: the crystal's height and width (m) after clipping by the
    square beam; ``warnings``: the clipping warnings.
    """

    fluence_per_m2: float
    sample_y_m: float
    sample_z_m: float
    warnings: tuple


class Steps(NamedTuple):
    """One sampled range after nanoBragg's step rule (:func:`nbjax.physics.sources.resolve_steps`).

    ``count`` points, ``span`` and ``step`` in the range's units (radians for
    phi and divergence, a fraction of the wavelength for dispersion, metres
    for the sensor thickness).
    """

    count: int
    span: float
    step: float


class StepCounts(NamedTuple):
    """nanoBragg's step auto-selection.

    ``phi``: the rotation sweep (radians, span = ``-osc``); ``hdiv`` /
    ``vdiv``: horizontal and vertical divergence (radians); ``dispersion``
    (fraction of λ); ``thickness``: sensor layers (m).  Divergence,
    dispersion and thickness are sanitized: any non-positive part means no
    spread (1, 0, 0).  ``detector_mu_per_m``: the sensor's attenuation
    (1/m; 1/thickness when not given); ``mosaic_domains`` and
    ``mosaic_spread_rad`` after nanoBragg's defaulting; ``warnings``.
    """

    phi: Steps
    hdiv: Steps
    vdiv: Steps
    dispersion: Steps
    thickness: Steps
    detector_mu_per_m: float
    mosaic_domains: int
    mosaic_spread_rad: float
    warnings: tuple


class Crystal(NamedTuple):
    """The unit cell, its orientation and the crystal's size.

    ``misset_rad`` (3,): the misset applied (zeros for none), drawn for
    ``-misset random`` (``misset_drawn``); ``cell``: the completed ``-cell``
    (Å, radians) or None; ``matrix_reciprocal_A``: the ``-mat`` file's
    reciprocal vectors as rows (Å⁻¹, rescaled by 1 Å/λ) or None.
    ``real_A`` / ``reciprocal_A`` (3, 3): a, b, c (Å) and a*, b*, c* (Å⁻¹) as
    rows after the misset; ``volume_A3``; ``direct`` / ``reciprocal``: the cell
    parameters (a, b, c in Å or Å⁻¹, then the angles in radians).
    ``n_cells``: (Na, Nb, Nc) unit cells along each axis (floats, ≥ 1, from
    the crystal size where it is given); ``size_m``: the crystal's extent
    along a, b, c (m).
    """

    misset_rad: np.ndarray
    misset_drawn: bool
    cell: np.ndarray | None
    matrix_reciprocal_A: np.ndarray | None
    real_A: np.ndarray
    reciprocal_A: np.ndarray
    volume_A3: float
    direct: np.ndarray
    reciprocal: np.ndarray
    n_cells: tuple
    size_m: tuple


class Oversampling(NamedTuple):
    """Sub-pixels per pixel side, and nanoBragg's recommendation.

    ``oversample``: the count used; ``auto_selected``: chosen by nbjax (no
    ``-oversample``); ``recommended``: nanoBragg's ceil(3 · crystal size /
    reciprocal pixel) (:func:`recommended_oversample`); ``xtal_size_max_m``:
    the crystal's largest extent and ``reciprocal_pixel_m`` = λ · distance /
    pixel size, both in metres.
    """

    oversample: int
    auto_selected: bool
    recommended: int
    xtal_size_max_m: float
    reciprocal_pixel_m: float


class StructureFactors(NamedTuple):
    """Where the structure factors come from.

    ``table``: the :class:`nbjax.io.hkl.HKLTable` or None (every F is
    ``-default_F``); ``origin``: "hkl" (read from ``-hkl``), "dump" (read
    from nanoBragg's Fdump.bin cache), "model" (computed from ``--model``) or
    None; ``path``: the file or model; ``data``: what the reader reported
    (:class:`nbjax.io.reflections` result: format, column, space group) for
    "hkl" and "model"; ``fdump``: (path, table) for the cache to write, or
    None; ``warnings``.
    """

    table: object
    origin: str | None
    path: str | None
    data: object
    fdump: tuple | None
    warnings: tuple

    @property
    def count(self) -> int:
        """Number of reflections given (0 without a table)."""
        return self.table.count if self.table is not None else 0


class Sources(NamedTuple):
    """The X-ray sources.

    ``positions_m`` (n, 3): each source's position (m; its direction toward
    the sample is ``-directions``); ``directions`` (n, 3) unit vectors from
    the sample toward the source; ``wavelengths_m`` (n,); ``weights`` (n,);
    ``divergence_rad``: the kept (h, v) divergence angles of generated
    sources, or None for ``-sourcefile``.
    """

    positions_m: np.ndarray
    directions: np.ndarray
    wavelengths_m: np.ndarray
    weights: np.ndarray
    divergence_rad: list | None

    @property
    def divsteps(self) -> int:
        """Divergence points (nanoBragg's count; -1 for a source file)."""
        return -1 if self.divergence_rad is None else len(self.divergence_rad)


class Stages(NamedTuple):
    """Every stage result of one set-up, in nanoBragg's order: what the log and the Experiment are made of.

    ``settings``: the parsed flags with the detector size, fluence and
    clipped crystal of the first stages filled in; ``roi``: (xmin, xmax,
    ymin, ymax) pixels as nanoBragg prints it (unset ends defaulted);
    ``detector``: the :class:`DetectorSetup`; ``frame``: the placed
    :class:`nbjax.geometry.detector.DetectorFrame` (numpy, m);
    ``interpolate``: 1 for tricubic interpolation of F, 0 for none;
    ``mosaic``: the drawn :class:`nbjax.physics.rng.MosaicDomains`;
    ``noise_seed``: the seed of the noise image; ``water_background``:
    nanoBragg's water term F_water² · r_e² (m²) · fluence (photons/m²) · the
    molecules in a cube of ``-water`` side (size³ · 10⁶ g/m³ · N_A / 18 g/mol),
    the constant every pixel's sum starts from (``Scene.background_I``).
    """

    settings: cflags.CSettings
    size: DetectorSize
    illumination: Illumination
    roi: tuple
    detector: DetectorSetup
    steps: StepCounts
    frame: object
    interpolate: int
    crystal: Crystal
    oversampling: Oversampling
    structure_factors: StructureFactors
    sources: Sources
    mosaic: object
    noise_seed: int
    water_background: float


def detector_size(st: cflags.CSettings) -> DetectorSize:
    """The detector's pixel counts and extent; refuses a non-positive pixel or an empty or huge detector."""
    if st.pixel_size <= 0 or not math.isfinite(st.pixel_size):
        raise InputError("-pixel: pixel size must be positive")
    if st.fpixels < 0 or st.spixels < 0:
        raise InputError("-detpixels: pixel counts must not be negative")
    detsize_f = st.pixel_size * st.fpixels if st.fpixels else st.detsize_f
    detsize_s = st.pixel_size * st.spixels if st.spixels else st.detsize_s
    fpixels = int(math.ceil(detsize_f / st.pixel_size - 0.5))
    spixels = int(math.ceil(detsize_s / st.pixel_size - 0.5))
    if fpixels <= 0 or spixels <= 0:
        raise InputError(f"detector has no pixels ({fpixels}x{spixels}): check -detpixels/-detsize/-pixel")
    if fpixels * spixels > 2**31 - 1:
        raise InputError(f"detector too large ({fpixels}x{spixels} pixels)")
    return DetectorSize(fpixels=fpixels, spixels=spixels, detsize_f_m=detsize_f, detsize_s_m=detsize_s)


def illumination(st: cflags.CSettings) -> Illumination:
    """Wavelength check, fluence from flux, exposure and beam size, and the crystal clipped by the beam."""
    if not (st.lambda0 > 0 and math.isfinite(st.lambda0)):
        raise InputError("-lambda/-energy: wavelength must be positive and finite")
    fluence = st.fluence
    if st.flux != 0.0 and st.exposure > 0.0 and st.beamsize >= 0:
        fluence = st.flux * st.exposure / st.beamsize / st.beamsize if st.beamsize > 0 else math.inf
    sample_y, sample_z, warnings = st.sample_y, st.sample_z, []
    if st.beamsize >= 0:
        if st.beamsize < sample_y:
            warnings.append(f"WARNING: clipping sample ({sample_y:g} m high) with beam ({st.beamsize:g} m)")
            sample_y = st.beamsize
        if st.beamsize < sample_z:
            warnings.append(f"WARNING: clipping sample ({sample_z:g} m wide) with beam ({st.beamsize:g} m)")
            sample_z = st.beamsize
    if not math.isfinite(fluence):
        raise InputError("-flux/-beamsize: the fluence is not finite (beam size 0?)")
    return Illumination(fluence_per_m2=fluence, sample_y_m=sample_y, sample_z_m=sample_z, warnings=tuple(warnings))


def region_of_interest(st: cflags.CSettings, size: DetectorSize) -> tuple:
    """``-roi`` (xmin, xmax, ymin, ymax) in pixels with unset ends at the detector's edges (xmax = fpixels, as nanoBragg)."""
    defaults = (0, size.fpixels, 0, size.spixels)
    roi = tuple(default if value < 0 else value for value, default in zip(st.roi, defaults))
    if roi[0] > roi[1] or roi[2] > roi[3]:
        raise InputError(f"-roi: xmin must not exceed xmax, nor ymin ymax (got {' '.join(map(str, st.roi))})")
    return roi


def _detector_warnings(st: cflags.CSettings, setup: DetectorSetup) -> tuple:
    warnings = []
    if setup.odet_generated:
        warnings.append("WARNING: auto-generating odet_vector")
    if st.pix0_vector is not None:
        warnings.append(
            "NOTE: -pix0_vector selects the custom convention but, as in nanoBragg.c, does not move "
            "the detector: the origin follows from the beam centre, distance and pivot"
        )
    return tuple(warnings)


def _check_inputs_given(st: cflags.CSettings, model) -> bool:
    """Refuse a set-up without structure factors or unit cell; True when F come from a cached Fdump.bin."""
    have_dump = st.hklfilename is None and model is None and os.path.isfile(st.dumpfilename)
    if st.hklfilename is None and model is None and not have_dump and st.default_F == 0.0:
        raise InputError("no structure factors: give -hkl FILE (or an Fdump.bin from a previous run) or -default_F")
    if st.matfilename is None and st.cell[0] == 0.0:
        raise InputError("no unit cell: give -mat FILE or -cell a b c alpha beta gamma")
    return have_dump


def step_counts(st: cflags.CSettings) -> StepCounts:
    """Step counts, spans and steps of phi, divergence, dispersion and sensor layers, and the mosaic domains."""
    warnings = []
    phi = Steps(*sources.phi_steps(st.phisteps, st.osc, st.phistep))
    hdiv = sources.resolve_steps(st.hdivsteps, st.hdivrange, st.hdivstep, default_span=1.0)
    vdiv = sources.resolve_steps(st.vdivsteps, st.vdivrange, st.vdivstep, default_span=1.0)
    dispersion = sources.resolve_steps(st.dispsteps, st.dispersion, st.dispstep, default_span=1.0)
    thickness = sources.thickness_steps(st.detector_thicksteps, st.detector_thick, st.detector_thickstep)
    detector_mu = st.detector_mu
    if thickness[1] > 0.0 and detector_mu < 0.0:  # the thickness before sanitizing, as nanoBragg
        detector_mu = 1.0 / thickness[1]
        warnings.append(f"WARNING: setting detector attenuation depth to {detector_mu:g} m")
    mosaic_domains, mosaic_spread = _mosaic_domains(st.mosaic_domains, st.mosaic_spread, warnings)
    return StepCounts(phi=phi, hdiv=Steps(*sources.sanitize(*hdiv)), vdiv=Steps(*sources.sanitize(*vdiv)),
                      dispersion=Steps(*sources.sanitize(*dispersion)),
                      thickness=Steps(*sources.sanitize(*thickness)), detector_mu_per_m=detector_mu,
                      mosaic_domains=mosaic_domains, mosaic_spread_rad=mosaic_spread, warnings=tuple(warnings))


def place_detector(st: cflags.CSettings, setup: DetectorSetup):
    """The detector placed by its pivot, rotations and two-theta: a numpy DetectorFrame (m)."""
    det_params = detector.DetectorParams(
        fdet=np.asarray(setup.fdet, np.float64), sdet=np.asarray(setup.sdet, np.float64),
        odet=np.asarray(setup.odet, np.float64), beam=np.asarray(setup.beam, np.float64),
        twotheta_axis=np.asarray(setup.twotheta_axis, np.float64),
        pixel_size_m=np.asarray(st.pixel_size, np.float64),
        distance_m=np.asarray(st.distance, np.float64),
        close_distance_m=np.asarray(0.0 if math.isnan(st.close_distance) else st.close_distance, np.float64),
        beam_fast_m=np.asarray(setup.Fbeam, np.float64), beam_slow_m=np.asarray(setup.Sbeam, np.float64),
        close_fast_m=np.asarray(setup.Fclose, np.float64), close_slow_m=np.asarray(setup.Sclose, np.float64),
        rotations_rad=np.asarray([st.detector_rotx, st.detector_roty, st.detector_rotz], np.float64),
        twotheta_rad=np.asarray(st.detector_twotheta, np.float64),
    )
    return _to_numpy(_place_detector(det_params, setup.pivot, not math.isnan(st.close_distance)))


def _auto_interpolation(st: cflags.CSettings) -> int:
    """``-interpolate`` as given, or (not given) tricubic for a crystal of at most 2 cells along an axis."""
    if st.interpolate > 1:
        return 1 if st.Na <= 2 or st.Nb <= 2 or st.Nc <= 2 else 0
    return st.interpolate


def crystal_stage(st: cflags.CSettings, misset_seed: int, rng_state: CStatics) -> Crystal:
    """Orientation (a ``-misset random`` draw from ``rng_state``), unit cell (``-cell`` or the ``-mat`` file) and size.

    Refuses a degenerate cell and a crystal size that makes infinitely many cells.
    """
    misset_mode = st.misset_mode
    misset = list(st.misset_rad)
    drawn = misset_mode == -1
    if drawn:
        misset = [float(x) for x in rng.random_misset(misset_seed, rng_state)]
        misset_mode = 1
    misset_rad = np.asarray(misset if misset_mode > 0 else [0.0, 0.0, 0.0], np.float64)
    cell = volume = None
    if st.user_cell:
        cell = np.asarray(completed_cell(st.cell), np.float64)
        recip, volume = _reciprocal_from_cell(cell)
    matrix_recip = None
    if st.matfilename is not None:
        matrix = matrix_io.read_mosflm_matrix(st.matfilename)
        recip = matrix_recip = (1e-10 / st.lambda0) * np.asarray(matrix, np.float64).T
    lattice = _lattice(recip, misset_rad, cell, volume)
    real_A = np.asarray(lattice.real_A)
    recip_A = np.asarray(lattice.reciprocal_A)
    # a degenerate cell: not finite, or an axis whose length in metres (used to size the crystal) is 0
    if not np.all(np.isfinite(real_A)) or not np.all(np.sum((1e-10 * real_A) ** 2, axis=1) > 0.0):
        if st.matfilename is not None and _regular(np.asarray(matrix, np.float64)):
            # the -mat matrix is fine: rescaling it by 1 Å/λ under- or overflowed
            raise InputError(f"-lambda: a wavelength of {st.lambda0 * 1e10:g} A rescales the -mat orientation "
                             "matrix to a degenerate cell (its numbers under- or overflow)")
        raise InputError(f"the unit cell is degenerate (zero volume): check "
                         f"{'-mat ' + st.matfilename if st.matfilename is not None else '-cell'}")
    direct, reciprocal = _cell_parameters(lattice.real_A, lattice.reciprocal_A, lattice.volume_A3)

    n_cells = [st.Na, st.Nb, st.Nc]
    lengths = [math.sqrt(float(np.dot(v, v))) for v in 1e-10 * real_A]
    for axis, (size, flag) in enumerate(((st.sample_x, "-xtal_thick/-samplesize"), (st.sample_y, "-xtal_width/-samplesize"),
                                         (st.sample_z, "-xtal_height/-samplesize"))):
        if size > 0:
            cells = size / lengths[axis]
            if not math.isfinite(cells):
                raise InputError(f"{flag}: a crystal {size * 1000:g} mm across makes an infinite number of unit cells")
            n_cells[axis] = math.ceil(cells)
    n_cells = tuple(max(float(n), 1.0) if n > 1.0 else 1.0 for n in n_cells)
    return Crystal(misset_rad=misset_rad, misset_drawn=drawn, cell=cell, matrix_reciprocal_A=matrix_recip,
                   real_A=real_A, reciprocal_A=recip_A, volume_A3=float(lattice.volume_A3),
                   direct=np.asarray(direct), reciprocal=np.asarray(reciprocal), n_cells=n_cells,
                   size_m=tuple(length * n for length, n in zip(lengths, n_cells)))


def oversampling(st: cflags.CSettings, xtal: Crystal, frame) -> Oversampling:
    """Sub-pixels per side: ``-oversample``, or nanoBragg's recommendation capped at :data:`AUTO_OVERSAMPLE_MAX`.

    Refuses a detector plane that the beam never meets at a finite, nonzero distance.
    """
    xtalsize_max = max(xtal.size_m)
    distance = float(frame.distance_m)
    if not (math.isfinite(distance) and distance != 0.0):
        # the beam runs along the detector plane, or the plane passes through the sample:
        # nanoBragg divides by this distance (its sub-pixel choice) and renders nonsense
        raise InputError(f"detector geometry: the beam meets the detector plane at distance {distance:g} m "
                         "(check -beam_vector, -odet_vector, -pix0_vector and the detector rotations)")
    reciprocal_pixel = st.lambda0 * distance / st.pixel_size
    recommended = recommended_oversample(xtalsize_max, reciprocal_pixel)
    auto = st.oversample <= 0
    oversample = min(recommended, AUTO_OVERSAMPLE_MAX) if auto else st.oversample
    return Oversampling(oversample=max(oversample, 1), auto_selected=auto, recommended=recommended,
                        xtal_size_max_m=xtalsize_max, reciprocal_pixel_m=reciprocal_pixel)


def _oversampling_warnings(o: Oversampling) -> list:
    warnings = []
    if o.auto_selected and o.oversample < o.recommended:
        warnings.append(f"NOTE: nanoBragg.c would auto-select {o.recommended}-fold oversampling; nbjax caps the "
                        f"automatic choice at {AUTO_OVERSAMPLE_MAX} (give -oversample to choose more)")
    if o.oversample < o.recommended:
        warnings.append(f"WARNING: maximum dimension of sample is {o.xtal_size_max_m * 1e10:g} A")
        warnings.append(f"         but reciprocal pixel size is {o.reciprocal_pixel_m * 1e10:g} A")
        warnings.append("         intensity may vary significantly across a pixel!")
        warnings.append(f"         recommend -oversample {o.recommended} to work around this")
    return warnings


def structure_factors(st: cflags.CSettings, xtal: Crystal, have_dump: bool, hkl_column) -> StructureFactors:
    """F from ``-hkl`` (any supported format) or from a cached Fdump.bin, or none (``-default_F`` everywhere)."""
    if st.hklfilename is not None:
        data = reflections.load_structure_factors(st.hklfilename, column=hkl_column, default_F=st.default_F)
        return StructureFactors(table=data.table, origin="hkl", path=st.hklfilename, data=data,
                                fdump=(st.dumpfilename, data.table),  # written by write_fdump_cache() once all is valid
                                warnings=_structure_factor_warnings(data, st.hklfilename, xtal.direct))
    if have_dump:
        return StructureFactors(table=read_fdump(st.dumpfilename), origin="dump", path=st.dumpfilename, data=None,
                                fdump=None, warnings=())
    return StructureFactors(table=None, origin=None, path=None, data=None, fdump=None, warnings=())


def model_structure_factors(st: cflags.CSettings, model, model_dmin, xtal: Crystal, setup: DetectorSetup, frame,
                            size: DetectorSize, light: Sources) -> StructureFactors:
    """F computed from an atomic model, to ``model_dmin`` (Å) or the resolution of the detector's corners."""
    if model_dmin is None:
        model_dmin = detector_d_min(frame, size.fpixels, size.spixels, st, setup.beam, light.directions,
                                    light.wavelengths_m, xtal.reciprocal_A)
    data = reflections.structure_factors_from_model(model, model_dmin, default_F=st.default_F)
    return StructureFactors(table=data.table, origin="model", path=model, data=data,
                            fdump=(st.dumpfilename, data.table),
                            warnings=_structure_factor_warnings(data, model, xtal.direct))


def _ignored_option_notes(st: cflags.CSettings) -> tuple:
    notes = []
    if st.stolfilename is not None:
        notes.append(f"NOTE: {st.stolfilename} is not used: nanoBragg.c reads -stol/-4stol/-Q files but never uses them")
    if st.coherent:
        notes.append("NOTE: -coherent has no effect (as in nanoBragg.c)")
    return tuple(notes)


def _refuse_unsupported(st: cflags.CSettings):
    if st.printout or st.printout_pixel is not None:
        raise InputError("-printout/-printout_pixel: per-pixel console dumps are not supported; "
                         "use the Python API (nbjax.experiment / nbjax.renderer.engine) to inspect pixels")
    if st.stoloutfilename is not None:
        raise InputError("-stolout: nanoBragg.c never writes this file; nbjax does not either")


def source_stage(st: cflags.CSettings, setup: DetectorSetup, steps: StepCounts) -> Sources:
    """Sources from ``-sourcefile`` or generated from the divergence grid and dispersion steps."""
    if st.sourcefilename is not None:
        raw = read_sourcefile(st.sourcefilename)
        if len(raw) > cflags.MAX_SOURCES:
            raise InputError(f"-sourcefile: {st.sourcefilename} has {len(raw)} sources; "
                             f"nbjax allows at most {cflags.MAX_SOURCES}")
        positions, wavelengths, weights = sources.file_sources(raw, setup.beam, st.lambda0)
        grid = None
    else:
        grid = sources.divergence_grid(*steps.hdiv, *steps.vdiv, st.round_div)
        vertical, _ = _unitize(_cross(setup.beam, setup.polar))
        positions, wavelengths = sources.generated_sources(
            setup.beam, setup.polar, vertical, grid, st.lambda0, steps.dispersion.count, steps.dispersion.step,
            steps.dispersion.span)
        weights = np.full(len(wavelengths), 1.0 / max(len(wavelengths), 1))
    if len(wavelengths) == 0:
        raise InputError("no X-ray sources (empty divergence grid or source file)")
    directions = sources.unit_directions(positions)
    if np.any(~np.isfinite(wavelengths)) or np.any(wavelengths <= 0):
        raise InputError("source wavelengths must be positive")
    return Sources(positions_m=positions, directions=directions, wavelengths_m=wavelengths, weights=weights,
                   divergence_rad=grid)


def mosaic_stage(steps: StepCounts, seed: int, rng_state: CStatics):
    """The mosaic domains' rotations, drawn from ``rng_state`` (:func:`nbjax.physics.rng.mosaic_domains`)."""
    spread = steps.mosaic_spread_rad
    if not spread * 16.0 <= FLOAT32_MAX:
        raise InputError(f"-mosaic: {spread * RTD:g} degrees is too large: nanoBragg draws the domain "
                         f"rotations in single precision (at most {FLOAT32_MAX / 16 * RTD:.3g} degrees)")
    return rng.mosaic_domains(spread, steps.mosaic_domains, seed, rng_state)


def _structure_factor_warnings(data, path, direct) -> tuple:
    """The reader's notes; a warning when the file's cell differs from the rendered one by more than 1%."""
    warnings = list(data.notes)
    if data.format != "text" and data.cell is not None:
        rendered = list(direct[:3]) + list(np.asarray(direct[3:]) * RTD)
        if any(abs(x - y) > 0.01 * abs(y) for x, y in zip(data.cell, rendered)):
            warnings.append("WARNING: the cell of %s (%s) differs by more than 1%% from the rendered cell (%s)" % (
                path, " ".join(_g(x) for x in data.cell), " ".join(_g(x) for x in rendered)))
    return tuple(warnings)


def _structure_factor_lines(factors: StructureFactors) -> list:
    data = factors.data
    if data is None or data.format == "text":
        return []
    what = {"mtz": "MTZ", "mmcif": "SF-mmCIF", "model": "model"}[data.format]
    return [f"reading {what} {factors.path}: {data.column}, space group {data.spacegroup or 'P 1'}, "
            f"{data.table.count} reflections in P1"]


def summary_lines(stages: Stages) -> tuple:
    """The lines nanoBragg prints while it sets up, in its order, from the stage results (no computation but formatting)."""
    st, setup, steps, frame, xtal = stages.settings, stages.detector, stages.steps, stages.frame, stages.crystal
    factors, light, over = stages.structure_factors, stages.sources, stages.oversampling
    beam, phi, thickness = setup.beam, steps.phi, steps.thickness
    log = [f"{setup.convention.value} convention selected.",
           "pivoting detector around sample" if setup.pivot is Pivot.SAMPLE else
           "pivoting detector around direct beam spot",
           "XDS incident beam: " + " ".join(_g(float(np.dot(beam, axis))) for axis in (frame.fdet, frame.sdet, frame.odet))]
    if st.interpolate > 1:
        log.append("auto-selected tricubic interpolation of structure factors" if _auto_interpolation(st) else
                   "auto-selected no interpolation")
    # crystal
    if xtal.misset_drawn:
        log.append("random orientation misset angles: %f %f %f deg" % tuple(x * RTD for x in xtal.misset_rad))
    if st.matfilename is not None:
        log.append(f"reading {st.matfilename}")
    direct, reciprocal = xtal.direct, xtal.reciprocal
    log.append("Unit Cell: " + " ".join(_g(x) for x in list(direct[:3]) + list(direct[3:] * RTD)))
    log.append("Recp Cell: " + " ".join(_g(x) for x in list(reciprocal[:3]) + list(reciprocal[3:] * RTD)))
    log.append(f"volume = {xtal.volume_A3:g} A^3")
    for title, names, vectors in (("real-space cell vectors (Angstrom):", ("a", "b", "c"), xtal.real_A),
                                  ("reciprocal-space cell vectors (Angstrom^-1):", ("a_star", "b_star", "c_star"),
                                   xtal.reciprocal_A)):
        log.append(title)
        log.append("     %-10s  %-10s  %-10s" % names)
        for axis, name in enumerate("XYZ"):
            log.append("%s: %11.8f %11.8f %11.8f" % (name, vectors[0, axis], vectors[1, axis], vectors[2, axis]))
    Na, Nb, Nc = xtal.n_cells
    log.append("crystal is %g x %g x %g microns" % tuple(x * 1e6 for x in xtal.size_m))
    if over.auto_selected:
        log.append(f"auto-selected {over.oversample}-fold oversampling")
    volume_m3 = xtal.size_m[0] * xtal.size_m[1] * xtal.size_m[2]
    log.append(f"approximate MW = {_g(volume_m3 * 1.2e6 * AVOGADRO / (Na * Nb * Nc))}")
    # structure factors read from a file
    if factors.origin == "hkl":
        log += _structure_factor_lines(factors)
        log += [f"counting entries in {st.hklfilename}", f"re-reading {st.hklfilename}",
                f"writing dump file for next time: {factors.fdump[0]}"]
    elif factors.origin == "dump":
        log.append(f"reading Fs from {factors.path}")
    log += [f"thick{t} = {thickness.step * t * 1e6:g} um" for t in range(thickness.count)]
    log += [f"phi{j} = {value * RTD:g}" for j, value in enumerate(_phi_values(st, phi))]
    # sources
    if light.divergence_rad is not None:
        log += [f"divergence deviation: {h:g} {v:g}" for h, v in light.divergence_rad]
        disp = steps.dispersion
        log += ["lambda%d = %.15g" % (k, st.lambda0 * (1.0 + disp.step * k - disp.span / 2.0)) for k in range(disp.count)]
    log.append(f"  created a total of {len(light.wavelengths_m)} sources:")
    for p, w, lam in zip(light.positions_m, light.weights, light.wavelengths_m):
        log.append(f"{_g(p[0])} {_g(p[1])} {_g(p[2])}   {_g(w)} {_g(lam)}")
    if factors.origin == "model":
        log += _structure_factor_lines(factors)
        log.append(f"writing dump file for next time: {factors.fdump[0]}")
    log.append(f"  created a total of {steps.mosaic_domains} mosaic domains")

    # the summary nanoBragg prints before rendering
    shape_name = {"round": "ellipsoidal", "square": "parallelpiped", "gauss": "gaussian", "tophat": "tophat-spot"}
    log.append(f"  {factors.count} initialized hkls (all others ={_g(st.default_F)})")
    log.append(f"  {shape_name[st.xtal_shape]} xtal: {Na:.0f}x{Nb:.0f}x{Nc:.0f} cells")
    log.append(f"  wave={_g(st.lambda0)} meters +/- {_g(steps.dispersion.span * 100)}% in {steps.dispersion.count} steps")
    log.append("  polarization effect disabled" if st.nopolar else f"  Kahn polarization factor: {st.polarization:f}")
    if st.curved_detector:
        log.append("  curved detector: all pixels same distance from origin")
    if st.point_pixel:
        log.append("  pixel obliquity effect disabled")
    log.append(f"  incident fluence: {_g(st.fluence)} photons/m^2")
    log.append(f"  distance={_g(float(frame.distance_m))} detsize={_g(st.detsize_f)}x{_g(st.detsize_s)}  "
               f"pixel={_g(st.pixel_size)} meters ({stages.size.fpixels}x{stages.size.spixels} pixels)")
    log.append(f"  sensor is {_g(thickness.span)} m thick in {thickness.count} layers with mu= {_g(steps.detector_mu_per_m)}")
    log.append(f"  Xbeam={_g(setup.Xbeam)} Ybeam={_g(setup.Ybeam)}")
    log.append(f"  Fbeam={_g(frame.beam_fast_m)} Sbeam={_g(frame.beam_slow_m)}")
    log.append(f"  Xclose={_g(setup.Xclose)} Yclose={_g(setup.Yclose)}")
    log.append(f"  Fclose={_g(frame.close_fast_m)} Sclose={_g(frame.close_slow_m)}")
    for name, v in (("X", frame.fdet), ("Y", frame.sdet), ("Z", frame.odet)):
        log.append(f"  DIRECTION_OF_DETECTOR_{name}-AXIS= " + " ".join(_g(x) for x in v))
    log.append("  INCIDENT_BEAM_DIRECTION= " + " ".join(_g(x) for x in beam))
    log.append("  spindle ROTATION_AXIS= " + " ".join(_g(x) for x in setup.spindle))
    log.append("  POLARIZATION_PLANE_NORMAL= " + " ".join(_g(x) for x in _cross(beam, setup.polar)))
    log.append("  dials origin= " + " ".join(_g(x) for x in frame.dials_origin_mm))
    roi = stages.roi
    log.append(f"  roi: {roi[0]} < x < {roi[1]} && {roi[2]} < y < {roi[3]}")
    log.append(f"  hdivrange={_g(steps.hdiv.span)} hdivstep={_g(steps.hdiv.step)}  radians")
    log.append(f"  vdivrange={_g(steps.vdiv.span)} vdivstep={_g(steps.vdiv.step)}  radians")
    log.append(f"  {light.divsteps} divergence steps")
    log.append(f"  {len(light.wavelengths_m)} sources")
    log.append(f"  {steps.mosaic_domains} mosaic domains over mosaic spread of {_g(steps.mosaic_spread_rad * RTD)} degrees")
    log.append(f"  {phi.count} phi steps from {_g(st.phi0 * RTD)} to {_g((st.phi0 + phi.span) * RTD)} degrees")
    flags = "".join(f" +{n}" for n, on in (("thick", st.oversample_thick), ("polar", st.oversample_polar),
                                            ("omega", st.oversample_omega)) if on)
    log.append(f"  {over.oversample}x{over.oversample} pixel oversample steps{flags}")
    if st.maskfilename is not None:
        log.append(f"  skipping zero-flagged pixels in {st.maskfilename}")
    if st.calculate_noise:
        log += ["", "  noise image paramters:", f"  seed: {stages.noise_seed}",
                f"  water droplet size: {_g(st.water_size)} m"]
    return tuple(log)


def warning_lines(stages: Stages) -> tuple:
    """The warnings and notes of the set-up, in the order nanoBragg meets them."""
    factors = stages.structure_factors
    from_model = factors.origin == "model"
    return (*stages.illumination.warnings, *_detector_warnings(stages.settings, stages.detector),
            *stages.steps.warnings, *_oversampling_warnings(stages.oversampling),
            *(() if from_model else factors.warnings), *_ignored_option_notes(stages.settings),
            *(factors.warnings if from_model else ()))


def _settings_with(st: cflags.CSettings, **values) -> cflags.CSettings:
    """A copy of the parsed flags with ``values`` set; the parsed object stays as parsed.

    (``copy.copy``: a tenth of the time ``dataclasses.replace`` takes for CSettings' hundred fields.)
    """
    settings = copy.copy(st)
    for name, value in values.items():
        setattr(settings, name, value)
    return settings


def _phi_values(st: cflags.CSettings, phi: Steps) -> list:
    """The rotation angle of each phi step (rad)."""
    return [st.phi0 + phi.step * j for j in range(phi.count)]


# --------------------------------------------------------------------------


def build(
    argv,
    *,
    accumulation: str = "spec",
    phi_carryover: str = "spec",
    argument_scan: str = "spec",
    interpolation_fallback: str = "c",
    dtype=jnp.float64,
    evaluation_dtype: str | None = None,
    block_rows: int | None = None,
    now: float | None = None,
    hkl_column: str | None = None,
    model: str | None = None,
    model_dmin=None,
    work_limit: float | None = None,
) -> Experiment:
    """Set up an experiment from nanoBragg command-line arguments.

    ``accumulation`` / ``phi_carryover``: "spec" (physically correct) or
    "c-parity" (released nanoBragg.c); ``argument_scan`` the same for reading
    the argument list (:func:`parse_args`).  ``hkl_column``: the MTZ/mmCIF column
    ``-hkl`` reads; ``model``: an atomic model whose F replace ``-hkl``, to the
    detector corner's resolution or ``model_dmin`` (Å) (see
    :mod:`nbjax.io.reflections`).  ``work_limit``: most evaluations the render
    may need (None: :data:`WORK_LIMIT`; ``math.inf``: no limit).  Raises
    :class:`InputError` on bad input.

    ``dtype`` is the scene's float dtype; without ``jax_enable_x64`` a
    requested float64 becomes JAX's default float (float32), silently.  The
    set-up's own numpy arithmetic never prints floating-point warnings: a
    non-finite result is refused with a line naming the flag instead.

    The stages run in nanoBragg.c's order, so that the first error, the files
    read and the random numbers drawn are nanoBragg's; their results are kept
    in ``Experiment.stages``.
    """
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    with np.errstate(all="ignore"):
        st, mask_image = parse_args(argv, argument_scan=argument_scan)
        model_dmin = _check_structure_factor_options(st, hkl_column, model, model_dmin)
        size = detector_size(st)
        beam = illumination(st)
        roi = region_of_interest(st, size)
        st = _settings_with(st, detsize_f=size.detsize_f_m, detsize_s=size.detsize_s_m,
                            fluence=beam.fluence_per_m2, sample_y=beam.sample_y_m, sample_z=beam.sample_z_m)
        setup = detector_setup(st)
        have_dump = _check_inputs_given(st, model)
        steps = step_counts(st)
        frame = place_detector(st, setup)
        # nanoBragg's default seeds: minus the time in seconds, read once
        clock = -int(now if now is not None else time.time()) if None in (st.seed, st.misset_seed) else None
        rng_state = CStatics()  # one random-number state: the misset draw, then the mosaic domains
        xtal = crystal_stage(st, clock if st.misset_seed is None else st.misset_seed, rng_state)
        over = oversampling(st, xtal, frame)
        factors = structure_factors(st, xtal, have_dump, hkl_column)
        _refuse_unsupported(st)
        light = source_stage(st, setup, steps)
        if model is not None:  # needs the detector and the sources: the resolution of its corners
            factors = model_structure_factors(st, model, model_dmin, xtal, setup, frame, size, light)
        check_work(pixels=roi_clipped_size(roi, size.fpixels, size.spixels), oversample=over.oversample,
                   thicksteps=steps.thickness.count, n_sources=len(light.wavelengths_m), phisteps=steps.phi.count,
                   mosaic_domains=steps.mosaic_domains, limit=work_limit)
        mosaic = mosaic_stage(steps, st.mosaic_seed, rng_state)
        water = st.water_size
        stages = Stages(
            settings=st, size=size, illumination=beam, roi=roi, detector=setup, steps=steps, frame=frame,
            interpolate=0 if factors.count == 0 and factors.origin != "model" else _auto_interpolation(st),
            crystal=xtal, oversampling=over, structure_factors=factors, sources=light, mosaic=mosaic,
            noise_seed=clock if st.seed is None else st.seed,
            water_background=(WATER_F * WATER_F * R_E_SQR_M2 * st.fluence * water * water * water * 1e6 * AVOGADRO
                              / WATER_MW_G_PER_MOL))
        return _experiment(stages, mask_image, rng_state, accumulation=accumulation, phi_carryover=phi_carryover,
                           interpolation_fallback=interpolation_fallback, dtype=dtype,
                           evaluation_dtype=evaluation_dtype, block_rows=block_rows)


def _experiment(stages: Stages, mask_image, rng_state, *, accumulation, phi_carryover, interpolation_fallback, dtype,
                evaluation_dtype, block_rows) -> Experiment:
    """The Experiment made of the stage results: mask, render configuration, scene, header values and outputs."""
    st, size, steps, frame, xtal = stages.settings, stages.size, stages.steps, stages.frame, stages.crystal
    fpixels, spixels, roi = size.fpixels, size.spixels, stages.roi
    table, light, oversample = stages.structure_factors.table, stages.sources, stages.oversampling.oversample
    mask = None
    if mask_image is not None:
        if mask_image.data.shape != (spixels, fpixels):
            raise InputError(
                f"{st.maskfilename}: mask is {mask_image.width}x{mask_image.height} pixels but the detector is {fpixels}x{spixels}")
        mask = np.asarray(mask_image.data)
    roi_clipped = (roi[0], min(roi[1], fpixels - 1), roi[2], min(roi[3], spixels - 1))
    if roi_clipped[0] > roi_clipped[1] or roi_clipped[2] > roi_clipped[3]:
        raise InputError("-roi: the region lies outside the detector")
    phi_values = _phi_values(st, steps.phi)
    n_sources, thickness = len(light.wavelengths_m), steps.thickness
    config = RenderConfig(
        fpixels=fpixels,
        spixels=spixels,
        roi=None if roi_clipped == (0, fpixels - 1, 0, spixels - 1) else roi_clipped,
        oversample=oversample,
        thicksteps=thickness.count,
        shape=st.xtal_shape,
        nopolar=st.nopolar,
        point_pixel=st.point_pixel,
        curved_detector=st.curved_detector,
        oversample_thick=st.oversample_thick,
        oversample_polar=st.oversample_polar,
        oversample_omega=st.oversample_omega,
        has_thickness=thickness.span != 0.0,
        has_water=st.water_size != 0.0,
        has_dmin=st.dmin > 0.0,
        has_hkls=stages.structure_factors.count > 0,
        hkl_min=tuple(int(x) for x in table.hkl_min) if table is not None else (0, 0, 0),
        hkl_max=tuple(int(x) for x in table.hkl_max) if table is not None else (0, 0, 0),
        interpolate=bool(stages.interpolate),
        interpolation_fallback=interpolation_fallback,
        accumulation=accumulation,
        phi_carryover=phi_carryover,
        phi_zero=tuple(phi == 0.0 for phi in phi_values),
        evaluation_dtype=evaluation_dtype,
        block_rows=block_rows or default_block_rows(roi_clipped, oversample, thickness.count, n_sources,
                                                    steps.phi.count * steps.mosaic_domains),
    )
    values = np.asarray(table.values)[:-1, :-1, :-1] if table is not None else np.zeros((1, 1, 1))
    as_dtype = lambda x: np.asarray(x, dtype)  # as jnp.asarray converts a host value, then one transfer
    scene = Scene(
        pix0_m=as_dtype(frame.pix0_m), fdet=as_dtype(frame.fdet), sdet=as_dtype(frame.sdet), odet=as_dtype(frame.odet),
        pixel_size_m=as_dtype(st.pixel_size), close_distance_m=as_dtype(frame.close_distance_m),
        distance_m=as_dtype(frame.distance_m), beam=as_dtype(stages.detector.beam),
        layer_thickness_m=as_dtype(thickness.step), mu_per_m=as_dtype(steps.detector_mu_per_m),
        incident=as_dtype(-light.directions), wavelength_m=as_dtype(light.wavelengths_m),
        polar_axis=as_dtype(stages.detector.polar), kahn_factor=as_dtype(st.polarization),
        fluence=as_dtype(st.fluence), background_I=as_dtype(stages.water_background), dmin_m=as_dtype(st.dmin),
        cell_m=as_dtype(1e-10 * xtal.real_A), reciprocal_A=as_dtype(xtal.reciprocal_A),
        n_cells=as_dtype(list(xtal.n_cells)), fudge=as_dtype(st.fudge),
        spindle=as_dtype(stages.detector.spindle), phi_rad=as_dtype(phi_values),
        mosaic_umats=as_dtype(stages.mosaic.umats), default_F=as_dtype(st.default_F),
        F_table=as_dtype(values) if _scene_stays_on_host(dtype) else _aligned_copy(values, dtype),
    )
    if not _scene_stays_on_host(dtype):
        scene = jax.device_put(scene)  # uncommitted, on the default device, like jnp.asarray
    Xbeam, Ybeam = stages.detector.Xbeam, stages.detector.Ybeam
    header = dict(
        fpixels=fpixels, spixels=spixels, pixel_size_mm=st.pixel_size * 1000.0,
        distance_mm=float(frame.distance_m) * 1000.0,
        wavelength_A=st.lambda0 * 1e10, beam_center_x_mm=Xbeam * 1000.0, beam_center_y_mm=Ybeam * 1000,
        adxv_center_x_mm=float(frame.beam_fast_m) * 1000.0,
        adxv_center_y_mm=(st.detsize_s - float(frame.beam_slow_m)) * 1000,
        mosflm_center_x_mm=(float(frame.beam_slow_m) - 0.5 * st.pixel_size) * 1000.0,
        mosflm_center_y_mm=(float(frame.beam_fast_m) - 0.5 * st.pixel_size) * 1000,
        denzo_x_beam_mm=(float(frame.beam_slow_m) - 0.0 * st.pixel_size) * 1000.0,
        denzo_y_beam_mm=(float(frame.beam_fast_m) - 0.0 * st.pixel_size) * 1000,
        dials_origin_mm=tuple(float(x) for x in frame.dials_origin_mm),
        xds_orgx=float(frame.xds_orgx), xds_orgy=float(frame.xds_orgy),
        close_distance_mm=float(frame.close_distance_m) * 1000.0,
        phi_deg=st.phi0 * RTD, osc_start_deg=st.phi0 * RTD, osc_range_deg=steps.phi.span * RTD,
        twotheta_deg=st.detector_twotheta * RTD,
        roi=tuple(roi), oversample=oversample, pixel_size_m=st.pixel_size,
        steps=n_steps(scene, config),
        interpolate=bool(stages.interpolate),
        sensor_thickness_m=float(thickness.span),  # after the step rules; 0 = no sensor depth
    )
    outputs = Outputs(
        floatfile=st.floatfilename,
        intfile=st.intfilename,
        pgmfile=st.pgmfilename if st.write_pgm else None,
        noisefile=st.noisefilename if st.calculate_noise else None,
        intfile_scale=st.intfile_scale,
        pgm_scale=st.pgm_scale,
        adc_offset=st.adc_offset,
        noise_seed=stages.noise_seed,
    )
    return Experiment(scene=scene, config=config, mask=mask, outputs=outputs, log=summary_lines(stages),
                      header=header, rng_state=rng_state, warnings=warning_lines(stages), notes=tuple(st.notes),
                      fdump=stages.structure_factors.fdump, settings=st, detector_setup=stages.detector,
                      crystal_setup=CrystalSetup(misset_rad=xtal.misset_rad, cell=xtal.cell,
                                                 matrix_reciprocal_A=xtal.matrix_reciprocal_A, mosaic=stages.mosaic,
                                                 mosaic_spread_rad=float(steps.mosaic_spread_rad)),
                      stages=stages)


def _check_structure_factor_options(st, hkl_column, model, model_dmin):
    """Refuse contradictory --hkl-column/--model/--model-dmin; the d_min as a float or None."""
    if hkl_column is not None and st.hklfilename is None:
        raise InputError("--hkl-column: names a column of the -hkl file, but no -hkl was given")
    if model is not None and st.hklfilename is not None:
        raise InputError(f"--model {model}: give either -hkl or --model, not both")
    if model_dmin is None:
        return None
    if model is None:
        raise InputError("--model-dmin: sets the resolution of --model, but no --model was given")
    value = parse_float(model_dmin, "--model-dmin") if isinstance(model_dmin, str) else float(model_dmin)
    if not (value > 0 and math.isfinite(value)):
        raise InputError(f"--model-dmin: must be a positive resolution in Angstrom, got {model_dmin}")
    return value


def detector_d_min(frame, fpixels, spixels, st, beam, directions, wavelengths, recip_A) -> float:
    """Resolution limit (Å) of the F table a model must supply for this set-up.

    1/d = the largest |q| = |d - i|/lambda over the detector and all sources,
    capped by -dmin, plus two steps of the longest reciprocal axis (so that
    nearest-index rounding and the interpolation neighbours near the corners
    find their reflections).  On a flat detector whose corners all scatter
    below 90 degrees the largest angle is at a corner: the points of a plane
    within an angle t < 90 degrees of the beam form a convex set, which holds
    the whole rectangle once it holds its corners.  A curved detector is
    sampled along its edge.  Past 90 degrees (a back-scattering detector)
    the limit is the Ewald sphere's, 1/d = 2/lambda.
    """
    size = st.pixel_size
    if st.curved_detector:
        f_edge, s_edge = np.arange(fpixels + 1) * size, np.arange(spixels + 1) * size
        F = np.concatenate([f_edge, f_edge, np.zeros_like(s_edge), np.full_like(s_edge, fpixels * size)])
        S = np.concatenate([np.zeros_like(f_edge), np.full_like(f_edge, spixels * size), s_edge, s_edge])
    else:
        F = np.array([0.0, fpixels * size, 0.0, fpixels * size])
        S = np.array([0.0, 0.0, spixels * size, spixels * size])
    position = np.asarray(pixel_geometry.lab_position(F, S, 0.0, frame.pix0_m, frame.fdet, frame.sdet, frame.odet))
    if st.curved_detector:
        position = np.asarray(pixel_geometry.curved_position(
            tuple(position), float(frame.distance_m), np.asarray(beam, np.float64), frame.fdet, frame.sdet))
    diffracted = position / np.linalg.norm(position, axis=0)  # (3, points)
    incident = -np.asarray(directions, np.float64)  # (sources, 3)
    wavelengths = np.asarray(wavelengths, np.float64)
    inv_d = 0.0
    chunk = max(1, (1 << 22) // diffracted.shape[1])  # bounded memory for many sources
    for first in range(0, len(incident), chunk):
        i, lam = incident[first:first + chunk], wavelengths[first:first + chunk]
        if np.any(i @ diffracted <= 0.0):
            inv_d = max(inv_d, float(np.max(2.0 / lam)))
        q = (diffracted[None, :, :] - i[:, :, None]) / lam[:, None, None]
        inv_d = max(inv_d, float(np.max(np.linalg.norm(q, axis=1))))
    inv_d *= 1e-10  # 1/A
    if st.dmin > 0:
        inv_d = min(inv_d, 1e-10 / st.dmin)
    inv_d += 2.0 * float(np.max(np.linalg.norm(recip_A, axis=1)))
    return 1.0 / inv_d


def memory_summary(exp: Experiment) -> str:
    """The sizes that set a render's memory, for an out-of-memory message (names the flags)."""
    config = exp.config
    itemsize = np.dtype(exp.scene.pix0_m.dtype).itemsize
    rows, width = config.roi_shape
    parts = []
    table = np.shape(exp.scene.F_table)
    if config.has_hkls:
        entries = int(np.prod(table))
        parts.append(f"the -hkl grid is {table[0]} x {table[1]} x {table[2]} = {entries} structure factors "
                     f"({entries * itemsize / 1e9:.3g} GB, index range {config.hkl_min} to {config.hkl_max})")
    parts.append(f"each render block is {config.block_rows} rows x {width} pixels (--block-rows)")
    parts.append(f"the image is {config.spixels} x {config.fpixels} pixels")
    return "; ".join(parts)


def overflow_suspects(exp: Experiment) -> list:
    """Inputs of ``exp`` extreme enough to make pixels overflow or turn NaN, as "-flag value" strings.

    A pixel is r_e² · fluence · Σ F² F_latt² · factors: it overflows float32
    (3.4e38) when the fluence or F is huge, F_latt is huge (many cells), the
    water background is huge, or a wavelength is so small that q overflows.
    The thresholds are orders of magnitude beyond any experiment.
    """
    st = exp.settings
    out = []
    if st is None:
        return out
    scene = exp.scene
    fluence = float(scene.fluence)
    if not fluence < 1e40:
        out.append(f"-fluence/-flux {fluence:g} photons/m^2")
    if abs(st.default_F) > 1e15:
        out.append(f"-default_F {st.default_F:g}")
    if st.water_size > 1e-1:
        out.append(f"-water {st.water_size * 1e6:g} um")
    n = np.asarray(scene.n_cells, np.float64)
    if np.prod(n) > 1e15:
        out.append("-N/-Na/-Nb/-Nc or the crystal size: %g x %g x %g cells" % tuple(n))
    if exp.fdump is not None:
        table = np.asarray(exp.fdump[1].values, np.float64)
        if table.size and np.nanmax(np.abs(table)) > 1e15:
            out.append(f"-hkl {st.hklfilename}: |F| up to {np.nanmax(np.abs(table)):g}")
    wavelengths = np.asarray(scene.wavelength_m, np.float64)
    if wavelengths.size and wavelengths.min() < 1e-20:
        where = "-sourcefile " + st.sourcefilename if st.sourcefilename else "-lambda/-dispersion"
        out.append(f"{where}: a wavelength of {wavelengths.min() * 1e10:g} A")
    if not float(scene.pixel_size_m) < 1e3 or not float(scene.close_distance_m) > 1e-30:
        out.append("-pixel/-distance/-close_distance: the detector geometry")
    return out


def write_fdump_cache(exp: Experiment):
    """Write nanoBragg's Fdump.bin cache of the structure factors just read.

    Returns a warning line when the file cannot be written (nanoBragg goes on).
    """
    if exp.fdump is None:
        return None
    path, table = exp.fdump
    try:
        write_fdump(path, table)
    except InputError:
        return f"WARNING: unable to open dump file: {path}"
    return None


def default_block_rows(roi, oversample, thicksteps, n_sources, n_steps):
    """Rows per render block: about 2^17 pixels, preferring a divisor of the
    row count (no padded rows to render and cut off again)."""
    width = roi[1] - roi[0] + 1
    rows = roi[3] - roi[2] + 1
    target = max(1, (1 << 17) // max(width, 1))
    if target >= rows:
        return int(rows)
    divisors = [d for d in range(max(1, target // 3), min(rows, 3 * target) + 1) if rows % d == 0]
    if divisors:
        return int(min(divisors, key=lambda d: abs(math.log(d / target))))
    return int(target)


def _to_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def _mosaic_domains(domains, spread, warnings):
    if domains <= 0:
        if spread < 0.0:
            return 1, 0.0
        if spread == 0.0:
            return 1, spread
        warnings.append("WARNING: finite mosaicity with only one domain! upping to 10 mosaic domains")
        return 10, spread
    if spread < 0.0:
        warnings.append("WARNING: no mosaic spread specified.  setting mosaic_domains = 1")
        return 1, 0.0
    if spread == 0.0:
        warnings.append("WARNING: zero mosaic spread specified.  setting mosaic_domains = 1")
        return 1, spread
    return domains, spread


# --------------------------------------------------------------------------
# where the scene's arrays live (a hook for nbjax.batch)

_HOST_SCENE = contextvars.ContextVar("nbjax_host_scene", default=False)


@contextlib.contextmanager
def host_scene_arrays():
    """Within this context :func:`build` leaves float64 Scene leaves as numpy arrays on the host.

    The values are the same doubles (no rounding happens either way); a batch
    stacks the leaves of many jobs on the host and sends each stack to the
    device once, instead of one transfer per leaf per job (about 2 ms a job).
    """
    token = _HOST_SCENE.set(True)
    try:
        yield
    finally:
        _HOST_SCENE.reset(token)


def _aligned_copy(array, dtype, align: int = 64) -> np.ndarray:
    """``array`` as a C-ordered ``dtype`` copy starting on an ``align``-byte boundary (read-only).

    The structure-factor grid reaches the renderer as ``values[:-1, :-1, :-1]``
    of the table (a strided view, ~30 MB for a 2-million-reflection file).
    ``jax.device_put`` would make it contiguous and then copy it again into a
    device buffer; XLA:CPU adopts an aligned C-ordered host array without a
    copy, so this one copy is all the transfer costs (0.01 s instead of
    0.04 s there).  On other devices it is the contiguous copy the transfer
    makes anyway.
    """
    array = np.asarray(array)
    dtype = np.dtype(dtype)
    buffer = np.empty(array.size * dtype.itemsize + align, dtype=np.uint8)
    start = (-buffer.ctypes.data) % align
    out = buffer[start:start + array.size * dtype.itemsize].view(dtype).reshape(array.shape)
    np.copyto(out, array, casting="unsafe")
    out.flags.writeable = False
    return out


def _scene_stays_on_host(dtype) -> bool:
    """Whether :func:`build` leaves the Scene's leaves as numpy arrays: float64 under :func:`host_scene_arrays`."""
    return _HOST_SCENE.get() and np.dtype(dtype) == np.float64
