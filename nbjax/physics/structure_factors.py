"""Structure-factor amplitudes |F(hkl)| of the unit cell, looked up per evaluation.

The table holds ``F`` (electrons, arbitrary scale) on the integer grid
``[h_min, h_max] × [k_min, k_max] × [l_min, l_max]``; ``default_F`` stands for every
reflection outside it.  No symmetry is applied (P1, not even Friedel pairs).

Two ways to evaluate at fractional indices ``h, k, l``:

* nearest reflection: ``F(h0, k0, l0)`` with ``h0 = ceil(h − 1/2)``;
* tricubic interpolation: the Lagrange polynomial through the 4×4×4 grid points
  ``floor(h) − 1 … floor(h) + 2`` (and likewise for k, l), contracted l first,
  then k, then h, as nanoBragg's ``polin3`` does.  It needs the whole
  neighbourhood inside the table; :func:`interpolation_out_of_range` is
  nanoBragg's test for that (made on the fractional indices).

Lookups are gathers from a flattened table padded with one slab of
``default_F`` on every side, so that an out-of-range index is clipped onto the
padding instead of branching.
"""

from __future__ import annotations

import jax.numpy as jnp

from nbjax.physics.lattice import nearest_index


def padded_table(values, default_F):
    """Table with a one-cell border of ``default_F`` on every face, flattened.

    Returns ``(flat, shape)`` where ``shape`` is the padded 3-D shape.
    """
    padded = jnp.pad(values, 1, mode="constant", constant_values=0.0)
    border = jnp.pad(jnp.zeros_like(values, dtype=bool), 1, constant_values=True)
    padded = jnp.where(border, default_F, padded)
    return padded.reshape(-1), padded.shape


def _padded_flat_index(h0, k0, l0, hkl_min, padded_shape):
    """Flat index into the padded table for integer-valued float indices."""
    nh, nk, nl = padded_shape
    # per axis in the float dtype, then integer arithmetic (exact for any table
    # that fits int32, where float32 is exact only below 2**24 entries)
    hi = jnp.clip(h0 - (hkl_min[0] - 1), 0, nh - 1).astype(jnp.int32)
    ki = jnp.clip(k0 - (hkl_min[1] - 1), 0, nk - 1).astype(jnp.int32)
    li = jnp.clip(l0 - (hkl_min[2] - 1), 0, nl - 1).astype(jnp.int32)
    return (hi * nk + ki) * nl + li


def table_lookup(flat_table, index):
    """``flat_table[index]`` for int32 indices already inside the table.

    (Plain indexing would also wrap negative indices, a select per lookup.)
    """
    return flat_table.at[index].get(mode="clip", wrap_negative_indices=False)


def nearest_flat_index(h, k, l, padded_shape, hkl_min):
    """Index into the padded, flattened table of the reflection nearest ``(h, k, l)``.

    Indices outside the table land on the ``default_F`` border.
    """
    return _padded_flat_index(nearest_index(h), nearest_index(k), nearest_index(l), hkl_min, padded_shape)


def interpolation_out_of_range(h, k, l, hkl_min, hkl_max):
    """nanoBragg's test whether the 4×4×4 neighbourhood of ``hkl`` leaves the table.

    Made on the fractional indices: out of range when ``h − h_min + 3 > h_range``
    or ``h − 2 < h_min`` (``h_range = h_max − h_min + 1``), and likewise for k, l.
    """
    out = False
    for axis, x in enumerate((h, k, l)):
        lo, hi = hkl_min[axis], hkl_max[axis]
        span = hi - lo + 1
        out = out | ((x - lo + 3) > span) | ((x - 2) < lo)
    return out


def _lagrange4(x, x0, values):
    """Cubic Lagrange polynomial through (x0 + i, values[i]), i = 0..3, at x.

    Written term by term like nanoBragg's ``polint`` (numerator times value,
    divided by the node differences -6, 2, -2, 6).
    """
    d0, d1, d2, d3 = x - x0, x - (x0 + 1.0), x - (x0 + 2.0), x - (x0 + 3.0)
    return (
        d1 * d2 * d3 * values[0] / -6.0
        + d0 * d2 * d3 * values[1] / 2.0
        + d0 * d1 * d3 * values[2] / -2.0
        + d0 * d1 * d2 * values[3] / 6.0
    )


def tricubic_F(h, k, l, flat_table, padded_shape, hkl_min):
    """Tricubic (Lagrange) interpolation of ``F`` at fractional ``h, k, l``.

    Callers must ensure the neighbourhood is inside the table (see
    :func:`interpolation_out_of_range`); elsewhere the value is meaningless
    but finite (the block is clipped to stay inside the padded table).

    One flat index per evaluation, that of the block's first corner; the 64
    grid points are that index plus constant offsets.
    """
    # first of the four grid points on each axis
    bh, bk, bl = jnp.floor(h) - 1.0, jnp.floor(k) - 1.0, jnp.floor(l) - 1.0
    _, nk, nl = padded_shape
    corner = []
    for axis, (b, n) in enumerate(zip((bh, bk, bl), padded_shape)):
        corner.append(jnp.clip(b - (hkl_min[axis] - 1), 0, max(n - 4, 0)).astype(jnp.int32))
    base = (corner[0] * nk + corner[1]) * nl + corner[2]
    slabs = []
    for i in range(4):
        rows = []
        for j in range(4):
            column = [table_lookup(flat_table, base + ((i * nk + j) * nl + m)) for m in range(4)]
            rows.append(_lagrange4(l, bl, column))
        slabs.append(_lagrange4(k, bk, rows))
    return _lagrange4(h, bh, slabs)
