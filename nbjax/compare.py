"""Compare two diffraction images: the numbers people use to judge agreement.

Metrics (A is the reference, B the test image, both float, same shape):

* ``pearson_r`` -- linear correlation of all pixels;
* ``sum_ratio`` -- ΣB / ΣA;
* ``max_rel_err`` -- max |B − A| / |A| over pixels with A > 10⁻³ · max(A);
* ``rmse`` -- sqrt(mean((B − A)²)), in the images' units (photons);
* ``mean_peak_distance`` -- for the 50 brightest local maxima of A (3×3
  neighbourhood, above 1 % of the maximum), the mean distance in pixels to the
  nearest of B's 50 brightest maxima.

The ``nbjax compare`` command (:mod:`nbjax.commands.compare`) prints them for
two image files.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nbjax.errors import InputError

#: Thresholds of the parity scoreboard.
STRICT = dict(pearson_r=0.999999, sum_ratio=1e-5, max_rel_err=1e-4)


@dataclasses.dataclass(frozen=True)
class Metrics:
    pearson_r: float
    sum_ratio: float
    max_rel_err: float
    rmse: float
    mean_peak_distance: float

    def as_dict(self):
        return dataclasses.asdict(self)

    @property
    def strict(self) -> bool:
        return (
            self.pearson_r >= STRICT["pearson_r"]
            and abs(self.sum_ratio - 1) <= STRICT["sum_ratio"]
            and self.max_rel_err <= STRICT["max_rel_err"]
        )


def local_maxima(image, n=50, fraction=0.01):
    """(row, col) of the ``n`` brightest 3×3 local maxima above ``fraction``·max."""
    image = np.asarray(image, dtype=np.float64)
    if image.size == 0:
        return np.zeros((0, 2), int)
    padded = np.pad(image, 1, constant_values=-np.inf)
    window = np.lib.stride_tricks.sliding_window_view(padded, (3, 3)).max(axis=(2, 3))
    candidates = np.argwhere((image == window) & (image > fraction * image.max()))
    values = image[candidates[:, 0], candidates[:, 1]]
    return candidates[np.argsort(-values, kind="stable")[:n]]


def metrics(reference, test) -> Metrics:
    """Agreement of ``test`` with ``reference`` (see module docstring).

    NaN or infinite pixels make the metrics they enter NaN (never an error).
    """
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(test, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"images differ in shape: {a.shape} vs {b.shape}")
    with np.errstate(all="ignore"):
        return _metrics(a, b)


def _metrics(a, b) -> Metrics:
    if a.std() > 0 and b.std() > 0:
        r = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    else:
        r = float(np.array_equal(a, b))
    total = a.sum()
    sum_ratio = float(b.sum() / total) if total != 0 else float("nan")
    strong = a > 1e-3 * a.max() if a.size else np.zeros_like(a, bool)
    max_rel = float(np.max(np.abs(b[strong] - a[strong]) / np.abs(a[strong]))) if strong.any() else 0.0
    rmse = float(np.sqrt(np.mean((b - a) ** 2))) if a.size else 0.0
    peaks_a, peaks_b = local_maxima(a), local_maxima(b)
    if len(peaks_a) and len(peaks_b):
        d = np.sqrt(((peaks_a[:, None, :] - peaks_b[None, :, :]) ** 2).sum(-1)).min(axis=1)
        distance = float(d.mean())
    else:
        distance = 0.0 if len(peaks_a) == len(peaks_b) else float("inf")
    return Metrics(r, sum_ratio, max_rel, rmse, distance)
