"""Large single renders end to end against nanoBragg.c: a proxy for an external coverage harness.

usage: python benchmarks/coverage_bench.py [--quick] [--mode spec|c-parity|both] [--only N,...]
                                           [--repeat N] [--compare-with DIR] [--json]

An external harness runs many "coverage cells": one ``nanoBragg`` process per
cell (single-threaded, ``OMP_NUM_THREADS=1``) against one ``nbjax`` process
per cell, each a 2048 x 2048 detector, one phi step, reading the same large
P1 reflection file.  This script builds a faithful stand-in under a temporary
folder, deterministically:

* ``big.hkl``: a P1 ``h k l F`` text file (nanoBragg's format) of every
  reflection of a 150 A cubic cell to 1.92 A (a sphere of about 2 million
  reflections, ~30 MB; F drawn from a gamma distribution, two decimals);
* :data:`CELLS`: command lines touching what such a harness touches -- the
  default outputs (float, int, PGM and noise images), ``-oversample 2``,
  mosaic domains, a dispersion x divergence source set, ``-interpolate``,
  ``-roi``, a thick sensor, ``-round_xtal``, polarization, ``-nonoise``; the
  counts (2 domains, 4 sources, 2 layers) are kept small so that a C run takes
  4-15 s, as the external harness's cells do (74 cells, 416 s of C in all), and
  no single cell dominates the aggregate.

For every cell and mode (default: nbjax against ``/tmp/nbc/nanoBragg_spec``;
``--c-parity``: nbjax with ``--c-parity`` against ``/tmp/nbc/nanoBragg``; the
binaries can be changed with ``NB_C_BIN`` and ``NB_C_SPEC_BIN``) it prints
the C time, the nbjax time end to end cold (an empty ``NBJAX_CACHE_DIR``: the
HKL file is parsed and the renderer compiled) and warm (best of ``--repeat``
with the caches the cold run filled), the speed-up, and the agreement of the
two float images (Pearson r, max relative error on pixels above 1e-3 of the
maximum); then the aggregate (sum of C times over sum of warm nbjax times) and
the time of a second ``nbjax.io.read_hkl`` of the big file in a fresh process
(the parse cached).

``--compare-with DIR`` also times the warm nbjax command of another nbjax tree
(e.g. ``/work/main``), alternating with this tree cell by cell, prints that
tree's aggregate too and checks that the two trees wrote the same bytes in
every file (``same_files``).  Timed runs wait for the background build of the
compiled noise kernels that a first noise image starts in a cache folder.  ``--quick``: 512 x 512 pixels, 200 000
reflections, four cells.  nbjax runs as ``python -m nbjax`` with its bytecode
cached under the work folder (``PYTHONPYCACHEPREFIX``), as an installed package
has it, even where ``PYTHONDONTWRITEBYTECODE`` is set.  The script never
builds nanoBragg.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from run import agreement, machine  # noqa: E402  (benchmarks/run.py's helpers)

# every cell shares this crystal, beam and detector; {n} is the detector side in pixels and
# {pixel} the pixel size (mm) that keeps the detector 204.8 mm wide
BASE = ("-hkl big.hkl -cell 150 150 150 90 90 90 -misset 10 -20 30 -lambda 1.0 -N 5 "
        "-detpixels {n} -pixel {pixel} -distance 120 -phi 0 -osc 0.05 -phisteps 1 -seed 7")

# name -> extra flags; "quick" marks the cells --quick runs
CELLS = {
    "default outputs": ("", True),
    "oversample 2": ("-oversample 2 -nonoise", True),
    "mosaic 2 domains": ("-mosaic 0.5 -mosaic_domains 2 -nonoise", False),
    "dispersion x divergence": ("-dispersion 0.5 -dispsteps 2 -hdivrange 0.1 -hdivsteps 2 -nonoise", False),
    "interpolate": ("-interpolate -nonoise", True),
    "roi": ("-roi {q} {q3} {q} {q3}", False),
    "thick sensor": ("-detector_thick 100 -detector_abs 300 -detector_thicksteps 2 -nonoise", False),
    "round_xtal": ("-round_xtal -nonoise", False),
    "polarization": ("-polar 0.9 -nonoise", True),
    "nonoise, no pgm": ("-nonoise -nopgm", False),
}

HKL_CHILD = r"""
import sys, time
t0 = time.perf_counter()
from nbjax.io import read_hkl
t1 = time.perf_counter()
table = read_hkl(sys.argv[1])
t2 = time.perf_counter()
print(f"{t1 - t0:.4f} {t2 - t1:.4f} {table.count}")
"""


def make_hkl(path: str, cell: float, dmin: float, seed: int = 1) -> int:
    """Every (h, k, l) of a cubic ``cell`` (A) with d >= ``dmin`` (A), F two decimals; returns the count."""
    import numpy as np

    hmax = int(cell / dmin)
    r = np.arange(-hmax, hmax + 1)
    h, k, l = (a.ravel() for a in np.meshgrid(r, r, r, indexing="ij"))
    keep = (h * h + k * k + l * l) <= (cell / dmin) ** 2
    h, k, l = h[keep], k[keep], l[keep]
    F = np.random.default_rng(seed).gamma(2.0, 150.0, h.size).round(2)
    text = "\n".join(f"{a} {b} {c} {f:.2f}" for a, b, c, f in zip(h.tolist(), k.tolist(), l.tolist(), F.tolist()))
    tmp = path + ".part"
    with open(tmp, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, path)
    return int(h.size)


def cell_argv(extra: str, n: int) -> list[str]:
    pixel = 204.8 / n
    q, q3 = n // 4, 3 * n // 4 - 1
    return shlex.split(BASE.format(n=n, pixel=f"{pixel:g}") + " " + extra.format(q=q, q3=q3))


def timed(cmd, cwd, env, cpu: list | None = None) -> float:
    """Wall seconds of the process ``cmd``; its CPU seconds (user + system) appended to ``cpu``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed: {(proc.stderr or proc.stdout)[-800:]}")
    if cpu is not None:
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return elapsed


def nbjax_cmd(tree: str, argv, mode: str, pycache: str) -> tuple[list[str], dict]:
    # bytecode cached (in the work folder) as an installed package has it: a checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would compile every nbjax module from source in every process
    env = dict(os.environ, PYTHONPATH=tree, PYTHONPYCACHEPREFIX=pycache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmd = [sys.executable, "-m", "nbjax"] + argv + (["--c-parity"] if mode == "c-parity" else [])
    return cmd, env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="512^2 pixels, 200 000 reflections, four cells")
    ap.add_argument("--mode", choices=("spec", "c-parity", "both"), default="both")
    ap.add_argument("--only", default="", help="comma-separated cell numbers (1-based) to run")
    ap.add_argument("--repeat", type=int, default=1, help="warm nbjax runs per cell (best is kept)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold nbjax run (fill the caches untimed)")
    ap.add_argument("--compare-with", metavar="DIR", help="another nbjax tree, its warm runs alternating with this one")
    ap.add_argument("--workdir", help="keep the generated inputs here (default: a temporary folder)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    n = 512 if args.quick else 2048
    cell, dmin = (150.0, 4.1) if args.quick else (150.0, 1.92)
    c_bins = {"c-parity": os.environ.get("NB_C_BIN", "/tmp/nbc/nanoBragg"),
              "spec": os.environ.get("NB_C_SPEC_BIN", "/tmp/nbc/nanoBragg_spec")}
    modes = ("spec", "c-parity") if args.mode == "both" else (args.mode,)
    chosen = [(i + 1, name, extra) for i, (name, (extra, quick)) in enumerate(CELLS.items())
              if (not args.quick or quick) and (not args.only or str(i + 1) in args.only.split(","))]

    work = args.workdir or tempfile.mkdtemp(prefix="nbjax_coverage_")
    os.makedirs(work, exist_ok=True)
    hkl = os.path.join(work, "big.hkl")
    t0 = time.perf_counter()
    count = make_hkl(hkl, cell, dmin)
    made = time.perf_counter() - t0
    header = (f"# {count} reflections, {os.path.getsize(hkl) / 1e6:.1f} MB ({made:.1f} s to write); "
              f"{n}x{n} pixels; {work}")
    if not args.json:
        print(header, flush=True)

    rows = []
    for mode in modes:
        cache = os.path.join(work, f"cache-{mode}")
        other_cache = os.path.join(work, f"cache-other-{mode}")
        for number, name, extra in chosen:
            argv = cell_argv(extra, n)
            row = dict(cell=f"{number} {name}", mode=mode)
            cdir, jdir, odir = (os.path.join(work, f"{mode}-{number}-{s}") for s in ("c", "nbjax", "other"))
            for d in (cdir, jdir, odir):
                os.makedirs(d, exist_ok=True)
                link = os.path.join(d, "big.hkl")
                if not os.path.exists(link):
                    os.symlink(hkl, link)
            c_env = dict(os.environ, OMP_NUM_THREADS="1")
            c_cpu = []
            row["c"] = timed([c_bins[mode]] + argv + ["-noprogress"], cdir, c_env, c_cpu)
            row["c_cpu"] = c_cpu[0]
            cmd, env = nbjax_cmd(ROOT, argv, mode, os.path.join(work, "pycache"))
            # cold: an empty cache folder of its own (HKL parse + compile); then the shared warm cache
            cold_cache = os.path.join(work, f"cold-{mode}-{number}")
            shutil.rmtree(cold_cache, ignore_errors=True)
            cold = timed(cmd, jdir, dict(env, NBJAX_CACHE_DIR=cold_cache))
            _wait_for_builds(cold_cache)
            shutil.rmtree(cold_cache, ignore_errors=True)
            if not args.no_cold:
                row["cold"] = cold
            timed(cmd, jdir, dict(env, NBJAX_CACHE_DIR=cache))  # fills the shared cache
            if args.compare_with:
                ocmd, oenv = nbjax_cmd(os.path.abspath(args.compare_with), argv, mode, os.path.join(work, "pycache"))
                timed(ocmd, odir, dict(oenv, NBJAX_CACHE_DIR=other_cache))
            _wait_for_builds(cache)
            if args.compare_with:
                _wait_for_builds(other_cache)
            warm, other, warm_cpu, other_cpu = [], [], [], []
            for _ in range(args.repeat):
                if args.compare_with:
                    other.append(timed(ocmd, odir, dict(oenv, NBJAX_CACHE_DIR=other_cache), other_cpu))
                warm.append(timed(cmd, jdir, dict(env, NBJAX_CACHE_DIR=cache), warm_cpu))
            row["warm"], row["warm_cpu"] = min(warm), min(warm_cpu)
            if other_cpu:
                row["other_cpu"] = min(other_cpu)
            row["speedup"] = row["c"] / row["warm"]
            if other:
                row["other"] = min(other)
                row["other_speedup"] = row["c"] / row["other"]
            if args.compare_with:  # every file the two trees wrote, byte for byte
                names = sorted(set(os.listdir(jdir)) | set(os.listdir(odir)) - {"big.hkl"})
                row["same_files"] = all(_same(os.path.join(jdir, f), os.path.join(odir, f)) for f in names)
            row["r"], row["max_rel_err"] = agreement(os.path.join(cdir, "floatimage.bin"),
                                                     os.path.join(jdir, "floatimage.bin"))
            rows.append(row)
            if not args.json:
                print(_format(row), flush=True)

    # a second read of the big file: a fresh process, the parse cached (a cache folder that already has it)
    hkl_cache = os.path.join(work, f"cache-{modes[0]}")
    env = dict(os.environ, PYTHONPATH=ROOT, NBJAX_CACHE_DIR=hkl_cache)
    seconds = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", HKL_CHILD, hkl], env=env, cwd=work, capture_output=True,
                             text=True, check=True)
        seconds.append(float(out.stdout.split()[1]))
    summary = dict(reflections=count, hkl_second_read=min(seconds), machine=machine())
    for mode in modes:
        sel = [r for r in rows if r["mode"] == mode]
        summary[f"aggregate {mode}"] = sum(r["c"] for r in sel) / sum(r["warm"] for r in sel)
        if args.compare_with:
            summary[f"aggregate {mode} other"] = sum(r["c"] for r in sel) / sum(r["other"] for r in sel)
    if args.json:
        print(json.dumps(dict(header=header, rows=rows, summary=summary), indent=1))
    else:
        for mode in modes:
            sel = [r for r in rows if r["mode"] == mode]
            line = (f"aggregate {mode}: C {sum(r['c'] for r in sel):.1f} s, nbjax warm "
                    f"{sum(r['warm'] for r in sel):.1f} s: {summary[f'aggregate {mode}']:.2f}x "
                    f"(CPU s: C {sum(r['c_cpu'] for r in sel):.1f}, nbjax {sum(r['warm_cpu'] for r in sel):.1f}"
                    + (f", other {sum(r['other_cpu'] for r in sel):.1f}" if args.compare_with else "") + ")")
            if args.compare_with:
                line += (f"; {args.compare_with} {sum(r['other'] for r in sel):.1f} s: "
                         f"{summary[f'aggregate {mode} other']:.2f}x")
            print(line)
        print(f"second read_hkl of the {count}-reflection file (cached, fresh process): {min(seconds):.3f} s")
        m = machine()
        print(f"\nmachine: {m['cpu']}, {m['cores']} cores; jax {m['jax']} on {m['devices']}; python {m['python']}; "
              f"load average {m['loadavg']}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


def _wait_for_builds(folder: str, limit_s: float = 600.0) -> None:
    """Wait while a background build (the noise kernels' compiled module) holds a lock in ``folder``.

    The first noise image in a cache folder starts that build in a detached
    process; timing the next runs while it compiles would charge its CPU to
    whichever tree runs then.
    """
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        if not glob.glob(os.path.join(folder, "*.lock")):
            return
        time.sleep(0.5)


def _same(a: str, b: str) -> bool:
    try:
        with open(a, "rb") as x, open(b, "rb") as y:
            return x.read() == y.read()
    except OSError:
        return False


_HEADER = [False]


def _format(row) -> str:
    cols = [("cell", 28, "{}"), ("mode", 8, "{}"), ("c", 8, "{:.2f}"), ("c_cpu", 8, "{:.2f}"), ("cold", 8, "{:.2f}"),
            ("warm", 8, "{:.2f}"), ("warm_cpu", 8, "{:.2f}"), ("other_cpu", 9, "{:.2f}"),
            ("speedup", 8, "{:.2f}x"), ("other", 8, "{:.2f}"), ("other_speedup", 13, "{:.2f}x"),
            ("r", 12, "{:.9f}"), ("max_rel_err", 11, "{:.2e}"),
            ("same_files", 10, "{}")]
    line = "  ".join((fmt.format(row[k]).ljust(w) if i < 2 else fmt.format(row[k]).rjust(w)) if k in row
                     else "-".rjust(w) for i, (k, w, fmt) in enumerate(cols))
    if not _HEADER[0]:
        _HEADER[0] = True
        head = "  ".join(k.ljust(w) if i < 2 else k.rjust(w) for i, (k, w, _) in enumerate(cols))
        return head + "\n" + line
    return line


if __name__ == "__main__":
    main()
