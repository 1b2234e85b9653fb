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

The derivative is written out beside the rule (a ``jax.custom_jvp``, see
:func:`_kahn_jvp`), in forward and reverse mode alike: the same numbers as
autodiff of the guarded divisions, in fewer per-pixel loops on XLA's CPU backend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from nbjax.geometry.rotation import cross, dot, unitize


def polarization_factor(kahn_factor, incident, diffracted, axis):
    """Kahn polarization factor for one incident/diffracted pair.

    Vectors are arrays with last axis xyz, or (x, y, z) tuples.
    """
    incident, _ = unitize(incident)
    axis, _ = unitize(axis)
    b_in, _ = unitize(cross(axis, incident))
    e_in, _ = unitize(cross(incident, b_in))
    return _kahn(kahn_factor, incident, e_in, b_in, diffracted)


def _kahn_parts(incident, e_in, b_in, diffracted):
    """``(d̂, |d|, cos 2θ, x, y, r², on the beam axis, cos 2ψ)`` of one pair, for a unit incident
    vector ``i`` and its E/B frame (``e_in``, ``b_in``); ``diffracted`` is made unit here."""
    unit, length = unitize(diffracted)
    cos2theta = dot(incident, unit)
    x = dot(unit, e_in)
    y = dot(unit, b_in)
    r_sqr = x * x + y * y
    on_axis = r_sqr == 0
    cos2psi = jnp.where(on_axis, 1.0, (x * x - y * y) / jnp.where(on_axis, 1.0, r_sqr))
    return unit, length, cos2theta, x, y, r_sqr, on_axis, cos2psi


def _kahn_of(kahn_factor, cos2theta, cos2psi):
    """P = ½ (1 + cos² 2θ − K cos 2ψ sin² 2θ)."""
    cos2theta_sqr = cos2theta * cos2theta
    sin2theta_sqr = 1 - cos2theta_sqr
    return 0.5 * (1.0 + cos2theta_sqr - kahn_factor * cos2psi * sin2theta_sqr)


def _kahn_value(kahn_factor, incident, e_in, b_in, diffracted):
    """P for a unit incident vector and its E/B frame; ``diffracted`` is made unit here."""
    _, _, cos2theta, _, _, _, _, cos2psi = _kahn_parts(incident, e_in, b_in, diffracted)
    return _kahn_of(kahn_factor, cos2theta, cos2psi)


_kahn = jax.custom_jvp(_kahn_value)


@_kahn.defjvp
def _kahn_jvp(primals, tangents):
    """The derivative of P, written out so that reverse mode costs a few per-pixel products.

    With ``d̂ = d/|d|``, ``c = i·d̂``, ``x = d̂·E``, ``y = d̂·B``, ``r² = x² + y²``,
    ``ψ₂ = cos 2ψ = (x² − y²)/r²``:
    ``∂P/∂c = c (1 + K ψ₂)``, ``∂P/∂ψ₂ = −½ K (1 − c²)``, ``∂P/∂K = −½ ψ₂ (1 − c²)``,
    ``∂ψ₂/∂x = 4 x y²/r⁴``, ``∂ψ₂/∂y = −4 x² y/r⁴`` (0 on the beam axis, where ψ₂ is
    held at 1), and ``v·δd̂ = (v·δd − (v·d̂)(d̂·δd))/|d|`` for any vector v (0 for a
    zero ``d``, as :func:`unitize` gives).  Autodiff of :func:`_kahn_value` gives the
    same numbers, but as dozens of per-pixel loops on XLA's CPU backend.
    """
    kahn_factor, incident, e_in, b_in, diffracted = primals
    t_kahn, t_incident, t_e, t_b, t_diffracted = tangents
    unit, length, cos2theta, x, y, r_sqr, on_axis, cos2psi = _kahn_parts(incident, e_in, b_in, diffracted)
    inv_length = jnp.where(length > 0, 1.0 / jnp.where(length > 0, length, 1.0), 0.0)
    inv_r_sqr = 1.0 / jnp.where(on_axis, 1.0, r_sqr)
    sin2theta_sqr = 1 - cos2theta * cos2theta
    along = dot(unit, t_diffracted)                  # d̂·δd
    t_cos2theta = dot(t_incident, unit) + (dot(incident, t_diffracted) - cos2theta * along) * inv_length
    t_x = dot(t_e, unit) + (dot(e_in, t_diffracted) - x * along) * inv_length
    t_y = dot(t_b, unit) + (dot(b_in, t_diffracted) - y * along) * inv_length
    four_over_r4 = jnp.where(on_axis, 0.0, 4.0 * inv_r_sqr * inv_r_sqr)
    t_cos2psi = four_over_r4 * (x * y * y * t_x - x * x * y * t_y)
    t_value = (cos2theta * (1.0 + kahn_factor * cos2psi) * t_cos2theta
               - 0.5 * kahn_factor * sin2theta_sqr * t_cos2psi
               - 0.5 * cos2psi * sin2theta_sqr * t_kahn)
    return _kahn_of(kahn_factor, cos2theta, cos2psi), t_value
