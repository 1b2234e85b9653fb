"""Time the C-exact noise image (nbjax.physics.noise.noise_image_c) on a detector-sized image.

The image is the "supervisor" float image (2463 x 2527 pixels, mean ~1e-3
photons, bright spots up to ~450) when the shared golden set is present, or a
synthetic image shaped like it.  Reported separately:

* numba's first call -- compilation, or loading the on-disk cache
  (``cache=True``) when an earlier run left one; ``--cold`` points numba at an
  empty cache directory to measure a real compile;
* the steady-state time of ``noise_image_c`` (min and median of ``--repeat``
  runs; one sequential pass, single-threaded);
* optionally (``--jax``) the ``jax.random`` path on the default JAX device.

``--c-seconds T`` prints the ratio to the C program's own noise loop, timed
separately (the loop of nanoBragg.c's main() around ``poidev``, built with
gcc -O3, on the same image and seed).  Measured on the 2-core development VM
(AMD EPYC, shared with other jobs, so +-15%): C's loop 0.090-0.108 s; this
script's noise_image_c 0.07-0.10 s (min 0.072 s).

Usage: python benchmarks/noise_bench.py [--repeat 7] [--seed -1] [--cold] [--jax] [--c-seconds T]
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPIXELS, FPIXELS = 2527, 2463
REPO = Path(__file__).resolve().parents[1]
SUPERVISOR_CANDIDATES = [
    REPO.parent / "shared" / "golden" / "cases" / "supervisor" / "float.bin.gz",
    Path("/work/shared/golden/cases/supervisor/float.bin.gz"),
]


def load_image() -> tuple[np.ndarray, str]:
    for path in SUPERVISOR_CANDIDATES:
        if path.exists():
            data = gzip.open(path).read()
            return np.frombuffer(data, dtype="<f4").reshape(SPIXELS, FPIXELS).copy(), str(path)
    return synthetic_image(), "synthetic"


def synthetic_image(seed: int = 0) -> np.ndarray:
    """Background ~1e-3 photons/pixel, half the pixels nearly empty, 3000 spots up to ~450."""
    rng = np.random.default_rng(seed)
    img = rng.exponential(1e-3, size=(SPIXELS, FPIXELS))
    img[rng.random(img.shape) < 0.5] *= 1e-6
    ys = rng.integers(5, SPIXELS - 5, 3000)
    xs = rng.integers(5, FPIXELS - 5, 3000)
    peaks = 450.0 * rng.random(3000) ** 4
    yy, xx = np.mgrid[-4:5, -4:5]
    blob = np.exp(-(yy**2 + xx**2) / (2 * 1.2**2))
    for y, x, a in zip(ys, xs, peaks):
        img[y - 4:y + 5, x - 4:x + 5] += a * blob
    return img.astype(np.float32)


def _time(fn, repeat):
    times = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--seed", type=int, default=-1, help="C seed value (-atoi of -seed)")
    ap.add_argument("--cold", action="store_true", help="compile with an empty numba cache")
    ap.add_argument("--jax", action="store_true", help="also time noise_image_jax")
    ap.add_argument("--c-seconds", type=float, default=None,
                    help="C noise-loop time on the same image, for the ratio")
    args = ap.parse_args(argv)

    if args.cold:
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="nbjax-numba-")
    t0 = time.perf_counter()
    import numba

    from nbjax.physics import noise
    t_import = time.perf_counter() - t0

    image, source = load_image()
    print(f"image: {source}, {image.shape[1]}x{image.shape[0]}, mean {image.mean():.4g}, "
          f"max {image.max():.4g}; numba {numba.__version__}")

    t0 = time.perf_counter()
    noise.noise_image_c(image[:2, :8], args.seed)
    t_first = time.perf_counter() - t0
    kind = "compile" if args.cold else "compile or cache load"
    print(f"import {t_import:.2f} s; numba first call ({kind}) {t_first:.2f} s")

    tmin, tmed, (pixels, photons, overloads) = _time(
        lambda: noise.noise_image_c(image, args.seed), args.repeat)
    print(f"noise_image_c: min {tmin:.4f} s, median {tmed:.4f} s "
          f"({1e9 * tmin / image.size:.1f} ns/pixel); "
          f"{photons:.0f} photons on noise image ({overloads} overloads)")

    if args.c_seconds:
        print(f"C noise loop: {args.c_seconds:.4f} s -> nbjax/C = {tmin / args.c_seconds:.2f}")

    if args.jax:
        import jax

        key = jax.random.key(0)
        t0 = time.perf_counter()
        noise.noise_image_jax(image, key)
        t_jit = time.perf_counter() - t0
        jmin, jmed, (_, jphotons, jover) = _time(lambda: noise.noise_image_jax(image, key), args.repeat)
        print(f"noise_image_jax on {jax.devices()[0].platform}: first call {t_jit:.2f} s, "
              f"min {jmin:.4f} s, median {jmed:.4f} s; {jphotons:.0f} photons ({jover} overloads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
