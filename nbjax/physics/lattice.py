"""Lattice transforms: how a finite crystal of Na x Nb x Nc cells scatters near a Bragg peak.

The fractional Miller indices ``h = a·q`` (dimensionless; ``a`` in m, ``q`` in m⁻¹)
are rounded to the nearest reflection ``h0 = ceil(h - 1/2)``.  Four crystal shapes:

* ``square`` (parallelepiped): the grating function
  ``F = Π sin(π N h) / sin(π h)`` over the three axes (nanoBragg's ``sincg``).
* ``round`` (ellipsoid): ``F = Na Nb Nc · 0.723601254558268 · sinc3(π √(fudge · r²))``
  with ``r² = Σ (h − h0)² N²`` and ``sinc3(x) = 3 (sin x / x − cos x) / x²``.
* ``gauss``: ``F = Na Nb Nc · exp(−fudge · ρ² / 0.63)``, where ``ρ²`` is the squared
  reciprocal-space distance to the nearest node, ``|Δh a* + Δk b* + Δl c*|²`` (Å⁻²),
  times ``(Na Nb Nc)²``.
* ``tophat``: ``F = Na Nb Nc`` where ``fudge · ρ² < 0.3969``, else 0.

Only ``F²`` enters the intensity, so :func:`sincg` is computed up to its sign.

Argument reduction.  ``sin(π N h)`` has arguments of thousands of radians for high
resolution spots; libm spends most of nanoBragg's run time reducing them.  Here
``h = h0 + δ`` with ``|δ| ≤ 1/2`` (exact in floating point), and
``N δ = m + t`` with ``|t| ≤ 1/2``; then ``|sin(π N h)| = |sin(π t)|`` and
``|sin(π h)| = |sin(π δ)|`` (for integer N), and both sines are a short odd
polynomial on ``[−1/2, 1/2]``.  This is both faster and more accurate than
evaluating ``sin`` of the large argument.  For non-integer N (as a fitting
parameter) the same formula defines the δ-periodic continuation: every Bragg
node gets the same peak shape, and integer N give nanoBragg's values exactly.

Gradients: the singular point ``h`` integer (``δ = 0``, where the ratio is N) is
guarded with a double ``where`` so that ``jax.grad`` stays finite there.
"""

from __future__ import annotations

import jax.numpy as jnp

# sin(π x) ≈ x · P(x²) on |x| ≤ 1/2.  Least-squares fit of sin(π√u)/√u in
# u = x² ∈ [0, 1/4] on Chebyshev nodes; maximum relative error 4.5e-16 in
# float64 (two units in the last place).
_SIN_PI_COEFFS_F64 = (
    3.1415926535897927,
    -5.167712780049786,
    2.550164039861884,
    -0.5992645288256148,
    0.08214587882077493,
    -0.007370364352718201,
    0.0004659870919775173,
    -2.1133714397960184e-05,
)
# Four-term fit for float32 (minimax in relative error): 1.1e-6 evaluated in float32.
_SIN_PI_COEFFS_F32 = (
    3.141589641571045,
    -5.167367935180664,
    2.543604850769043,
    -0.55839604139328,
)

#: Volume factor that gives the ellipsoidal crystal the peak height of the cube.
ROUND_SCALE = 0.723601254558268
#: Gaussian spot width parameter and top-hat radius (squared) of nanoBragg.
GAUSS_WIDTH = 0.63
TOPHAT_RADIUS_SQR = 0.3969


def nearest_index(h):
    """Nearest Miller index as nanoBragg rounds it: ``ceil(h - 1/2)``."""
    return jnp.ceil(h - 0.5)


def sin_pi(x):
    """``sin(π x)`` for ``|x| ≤ 1/2`` by a short odd polynomial (dtype of ``x``)."""
    coeffs = _SIN_PI_COEFFS_F32 if x.dtype == jnp.float32 else _SIN_PI_COEFFS_F64
    u = x * x
    p = coeffs[-1]
    for c in reversed(coeffs[:-1]):
        p = p * u + c
    return x * p


def sincg_parts(h, n):
    """Numerator and denominator of ``sin(π n h) / sin(π h)`` (up to sign).

    Exact argument reduction: ``h = h0 + δ``, ``n δ = m + t`` with
    ``|δ|, |t| ≤ 1/2``; returns ``(sin π t, sin π δ)``, or ``(n, 1)`` at a node.
    A node is ``|δ|`` below the cube root of the dtype's smallest normal number
    (2.3e-13 in float32, 2.8e-103 in float64): there the ratio differs from
    ``n`` by less than a rounding error, and :func:`lattice_factor` multiplies
    three denominators before its one division, which must not underflow to 0
    (a pixel exactly on the direct beam gave 0/0 in float32).  An axis with
    ``n <= 1`` contributes a factor 1, as in nanoBragg (for n = 1 the two parts
    are equal).
    """
    n = jnp.where(n > 1, n, 1.0)
    delta = h - nearest_index(h)  # exact, |delta| <= 1/2
    n_delta = n * delta
    t = n_delta - nearest_index(n_delta)  # |t| <= 1/2
    at_node = jnp.abs(delta) < float(jnp.finfo(delta.dtype).tiny) ** (1.0 / 3.0)
    return jnp.where(at_node, n, sin_pi(t)), jnp.where(at_node, 1.0, sin_pi(delta))


def sincg(h, n):
    """``sin(π n h) / sin(π h)`` up to sign, with exact argument reduction.

    ``h`` is a fractional Miller index, ``n`` the number of cells along that
    axis.  Returns ``n`` at integer ``h``; 1 for ``n <= 1`` (nanoBragg's rule).
    """
    numerator, denominator = sincg_parts(h, n)
    return numerator / denominator


def sinc3(x_sqr):
    """``3 (sin x / x − cos x) / x²`` as a function of ``x²`` (1 at 0).

    Taking ``x²`` keeps the function smooth at the origin; a series is used
    below ``x² = 1e-4`` (where the direct form loses digits and its gradient
    would divide by zero).
    """
    small = x_sqr < 1e-4
    safe = jnp.where(small, 1.0, x_sqr)
    x = jnp.sqrt(safe)
    direct = 3.0 * (jnp.sin(x) / x - jnp.cos(x)) / (x * x)
    series = 1.0 - x_sqr / 10.0 + x_sqr * x_sqr / 280.0
    return jnp.where(x_sqr == 0, 1.0, jnp.where(small, series, direct))


def lattice_factor(shape: str, h, k, l, n_cells, reciprocal_A, fudge):
    """Lattice transform ``F_latt`` for one evaluation.

    ``h, k, l``: fractional indices (same shape); ``n_cells``: (3,) Na, Nb, Nc;
    ``reciprocal_A``: (3, 3) rows a*, b*, c* in Å⁻¹ (used by gauss/tophat);
    ``fudge``: dimensionless spot-size fudge factor.  ``shape`` is static.
    """
    na, nb, nc = n_cells[0], n_cells[1], n_cells[2]
    if shape == "square":
        # one division for the three axes
        (pa, qa), (pb, qb), (pc, qc) = sincg_parts(h, na), sincg_parts(k, nb), sincg_parts(l, nc)
        return (pa * pb * pc) / (qa * qb * qc)
    dh, dk, dl = h - nearest_index(h), k - nearest_index(k), l - nearest_index(l)
    n_total = na * nb * nc
    if shape == "round":
        r_sqr = dh * dh * na * na + dk * dk * nb * nb + dl * dl * nc * nc
        x_sqr = (jnp.pi * jnp.pi) * (r_sqr * fudge)
        return n_total * ROUND_SCALE * sinc3(x_sqr)
    a, b, c = reciprocal_A[0], reciprocal_A[1], reciprocal_A[2]
    dx = dh * a[0] + dk * b[0] + dl * c[0]
    dy = dh * a[1] + dk * b[1] + dl * c[1]
    dz = dh * a[2] + dk * b[2] + dl * c[2]
    rho_sqr = (dx * dx + dy * dy + dz * dz) * na * na * nb * nb * nc * nc
    if shape == "gauss":
        return n_total * jnp.exp(-(rho_sqr / GAUSS_WIDTH * fudge))
    if shape == "tophat":
        return n_total * (rho_sqr * fudge < TOPHAT_RADIUS_SQR)
    raise ValueError(f"unknown crystal shape {shape!r}")
