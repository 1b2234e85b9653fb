"""What nanoBragg makes of the rendered float image: statistics and scaled images.

All functions take the float32 image nanoBragg keeps (photons per pixel,
(spixels, fpixels), fast index last) and work in numpy on the host.

* :func:`statistics` -- max_I and where it was first reached, mean, rms and
  rmsd, over the pixels nanoBragg visits (inside ``-roi``; the mask excludes
  pixels from max/mean/rms but, as in nanoBragg, not from rmsd);
* :func:`int_image` -- the SMV image: ``floor(pixel · scale + adc + 1/2)``
  clipped to [0, 65535], with ``scale = 55000 / max_I`` unless ``-scale``;
* :func:`pgm_image` -- the 8-bit preview: ``pixel · pgm_scale`` truncated,
  clipped at 255, with ``pgm_scale = 250 / (5 rmsd)`` unless ``-pgmscale``;
* :func:`require_finite` -- refuses an image with NaN or infinite pixels
  (nanoBragg.c writes them; every product above would be garbage).

Pixels outside the roi are 0 in every product, as nanoBragg leaves them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from nbjax.errors import InputError


@dataclasses.dataclass(frozen=True)
class Statistics:
    max_I: float
    max_I_x_m: float   # fast coordinate (m) of the last sub-pixel of the brightest pixel
    max_I_y_m: float
    mean: float
    rms: float
    rmsd: float
    count: int


def roi_mask(shape, roi):
    """Boolean (spixels, fpixels) mask of the pixels nanoBragg visits for ``roi``.

    ``roi`` = (xmin, xmax, ymin, ymax), inclusive, as nanoBragg resolves it.
    """
    spixels, fpixels = shape
    xmin, xmax, ymin, ymax = roi
    fast = np.arange(fpixels)
    slow = np.arange(spixels)
    return ((slow >= ymin) & (slow <= ymax))[:, None] & ((fast >= xmin) & (fast <= xmax))[None, :]


def _roi_slices(shape, roi) -> tuple[slice, slice]:
    """(rows, columns) slices of the roi rectangle clipped to the image (possibly empty).

    The pixels of ``image[rows, columns]`` in row-major order are exactly
    ``image[roi_mask(shape, roi)]``.
    """
    spixels, fpixels = shape
    xmin, xmax, ymin, ymax = (int(v) for v in roi)
    y0, y1 = max(ymin, 0), min(ymax, spixels - 1) + 1
    x0, x1 = max(xmin, 0), min(xmax, fpixels - 1) + 1
    return slice(y0, max(y1, y0)), slice(x0, max(x1, x0))


def statistics(image, roi, mask=None, *, pixel_size_m: float, oversample: int) -> Statistics:
    """nanoBragg's image statistics (see module docstring).

    Sums run in float64 over the visited pixels in row-major order (numpy's
    pairwise ``sum`` and single-threaded ``einsum`` for the squares -- not
    BLAS ``dot``, whose threads stall when the cores are busy rendering the
    next image of a batch, and whose result depends on the thread count), one
    copy of the roi and no masks unless ``mask`` is given.
    """
    image = np.asarray(image, dtype=np.float32)
    rows, cols = _roi_slices(image.shape, roi)
    visited = image[rows, cols].astype(np.float64)  # a C-ordered copy: row-major like boolean indexing
    width = visited.shape[1]
    if mask is None:
        values = visited.reshape(-1)
        where = None
    else:
        where = np.flatnonzero(np.asarray(mask)[rows, cols] != 0)
        values = visited.reshape(-1)[where]
    max_I, max_x, max_y = 0.0, 0.0, 0.0
    if values.size:
        first = int(np.argmax(values))  # the first maximum (the first NaN, if any)
        if values[first] > 0.0:
            max_I = float(values[first])
            index = first if where is None else int(where[first])
            slow, fast = rows.start + index // width, cols.start + index % width
            sub = pixel_size_m / oversample
            max_x = sub * (fast * oversample + oversample - 1) + sub / 2.0
            max_y = sub * (slow * oversample + oversample - 1) + sub / 2.0
    n = values.size if values.size > 0 else 1
    mean = float(values.sum()) / n
    n_rms = n if n > 1 else 2
    rms = math.sqrt(float(np.einsum("i,i->", values, values)) / (n_rms - 1))
    deviations = visited.reshape(-1)  # over every visited pixel, masked or not; values is done with
    np.subtract(deviations, mean, out=deviations)
    n_dev = deviations.size if deviations.size > 1 else 2
    rmsd = math.sqrt(float(np.einsum("i,i->", deviations, deviations)) / (n_dev - 1))
    return Statistics(max_I, max_x, max_y, mean, rms, rmsd, int(values.size))


def int_scale(requested: float, max_I: float) -> float:
    """The integer-image scale nanoBragg uses (``-scale`` or 55000/max_I)."""
    if requested > 0.0:
        return requested
    return 55000.0 / max_I if max_I > 0.0 else 1.0


def pgm_scale(requested: float, int_scale_value: float, rmsd: float) -> float:
    """The PGM scale nanoBragg uses (``-pgmscale`` or 250/(5 rmsd))."""
    if requested > 0.0:
        return requested
    return 250.0 / (5.0 * rmsd) if rmsd > 0.0 else int_scale_value


def int_image(image, roi, scale: float, adc_offset: float) -> np.ndarray:
    """uint16 SMV pixels: ``floorf(value·scale + adc + 0.5)`` clipped to [0, 65535]."""

    def pixels(test):
        test *= scale
        test += adc_offset
        np.clip(test, 0.0, 65535.0, out=test)
        # nanoBragg rounds with floorf(): the sum is first rounded to float
        test += 0.5
        rounded = test.astype(np.float32)
        np.floor(rounded, out=rounded)
        return rounded

    return _scaled_image(image, roi, np.uint16, pixels)


def pgm_image(image, roi, scale: float) -> np.ndarray:
    """uint8 PGM pixels: ``value·scale`` truncated, at most 255."""

    def pixels(test):
        test *= scale
        np.minimum(test, 255.0, out=test)
        np.maximum(test, 0.0, out=test)
        np.trunc(test, out=test)
        return test

    return _scaled_image(image, roi, np.uint8, pixels)


def _scaled_image(image, roi, dtype, pixels) -> np.ndarray:
    """An image of ``dtype``: ``pixels(float64 block)`` inside the roi, 0 outside, a block of rows at a time."""
    image = np.asarray(image, dtype=np.float32)
    rows, cols = _roi_slices(image.shape, roi)
    out = np.zeros(image.shape, dtype=dtype)
    target = out[rows, cols]
    for block, start, stop in _row_blocks(image[rows, cols]):
        target[start:stop] = pixels(block)
    return out


# float64 values per block of rows: 1 MiB, which stays in the cache from one step to the next
_BLOCK_VALUES = 1 << 17


def _row_blocks(region: np.ndarray):
    """(float64 copy of rows start:stop of ``region``, start, stop) for blocks of rows, one buffer reused.

    The scaled images are element by element, so working a block at a time
    gives the same bytes as working on the whole image at once, without
    making (and page-faulting) 32 MB temporaries for a 2048 x 2048 image.
    """
    height, width = region.shape
    if height == 0 or width == 0:
        return
    step = max(1, _BLOCK_VALUES // width)
    buffer = np.empty((min(step, height), width), dtype=np.float64)
    for start in range(0, height, step):
        stop = min(start + step, height)
        block = buffer[: stop - start]
        np.copyto(block, region[start:stop])
        yield block, start, stop


def require_finite(image, suspects=()) -> None:
    """Raise :class:`InputError` when ``image`` has NaN or infinite pixels.

    A pixel value overflows float32 (above 3.4e38 photons) or becomes NaN
    (0·inf, inf−inf) only when an input is extreme; ``suspects`` names the
    inputs that may be the cause (e.g. ``["-fluence 1e+308"]``), most likely
    first.  Call it after the render and before any file is written.
    """
    image = np.asarray(image)
    finite = np.isfinite(image)
    if finite.all():
        return
    bad = int(image.size - np.count_nonzero(finite))
    nan = int(np.count_nonzero(np.isnan(image)))
    cause = (f"likely cause: {', '.join(suspects)}" if suspects
             else "check the geometry and the inputs for extreme values")
    raise InputError(f"the image has {bad} non-finite pixels ({nan} NaN, {bad - nan} infinite) "
                     f"of {image.size}; nothing written; {cause}")
