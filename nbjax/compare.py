"""Compare two diffraction images: the numbers people use to judge agreement.

Metrics (A is the reference, B the test image, both float, same shape):

* ``pearson_r`` -- linear correlation of all pixels;
* ``sum_ratio`` -- ΣB / ΣA;
* ``max_rel_err`` -- max |B − A| / |A| over pixels with A > 10⁻³ · max(A);
* ``rmse`` -- sqrt(mean((B − A)²)), in the images' units (photons);
* ``mean_peak_distance`` -- for the 50 brightest local maxima of A (3×3
  neighbourhood, above 1 % of the maximum), the mean distance in pixels to the
  nearest of B's 50 brightest maxima.

``nbjax compare A B`` reads float files (``--shape SLOW FAST``, or nanoBragg's
``-detpixels N`` / ``-detpixels_x F -detpixels_y S``, unless A or B is an SMV,
PGM or .npy image, which has a shape), SMV images and PGM files, and
prints the metrics as text or ``--json`` (one JSON object; a metric that is
not a finite number, e.g. the sum ratio against an all-zero A, is ``null``);
``--png FILE`` also draws A, B, their difference and radial profiles (needs
matplotlib).  NumPy ``.npy`` files are read too.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys

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


def _head(path, size=16) -> bytes:
    from nbjax.io.atomic import read_file_bytes

    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except (OSError, ValueError, TypeError):
        return read_file_bytes(path)[:size]  # raises the usual InputError naming the file


def read_image(path, shape=None):
    """A float64 image from a float32 file, an SMV image, a PGM file or a NumPy .npy file.

    SMV, PGM and .npy files carry their shape; a float32 file is reshaped to
    ``shape`` (slow, fast) when given and returned 1-D otherwise.
    """
    from nbjax.io import read_float_image, read_pgm, read_smv

    head = _head(path)
    if head.startswith(b"{\nHEADER_BYTES="):
        return read_smv(path).data.astype(np.float64)
    if head.startswith(b"P5"):
        return read_pgm(path).astype(np.float64)
    if head.startswith(b"\x93NUMPY"):
        return _read_npy(path, shape)
    return read_float_image(path, shape).astype(np.float64)


def _read_npy(path, shape):
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise InputError(f"{path}: not a readable .npy file ({' '.join(str(error).split())})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise InputError(f"{path}: .npy file does not hold a real-valued array")
    if array.ndim == 1 and shape is not None:
        if array.size != shape[0] * shape[1]:
            raise InputError(f"{path}: holds {array.size} values, expected {shape[0]}x{shape[1]}")
        array = array.reshape(shape)
    if array.ndim not in (1, 2) or array.size == 0:
        raise InputError(f"{path}: expected a non-empty 2-D image, the .npy array has shape {array.shape}")
    return array.astype(np.float64)


def main(argv) -> int:
    shape, rest = _shape_option(list(argv))
    from nbjax.cli import split_options

    options, paths = split_options(rest, {"--json": 0, "--png": 1})
    if len(paths) != 2:
        raise InputError("compare: give two images, A (reference) and B")
    first = read_image(paths[0], shape)
    second = read_image(paths[1], shape if shape else (first.shape if first.ndim == 2 else None))
    if first.ndim == 1 and second.ndim == 2:
        first = read_image(paths[0], second.shape)
    if first.ndim == 1 or second.ndim == 1:
        raise InputError("compare: float images need --shape SLOW FAST (or an SMV image to take it from)")
    result = metrics(first, second)
    if options.get("--json"):
        print(json.dumps({k: (v if math.isfinite(v) else None) for k, v in result.as_dict().items()}))
    else:
        for key, value in result.as_dict().items():
            print(f"{key:20s} {value:.9g}")
    if "--png" in options:
        from nbjax import pictures

        pictures.write_comparison(options["--png"], first, second, result)
    return 0


#: nanoBragg's detector-size flags that may give a float image's shape instead of --shape.
SHAPE_FLAGS = {"-detpixels": "both", "-detpixels_x": "fast", "-detpixels_f": "fast", "-detpixels_y": "slow",
               "-detpixels_s": "slow"}


def _shape_option(argv):
    """Remove ``--shape SLOW FAST`` / ``--shape=SLOW,FAST`` (or nanoBragg's ``-detpixels``,
    ``-detpixels_x``/``_f``, ``-detpixels_y``/``_s``) from argv; return (shape, rest)."""
    from nbjax.io.numbers import parse_int

    sizes, rest = {}, []
    i = 0
    while i < len(argv):
        flag = argv[i]
        if flag in SHAPE_FLAGS:
            if i + 1 >= len(argv):
                raise InputError(f"{flag}: needs a value")
            value = parse_int(argv[i + 1], flag)
            if value <= 0:
                raise InputError(f"{flag}: must be a positive number of pixels, got {value}")
            for axis in (("slow", "fast") if SHAPE_FLAGS[flag] == "both" else (SHAPE_FLAGS[flag],)):
                sizes[axis] = value
            i += 2
            continue
        rest.append(flag)
        i += 1
    if sizes:
        if len(sizes) != 2:
            raise InputError("-detpixels_x/-detpixels_y: give both sizes (or -detpixels N)")
        if any(a == "--shape" or a.startswith("--shape=") for a in rest):
            raise InputError("--shape: give either --shape or -detpixels, not both")
        return (sizes["slow"], sizes["fast"]), rest
    argv = rest
    for i, arg in enumerate(argv):
        if arg == "--shape":
            values, rest = argv[i + 1:i + 3], argv[:i] + argv[i + 3:]
        elif arg.startswith("--shape="):
            values, rest = arg.split("=", 1)[1].split(","), argv[:i] + argv[i + 1:]
        else:
            continue
        if len(values) != 2:
            raise InputError("--shape: needs two integers, SLOW FAST")
        slow, fast = (parse_int(v, "--shape") for v in values)
        if slow <= 0 or fast <= 0:
            raise InputError("--shape: sizes must be positive")
        return (slow, fast), rest
    return None, argv


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
