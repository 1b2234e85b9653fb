"""Detector conventions: lab-frame axes and beam-centre bookkeeping of each program.

Each convention fixes, before any detector rotation, the beam direction ``b``,
the fast and slow pixel axes ``f`` and ``s``, the detector normal ``o``, the
two-theta rotation axis, the polarization (E-vector) axis and the spindle, and
says how the user's beam centre (Xbeam, Ybeam; m) maps onto the fast/slow
detector coordinates of the direct beam (Fbeam, Sbeam; m):

=========  ==========  ==========  ==========  ==========  =============================
name       b           f           s           o           Fbeam, Sbeam
=========  ==========  ==========  ==========  ==========  =============================
MOSFLM     +x          +z          −y          +x          Ybeam + p/2, Xbeam + p/2
DENZO      +x          +z          −y          +x          Ybeam, Xbeam
ADXV       +z          +x          −y          +z          Xbeam, detsize_s − Ybeam
XDS        +z          +x          +y          +z          Xbeam, Ybeam
DIALS      +z          +x          +y          +z          Xbeam, Ybeam
CUSTOM     user        user        user        user        Xbeam, Ybeam
=========  ==========  ==========  ==========  ==========  =============================

(p = pixel size.)  MOSFLM, DENZO and ADXV pivot the detector about the direct
beam spot; XDS and DIALS about the sample, whatever ``-pivot`` said (as in
nanoBragg).  The default beam centres are in :func:`default_beam_center`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Convention(enum.Enum):
    CUSTOM = "custom"
    ADXV = "adxv"
    MOSFLM = "mosflm"
    XDS = "xds"
    DIALS = "dials"
    DENZO = "denzo"


class Pivot(enum.Enum):
    SAMPLE = "sample"
    BEAM = "beam"


@dataclass(frozen=True)
class ConventionAxes:
    """Unit vectors of a convention (lab frame), before detector rotations."""

    beam: tuple
    fdet: tuple
    sdet: tuple
    odet: tuple
    twotheta_axis: tuple
    polar: tuple
    spindle: tuple
    pivot: Pivot


AXES = {
    Convention.ADXV: ConventionAxes(
        beam=(0, 0, 1), fdet=(1, 0, 0), sdet=(0, -1, 0), odet=(0, 0, 1),
        twotheta_axis=(-1, 0, 0), polar=(1, 0, 0), spindle=(1, 0, 0), pivot=Pivot.BEAM),
    Convention.MOSFLM: ConventionAxes(
        beam=(1, 0, 0), fdet=(0, 0, 1), sdet=(0, -1, 0), odet=(1, 0, 0),
        twotheta_axis=(0, 0, -1), polar=(0, 0, 1), spindle=(0, 0, 1), pivot=Pivot.BEAM),
    Convention.DENZO: ConventionAxes(
        beam=(1, 0, 0), fdet=(0, 0, 1), sdet=(0, -1, 0), odet=(1, 0, 0),
        twotheta_axis=(0, 0, -1), polar=(0, 0, 1), spindle=(0, 0, 1), pivot=Pivot.BEAM),
    Convention.XDS: ConventionAxes(
        beam=(0, 0, 1), fdet=(1, 0, 0), sdet=(0, 1, 0), odet=(0, 0, 1),
        twotheta_axis=(1, 0, 0), polar=(1, 0, 0), spindle=(1, 0, 0), pivot=Pivot.SAMPLE),
    Convention.DIALS: ConventionAxes(
        beam=(0, 0, 1), fdet=(1, 0, 0), sdet=(0, 1, 0), odet=(0, 0, 1),
        twotheta_axis=(0, 1, 0), polar=(0, 1, 0), spindle=(0, 1, 0), pivot=Pivot.SAMPLE),
}

#: Vectors nanoBragg starts from before any flag or convention touches them;
#: a CUSTOM geometry overrides some of them with -fdet_vector etc.
INITIAL_VECTORS = dict(
    beam=(1.0, 0.0, 0.0),
    fdet=(0.0, 0.0, 1.0),
    sdet=(0.0, -1.0, 0.0),
    odet=(1.0, 0.0, 0.0),
    twotheta_axis=(0.0, 0.0, -1.0),
    polar=(0.0, 0.0, 1.0),
    spindle=(0.0, 0.0, 1.0),
)


def default_beam_center(convention: Convention, detsize_f_m, detsize_s_m, pixel_m, close_f_m, close_s_m):
    """Default (Xbeam, Ybeam) in metres when the user gave none."""
    if convention is Convention.ADXV:
        return (detsize_f_m + pixel_m) / 2.0, (detsize_s_m - pixel_m) / 2.0
    if convention in (Convention.MOSFLM, Convention.DENZO):
        return (detsize_s_m + pixel_m) / 2.0, (detsize_f_m + pixel_m) / 2.0
    return close_f_m, close_s_m


def beam_spot_from_center(convention: Convention, xbeam_m, ybeam_m, pixel_m, detsize_s_m):
    """(Fbeam, Sbeam): detector coordinates of the direct beam from (Xbeam, Ybeam)."""
    if convention is Convention.MOSFLM:
        return ybeam_m + 0.5 * pixel_m, xbeam_m + 0.5 * pixel_m
    if convention is Convention.DENZO:
        return ybeam_m + 0.0 * pixel_m, xbeam_m + 0.0 * pixel_m
    if convention is Convention.ADXV:
        return xbeam_m, detsize_s_m - ybeam_m
    return xbeam_m, ybeam_m


def beam_center_from_spot(convention: Convention, fbeam_m, sbeam_m, pixel_m, detsize_s_m):
    """Inverse of :func:`beam_spot_from_center`: (Xbeam, Ybeam) from (Fbeam, Sbeam)."""
    if convention is Convention.MOSFLM:
        return sbeam_m - 0.5 * pixel_m, fbeam_m - 0.5 * pixel_m
    if convention is Convention.DENZO:
        return sbeam_m, fbeam_m
    if convention is Convention.ADXV:
        return fbeam_m, detsize_s_m - sbeam_m
    return fbeam_m, sbeam_m
