"""nanoBragg.c's uniform generator ``ran1`` and the process statics it shares, bit for bit.

``ran1`` is the Park-Miller "minimal standard" multiplicative congruential
generator (``idum <- 16807 * idum mod (2**31 - 1)``, with Schrage's trick so no
product overflows) followed by a 32-slot Bays-Durham shuffle table; the shuffled
integer is scaled by ``1/(2**31 - 1)`` in double precision, stored as a C
``float`` and capped just below one.  The shuffle table and the last output are
C function statics shared by every caller, while each caller owns its seed
variable: :class:`CStatics` and :class:`Ran1State` make that split explicit
(see :mod:`nbjax.physics.rng` for how nanoBragg's stages share them).

:func:`ran1_step` is plain Python that numba can compile: :mod:`nbjax.physics._noise_c`
compiles it for the long noise streams, and :mod:`nbjax.physics.rng` runs it in
Python for the few draws of the misset and mosaic set-up.  This module imports
neither numba nor JAX.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["CStatics", "Ran1State", "ran1", "ran1_step", "as_statics", "check_seed"]

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


def check_seed(seed) -> int:
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
# ran1: one implementation, plain Python that numba can compile; _noise_c.py
# compiles it (with numba) for the long noise streams, so importing this
# module does not import numba.
# --------------------------------------------------------------------------

# Note on numba's cache: _noise_c.py's kernels inline ran1_step, and numba keys
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
    ints = state.shared.ints

    def draw():
        value, idum, iy = ran1_step(check_seed(state.idum), int(ints[SLOT_IY]), ints[SLOT_IV:])
        state.idum = int(idum)
        ints[SLOT_IY] = iy
        return np.float32(value)

    if n is None:
        return draw()
    return np.array([draw() for _ in range(int(n))], dtype=np.float32)
