"""Polarization of the scattered intensity (Kahn et al. 1982 model).

For an incident unit vector ``i``, diffracted unit vector ``d`` and the incident
E-vector direction ``e`` (the polarization axis), with Kahn factor K in [0, 1]
(K = 0: unpolarized; K = 1: fully polarized along ``e``):

    cos 2θ = i·d,                     sin² 2θ = 1 − cos² 2θ
    B = unit(e × i),  E = unit(i × B)  (the incident E/B frame)
    ψ = −atan2(d·B, d·E)             (azimuth of d about the beam)
    P = ½ (1 + cos² 2θ − K cos 2ψ sin² 2θ)

``cos 2ψ`` is evaluated algebraically as ``(x² − y²)/(x² + y²)`` with
``x = d·E``, ``y = d·B`` (equal to ``cos(2 atan2(y, x))`` without the
transcendental calls); along the beam (x = y = 0) it is 1, as atan2(0, 0) = 0
gives in nanoBragg.  Dimensionless.
"""

from __future__ import annotations

import jax.numpy as jnp

from nbjax.geometry.rotation import cross, dot, unitize


def polarization_factor(kahn_factor, incident, diffracted, axis):
    """Kahn polarization factor for one incident/diffracted pair.

    Vectors are arrays with last axis xyz, or (x, y, z) tuples.
    """
    incident, _ = unitize(incident)
    diffracted, _ = unitize(diffracted)
    axis, _ = unitize(axis)
    cos2theta = dot(incident, diffracted)
    cos2theta_sqr = cos2theta * cos2theta
    sin2theta_sqr = 1 - cos2theta_sqr
    b_in, _ = unitize(cross(axis, incident))
    e_in, _ = unitize(cross(incident, b_in))
    x = dot(diffracted, e_in)
    y = dot(diffracted, b_in)
    r_sqr = x * x + y * y
    on_axis = r_sqr == 0
    cos2psi = jnp.where(on_axis, 1.0, (x * x - y * y) / jnp.where(on_axis, 1.0, r_sqr))
    return 0.5 * (1.0 + cos2theta_sqr - kahn_factor * cos2psi * sin2theta_sqr)
