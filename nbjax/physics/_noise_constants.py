"""Numbers of nanoBragg's Poisson noise, shared by both noise paths.

:mod:`nbjax.physics.noise` (the public functions and the JAX path) and
:mod:`nbjax.physics._noise_c` (the numba kernels of the C-exact stream, loaded
only when that stream runs) both read them from here.  Means are in photons
per pixel.
"""

from __future__ import annotations

import numpy as np

#: above this mean C (and the JAX path) uses mean + sqrt(mean) * N(0, 1)
GAUSSIAN_THRESHOLD = 1.0e6
#: below this mean C multiplies uniforms (direct method); above, rejection
DIRECT_THRESHOLD = 12.0
#: the largest value an unsigned 16-bit pixel holds
PIXEL_MAX = 65535.0

_ONE_F = np.float32(1.0)
# Lower bound of C's g = float(exp(-xm)) without calling exp, used below
# xm = _BOUND_LIMIT: exp(-x) >= 1 - x for every x; shrinking 1 - x by a
# relative 2**-45 more than covers the error of libm's exp (< 1 ulp = 2**-52)
# and of the two roundings in this bound; rounding to float is monotone, so
# float(bound) <= g.
_BOUND_SHRINK = 1.0 - 2.0 ** -45
_BOUND_LIMIT = 1.0
# Lanczos (g = 5, n = 6) coefficients of the ln Gamma series nanoBragg uses.
_LANCZOS = (
    76.18009172947146,
    -86.50532032941677,
    24.01409824083091,
    -1.231739572450155,
    0.1208650973866179e-2,
    -0.5395239384953e-5,
)
