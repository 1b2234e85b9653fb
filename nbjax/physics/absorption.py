"""Absorption of the diffracted ray in the detector sensor.

The sensor of thickness T (m) is split into ``n`` layers of thickness
``Δ = T / (n − 1)`` for ``n > 1`` (nanoBragg's step rule; see
:mod:`nbjax.experiment`), each at depth ``t Δ`` behind the front face.  A ray
travelling along unit vector ``d`` crosses the sensor obliquely; with the
detector normal ``o`` the path length per unit depth is ``1/ρ``, ``ρ = d·o``
(the parallax factor).  The fraction of photons captured in layer ``t`` for
attenuation coefficient ``μ`` (m⁻¹) is

    exp(−t Δ μ / ρ) − exp(−(t + 1) Δ μ / ρ),

so that the layers together capture ``1 − exp(−n Δ μ / ρ)``.
"""

from __future__ import annotations

import jax.numpy as jnp

from nbjax.geometry.rotation import dot


def capture_fraction(layer, layer_thickness_m, mu_per_m, diffracted, detector_normal):
    """Fraction of the photons along ``diffracted`` absorbed in sensor layer ``layer``."""
    parallax = dot(diffracted, detector_normal)
    return jnp.exp(-layer * layer_thickness_m * mu_per_m / parallax) - jnp.exp(
        -(layer + 1) * layer_thickness_m * mu_per_m / parallax
    )
