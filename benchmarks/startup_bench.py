"""End-to-end time of small ``nbjax`` commands (process start to files written), two trees side by side.

    python benchmarks/startup_bench.py [--a /path/to/other/tree] [--repeat 5] [--only NAMES]

Runs each command in fresh processes, alternating tree A (``--a``, default:
the installed nbjax) and this tree (B), after one warm-up run of each that
fills the caches (JAX's compilation cache, the exported renderer, the
compiled noise kernels: ``$NBJAX_CACHE_DIR``, default a folder under /tmp
kept between invocations).  With ``NB_C_BIN`` set, nanoBragg.c runs the same
flags too.  Prints the median and range of the wall time and the median CPU
time (user + system of the child) per command, and the load average before
and after: on a shared machine compare the two trees' columns, not the
absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
INPUTS = Path(os.environ.get("NBJAX_GOLDEN_INPUTS", "/work/shared/golden/inputs"))
SUPERVISOR = Path(os.environ.get("NBJAX_GOLDEN_CASES", "/work/shared/golden/cases")) / "supervisor" / "args.txt"

SMALL = "-mat A.mat -hkl scaled.hkl -lambda 0.9768 -distance 150 -pixel 0.172 -N 10 -detpixels 512 -noprogress"
COMMANDS = {
    "512² -N 10 (noise image)": SMALL + " -seed 3",
    "512² -N 10 -nonoise": SMALL + " -nonoise",
}


def _commands():
    commands = dict(COMMANDS)
    if SUPERVISOR.exists():
        args = SUPERVISOR.read_text().split()
        commands["supervisor -nonoise"] = " ".join(args if "-nonoise" in args else args + ["-nonoise"])
    return commands


def _run(argv, cwd, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ...: exit {done.returncode}: {done.stderr.strip()[-400:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _wait_for_background_builds(cache, limit_s=300.0):
    """Wait while a warm-up's background build of the noise kernels runs (it holds a .lock file)."""
    deadline = time.time() + limit_s
    while time.time() < deadline and any(p.suffix == ".lock" for p in Path(cache).glob("nbjax-noise-*")):
        time.sleep(0.5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", default=None, help="package root of tree A (default: the installed nbjax)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default=None, help="comma-separated command names")
    args = parser.parse_args(argv)
    commands = _commands()
    if args.only:
        commands = {k: v for k, v in commands.items() if any(o.strip() in k for o in args.only.split(","))}
    cache = os.environ.get("NBJAX_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "nbjax-startup-bench-cache")
    work = tempfile.mkdtemp(prefix="nbjax-startup-")
    for f in INPUTS.iterdir():
        os.symlink(f, os.path.join(work, f.name))
    base = dict(os.environ, NBJAX_CACHE_DIR=cache)
    trees = {"A": dict(base, PYTHONPATH=args.a or ""), "B": dict(base, PYTHONPATH=str(HERE))}
    runners = {name: [sys.executable, "-m", "nbjax"] for name in trees}
    c_bin = os.environ.get("NB_C_BIN")
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; cache {cache}")
    print(f"A = {args.a or 'installed nbjax'}, B = {HERE}; {args.repeat} alternating runs each after a warm-up\n")
    print("| command | A wall median (range) s | B wall median (range) s | A CPU s | B CPU s | B/A wall | C wall s |")
    print("|---|---|---|---|---|---|---|")
    for name, flags in commands.items():
        cargs = shlex.split(flags)
        results = {t: [] for t in trees}
        for t, env in trees.items():
            _run(runners[t] + cargs, work, env)  # warm-up: fills the caches
        _wait_for_background_builds(cache)
        for _ in range(args.repeat):
            for t, env in trees.items():
                results[t].append(_run(runners[t] + cargs, work, env))
        c_text = "–"
        if c_bin:
            c_env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
            c_text = f"{statistics.median(_run([c_bin] + cargs, work, c_env)[0] for _ in range(3)):.2f}"
        wall = {t: [w for w, _ in r] for t, r in results.items()}
        cpu = {t: statistics.median(c for _, c in r) for t, r in results.items()}
        med = {t: statistics.median(w) for t, w in wall.items()}
        print(f"| {name} | {med['A']:.2f} ({min(wall['A']):.2f}–{max(wall['A']):.2f}) | "
              f"{med['B']:.2f} ({min(wall['B']):.2f}–{max(wall['B']):.2f}) | {cpu['A']:.2f} | {cpu['B']:.2f} | "
              f"{med['B'] / med['A']:.2f} | {c_text} |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
