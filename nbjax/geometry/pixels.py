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
"""

from __future__ import annotations

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


def solid_angle(pixel_size_m, airpath_m, close_distance_m, point_pixel: bool):
    """Solid angle (sr) of one pixel at distance ``airpath_m`` (see module docstring)."""
    if point_pixel:
        return 1.0 / airpath_m / airpath_m
    return pixel_size_m * pixel_size_m / airpath_m / airpath_m * close_distance_m / airpath_m
