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
* :func:`umat2misset` -- back from a rotation matrix to the x, y, z angles of
  :func:`rotate_xyz` (host-side numpy, nanoBragg's ``umat2misset``).

Every function is pure and differentiable, and works on any leading batch shape.
A vector may also be given as a tuple ``(x, y, z)`` of equally shaped arrays
("structure of arrays", what the renderer uses for a block of pixels); the
result is then a tuple too.
"""

from __future__ import annotations

import math

import numpy as np

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


def umat2misset(umat) -> np.ndarray:
    """Misset angles ``(rotx, roty, rotz)`` in radians of a rotation matrix, as C.

    The rows are normalised; a zero row is replaced by the (normalised) cross
    product of the other two -- C runs this repair twice -- and then the rows
    are normalised again.  The angles are the x-y-z Euler decomposition
    ``rotx = atan2(u_zy, u_zz)``, ``roty = atan2(-u_zx, hypot(u_zy, u_zz))``,
    ``rotz = atan2(u_yx, u_xx)``, with C's special case when ``u_zx**2 >= 1``.
    """
    u = [float(x) for x in np.asarray(umat, dtype=np.float64).reshape(9)]
    xx, xy, xz, yx, yy, yz, zx, zy, zz = u

    def norm3(a, b, c):
        return math.sqrt(a * a + b * b + c * c)

    def unit(a, b, c):
        m = norm3(a, b, c)
        if m > 0:
            return a / m, b / m, c / m
        return a, b, c

    def normalized_rows():
        """The three rows divided by their lengths (a zero row kept), and the lengths."""
        rows = ((xx, xy, xz), (yx, yy, yz), (zx, zy, zz))
        return (*(unit(*row) for row in rows), tuple(norm3(*row) for row in rows))

    (xx, xy, xz), (yx, yy, yz), (zx, zy, zz), (mx, my, mz) = normalized_rows()

    # at most one non-empty row: fill in the others from the identity
    if mx >= 0 and my <= 0 and mz <= 0:
        yx, yy, yz = 0.0, 1.0, 0.0
        zx, zy, zz = 0.0, 0.0, 1.0
    if mx <= 0 and my >= 0 and mz <= 0:
        xx, xy, xz = 1.0, 0.0, 0.0
        zx, zy, zz = 0.0, 0.0, 1.0
    if mx <= 0 and my <= 0 and mz >= 0:
        xx, xy, xz = 1.0, 0.0, 0.0
        yx, yy, yz = 0.0, 1.0, 0.0

    for _ in range(2):
        x_cross_y = unit(xy * yz - xz * yy, xz * yx - xx * yz, xx * yy - xy * yx)
        y_cross_z = unit(yy * zz - yz * zy, yz * zx - yx * zz, yx * zy - yy * zx)
        z_cross_x = unit(zy * xz - zz * xy, zz * xx - zx * xz, zx * xy - zy * xx)
        if mx <= 0:
            xx, xy, xz = y_cross_z
        if my <= 0:
            yx, yy, yz = z_cross_x
        if mz <= 0:
            zx, zy, zz = x_cross_y

    (xx, xy, xz), (yx, yy, yz), (zx, zy, zz), (mx, my, mz) = normalized_rows()

    if zx * zx < 1.0:
        rotx = math.atan2(zy, zz)
        roty = math.atan2(-zx, math.sqrt(zy * zy + zz * zz))
        rotz = math.atan2(yx, xx)
    else:
        rotx = math.atan2(1, 1) * 4
        roty = math.atan2(1, 1) * 2
        rotz = math.atan2(xy, -yy)
    return np.array([rotx, roty, rotz], dtype=np.float64)
