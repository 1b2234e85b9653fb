"""Rotations of 3-vectors, written as nanoBragg.c composes them.

All angles are radians; vectors are arrays whose last axis has length 3 (x, y, z
in the laboratory frame).  The formulas keep the C program's order of
floating-point operations, so that float64 results round to the same doubles
and the rendered images agree pixel for pixel.

* :func:`rotate_xyz` -- right-handed rotation about +x, then +y, then +z
  (nanoBragg's ``rotate``, used for ``-misset`` and ``-detector_rotx/y/z``).
* :func:`rotate_about_axis` -- Rodrigues rotation about a unit axis
  (``rotate_axis``: phi about the spindle, two-theta about its axis).
* :func:`apply_umat` -- multiply by a 3x3 rotation matrix (mosaic domains).
* :func:`axis_angle_rows` -- the rows of a rotation matrix about a unit axis
  (``mosaic_rotation_umat``).
* :func:`unitize` -- unit vector and length, with a finite gradient at zero.

Every function is pure and differentiable, and works on any leading batch shape.
A vector may also be given as a tuple ``(x, y, z)`` of equally shaped arrays
("structure of arrays", what the renderer uses for a block of pixels); the
result is then a tuple too.
"""

from __future__ import annotations

from nbjax.geometry._arrays import array_module


def _xyz(v):
    if isinstance(v, tuple):
        return v
    v = array_module(v).asarray(v)
    return v[..., 0], v[..., 1], v[..., 2]


def _like(components, *inputs):
    """Pack components as a tuple if any input vector was one, else stack them."""
    if any(isinstance(v, tuple) for v in inputs):
        return tuple(components)
    return array_module(*components).stack(components, axis=-1)


def dot(x, y):
    """Inner product over the last axis, summed x, then y, then z (as C does)."""
    x0, x1, x2 = _xyz(x)
    y0, y1, y2 = _xyz(y)
    return x0 * y0 + x1 * y1 + x2 * y2


def cross(x, y):
    """Cross product x × y over the last axis."""
    x0, x1, x2 = _xyz(x)
    y0, y1, y2 = _xyz(y)
    return _like([x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0], x, y)


def norm(v):
    """Euclidean length over the last axis (sqrt of x² + y² + z²)."""
    return array_module(v).sqrt(dot(v, v))


def unitize(v):
    """Return ``(v / |v|, |v|)``; a zero vector gives a zero unit vector.

    The division uses a guarded denominator (double ``where``) so that the
    gradient stays finite at ``|v| = 0``.
    """
    xp = array_module(v)
    sq = dot(v, v)
    nonzero = sq > 0
    length = xp.sqrt(xp.where(nonzero, sq, 1.0))
    unit = _like([xp.where(nonzero, c / length, 0.0) for c in _xyz(v)], v)
    return unit, xp.where(nonzero, length, 0.0)


def rotate_xyz(v, rotx, roty, rotz):
    """Rotate ``v`` about +x by ``rotx``, then +y by ``roty``, then +z by ``rotz``.

    Right-handed rotations of the vector (active), angles in radians.
    """
    xp = array_module(v, rotx, roty, rotz)
    x, y, z = _xyz(v)
    cx, sx = xp.cos(rotx), xp.sin(rotx)
    y, z = y * cx + z * (-sx), y * sx + z * cx
    cy, sy = xp.cos(roty), xp.sin(roty)
    x, z = x * cy + z * sy, x * (-sy) + z * cy
    cz, sz = xp.cos(rotz), xp.sin(rotz)
    x, y = x * cz + y * (-sz), x * sz + y * cz
    return _like([x, y, z], v)


def rotate_about_axis(v, axis, angle):
    """Rotate ``v`` right-handedly by ``angle`` about the unit vector ``axis``.

    Rodrigues' formula, v cosφ + (k × v) sinφ + k (k·v)(1 − cosφ), with the
    terms grouped as nanoBragg groups them.
    """
    xp = array_module(v, axis, angle)
    v0, v1, v2 = _xyz(v)
    k0, k1, k2 = _xyz(axis)
    s, c = xp.sin(angle), xp.cos(angle)
    along = (k0 * v0 + k1 * v1 + k2 * v2) * (1.0 - c)
    return _like(
        [
            k0 * along + v0 * c + (-k2 * v1 + k1 * v2) * s,
            k1 * along + v1 * c + (+k2 * v0 - k0 * v2) * s,
            k2 * along + v2 * c + (-k1 * v0 + k0 * v1) * s,
        ],
        v,
    )


def apply_umat(v, umat):
    """Multiply ``v`` by the 3x3 matrix ``umat`` (rows are output components)."""
    v0, v1, v2 = _xyz(v)
    u = array_module(umat).asarray(umat)
    return _like([u[..., i, 0] * v0 + u[..., i, 1] * v1 + u[..., i, 2] * v2 for i in range(3)], v)


def axis_angle_rows(v1, v2, v3, c, s):
    """Rows of the matrix rotating by θ about the unit axis ``(v1, v2, v3)``, given ``c = cos θ``, ``s = sin θ``.

    Rodrigues' matrix ``c I + s [v]× + (1 − c) v vᵀ`` with the products and sums
    grouped as nanoBragg's ``mosaic_rotation_umat`` groups them.  Pure
    arithmetic: Python floats give floats, arrays give arrays (any shape).
    """
    omc = 1.0 - c
    omc_v1 = omc * v1
    omc_v1v2 = omc_v1 * v2
    omc_v1v3 = omc_v1 * v3
    omc_v2v3 = omc * v2 * v3
    s_v1, s_v2, s_v3 = s * v1, s * v2, s * v3
    return [
        [c + omc * (v1 * v1), omc_v1v2 - s_v3, omc_v1v3 + s_v2],
        [omc_v1v2 + s_v3, c + omc * (v2 * v2), omc_v2v3 - s_v1],
        [omc_v1v3 - s_v2, omc_v2v3 + s_v1, c + omc * (v3 * v3)],
    ]
