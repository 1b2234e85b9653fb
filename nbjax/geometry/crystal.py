"""Unit cell and crystal orientation: from cell constants or an A matrix to lattice vectors.

Two ways in (nanoBragg's):

* **cell constants** ``(a, b, c, α, β, γ)`` (Å, rad): the cell volume from the
  angles, ``V = 2abc √|sin s · sin(s−α) · sin(s−β) · sin(s−γ)|`` with
  ``s = (α+β+γ)/2``; reciprocal lengths ``a* = bc sin α / V`` (cyclic); reciprocal
  angles from ``cos α* = (cos β cos γ − cos α)/(sin β sin γ)`` (cyclic) and
  ``sin α* = a V*/(b* c*)``; then the standard orientation
  ``a* = (a*, 0, 0)``, ``b* = b*(cos γ*, sin γ*, 0)``,
  ``c* = c*(cos β*, (cos α* − cos β* cos γ*)/sin γ*, V/(abc sin γ*))``;
* **an orientation matrix** (MOSFLM ``A``): the three reciprocal vectors in
  Å⁻¹ times λ/Å; dividing by λ gives a*, b*, c* in Å⁻¹.

Then an optional *misset* rotation of the reciprocal vectors (about x, then y,
then z), and the real-space vectors ``a = V (b* × c*)`` etc. with
``V = 1/(a*·(b* × c*))``; with cell constants the cross products are first
rescaled so the real-space lengths are exactly the requested ones.  Finally
the reciprocal vectors are regenerated from the real ones,
``a* = (b × c)/V``.  Lengths: Å and Å⁻¹ here; the renderer uses metres.
"""

from __future__ import annotations

import dataclasses

import jax

from nbjax.geometry._arrays import array_module

from nbjax.geometry.rotation import cross, dot, norm, rotate_xyz

DBL_MIN = 2.2250738585072014e-308


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CrystalFrame:
    """Lattice of the crystal in the lab frame (before phi and mosaic rotations)."""

    real_A: jax.Array        # (3, 3) rows a, b, c in Å
    reciprocal_A: jax.Array  # (3, 3) rows a*, b*, c* in Å⁻¹
    volume_A3: jax.Array


def _clamp_sin(x):
    return array_module(x).clip(x, -1.0, 1.0)


def _clamp_cos(x):
    # nanoBragg replaces an out-of-range cosine by +1 whatever its sign.
    return array_module(x).where(x * x > 1.0, 1.0, x)


def reciprocal_from_cell(cell):
    """Reciprocal vectors (rows, Å⁻¹) in the standard orientation, and V (Å³).

    ``cell`` = (a, b, c, α, β, γ) with lengths in Å and angles in radians.
    """
    xp = array_module(cell)
    a, b, c, alpha, beta, gamma = (cell[i] for i in range(6))
    half_sum = (alpha + beta + gamma) / 2
    skew = xp.sin(half_sum) * xp.sin(half_sum - alpha) * xp.sin(half_sum - beta) * xp.sin(half_sum - gamma)
    skew = xp.abs(skew)
    volume = 2.0 * a * b * c * xp.sqrt(skew)
    volume = xp.where(volume <= 0.0, DBL_MIN, volume)
    inv_volume = 1.0 / volume
    a_star = b * c * xp.sin(alpha) * inv_volume
    b_star = c * a * xp.sin(beta) * inv_volume
    c_star = a * b * xp.sin(gamma) * inv_volume
    sin_gamma_star = _clamp_sin(c * inv_volume / a_star / b_star)
    cos_alpha_star = _clamp_cos((xp.cos(beta) * xp.cos(gamma) - xp.cos(alpha)) / (xp.sin(beta) * xp.sin(gamma)))
    cos_beta_star = _clamp_cos((xp.cos(gamma) * xp.cos(alpha) - xp.cos(beta)) / (xp.sin(gamma) * xp.sin(alpha)))
    cos_gamma_star = _clamp_cos((xp.cos(alpha) * xp.cos(beta) - xp.cos(gamma)) / (xp.sin(alpha) * xp.sin(beta)))
    zero = xp.zeros_like(a_star)
    rows = xp.stack(
        [
            xp.stack([a_star, zero, zero]),
            xp.stack([b_star * cos_gamma_star, b_star * sin_gamma_star, zero]),
            xp.stack(
                [
                    c_star * cos_beta_star,
                    c_star * (cos_alpha_star - cos_beta_star * cos_gamma_star) / sin_gamma_star,
                    c_star * volume / (a * b * c * sin_gamma_star),
                ]
            ),
        ]
    )
    return rows, volume


def _rescale(v, new_length):
    old = norm(v)
    old = array_module(v).where(old <= 0.0, 1.0, old)
    return (new_length / old) * v


def lattice_from_reciprocal(reciprocal_A, misset_rad, cell=None, cell_volume_A3=None):
    """Real and regenerated reciprocal vectors from reciprocal vectors (rows, Å⁻¹).

    ``misset_rad`` (3,) rotates the reciprocal vectors first (x, then y, then
    z).  When ``cell`` (and its volume from :func:`reciprocal_from_cell`) is
    given, the real-space lengths are forced to ``cell[:3]`` as nanoBragg does
    for ``-cell``.
    """
    xp = array_module(reciprocal_A, misset_rad, cell)
    rx, ry, rz = misset_rad[0], misset_rad[1], misset_rad[2]
    a_star, b_star, c_star = (rotate_xyz(reciprocal_A[i], rx, ry, rz) for i in range(3))
    b_cross_c = cross(b_star, c_star)
    c_cross_a = cross(c_star, a_star)
    a_cross_b = cross(a_star, b_star)
    if cell is None:
        v_star = dot(a_star, b_cross_c)
        volume = 1.0 / v_star
    else:
        b_cross_c = _rescale(b_cross_c, cell[0] / cell_volume_A3)
        c_cross_a = _rescale(c_cross_a, cell[1] / cell_volume_A3)
        a_cross_b = _rescale(a_cross_b, cell[2] / cell_volume_A3)
        v_star = 1.0 / cell_volume_A3
        volume = 1.0 / v_star
    a = volume * b_cross_c
    b = volume * c_cross_a
    c = volume * a_cross_b
    real = xp.stack([a, b, c])
    reciprocal = xp.stack([v_star * cross(b, c), v_star * cross(c, a), v_star * cross(a, b)])
    return CrystalFrame(real_A=real, reciprocal_A=reciprocal, volume_A3=volume)


def lattice_from_cell(cell, misset_rad):
    """Crystal lattice from cell constants (Å, rad) and misset angles (rad)."""
    reciprocal, volume = reciprocal_from_cell(cell)
    return lattice_from_reciprocal(reciprocal, misset_rad, cell=cell, cell_volume_A3=volume)


def cell_parameters(real_A, reciprocal_A, volume_A3):
    """(a, b, c, α, β, γ) and (a*, b*, c*, α*, β*, γ*) from lattice vectors (Å, rad)."""
    xp = array_module(real_A, reciprocal_A, volume_A3)

    def angles(x, y, z, xs, ys, zs, inv):
        lx, ly, lz = norm(x), norm(y), norm(z)
        lxs, lys, lzs = norm(xs), norm(ys), norm(zs)
        sin_a = _clamp_sin(lxs * inv / ly / lz)
        sin_b = _clamp_sin(lys * inv / lx / lz)
        sin_g = _clamp_sin(lzs * inv / lx / ly)
        cos_a = _clamp_cos(dot(y, z) / ly / lz)
        cos_b = _clamp_cos(dot(x, z) / lx / lz)
        cos_g = _clamp_cos(dot(x, y) / lx / ly)
        return xp.stack(
            [lx, ly, lz, xp.arctan2(sin_a, cos_a), xp.arctan2(sin_b, cos_b), xp.arctan2(sin_g, cos_g)]
        )

    a, b, c = real_A[0], real_A[1], real_A[2]
    a_s, b_s, c_s = reciprocal_A[0], reciprocal_A[1], reciprocal_A[2]
    direct = angles(a, b, c, a_s, b_s, c_s, volume_A3)
    recip = angles(a_s, b_s, c_s, a, b, c, 1.0 / volume_A3)
    return direct, recip
