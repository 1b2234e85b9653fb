"""Where a (sub-)pixel is in the laboratory, and the solid angle it subtends.

A detector pixel ``(fast, slow)`` is split into ``oversample²`` sub-pixels of size
``p/oversample`` (p = pixel size, m).  Sub-pixel ``(subF, subS)`` of pixel
``(fast, slow)`` sits at detector coordinates (m, from the detector origin)

    F = (p/o)(fast·o + subF) + (p/o)/2,      S = (p/o)(slow·o + subS) + (p/o)/2,

and, in sensor layer ``t`` (depth ``t Δ`` behind the front face), at

    P = F f + S s + tΔ o + pix0

in the lab frame (``f, s, o`` the fast, slow, normal unit vectors, ``pix0`` the
vector from the sample to the detector origin).  A *curved* detector instead
places every pixel at the distance ``d`` from the sample: start from ``d·b``
(b the beam direction) and rotate it about ``s`` by ``P_y/d`` and then about
``f`` by ``P_z/d`` (nanoBragg's construction, which uses the lab y and z
components of the flat position).

Solid angle of a pixel of area p² seen from the sample at distance R with the
detector's closest distance ``c``: ``Ω = p²/R² · c/R`` (steradian; the obliquity
``c/R`` is the cosine of the incidence angle).  ``point_pixel`` mode drops both
the area and the obliquity: ``Ω = 1/R²``.

**Beam-centred form (mixed precision).**  The scattering vector ``q = (d − i)/λ``
must reach a float32 evaluation with float32's *relative* precision: a ray
computed in float32 from ``P`` above (terms of ~0.2 m that cancel near the
beam, then a difference of two unit vectors) gives q an absolute error of
~1e-7/λ everywhere, about 1e-5 in h for an 80 Å cell, which made the
supervisor image 3e-3 off nanoBragg.c on the steep flanks of its spots.  So
the ray stays in the scene's precision, computed cheaply: :func:`centred_frame`
measures the detector from the point ``C`` where a reference beam direction
``i₀`` meets its plane, and :func:`centred_offsets` splits a sub-pixel's position
``P = C + F′ f + S′ s + tΔ o`` (``F′, S′`` measured from C) into the part of its
column, ``F′ f``, and of its row, ``C + S′ s + tΔ o``, each along ``i₀``
(``P∥``) and across it (``W``), per column and per row (1-D arrays).  Per pixel
(:func:`centred_ray`) only sums remain: ``P∥`` and ``W`` are the column's plus
the row's part, ``R = √(P∥² + |W|²)`` and

    d − i₀ = (W − (R − P∥) i₀)/R,    R − P∥ = |W|²/(R + P∥)  (for P∥ > 0)

without cancellation; then ``q = (d − i₀ + i₀ − i)/λ`` is rounded once to
float32.  The same ``R`` gives the solid angle.

:func:`solid_angle` carries its derivative written out (a ``jax.custom_jvp``):
the same numbers as autodiff of its three divisions, with one reciprocal per
pixel, which matters in the adjoint render's per-pixel pullback.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax

from nbjax.geometry.rotation import rotate_about_axis, unitize


def subpixel_coordinates(fast, slow, sub_fast, sub_slow, pixel_size_m, oversample: int):
    """Detector-plane coordinates (F, S) in metres of a sub-pixel centre."""
    subpixel = pixel_size_m / oversample
    f_coord = subpixel * (fast * oversample + sub_fast) + subpixel / 2.0
    s_coord = subpixel * (slow * oversample + sub_slow) + subpixel / 2.0
    return f_coord, s_coord


def lab_position(f_coord, s_coord, depth_m, pix0, fdet, sdet, odet):
    """Lab-frame position (m) of detector coordinates (F, S) at sensor depth, as (x, y, z)."""
    return tuple(f_coord * fdet[i] + s_coord * sdet[i] + depth_m * odet[i] + pix0[i] for i in range(3))


def curved_position(flat_position, distance_m, beam, fdet, sdet):
    """Map a flat-detector position (x, y, z) onto the sphere of radius ``distance_m``."""
    x, y, z = flat_position
    start = tuple(distance_m * beam[i] + 0.0 * x for i in range(3))
    tilted = rotate_about_axis(start, sdet, y / distance_m)
    return rotate_about_axis(tilted, fdet, z / distance_m)


def diffracted_ray(position):
    """Unit vector from the sample to ``position`` (x, y, z) and the path length (m)."""
    return unitize(position)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3,))
def solid_angle(pixel_size_m, airpath_m, close_distance_m, point_pixel: bool):
    """Solid angle (sr) of one pixel at distance ``airpath_m`` (see module docstring)."""
    if point_pixel:
        return 1.0 / airpath_m / airpath_m
    return pixel_size_m * pixel_size_m / airpath_m / airpath_m * close_distance_m / airpath_m


@solid_angle.defjvp
def _solid_angle_jvp(point_pixel, primals, tangents):
    """``δΩ = Ω (2 δp/p + δc/c − 3 δa/a)`` (``−2 Ω δa/a`` for a point pixel), with one
    reciprocal of the path length per pixel."""
    (pixel, airpath, close), (t_pixel, t_airpath, t_close) = primals, tangents
    omega = solid_angle(pixel, airpath, close, point_pixel)
    inv_airpath = 1.0 / airpath
    if point_pixel:
        return omega, -2.0 * omega * inv_airpath * t_airpath
    inv_cube = inv_airpath * inv_airpath * inv_airpath
    t_omega = (2.0 * pixel * close * t_pixel + pixel * pixel * t_close) * inv_cube - 3.0 * omega * inv_airpath * t_airpath
    return omega, t_omega


class CentredFrame(NamedTuple):
    """The detector about the point C where the reference beam direction ``i0`` meets it.

    ``f_centre``/``s_centre``: C's fast and slow coordinates in sub-pixel
    steps from the first sub-pixel centre; ``par``/``perp``: C's position (m)
    along and across ``i0``; ``f_par``/``f_perp``, ``s_par``/``s_perp``: one
    sub-pixel step (m) along the fast (slow) axis, along and across ``i0``;
    ``o_par``/``o_perp``: the detector normal (unit), along and across ``i0``.
    """

    i0: object
    f_centre: object
    s_centre: object
    par: object
    perp: object
    f_par: object
    f_perp: object
    s_par: object
    s_perp: object
    o_par: object
    o_perp: object


def centred_frame(pix0, fdet, sdet, odet, i0, pixel_size_m, oversample: int) -> CentredFrame:
    """:class:`CentredFrame` of a flat detector (in the inputs' precision).

    C is where the ray along ``i0`` meets the detector plane, or the foot of
    the perpendicular from the sample when the beam runs (nearly) parallel to
    the plane or away from it.
    """
    import jax.numpy as jnp

    i0 = unitize(i0)[0]
    along = jnp.dot(i0, odet)
    reach = jnp.dot(pix0, odet)
    hits = (jnp.abs(along) > 1e-3) & (reach * along > 0)
    centre = jnp.where(hits, reach / jnp.where(hits, along, 1.0) * i0, reach * odet)
    subpixel = pixel_size_m / oversample
    f_centre = jnp.dot(centre - pix0, fdet) / subpixel - 0.5
    s_centre = jnp.dot(centre - pix0, sdet) / subpixel - 0.5
    c_pos = pix0 + subpixel * (f_centre + 0.5) * fdet + subpixel * (s_centre + 0.5) * sdet

    def parts(v, scale=1.0):
        par = jnp.dot(v, i0)
        return par * scale, (v - par * i0) * scale

    par, perp = parts(c_pos)
    f_par, f_perp = parts(fdet, subpixel)
    s_par, s_perp = parts(sdet, subpixel)
    o_par, o_perp = parts(odet)
    return CentredFrame(i0, f_centre, s_centre, par, perp, f_par, f_perp, s_par, s_perp, o_par, o_perp)


def centred_offsets(frame: CentredFrame, fast, slow, sub_fast, sub_slow, depth_m, oversample: int):
    """The position of sub-pixel centres relative to the sample, split by detector row and column.

    ``fast`` (columns) and ``slow`` (rows) are 1-D arrays of pixel indices.
    Returns ``(col_par, col_perp, row_par, row_perp)``: the column's and the
    row's parts along ``i0`` and across it (``perp`` as x, y, z), in the
    frame's precision, so that a pixel's
    ``P∥ = col_par + row_par`` and ``W = col_perp + row_perp`` (C's position
    and the sensor depth go with the row).
    """
    f_off = (fast * oversample + sub_fast) - frame.f_centre      # sub-pixel steps from C
    s_off = (slow * oversample + sub_slow) - frame.s_centre
    col_par = f_off * frame.f_par
    col_perp = tuple(f_off * frame.f_perp[i] for i in range(3))
    row_par = frame.par + depth_m * frame.o_par + s_off * frame.s_par
    row_perp = tuple(frame.perp[i] + depth_m * frame.o_perp[i] + s_off * frame.s_perp[i] for i in range(3))
    return col_par, col_perp, row_par, row_perp


def centred_ray(col_par, col_perp, row_par, row_perp, i0, parts_too=False):
    """Diffracted direction less the reference beam, ``d − i0`` (x, y, z), and the path length R (m) of
    every (row, column) sub-pixel centre, from :func:`centred_offsets` (the beam-centred form above;
    ``i0`` in the offsets' precision); ``parts_too``: also ``W`` (x, y, z) and ``R − P∥``."""
    import jax.numpy as jnp

    perp = tuple(row_perp[i][:, None] + col_perp[i][None, :] for i in range(3))
    par = row_par[:, None] + col_par[None, :]
    w2 = perp[0] * perp[0] + perp[1] * perp[1] + perp[2] * perp[2]
    airpath = jnp.sqrt(par * par + w2)
    forward = par > 0
    shortfall = jnp.where(forward, w2 / jnp.where(forward, airpath + par, 1.0), airpath - par)
    e = tuple((perp[i] - shortfall * i0[i]) / airpath for i in range(3))
    return (e, airpath, perp, shortfall) if parts_too else (e, airpath)
