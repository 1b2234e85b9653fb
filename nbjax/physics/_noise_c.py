"""nanoBragg's noise stream compiled with numba: the kernels of :mod:`nbjax.physics.noise`.

Kept apart so that importing :mod:`nbjax.physics.noise` (the JAX path, the
constants) does not import numba; the C-exact path loads this module on its
first use.  The method and its tricks are described in :mod:`nbjax.physics.noise`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from nbjax.physics import ran1 as _ran1
from nbjax.physics.ran1 import (
    SLOT_ALXM,
    SLOT_G,
    SLOT_GSET,
    SLOT_ISET,
    SLOT_IV,
    SLOT_IY,
    SLOT_OLDM,
    SLOT_SQ,
)
from nbjax.physics._noise_constants import (
    _BOUND_LIMIT,
    _BOUND_SHRINK,
    _LANCZOS,
    _ONE_F,
    DIRECT_THRESHOLD,
    GAUSSIAN_THRESHOLD,
    PIXEL_MAX,
)

# nanoBragg's ran1, compiled for the sequential noise loops
ran1_step = njit(cache=True, nogil=True, inline="always")(_ran1.ran1_step)


@njit(cache=True, nogil=True)
def ran1_many(idum_box, ints, n):
    """``n`` draws of ran1 (int64[1] seed box and packed statics updated in place)."""
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        value, idum, iy = ran1_step(idum_box[0], ints[SLOT_IY], ints[SLOT_IV:])
        idum_box[0] = idum
        ints[SLOT_IY] = iy
        out[i] = value
    return out


@njit(cache=True, nogil=True)
def _gammln(xx):
    """ln Gamma(xx) for a float32 argument: double arithmetic, float32 result."""
    x = np.float64(xx)
    y = x
    tmp = x + 5.5
    tmp -= (x + 0.5) * math.log(tmp)
    ser = 1.000000000190015
    for c in _LANCZOS:
        y += 1.0
        ser += c / y
    return np.float32(-tmp + math.log(2.5066282746310005 * ser / x))


# The kernels below keep every piece of C state in local variables and pass it
# along explicitly (numba turns the tuples into registers):
#   idum, iy -- the noise seed variable and ran1's last output; iv -- the table
#   dev      -- (oldm, sq, alxm, g, gset, iset, pending): poidev's and
#               gaussdev's statics, plus our own flag "g not computed yet"
# _unpack/_pack move them between CStatics and locals around a kernel call.
#
# Lazy g.  In the direct regime C computes g = float(exp(-xm)) whenever the
# mean changes, i.e. at nearly every pixel of a real image, but for a small
# mean the first uniform u almost always satisfies u <= g, ending the draw
# with 0 photons.  We first compare u with a cheap rigorous lower bound of g
# (see _BOUND_SHRINK): u <= bound proves u <= g, and the result is the same as
# C's.  Only otherwise (probability about xm) is the exact g computed.  The
# pending flag remembers that the static g still has to be computed for the
# current oldm; it is resolved before g is ever used or handed back.

@njit(cache=True, nogil=True, inline="always")
def _gaussdev(idum, iy, iv, dev):
    """Unit normal deviate (polar Box-Muller), float32, with C's spare-deviate static.

    Returns ``(deviate, idum, iy, dev)``.
    """
    oldm, sq, alxm, g, gset, iset, pending = dev
    if iset != 0:
        return gset, idum, iy, (oldm, sq, alxm, g, gset, np.int64(0), pending)
    while True:
        u1, idum, iy = ran1_step(idum, iy, iv)
        u2, idum, iy = ran1_step(idum, iy, iv)
        v1 = np.float32(2.0 * np.float64(u1) - 1.0)
        v2 = np.float32(2.0 * np.float64(u2) - 1.0)
        rsq = v1 * v1 + v2 * v2                           # float32
        if not (rsq >= 1.0 or rsq == 0.0):
            break
    rsq_d = np.float64(rsq)
    fac = np.float32(math.sqrt(-2.0 * math.log(rsq_d) / rsq_d))
    return v2 * fac, idum, iy, (oldm, sq, alxm, g, v1 * fac, np.int64(1), pending)


@njit(cache=True, nogil=True, inline="always")
def _exp_neg(xm):
    """float(exp(-xm)) as C computes it: double libm exp, rounded to float."""
    return np.float32(math.exp(-np.float64(xm)))


@njit(cache=True, nogil=True, inline="always")
def _poidev(xm, idum, iy, iv, dev):
    """One Poisson deviate of float32 mean ``xm`` as nanoBragg's ``poidev``.

    Returns ``(deviate as float32, idum, iy, dev)``.
    """
    if xm > GAUSSIAN_THRESHOLD:
        gdev, idum, iy, dev = _gaussdev(idum, iy, iv, dev)
        xd = np.float64(xm)
        return np.float32(xd + math.sqrt(xd) * np.float64(gdev)), idum, iy, dev

    oldm, sq, alxm, g, gset, iset, pending = dev
    if xm < DIRECT_THRESHOLD:
        if xm != oldm:
            oldm = xm
            pending = True                 # C: g = float(exp(-xm)), done lazily
        # first factor: em = 0, t = 1.0f * u = u
        em = np.float32(0.0)
        t, idum, iy = ran1_step(idum, iy, iv)
        if pending:
            if xm < _BOUND_LIMIT and t <= np.float32((1.0 - np.float64(xm)) * _BOUND_SHRINK):
                return em, idum, iy, (oldm, sq, alxm, g, gset, iset, pending)
            g = _exp_neg(xm)
            pending = False
        while t > g:
            em = em + _ONE_F
            u, idum, iy = ran1_step(idum, iy, iv)
            t = t * u                                     # float32 product
        return em, idum, iy, (oldm, sq, alxm, g, gset, iset, pending)

    if xm != oldm:
        oldm = xm
        pending = False
        sq = np.float32(math.sqrt(2.0 * np.float64(xm)))
        alxm = np.float32(math.log(np.float64(xm)))
        g = xm * alxm - _gammln(np.float32(np.float64(xm) + 1.0))     # float32
    while True:
        while True:
            u, idum, iy = ran1_step(idum, iy, iv)
            y = np.float32(math.tan(math.pi * np.float64(u)))
            em = sq * y + xm                              # float32
            if not (em < 0.0):
                break
        em = np.float32(math.floor(np.float64(em)))
        expo = em * alxm - _gammln(np.float32(np.float64(em) + 1.0)) - g   # float32
        t = np.float32(0.9 * (1.0 + np.float64(y * y)) * math.exp(np.float64(expo)))
        u, idum, iy = ran1_step(idum, iy, iv)
        if not (u > t):
            break
    return em, idum, iy, (oldm, sq, alxm, g, gset, iset, pending)


@njit(cache=True, nogil=True, inline="always")
def _unpack(ints, floats):
    dev = (floats[SLOT_OLDM], floats[SLOT_SQ], floats[SLOT_ALXM], floats[SLOT_G],
           floats[SLOT_GSET], ints[SLOT_ISET], False)
    return ints[SLOT_IY], ints[SLOT_IV:], dev


@njit(cache=True, nogil=True, inline="always")
def _pack(ints, floats, iy, dev):
    oldm, sq, alxm, g, gset, iset, pending = dev
    if pending:
        g = _exp_neg(oldm)           # what C's static holds for this oldm
    ints[SLOT_IY] = iy
    ints[SLOT_ISET] = iset
    floats[SLOT_OLDM] = oldm
    floats[SLOT_SQ] = sq
    floats[SLOT_ALXM] = alxm
    floats[SLOT_G] = g
    floats[SLOT_GSET] = gset


@njit(cache=True, nogil=True)
def _deviates_kernel(means, idum_box, ints, floats):
    iy, iv, dev = _unpack(ints, floats)
    idum = idum_box[0]
    out = np.empty(means.shape[0], dtype=np.float32)
    for i in range(means.shape[0]):
        out[i], idum, iy, dev = _poidev(means[i], idum, iy, iv, dev)
    idum_box[0] = idum
    _pack(ints, floats, iy, dev)
    return out


@njit(cache=True, nogil=True, inline="always")
def _to_ushort(test):
    """C's (unsigned short) of a double on x86-64: via int32, wrapping mod 2**16."""
    if not (test > -2147483649.0 and test < 2147483648.0):   # NaN too
        return np.uint16(0)
    return np.uint16(np.int64(test) & 0xFFFF)


@njit(cache=True, nogil=True)
def _noise_kernel(means, adc_offset, idum_box, ints, floats, out):
    """The C noise loop over the visited pixels (already gathered in raster order)."""
    iy, iv, dev = _unpack(ints, floats)
    idum = idum_box[0]
    total = 0.0
    overloads = 0
    for i in range(means.shape[0]):
        dv, idum, iy, dev = _poidev(means[i], idum, iy, iv, dev)
        test = np.float64(dv)
        total += test
        test += adc_offset
        if test > PIXEL_MAX:
            test = PIXEL_MAX
            overloads += 1
        out[i] = _to_ushort(test)
    idum_box[0] = idum
    _pack(ints, floats, iy, dev)
    return total, overloads
