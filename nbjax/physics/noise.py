"""Poisson noise images: nanoBragg.c's exact stream, and a fast JAX equivalent.

nanoBragg turns its expected-photon image into a detector image by drawing one
Poisson deviate per pixel, in raster order (slow index outer, fast inner),
skipping pixels outside the region of interest (masked pixels inside it are
drawn, their mean is just 0).  Each deviate plus the ADC offset is clipped at
65535 (each clip counted as an "overload") and truncated to ``unsigned short``.
The sum of the deviates is reported as the number of photons.

Two implementations:

* :func:`noise_image_c` / :func:`poisson_deviates_c` reproduce the C program's
  numbers bit for bit (same seed -> same image).  They run the C algorithms in a
  sequential numba kernel on the host.
* :func:`noise_image_jax` draws statistically equivalent noise with
  ``jax.random`` (counter-based, parallel, on any device).  It is not
  number-for-number equal to C.

The C deviate generator (``poidev``) has three regimes
-----------------------------------------------------
``xm`` is the mean, a C ``float``.

``xm < 12`` -- direct method.  Multiply uniform deviates until the product drops
to ``g = exp(-xm)`` or below; the number of factors minus one is the deviate.
The product ``t`` is a ``float`` (float*float multiplies round to float on
x86-64 SSE) and ``g`` is the double ``exp`` rounded to float.

``12 <= xm <= 1e6`` -- rejection with a Lorentzian comparison function.  Per
mean: ``sq = float(sqrt(2.0*xm))``, ``alxm = float(log(xm))`` and
``g = xm*alxm - gammln(float(xm + 1.0))`` (all float arithmetic).  Per try:
``y = float(tan(pi * u))`` with ``u = ran1()``, ``em = sq*y + xm`` in float,
retried while ``em < 0``, then floored, and accepted when the next ``ran1()`` is
not above ``t = float(0.9 * (1.0 + double(y*y)) * exp(double(em*alxm -
gammln(float(em + 1.0)) - g)))`` -- here ``y*y``, ``em*alxm`` and the two
subtractions are float operations, the rest double.  ``gammln`` is the
Lanczos series for ln Gamma evaluated in double and returned as float.

``xm > 1e6`` -- Gaussian approximation: ``float(xm + sqrt(xm) * gaussdev())``,
*not* rounded to an integer.  ``gaussdev`` is the polar Box-Muller method: two
uniforms ``v = float(2.0*u - 1.0)`` until ``rsq = v1*v1 + v2*v2`` (float) lies in
(0, 1), ``fac = float(sqrt(-2 log(rsq) / rsq))``; it returns ``v2*fac`` and
keeps ``v1*fac`` for the next call.

The regime statics (the last mean ``oldm`` and the derived ``g``, ``sq``,
``alxm``; gaussdev's spare deviate) persist across pixels and live in
:class:`nbjax.physics.ran1.CStatics`; the exact path needs them to reproduce C
(e.g. ``g`` is recomputed only when the mean changes from the previous pixel).

Speed
-----
The exact path is one sequential loop written for numba (in
:mod:`nbjax.physics._noise_c`, imported on first use, so that the JAX path
never imports numba).  Loading numba costs a process ~0.6 s, so with
``cache_dir`` the same functions run compiled ahead of time instead
(:mod:`nbjax.physics._noise_aot`: an extension module in the nbjax cache
folder, built once in the background, checked bit for bit against the numba
kernels, imported without numba).  Its one trick
keeps C's results while skipping most ``exp`` calls: C computes
``g = float(exp(-xm))`` whenever the mean changes (nearly every pixel), yet for
a small mean the first uniform almost always ends the draw (``u <= g`` gives
0 photons).  We compare ``u`` with a rigorous lower bound of ``g`` first and
compute the exact ``g`` only when that does not settle it (probability about
``xm``); see the comments at the kernels.  On the 2463x2527 "supervisor"
image this runs in about 55 ms against about 95 ms for C's own noise loop.

The JAX path draws one uniform per pixel and inverts the Poisson CDF for
means below 10 (the image is processed in blocks so that a block iterates only
as often as its own largest deviate); the few brighter pixels are gathered on
the host into a short index list and sampled with ``jax.random.poisson``
(exact, transformed rejection) up to 1e6 and ``mean + sqrt(mean) * N(0, 1)``
above, as C does.

Notes for the engine and the command line
-----------------------------------------
* The three streams run in C's order on one set of statics (see
  :mod:`nbjax.physics.rng`): random misset (only with ``-misset random``),
  then one ``mosaic_rotation_umat`` per mosaic domain -- always, even for a
  single domain of zero spread -- then the noise image.
* C's seed variables hold ``-atoi(arg)``; the noise seed defaults to
  ``-time(NULL)``.  ``misset_seed`` is initialised from ``seed`` *before* the
  arguments are read, so it defaults to ``-time(NULL)`` and ``-seed`` does not
  change it.
* C matches options by substring.  ``-seed`` is not a substring of
  ``-mosaic_seed`` or ``-misset_seed`` (those contain ``_seed``), but
  ``-misset`` is a substring of ``-misset_seed``: ``-misset_seed N`` also sets
  fixed misset angles ``(N, atof(next), atof(next-but-one))`` degrees, which
  cancels an earlier ``-misset random``.  The golden case p46 (``-misset
  random -misset_seed 99 -lambda 1.2 ...``) is therefore the fixed misset
  (99, 0, 1.2) degrees; ``-misset random`` placed *after* ``-misset_seed N``
  does give a random misset from seed ``-N``.
* The ROI defaults are ``0, fpixels, 0, spixels`` (inclusive bounds), and
  negative values given on the command line fall back to those defaults.
* The pixel conversion is C's ``(unsigned short)`` of a double, which the
  x86-64 compiler does through a 32-bit signed integer: values below 0 (only
  possible with a negative ADC offset) wrap modulo 65536 and values outside the
  int32 range, or NaN, become 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nbjax.physics._noise_constants import DIRECT_THRESHOLD, GAUSSIAN_THRESHOLD, PIXEL_MAX
from nbjax.physics.ran1 import Ran1State, as_statics, check_seed

__all__ = [
    "poisson_deviates_c",
    "noise_image_c",
    "noise_image_jax",
    "poisson_deviates_jax",
    "noise_core_jax",
    "resolve_roi",
    "GAUSSIAN_THRESHOLD",
    "DIRECT_THRESHOLD",
]


# The numba kernels live in nbjax.physics._noise_c, imported on first use, so
# that the JAX path and the constants do not import numba.
_KERNELS = ("ran1_step", "ran1_many", "_gammln", "_gaussdev", "_exp_neg", "_poidev", "_unpack", "_pack",
            "_deviates_kernel", "_to_ushort", "_noise_kernel")


def __getattr__(name):
    if name in _KERNELS:
        from nbjax.physics import _noise_c

        return getattr(_noise_c, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_roi(roi, spixels: int, fpixels: int) -> tuple[int, int, int, int]:
    """C's ROI after defaulting: ``(xmin, xmax, ymin, ymax)``, inclusive.

    ``None`` means the whole image; a negative bound takes C's default
    (``0``, ``fpixels``, ``0``, ``spixels`` respectively).
    """
    if roi is None:
        return 0, fpixels, 0, spixels
    xmin, xmax, ymin, ymax = (int(v) for v in roi)
    if xmin < 0:
        xmin = 0
    if xmax < 0:
        xmax = fpixels
    if ymin < 0:
        ymin = 0
    if ymax < 0:
        ymax = spixels
    return xmin, xmax, ymin, ymax


def _as_float_image(float_image) -> np.ndarray:
    img = np.ascontiguousarray(np.asarray(float_image), dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"float_image must be 2-D (slow, fast), got shape {img.shape}")
    return img


def poisson_deviates_c(mean_image: np.ndarray, seed: int, state=None, *, cache_dir: str | None = None) -> np.ndarray:
    """Poisson deviates exactly as nanoBragg's ``poidev`` draws them, float32.

    ``mean_image`` (any shape, converted to float32 as C's float image) is read
    in C (row-major) order, one deviate per element, so pass only the pixels
    the C loop visits.  ``seed`` is the value of C's seed variable (``-7`` for
    ``-seed 7``).  ``state``: the shared :class:`CStatics` to continue from,
    updated in place; ``None`` starts from fresh statics.  A :class:`Ran1State`
    may be given instead: its shared statics are used and its ``idum`` is set
    to the seed variable's final value, so that
    ``f(a, st.idum, st); f(b, st.idum, st)`` equals one call on ``a`` then ``b``.
    ``cache_dir``: see :func:`noise_image_c`.
    """
    means = np.asarray(mean_image)
    flat = np.ascontiguousarray(means.reshape(-1), dtype=np.float32)
    out = _run_stream(flat, seed, state, None, 0.0, cache_dir)
    return out.reshape(means.shape)


def _run_stream(flat, seed, state, pixels_out, adc_offset, cache_dir):
    """Run the sequential C stream over ``flat`` means; see the public wrappers."""
    statics = as_statics(state)
    box = np.array([check_seed(seed)], dtype=np.int64)
    arrays = (flat, box, statics.ints, statics.floats) + (() if pixels_out is None else (pixels_out,))
    compiled = None
    if cache_dir is not None:
        from nbjax.physics import _noise_aot

        if all(a.flags.c_contiguous for a in arrays):  # the compiled kernels take C-ordered arrays only
            compiled = _noise_aot.load(cache_dir)
    if compiled is not None:
        noise_kernel, deviates_kernel = compiled.noise_kernel, compiled.deviates_kernel
    else:
        from nbjax.physics import _noise_c

        noise_kernel, deviates_kernel = _noise_c._noise_kernel, _noise_c._deviates_kernel
    if pixels_out is None:
        result = deviates_kernel(flat, box, statics.ints, statics.floats)
    else:
        result = noise_kernel(flat, float(adc_offset), box, statics.ints, statics.floats, pixels_out)
    if isinstance(state, Ran1State):
        state.idum = int(box[0])
    if compiled is None and cache_dir is not None:
        _noise_aot.build_in_background(cache_dir)  # after the draw: this run waits for nothing
    return result


def noise_image_c(float_image: np.ndarray, seed: int, *, adc_offset: float = 40.0,
                  roi=None, state=None, cache_dir: str | None = None) -> tuple[np.ndarray, float, int]:
    """nanoBragg's noise image, bit for bit.

    ``float_image``: expected photons per pixel, shape ``(spixels, fpixels)``
    (converted to float32, as C stores it).  ``seed``: the C noise seed value
    (``-atoi`` of the ``-seed`` argument).  ``roi``: ``(xmin, xmax, ymin, ymax)``
    inclusive, see :func:`resolve_roi`; pixels outside stay 0 and draw nothing.
    ``state``: shared statics to continue from (a :class:`CStatics` or
    :class:`Ran1State`, updated in place); ``None`` = fresh process.
    ``cache_dir``: a folder for the kernels compiled ahead of time
    (:mod:`nbjax.physics._noise_aot`): used when they are there (no numba
    import), else the numba kernels run and a background process builds
    them for the next run; ``None`` (default): the numba kernels.  The
    numbers are the same either way.

    Returns ``(image, photons, overloads)``: the uint16 image, the sum of the
    deviates accumulated in double in raster order (as C prints it with
    ``%.0f``), and the number of clipped pixels.
    """
    img = _as_float_image(float_image)
    spixels, fpixels = img.shape
    xmin, xmax, ymin, ymax = resolve_roi(roi, spixels, fpixels)
    rows = slice(max(ymin, 0), max(min(ymax + 1, spixels), 0))
    cols = slice(max(xmin, 0), max(min(xmax + 1, fpixels), 0))
    # The visited pixels form a rectangle; gathered row by row they are in C's order.
    visited = np.ascontiguousarray(img[rows, cols])
    pixels = np.empty(visited.shape, dtype=np.uint16)
    total, overloads = _run_stream(visited.reshape(-1), seed, state,
                                   pixels.reshape(-1), adc_offset, cache_dir)
    if visited.shape == img.shape:
        return pixels, float(total), int(overloads)
    image = np.zeros((spixels, fpixels), dtype=np.uint16)
    image[rows, cols] = pixels
    return image, float(total), int(overloads)


# --------------------------------------------------------------------------
# JAX path
# --------------------------------------------------------------------------
#
# Per pixel, one uniform u from the counter-based generator drives an
# inversion search for means below INVERSION_LIMIT: k = 0, p = F = exp(-lam);
# while u > F: k += 1, p *= lam/k, F += p.  The pixels step together, block by
# block (lax.map over blocks of _INVERSION_BLOCK), each block for as many
# rounds as its own largest deviate.  The brighter pixels are listed by index
# (on the host when the image is concrete, padded to a power of two so that
# few shapes get compiled) and sampled there: exact Poisson with
# jax.random.poisson (transformed rejection) up to 1e6, and C's Gaussian
# mean + sqrt(mean) * N(0, 1) above.  So the whole image costs one uniform
# and a few cheap rounds per pixel.

#: below this mean the JAX path inverts the Poisson CDF; above, jax.random.poisson
INVERSION_LIMIT = 10.0
_INVERSION_BLOCK = 1 << 14  # elements per independently iterated block
_INVERSION_MAX_K = 100      # P(X > 100 | lam < 10) < 1e-60; also stops float32 stalls


def _inversion_counts_block(u, lam):
    """Smallest k with u <= CDF(k; lam), elementwise (0 <= lam < 10)."""
    p0 = jnp.exp(-lam)

    def body(carry):
        k, p, f, _ = carry
        step = (u > f) & (k < _INVERSION_MAX_K)
        k = k + step.astype(k.dtype)
        p = jnp.where(step, p * lam / k.astype(lam.dtype), p)
        f = jnp.where(step, f + p, f)
        return k, p, f, jnp.any(step)

    k0 = jnp.zeros(lam.shape, jnp.int32)
    k, _, _, _ = jax.lax.while_loop(lambda c: c[3], body, (k0, p0, p0, jnp.array(True)))
    return k


def _inversion_counts(u, lam):
    """:func:`_inversion_counts_block` over 1-D arrays, block by block.

    A block runs as many rounds as its own largest deviate, so the rare
    brighter pixels do not make the whole image iterate.
    """
    n = u.shape[0]
    if n <= _INVERSION_BLOCK:
        return _inversion_counts_block(u, lam)
    nblocks = -(-n // _INVERSION_BLOCK)
    pad = nblocks * _INVERSION_BLOCK - n
    ub = jnp.pad(u, (0, pad)).reshape(nblocks, _INVERSION_BLOCK)      # u = 0: done at once
    lb = jnp.pad(lam, (0, pad)).reshape(nblocks, _INVERSION_BLOCK)
    k = jax.lax.map(lambda ul: _inversion_counts_block(*ul), (ub, lb))
    return k.reshape(-1)[:n]


@jax.jit
def _deviates_jax(key, mean, bright_idx):
    """Deviates for ``mean`` (float32); ``bright_idx`` lists the flat indices of
    the means >= INVERSION_LIMIT, padded with ``mean.size`` (ignored)."""
    flat = mean.reshape(-1)
    k_inv, k_pois, k_norm = jax.random.split(key, 3)
    small = flat < INVERSION_LIMIT                      # NaN and bright: False
    u = jax.random.uniform(k_inv, flat.shape, dtype=jnp.float32)
    lam_small = jnp.where(small & (flat > 0), flat, 0.0)
    dev = _inversion_counts(u, lam_small).astype(jnp.float32)
    if bright_idx.shape[0] > 0:
        lam = jnp.take(flat, bright_idx, mode="fill", fill_value=INVERSION_LIMIT)
        gauss = lam > GAUSSIAN_THRESHOLD
        counts = jax.random.poisson(k_pois, jnp.where(gauss, INVERSION_LIMIT, lam),
                                    dtype=jnp.int32).astype(jnp.float32)
        z = jax.random.normal(k_norm, lam.shape, dtype=jnp.float32)
        vals = jnp.where(gauss, lam + jnp.sqrt(lam) * z, counts)
        dev = dev.at[bright_idx].set(vals, mode="drop")
    dev = jnp.where(jnp.isnan(flat), jnp.nan, dev)
    return dev.reshape(mean.shape)


def _bright_indices(mean):
    """Flat indices of the means >= INVERSION_LIMIT, padded with ``size``.

    For a concrete array they are found on the host and padded to a power of
    two (few distinct shapes to compile); for a traced one every element gets
    a slot, so the function stays usable inside ``jax.jit``.
    """
    size = int(np.prod(mean.shape))
    if isinstance(mean, jax.core.Tracer):
        return jnp.nonzero(mean.reshape(-1) >= INVERSION_LIMIT, size=size, fill_value=size)[0]
    idx = np.flatnonzero(np.asarray(mean).reshape(-1) >= INVERSION_LIMIT)
    capacity = 0 if idx.size == 0 else 1 << (idx.size - 1).bit_length()
    itype = np.int64 if size > np.iinfo(np.int32).max else np.int32
    padded = np.full(capacity, size, dtype=itype)
    padded[: idx.size] = idx
    return padded


def poisson_deviates_jax(key, mean):
    """Poisson deviates of ``mean`` with ``jax.random``, float32, same shape.

    Exact Poisson sampling up to a mean of 1e6 (CDF inversion below 10,
    ``jax.random.poisson`` above) and, like C, ``mean + sqrt(mean) * N(0, 1)``
    (not rounded) above 1e6.  Means <= 0 give 0 (as C's direct method does),
    NaN gives NaN.  Works on concrete arrays (fast: the bright pixels are
    located on the host) and inside ``jax.jit``.  Not number-for-number equal
    to C.
    """
    if not isinstance(mean, jax.core.Tracer):
        mean = np.asarray(mean, dtype=np.float32)
    mean = mean.astype(jnp.float32)
    return _deviates_jax(key, jnp.asarray(mean), _bright_indices(mean))


@jax.jit
def noise_core_jax(key, image, adc_offset, visited, bright_idx):
    """Jitted core of :func:`noise_image_jax`: (uint16 pixels, photon sum, overloads).

    ``visited``: boolean mask of the pixels C visits (the ROI); the others
    give 0.  ``bright_idx``: see :func:`_bright_indices` (of the masked image).
    """
    mean = jnp.where(visited, image.astype(jnp.float32), 0.0)
    dev = _deviates_jax(key, mean, bright_idx)
    acc = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    total = jnp.sum(jnp.where(visited, dev, 0.0).astype(acc))
    test = dev.astype(acc) + adc_offset
    over = visited & (test > PIXEL_MAX)
    test = jnp.where(over, PIXEL_MAX, test)
    # C's (unsigned short) via int32: wrap below 0, 0 outside int32 or for NaN
    trunc = jnp.trunc(test)
    in_range = (trunc > -2147483649.0) & (trunc < 2147483648.0)
    as_int = jnp.where(in_range, trunc, 0.0).astype(jnp.int64 if acc == jnp.float64 else jnp.int32)
    pixels = jnp.where(visited & in_range, as_int & 0xFFFF, 0).astype(jnp.uint16)
    return pixels, total, jnp.sum(over, dtype=jnp.int32)


def noise_image_jax(float_image, key, *, adc_offset: float = 40.0, roi=None):
    """A noise image with ``jax.random``: the semantics of :func:`noise_image_c`.

    Statistically equivalent to C (exact Poisson up to 1e6, Gaussian above),
    not number-for-number.  Runs on the default JAX device.  Returns
    ``(uint16 image as numpy, photon sum as float, overloads as int)``; the
    photon sum is accumulated in float32 unless JAX runs with x64 enabled.
    """
    image = np.asarray(float_image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"float_image must be 2-D (slow, fast), got shape {image.shape}")
    spixels, fpixels = image.shape
    xmin, xmax, ymin, ymax = resolve_roi(roi, spixels, fpixels)
    fast = np.arange(fpixels)[None, :]
    slow = np.arange(spixels)[:, None]
    visited = (fast >= xmin) & (fast <= xmax) & (slow >= ymin) & (slow <= ymax)
    bright_idx = _bright_indices(np.where(visited, image, np.float32(0.0)))
    pixels, total, overloads = noise_core_jax(key, image, float(adc_offset), visited, bright_idx)
    return np.asarray(pixels), float(total), int(overloads)
