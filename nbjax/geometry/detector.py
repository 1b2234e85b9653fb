"""Detector placement: rotations, two-theta swing, pivots and the origin vector pix0.

Inputs (a :class:`DetectorParams` pytree; lengths in m, angles in rad):

* the convention's unit vectors ``f, s, o`` (fast, slow, normal), the beam
  direction ``b`` and the two-theta axis, before any rotation;
* ``distance_m`` (sample to the beam spot, along b) and, optionally,
  ``close_distance_m`` (sample to the detector plane, along o);
* the direct-beam spot ``(Fbeam, Sbeam)`` and the near point ``(Fclose, Sclose)``,
  both detector-plane coordinates from the first pixel's corner;
* rotations about lab x, y, z (applied in that order) and the two-theta angle.

Procedure (nanoBragg's):

1. ``r = b · R_xyz(o)`` (the normal after the x/y/z rotations, before two-theta);
   if the close distance was not given it is ``|r · distance|``; the beam
   distance becomes ``close / r``.
2. SAMPLE pivot: ``pix0 = −Fclose f − Sclose s + close o`` with the unrotated
   axes, then rotated like the axes (x, y, z, then two-theta).
3. The axes are rotated: ``f, s, o ← R_2θ R_xyz (f, s, o)``.
4. BEAM pivot: ``pix0 = −Fbeam f − Sbeam s + distance b`` with the rotated axes,
   so the direct beam keeps hitting (Fbeam, Sbeam).
5. Derived values: ``Fclose = −pix0·f``, ``Sclose = −pix0·s``,
   ``close = pix0·o``; the beam spot ``(Fbeam, Sbeam) = (f·v, s·v)`` with
   ``v = (close/r) b − pix0``; ``distance = close / r``; XDS origin
   ``ORGX = Fclose/p + 1/2``, ``ORGY = Sclose/p + 1/2`` (pixels); DIALS origin
   ``1000 (pix0·ẑ, pix0·ŷ, −pix0·x̂)`` (mm).

Every step is a pure function of the parameters (numpy on the host, jax.numpy
when traced), so distances, beam centre
and rotations can be differentiated.
"""

from __future__ import annotations

import dataclasses
import sys

import jax

from nbjax.geometry._arrays import array_module

from nbjax.geometry.conventions import Pivot
from nbjax.geometry.rotation import dot, rotate_about_axis, rotate_xyz

#: Smallest positive normal double, used by nanoBragg when b·o is exactly 0.
DBL_MIN = sys.float_info.min


@dataclasses.dataclass(frozen=True)
class _Placement:
    """Where the detector stands relative to the sample (m): the fields the inputs and the placed frame share.

    Axes ``f, s, o`` (fast, slow, normal); ``distance_m`` along the beam to the
    beam spot, ``close_distance_m`` along the normal; the beam spot and the near
    point as (fast, slow) coordinates from the first pixel's corner.  In
    :class:`DetectorParams` these are what the user gave (some are replaced by
    the procedure); in :class:`DetectorFrame` they are the values after placement.
    """

    fdet: jax.Array
    sdet: jax.Array
    odet: jax.Array
    distance_m: jax.Array
    close_distance_m: jax.Array
    beam_fast_m: jax.Array
    beam_slow_m: jax.Array
    close_fast_m: jax.Array
    close_slow_m: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DetectorParams(_Placement):
    """Detector geometry inputs (see module docstring); all leaves are arrays."""

    beam: jax.Array
    twotheta_axis: jax.Array
    pixel_size_m: jax.Array
    rotations_rad: jax.Array  # (3,) about lab x, y, z
    twotheta_rad: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DetectorFrame(_Placement):
    """Placed detector: rotated axes, origin vector and derived beam centres (m)."""

    pix0_m: jax.Array
    xds_orgx: jax.Array
    xds_orgy: jax.Array
    dials_origin_mm: jax.Array


def _orient(v, params: DetectorParams):
    rx, ry, rz = params.rotations_rad[0], params.rotations_rad[1], params.rotations_rad[2]
    return rotate_about_axis(rotate_xyz(v, rx, ry, rz), params.twotheta_axis, params.twotheta_rad)


def place_detector(params: DetectorParams, pivot: Pivot, close_distance_given: bool) -> DetectorFrame:
    """Rotate and position the detector (nanoBragg's geometry set-up).

    ``pivot`` and ``close_distance_given`` are static choices.
    """
    xp = array_module(*jax.tree_util.tree_leaves(params))
    rx, ry, rz = params.rotations_rad[0], params.rotations_rad[1], params.rotations_rad[2]
    ratio = dot(params.beam, rotate_xyz(params.odet, rx, ry, rz))
    ratio = xp.where(ratio == 0.0, DBL_MIN, ratio)
    if close_distance_given:
        close = params.close_distance_m
    else:
        close = xp.abs(ratio * params.distance_m)
    distance = close / ratio

    if pivot is Pivot.SAMPLE:
        pix0 = (
            -params.close_fast_m * params.fdet
            - params.close_slow_m * params.sdet
            + close * params.odet
        )
        pix0 = _orient(pix0, params)
    fdet, sdet, odet = _orient(params.fdet, params), _orient(params.sdet, params), _orient(params.odet, params)
    if pivot is Pivot.BEAM:
        pix0 = -params.beam_fast_m * fdet - params.beam_slow_m * sdet + distance * params.beam

    close_fast = -dot(pix0, fdet)
    close_slow = -dot(pix0, sdet)
    close = dot(pix0, odet)
    beam_offset = close / ratio * params.beam - pix0
    beam_fast = dot(fdet, beam_offset)
    beam_slow = dot(sdet, beam_offset)
    distance = close / ratio
    dials = xp.stack([1000.0 * pix0[2], 1000.0 * pix0[1], 1000.0 * (-pix0[0])])
    return DetectorFrame(
        fdet=fdet,
        sdet=sdet,
        odet=odet,
        pix0_m=pix0,
        distance_m=distance,
        close_distance_m=close,
        beam_fast_m=beam_fast,
        beam_slow_m=beam_slow,
        close_fast_m=close_fast,
        close_slow_m=close_slow,
        xds_orgx=close_fast / params.pixel_size_m + 0.5,
        xds_orgy=close_slow / params.pixel_size_m + 0.5,
        dials_origin_mm=dials,
    )
