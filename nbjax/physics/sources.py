"""X-ray sources: beam divergence and spectral dispersion as a list of point sources.

A source is a direction (unit vector from the sample toward the source) and a
wavelength (m); every source counts equally (nanoBragg reads a weight column
but never uses it).  Without ``-sourcefile`` the sources are a grid:

* divergence: horizontal angles ``h = hstep·i − hrange/2`` (i < hsteps) and
  vertical ``v = vstep·j − vrange/2`` (j < vsteps), radians; with round
  divergence (the default) grid points outside the inscribed ellipse are
  dropped: drop when ``4·[(h² − hstep²/4·(1 − hsteps mod 2))/hrange² +
  (v² − vstep²/4·(1 − vsteps mod 2))/vrange²] > 1.1``;
* each kept point starts at ``−D b`` (D = 10 m, b the beam direction), is
  rotated by ``v`` about the polarization axis and then by ``h`` about
  ``unit(b × polarization)``;
* dispersion: for every direction, wavelengths ``λ0 (1 + dstep·k − dispersion/2)``
  for k < dispsteps.

:func:`resolve_steps` is nanoBragg's rule that completes a (range, step size,
count) triple from whatever the user gave -- for the divergence and dispersion
grids here, and for the phi sweep and the sensor layers (:func:`phi_steps`,
:func:`thickness_steps`).  All of this runs on the host in
float64, in nanoBragg's order, so the directions are the same doubles.
"""

from __future__ import annotations

import math

import numpy as np

from nbjax.constants import RTD, SOURCE_DISTANCE_M


def _div(a, b):
    """IEEE division (inf/nan instead of ZeroDivisionError), as C computes it."""
    with np.errstate(all="ignore"):
        return float(np.float64(a) / np.float64(b))


def resolve_steps(count: int, span: float, step: float, *, default_span: float, halve_lone_span: bool = False,
                  fencepost: bool = True):
    """Complete (count, span, step) by nanoBragg's rule; returns (count, span, step).

    One rule for every sampled range: phi (``osc``), sensor layers, divergence
    and dispersion.  ``count <= 0`` / ``span < 0`` / ``step <= 0`` mean "not
    given".  nanoBragg varies it in two places, which the keywords name:

    * only the span given: two points, ``step = span/2`` (``halve_lone_span``:
      phi and sensor layers) or ``step = span`` (divergence, dispersion);
    * count and span given: ``step = span/(count − 1)`` with at least two
      points (``fencepost``: layers, divergence, dispersion) or
      ``span/count`` (phi);
    * only the count given: ``span = default_span``, ``step = span/count``.
    """
    if count <= 0:
        if span < 0.0:
            if step <= 0.0:
                return 1, 0.0, 0.0
            return 2, step, step
        if step <= 0.0:
            return 2, span, _div(span, 2.0) if halve_lone_span else span
        return int(math.ceil(_div(span, step))), span, step
    if span < 0.0:
        if step <= 0.0:
            span = default_span
            return count, span, _div(span, count)
        return 2, step, step
    if step <= 0.0:
        if not fencepost:
            return count, span, _div(span, count)
        if count <= 1:
            count = 2
        return count, span, _div(span, count - 1)
    return count, span, step


def phi_steps(phisteps: int, osc: float, phistep: float):
    """nanoBragg's phi sweep (count, osc, step), radians: ``-phisteps 0`` means one step, the default span is 1°."""
    if phisteps == 0:
        phisteps = 1
    return resolve_steps(phisteps, osc, phistep, default_span=1.0 / RTD, halve_lone_span=True,
                         fencepost=False)


def thickness_steps(count: int, thick: float, step: float):
    """nanoBragg's sensor layers (count, thickness, layer thickness), metres; default thickness 0.5 µm."""
    return resolve_steps(count, thick, step, default_span=0.5e-6, halve_lone_span=True)


def sanitize(count, span, step):
    """nanoBragg's final check: any non-positive part means "no spread"."""
    if span <= 0.0 or step <= 0.0 or count <= 0:
        return 1, 0.0, 0.0
    return count, span, step


def _rotate_axis(v, axis, phi):
    s, c = math.sin(phi), math.cos(phi)
    d = (axis[0] * v[0] + axis[1] * v[1] + axis[2] * v[2]) * (1.0 - c)
    return [
        axis[0] * d + v[0] * c + (-axis[2] * v[1] + axis[1] * v[2]) * s,
        axis[1] * d + v[1] * c + (+axis[2] * v[0] - axis[0] * v[2]) * s,
        axis[2] * d + v[2] * c + (-axis[1] * v[0] + axis[0] * v[1]) * s,
    ]


def divergence_grid(hsteps, hrange, hstep, vsteps, vrange, vstep, round_div: bool):
    """Kept (h, v) divergence angles (rad) in nanoBragg's order."""
    kept = []
    for i in range(hsteps):
        for j in range(vsteps):
            h = hstep * i - hrange / 2.0
            v = vstep * j - vrange / 2.0
            test = _div(_div(h * h - hstep * hstep / 4.0 * (1 - hsteps % 2), hrange), hrange)
            test += _div(_div(v * v - vstep * vstep / 4.0 * (1 - vsteps % 2), vrange), vrange)
            if round_div and test * 4.0 > 1.1:
                continue
            kept.append((h, v))
    return kept


def generated_sources(beam, polar, vertical, divergence, wavelength_m, dispsteps, dispstep, dispersion):
    """Source directions (n, 3, before unitizing) and wavelengths (n,) from the grids."""
    positions, wavelengths = [], []
    start = [-SOURCE_DISTANCE_M * beam[0], -SOURCE_DISTANCE_M * beam[1], -SOURCE_DISTANCE_M * beam[2]]
    for h, v in divergence:
        position = _rotate_axis(_rotate_axis(start, polar, v), vertical, h)
        for k in range(dispsteps):
            positions.append(position)
            wavelengths.append(wavelength_m * (1.0 + dispstep * k - dispersion / 2.0))
    return np.asarray(positions, float).reshape(-1, 3), np.asarray(wavelengths, float)


def file_sources(table, beam, wavelength_m):
    """Sources from a ``-sourcefile`` table (n, 5), filling its missing values."""
    table = np.array(table, float, copy=True)
    for axis in range(3):
        missing = np.isnan(table[:, axis])
        table[missing, axis] = -SOURCE_DISTANCE_M * beam[axis]
    table[np.isnan(table[:, 3]), 3] = 1.0
    table[np.isnan(table[:, 4]), 4] = wavelength_m
    return table[:, :3], table[:, 4], table[:, 3]


def unit_directions(positions):
    """Unitize each row as nanoBragg does (a zero row stays zero)."""
    out = np.zeros_like(positions)
    for n, (x, y, z) in enumerate(positions):
        x, y, z = float(x), float(y), float(z)
        mag = math.sqrt(x * x + y * y + z * z)
        if (mag == 0.0 or math.isinf(mag)) and (x or y or z) and math.isfinite(x + y + z):
            # x² + y² + z² under- or overflowed (a source at 1e200 m): scale first
            scale = max(abs(x), abs(y), abs(z))
            x, y, z = x / scale, y / scale, z / scale
            mag = math.sqrt(x * x + y * y + z * z)
        if mag != 0.0:
            out[n] = (x / mag, y / mag, z / mag)
    return out
