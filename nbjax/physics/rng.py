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
    umats = mosaic_domain_umats(spread, n, mosaic_seed, shared)
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
import dataclasses
import math

import numpy as np

from nbjax.geometry.rotation import axis_angle_rows

__all__ = [
    "CStatics",
    "Ran1State",
    "ran1",
    "ran1_step",
    "mosaic_rotation_umat",
    "mosaic_domain_umats",
    "mosaic_domain_draws",
    "umat2misset",
    "random_misset",
    "as_statics",
]

# --- constants of the generator (Park-Miller with Schrage's decomposition) ---
IA = 16807                      # multiplier
IM = 2147483647                 # modulus, 2**31 - 1
IQ = 127773                     # IM // IA
IR = 2836                       # IM % IA
NTAB = 32                       # size of the shuffle table
NDIV = 1 + (IM - 1) // NTAB     # maps iy to a table slot
AM = 1.0 / IM                   # integer -> [0, 1) scale, double
RNMX = 1.0 - 1.2e-7             # largest value returned (as a double; C rounds it to float)

# Slots of CStatics.ints (int64).
SLOT_IY = 0          # ran1: last shuffled output (0 = table never loaded)
SLOT_ISET = 1        # gaussdev: 1 when a spare deviate is waiting
SLOT_IV = 2          # ran1: shuffle table iv[0..31] occupies SLOT_IV .. SLOT_IV+31
N_INTS = SLOT_IV + NTAB

# Slots of CStatics.floats (float32, because C declares them float).
SLOT_OLDM = 0        # poidev: mean of the previous call (starts at -1)
SLOT_SQ = 1          # poidev: sqrt(2*mean)       (rejection regime)
SLOT_ALXM = 2        # poidev: log(mean)          (rejection regime)
SLOT_G = 3           # poidev: exp(-mean) or mean*log(mean)-lgamma(mean+1)
SLOT_GSET = 4        # gaussdev: the spare deviate
N_FLOATS = 5


def _fresh_ints() -> np.ndarray:
    return np.zeros(N_INTS, dtype=np.int64)


def _fresh_floats() -> np.ndarray:
    f = np.zeros(N_FLOATS, dtype=np.float32)
    f[SLOT_OLDM] = -1.0
    return f


@dataclasses.dataclass(eq=False)
class CStatics:
    """The function-level statics of one nanoBragg.c process, made explicit.

    ``ints`` (int64) holds ran1's ``iy`` and shuffle table and gaussdev's flag;
    ``floats`` (float32) holds poidev's ``oldm, sq, alxm, g`` and gaussdev's
    spare deviate.  They are packed in two arrays so that the numba kernels can
    update them in place; use the properties to read them.  A fresh instance is
    what a freshly started C program has (``iy = 0``, ``oldm = -1``).
    """

    ints: np.ndarray = dataclasses.field(default_factory=_fresh_ints)
    floats: np.ndarray = dataclasses.field(default_factory=_fresh_floats)

    def __post_init__(self):
        if self.ints.shape != (N_INTS,) or self.ints.dtype != np.int64:
            raise ValueError(f"CStatics.ints must be int64[{N_INTS}]")
        if self.floats.shape != (N_FLOATS,) or self.floats.dtype != np.float32:
            raise ValueError(f"CStatics.floats must be float32[{N_FLOATS}]")

    @property
    def iy(self) -> int:
        return int(self.ints[SLOT_IY])

    @property
    def iv(self) -> np.ndarray:
        return self.ints[SLOT_IV:SLOT_IV + NTAB].copy()

    @property
    def poidev_oldm(self) -> np.float32:
        return self.floats[SLOT_OLDM]

    @property
    def gaussdev_spare(self) -> np.float32 | None:
        return self.floats[SLOT_GSET] if self.ints[SLOT_ISET] else None

    def copy(self) -> "CStatics":
        return CStatics(self.ints.copy(), self.floats.copy())


@dataclasses.dataclass(eq=False)
class Ran1State:
    """One C seed variable (``long idum``) and the process statics it shares.

    ``idum`` changes with every draw, exactly as the C variable does.  Several
    states may share one :class:`CStatics`; :meth:`stream` makes such a sibling.
    """

    idum: int
    shared: CStatics = dataclasses.field(default_factory=CStatics)

    def stream(self, seed: int) -> "Ran1State":
        """Another seed variable on the same shared statics."""
        return Ran1State(int(seed), self.shared)

    def copy(self) -> "Ran1State":
        """An independent snapshot (the shared statics are copied too)."""
        return Ran1State(self.idum, self.shared.copy())


def as_statics(state) -> CStatics:
    """The shared statics to use for ``state`` (None -> fresh, as a new process)."""
    if state is None:
        return CStatics()
    if isinstance(state, Ran1State):
        return state.shared
    if isinstance(state, CStatics):
        return state
    raise TypeError(f"expected CStatics, Ran1State or None, got {type(state).__name__}")


def _check_seed(seed) -> int:
    """A C seed value as a Python int.

    The C command line stores ``-atoi(arg)``, an int (``-seed -2147483648``
    wraps to ``-2**31``); for magnitudes up to ``2**31`` every step of the
    generator stays well defined, so larger values are refused.
    """
    s = int(seed)
    if not -(2**31) <= s <= 2**31:
        raise ValueError(f"seed {s} is outside the range C's -atoi() can produce")
    return s


# --------------------------------------------------------------------------
# ran1: one implementation, plain Python that numba can compile; noise.py
# compiles it (with numba) for the long noise streams, so importing this
# module does not import numba.
# --------------------------------------------------------------------------

# Note on numba's cache: noise.py's kernels inline ran1_step, and numba keys
# each cached kernel on its own source file only.  After editing this module,
# delete nbjax/physics/__pycache__/*.nbi and *.nbc so those kernels recompile.

def ran1_step(idum, iy, iv):
    """One step of nanoBragg's ``ran1`` on unpacked state, for numba kernels.

    ``idum``: the caller's seed variable; ``iy``: the shared last output (0 =
    table not loaded yet); ``iv``: the shared int64[32] shuffle table, updated in
    place.  Returns ``(deviate as float32, new idum, new iy)``.
    """
    if idum <= 0 or iy == 0:
        # (Re)load the shuffle table: never start the LCG from 0.
        if -idum < 1:
            idum = 1
        else:
            idum = -idum
        for j in range(NTAB + 7, -1, -1):
            k = np.int64(np.uint64(idum) // np.uint64(IQ))  # idum > 0: C's division, unsigned is faster
            idum = IA * (idum - k * IQ) - IR * k
            if idum < 0:
                idum += IM
            if j < NTAB:
                iv[j] = idum
        iy = iv[0]
    k = np.int64(np.uint64(idum) // np.uint64(IQ))
    idum = IA * (idum - k * IQ) - IR * k
    if idum < 0:
        idum += IM
    j = np.uint64(iy) // np.uint64(NDIV)        # iy in [0, IM): slot 0..31
    iy = iv[j]
    iv[j] = idum
    temp = np.float32(AM * iy)                  # double product, stored in a float
    if np.float64(temp) > RNMX:                 # compared as double
        temp = np.float32(RNMX)
    return temp, idum, iy


def ran1(state: Ran1State, n: int | None = None):
    """nanoBragg's ``ran1``: the next uniform deviate in (0, 1) as ``np.float32``.

    Advances ``state.idum`` and the shared table in place.  With ``n`` given,
    returns the next ``n`` deviates as a float32 array instead.
    """
    if n is None:
        # one draw: the same step in plain Python (no numba start-up for the
        # few deviates that misset and mosaic set-up need)
        ints = state.shared.ints
        value, idum, iy = ran1_step(_check_seed(state.idum), int(ints[SLOT_IY]), ints[SLOT_IV:])
        state.idum = int(idum)
        ints[SLOT_IY] = iy
        return np.float32(value)
    from nbjax.physics.noise import ran1_many

    box = np.array([_check_seed(state.idum)], dtype=np.int64)
    value = ran1_many(box, state.shared.ints, int(n))
    state.idum = int(box[0])
    return value


# --------------------------------------------------------------------------
# Random rotations
# --------------------------------------------------------------------------

def _load_powf():
    name = ctypes.util.find_library("m")
    for lib in (name, "libm.so.6", None):
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


def mosaic_rotation_umat(mosaicity_rad: float, state: Ran1State) -> np.ndarray:
    """A random rotation within a spherical cap; nanoBragg's ``mosaic_rotation_umat``.

    The axis and the factor come from :func:`_mosaic_draw` (exactly three
    ``ran1`` draws from ``state``); the angle is ``mosaicity * factor`` with
    C's float rounding (the parameter is a ``float``, the product is float).
    The matrix is the axis-angle (Rodrigues) rotation, returned row-major as C
    fills ``umat[0..8]``.
    """
    (v1, v2, v3), factor = _mosaic_draw(state)
    rot = float(np.float32(np.float32(mosaicity_rad) * factor))
    return np.array(axis_angle_rows(v1, v2, v3, math.cos(rot), math.sin(rot)), dtype=np.float64)


def mosaic_domain_draws(n_domains: int, seed: int, state=None):
    """The draws behind :func:`mosaic_domain_umats`, without the spread.

    Returns ``(axes, factors)``, shapes ``(n_domains, 3)`` and ``(n_domains,)``:
    domain ``m``'s unit rotation axis and ``powf(1 - r3**2, 1/3)`` (its angle is
    the spread times the factor).  Domain 0's factor is 0: C overwrites that
    domain with the identity.  Same seed and ``state`` rules as
    :func:`mosaic_domain_umats`.
    """
    stream = Ran1State(_check_seed(seed), as_statics(state))
    n = int(n_domains)
    axes, factors = np.zeros((n, 3)), np.zeros(n)
    for d in range(n):
        axes[d], factors[d] = _mosaic_draw(stream)
    if n:
        factors[0] = 0.0
    return axes, factors


def mosaic_domain_umats(spread_rad: float, n_domains: int, seed: int, state=None) -> np.ndarray:
    """The mosaic domain orientations nanoBragg makes, shape ``(n_domains, 3, 3)``.

    ``seed`` is the value of C's ``mosaic_seed`` variable (the command line
    stores ``-atoi(arg)``; the default is -12345678).  C draws a rotation for
    *every* domain, domain 0 included, and then overwrites domain 0 with the
    identity -- so domain ``i`` uses draws ``3i .. 3i+2`` of the stream.
    ``state``: shared statics to continue from (see the module docstring).
    ``n_domains`` and ``spread_rad`` are the values after C's own defaulting
    (e.g. 1 domain and spread 0 when no mosaicity was given).
    """
    stream = Ran1State(_check_seed(seed), as_statics(state))
    n = int(n_domains)
    out = np.empty((n, 3, 3), dtype=np.float64)
    for d in range(n):
        out[d] = mosaic_rotation_umat(spread_rad, stream)
    if n:
        out[0] = np.eye(3)
    return out


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

    mx, my, mz = norm3(xx, xy, xz), norm3(yx, yy, yz), norm3(zx, zy, zz)
    if mx > 0:
        xx, xy, xz = xx / mx, xy / mx, xz / mx
    if my > 0:
        yx, yy, yz = yx / my, yy / my, yz / my
    if mz > 0:
        zx, zy, zz = zx / mz, zy / mz, zz / mz

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

    mx, my, mz = norm3(xx, xy, xz), norm3(yx, yy, yz), norm3(zx, zy, zz)
    if mx > 0:
        xx, xy, xz = xx / mx, xy / mx, xz / mx
    if my > 0:
        yx, yy, yz = yx / my, yy / my, yz / my
    if mz > 0:
        zx, zy, zz = zx / mz, zy / mz, zz / mz

    if zx * zx < 1.0:
        rotx = math.atan2(zy, zz)
        roty = math.atan2(-zx, math.sqrt(zy * zy + zz * zz))
        rotz = math.atan2(yx, xx)
    else:
        rotx = math.atan2(1, 1) * 4
        roty = math.atan2(1, 1) * 2
        rotz = math.atan2(xy, -yy)
    return np.array([rotx, roty, rotz], dtype=np.float64)


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
    stream = Ran1State(_check_seed(seed), as_statics(state))
    return umat2misset(mosaic_rotation_umat(RANDOM_MISSET_MOSAICITY, stream))
