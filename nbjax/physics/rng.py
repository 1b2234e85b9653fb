"""nanoBragg.c's random-number streams, reproduced bit for bit on the host.

Everything random in nanoBragg.c comes from one uniform generator, ``ran1``: the
Park-Miller "minimal standard" multiplicative congruential generator
(``idum <- 16807 * idum mod (2**31 - 1)``, evaluated with Schrage's trick so that no
product overflows) whose outputs pass through a 32-slot Bays-Durham shuffle table.
The shuffled integer ``iy`` is scaled by ``1/(2**31 - 1)`` in double precision, rounded
to C ``float`` and capped just below one (at ``float(1 - 1.2e-7)``).  This module
runs that generator, the random spherical-cap rotation nanoBragg builds from it,
and the conversion of a rotation matrix back to misset angles.  It is host-side
numpy/numba code: JAX is not involved, because the streams are sequential and
must match the C program number for number.

State: what is shared and what is not
-------------------------------------
In C the generator state is split in two:

* the shuffle table ``iv[32]`` and the last output ``iy`` are ``static`` inside
  ``ran1`` -- one copy for the whole process, shared by every caller;
* the LCG value lives in a ``long`` that each caller owns and passes by pointer
  (nanoBragg has three: ``misset_seed``, ``mosaic_seed`` and the noise ``seed``).

A call whose seed variable is ``<= 0`` (or the very first call, while ``iy`` is
still 0) re-seeds: it replaces the seed ``s`` by ``-s`` when ``s < 0`` and by 1
otherwise (``s = 0``, or a positive ``s`` on the very first call, so that seeds
0, -1 and any positive seed give the same stream in a fresh process), runs the
LCG 40 times and keeps the last 32 values as the table.  So
a negative seed gives a reproducible stream whatever ran before it, while a
*positive* seed continues with whatever table the previous stream left behind.
The Poisson and Gaussian deviate routines add more process-wide statics
(``poidev``: the last mean and three numbers derived from it; ``gaussdev``: a
spare deviate and its flag), which persist from one pixel to the next.

Here those statics are explicit objects, never module globals:

* :class:`CStatics` -- everything C keeps in function-level statics (``iy``,
  ``iv``, the poidev and gaussdev statics).  One instance stands for one run of
  the C program.  It is mutable and is updated in place, as C updates its
  statics.
* :class:`Ran1State` -- one seed variable (``idum``) plus a reference to the
  :class:`CStatics` it shares.  ``state.stream(seed)`` makes a sibling state
  with another seed variable on the same shared statics.

The high-level functions take the C seed *value* and an optional ``state``
(a :class:`CStatics`, or a :class:`Ran1State` whose shared part is used); with
``state=None`` they start from fresh statics, as a new process would.  To follow
one nanoBragg run, make one :class:`CStatics` and hand it to every stage in C's
order::

    shared = CStatics()
    angles = random_misset(misset_seed, shared)          # only with -misset random
    umats = mosaic_domains(spread, n, mosaic_seed, shared).umats
    noisy, photons, overloads = noise_image_c(img, seed, state=shared)   # noise.py

With nanoBragg's default (negative) seeds every stage re-seeds the table, so the
order only matters for positive seed values (``-seed -5`` on the command line),
which continue from the table the previous stage left.

C float versus double
---------------------
``ran1`` returns ``float``.  ``mosaic_rotation_umat`` takes ``float mosaicity``
and computes its rotation angle as ``mosaicity * powf(1 - r3*r3, 1/3)`` with
``powf`` and a ``float`` product, so that angle carries float32 rounding even
though everything else in it is double; we call the C library's ``powf`` (via
ctypes) so the rounding is the same as the C program's.  The trigonometric
functions are the C library's double ones (Python's ``math`` module calls them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from typing import NamedTuple

import numpy as np

from nbjax.geometry.rotation import axis_angle_rows, umat2misset
from nbjax.physics.ran1 import Ran1State, as_statics, check_seed, ran1

__all__ = [
    "mosaic_rotation_umat",
    "mosaic_domains",
    "MosaicDomains",
    "random_misset",
]

# --------------------------------------------------------------------------
# Random rotations
# --------------------------------------------------------------------------

def _libm_candidates():
    yield "libm.so.6"  # glibc's name: found without find_library, which runs ldconfig (a process, ms)
    yield ctypes.util.find_library("m")
    yield None  # the symbols already loaded into the process


def _load_powf():
    for lib in _libm_candidates():
        try:
            fn = ctypes.CDLL(lib).powf
        except (OSError, AttributeError, TypeError):
            continue
        fn.restype = ctypes.c_float
        fn.argtypes = (ctypes.c_float, ctypes.c_float)
        return lambda x, y: np.float32(fn(float(x), float(y)))
    return lambda x, y: np.power(np.float32(x), np.float32(y))  # pragma: no cover


#: the C library's single-precision pow, as the C program calls it
powf = _load_powf()
_ONE_THIRD_F = np.float32(1.0 / 3.0)


def _mosaic_draw(state: Ran1State):
    """Three ``ran1`` draws as nanoBragg's ``mosaic_rotation_umat`` uses them.

    ``r_i = 2*ran1 - 1``: a unit axis uniform on the sphere (``r1`` the azimuth,
    ``r2`` its z component) and the float32 factor ``powf(1 - r3**2, 1/3)``
    of the rotation angle.  Returns ``((v1, v2, v3), factor)``.
    """
    r1 = 2.0 * float(ran1(state)) - 1.0
    r2 = 2.0 * float(ran1(state)) - 1.0
    r3 = 2.0 * float(ran1(state)) - 1.0
    xyrad = math.sqrt(1.0 - r2 * r2)
    axis = (xyrad * math.sin(math.pi * r1), xyrad * math.cos(math.pi * r1), r2)
    return axis, powf(np.float32(1.0 - r3 * r3), _ONE_THIRD_F)


def _umat(mosaicity_rad, axis, factor) -> np.ndarray:
    """The rotation of one draw: angle ``mosaicity * factor`` with C's float rounding, Rodrigues rows."""
    rot = float(np.float32(np.float32(mosaicity_rad) * factor))
    return np.array(axis_angle_rows(*axis, math.cos(rot), math.sin(rot)), dtype=np.float64)


def mosaic_rotation_umat(mosaicity_rad: float, state: Ran1State) -> np.ndarray:
    """A random rotation within a spherical cap; nanoBragg's ``mosaic_rotation_umat``.

    The axis and the factor come from :func:`_mosaic_draw` (exactly three
    ``ran1`` draws from ``state``); the angle is ``mosaicity * factor`` with
    C's float rounding (the parameter is a ``float``, the product is float).
    The matrix is the axis-angle (Rodrigues) rotation, returned row-major as C
    fills ``umat[0..8]``.
    """
    return _umat(mosaicity_rad, *_mosaic_draw(state))


class MosaicDomains(NamedTuple):
    """nanoBragg's mosaic domains: their rotations and the draws behind them.

    ``umats`` (n, 3, 3); ``axes`` (n, 3) unit rotation axes; ``factors`` (n,)
    ``powf(1 - r3**2, 1/3)``, each domain's angle over the spread (0 for domain
    0, which C overwrites with the identity).
    """

    umats: np.ndarray
    axes: np.ndarray
    factors: np.ndarray


def mosaic_domains(spread_rad: float, n_domains: int, seed: int, state=None) -> MosaicDomains:
    """The mosaic domains nanoBragg makes, drawn once.

    ``seed`` is the value of C's ``mosaic_seed`` variable (the command line
    stores ``-atoi(arg)``; the default is -12345678).  C draws a rotation for
    *every* domain, domain 0 included, and then overwrites domain 0 with the
    identity -- so domain ``i`` uses draws ``3i .. 3i+2`` of the stream.
    ``state``: shared statics to continue from (see the module docstring).
    ``n_domains`` and ``spread_rad`` are the values after C's own defaulting
    (e.g. 1 domain and spread 0 when no mosaicity was given).
    """
    stream = Ran1State(check_seed(seed), as_statics(state))
    n = int(n_domains)
    umats, axes, factors = np.empty((n, 3, 3)), np.zeros((n, 3)), np.zeros(n)
    for d in range(n):
        axes[d], factors[d] = _mosaic_draw(stream)
        umats[d] = _umat(spread_rad, axes[d], factors[d])
    if n:
        umats[0] = np.eye(3)
        factors[0] = 0.0
    return MosaicDomains(umats, axes, factors)


#: the "mosaicity" C passes for a random orientation: 90.0, which the routine
#: treats as radians (its comment intends degrees); kept for parity
RANDOM_MISSET_MOSAICITY = 90.0


def random_misset(seed: int, state=None) -> np.ndarray:
    """C's ``-misset random``: three misset angles (radians) from the ``misset_seed`` stream.

    C draws ``mosaic_rotation_umat(90.0, ...)`` -- an angle of up to 90
    *radians*, which wraps around many times, so the orientation is random but
    not uniformly distributed -- converts it with :func:`umat2misset`, prints
    the angles in degrees and then applies them with its usual x-y-z misset
    rotation (the matrix itself is not used).  Consumes three draws.
    ``seed`` is the value of C's ``misset_seed`` variable (see the CLI notes in
    the noise module docstring for how the command line sets it).
    """
    stream = Ran1State(check_seed(seed), as_statics(state))
    return umat2misset(mosaic_rotation_umat(RANDOM_MISSET_MOSAICITY, stream))
