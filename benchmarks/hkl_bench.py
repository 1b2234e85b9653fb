"""Reading a large -hkl file: first read (parse) and second read (cache), in fresh processes.

Writes a synthetic P1 file (``--reflections``, default 2 million, ~34 MB:
``h k l F`` with F to two decimals, indices in a 128^3 box) under /tmp and
times ``nbjax.io.read_hkl`` on it in a new Python process each time (so
numba's import, paid by the compiled scanner, is counted):

* ``first``: an empty cache folder -- the text is parsed and the cache written;
* ``second``: the cache from the previous ``first`` -- hash, load, grid.

With ``--compare-with DIR`` (a checkout of another nbjax, e.g. /work/main)
the same first read is timed with that tree too, the two alternating in one
run so that a loaded machine slows both alike.  Prints a table of the median
and minimum times (s).  The tables read are checked to be equal.

    python benchmarks/hkl_bench.py --compare-with /work/main --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CHILD = r"""
import hashlib, sys, time
t0 = time.perf_counter()
from nbjax.io import hkl
t1 = time.perf_counter()
assert hkl.__file__.startswith(sys.argv[2]), hkl.__file__
table = hkl.read_hkl(sys.argv[1])
t2 = time.perf_counter()
digest = hashlib.sha256(table.values.tobytes()).hexdigest()[:16]
print(f"{t1 - t0:.4f} {t2 - t1:.4f} {table.count} {digest}")
"""


def make_file(path: str, n: int) -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    side = 1
    while side**3 < n:
        side += 1
    r = np.arange(side) - side // 2
    h, k, l = np.meshgrid(r, r, r, indexing="ij")
    idx = np.stack([h.ravel(), k.ravel(), l.ravel()], 1)
    idx = idx[np.sort(rng.permutation(len(idx))[:n])]
    F = rng.gamma(2, 300, n).round(2)
    with open(path, "wb") as handle:
        handle.write(b"".join(b"%d %d %d %.2f\n" % (a, b, c, f) for (a, b, c), f in zip(idx.tolist(), F.tolist())))


def child(tree: str, path: str, cache: str) -> tuple[float, float, str]:
    env = dict(os.environ, PYTHONPATH=tree, NBJAX_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(path), os.path.abspath(tree)], env=env, capture_output=True,
                         text=True, check=True, cwd=cache)  # not the cwd: it would come first on sys.path
    imp, read, count, digest = out.stdout.split()
    return float(read), float(imp), f"{count}:{digest}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reflections", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-with", metavar="DIR", help="another nbjax tree, timed alternately")
    parser.add_argument("--file", default=None, help="use this HKL file instead of a synthetic one")
    args = parser.parse_args()

    path = args.file or os.path.join(tempfile.gettempdir(), f"nbjax_bench_{args.reflections}.hkl")
    if not os.path.exists(path):
        make_file(path, args.reflections)
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        raw = handle.read()
    started = time.perf_counter()
    hashlib.sha256(raw).digest()
    hash_s = time.perf_counter() - started

    times = {"first": [], "second": []}
    if args.compare_with:
        times["other"] = []
    results = set()
    for _ in range(args.rounds):
        cache = tempfile.mkdtemp(prefix="nbjax_hkl_cache_")
        try:
            if args.compare_with:
                seconds, _, result = child(args.compare_with, path, cache)
                times["other"].append(seconds)
                results.add(result)
            for label in ("first", "second"):
                seconds, _, result = child(ROOT, path, cache)
                times[label].append(seconds)
                results.add(result)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    if len(results) != 1:
        raise SystemExit(f"the readers disagree: {results}")

    print(f"# {path}: {size / 1e6:.1f} MB, {next(iter(results)).split(':')[0]} reflections; "
          f"sha256 of the bytes {hash_s:.3f} s; load average {os.getloadavg()[0]:.1f}")
    print(f"{'read':<34} {'median s':>9} {'min s':>8}")
    names = {"other": f"first read, {args.compare_with}", "first": "first read (parse, write cache)",
             "second": "second read (cache)"}
    for label, values in times.items():
        print(f"{names[label]:<34} {statistics.median(values):9.3f} {min(values):8.3f}")
    if args.compare_with:
        base = statistics.median(times["other"])
        print(f"speed-up, median: first read x{base / statistics.median(times['first']):.1f}, "
              f"second read x{base / statistics.median(times['second']):.1f}")


if __name__ == "__main__":
    main()
