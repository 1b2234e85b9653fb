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


def statistics(image, roi, mask=None, *, pixel_size_m: float, oversample: int) -> Statistics:
    """nanoBragg's image statistics (see module docstring)."""
    image = np.asarray(image, dtype=np.float32)
    visited = roi_mask(image.shape, roi)
    counted = visited if mask is None else visited & (np.asarray(mask) != 0)
    values = image[counted].astype(np.float64)
    max_I, max_x, max_y = 0.0, 0.0, 0.0
    if values.size and values.max() > 0.0:
        flat = np.flatnonzero(counted.ravel())
        first = flat[np.argmax(values)]
        slow, fast = divmod(int(first), image.shape[1])
        max_I = float(values.max())
        sub = pixel_size_m / oversample
        max_x = sub * (fast * oversample + oversample - 1) + sub / 2.0
        max_y = sub * (slow * oversample + oversample - 1) + sub / 2.0
    n = values.size if values.size > 0 else 1
    mean = float(values.sum()) / n
    n_rms = n if n > 1 else 2
    rms = math.sqrt(float(np.dot(values, values)) / (n_rms - 1))
    deviations = image[visited].astype(np.float64) - mean
    n_dev = deviations.size if deviations.size > 1 else 2
    rmsd = math.sqrt(float(np.dot(deviations, deviations)) / (n_dev - 1))
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
    image = np.asarray(image, dtype=np.float32)
    test = image.astype(np.float64) * scale + adc_offset
    test = np.clip(test, 0.0, 65535.0)
    # nanoBragg rounds with floorf(): the sum is first rounded to float
    pixels = np.floor((test + 0.5).astype(np.float32)).astype(np.uint16)
    return np.where(roi_mask(image.shape, roi), pixels, 0).astype(np.uint16)


def pgm_image(image, roi, scale: float) -> np.ndarray:
    """uint8 PGM pixels: ``value·scale`` truncated, at most 255."""
    image = np.asarray(image, dtype=np.float32)
    test = np.minimum(image.astype(np.float64) * scale, 255.0)
    pixels = np.trunc(np.maximum(test, 0.0)).astype(np.uint8)
    return np.where(roi_mask(image.shape, roi), pixels, 0).astype(np.uint8)


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
