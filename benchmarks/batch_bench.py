"""Many images: ``nbjax series`` / ``nbjax stills`` against a shell loop of nanoBragg.c processes.

usage: python benchmarks/batch_bench.py [--repeat N] [--quick] [--threads T] [--json]

Two scenarios, each measured end to end (process start to the last file written):

* series: 60 frames of 512x512 (``-N 10``, 2 phi steps of 0.05 deg per frame)
  as one ``nbjax series --frames 60 --c-parity`` against 60 nanoBragg.c
  processes run one after another by a shell loop, each with the frame's
  ``-phi``;
* stills: 200 stills of 256x256 as ``nbjax stills --shots 200 --seed 1``
  against 200 nanoBragg.c processes, one per line of the jobs file nbjax wrote.

nanoBragg.c runs with ``OMP_NUM_THREADS=T`` (default 2).  The two programs are
timed alternately (C, nbjax, C, nbjax, ...) so that a shared machine loads
both alike; the table gives every pair's speed-up (C time / nbjax time),
frames per second and the peak RSS (the largest of the C processes; the nbjax
process).  nbjax runs twice per pair: cold (``--no-compile-cache``: it pays
every compile) and warm (the persistent compilation cache filled by an
untimed first run, as for a user's second batch).  The first and last frames are compared
(Pearson r, max relative error above 1e-3 of the maximum) to show both programs
rendered the same images.  C binary: $NB_C_BIN or /tmp/nbc/nanoBragg; the
script never builds it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from run import INPUTS, agreement, machine  # noqa: E402

COMMON = ("-mat A.mat -hkl scaled.hkl -lambda 0.9768 -distance 150 -pixel 0.172 -N 10 -oversample 1 "
          "-nonoise -nopgm -noprogress")
SERIES = COMMON + " -detpixels 512 -phi 0 -osc 0.1 -phisteps 2"
STILLS = COMMON + " -detpixels 256"

# runs a command and prints the peak RSS (MB) of its largest descendant
MEASURE = r"""
import resource, subprocess, sys, time
t0 = time.perf_counter()
code = subprocess.call(sys.argv[1:])
elapsed = time.perf_counter() - t0
print(code, elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0)
"""


def measured(cmd, cwd, env):
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], cwd=cwd, env=env, capture_output=True, text=True)
    code, elapsed, rss = out.stdout.split()[-3:]
    if int(code) != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {out.stderr[-800:]}")
    return float(elapsed), float(rss)


def c_loop(binary, common, lines, directory):
    """A shell script running nanoBragg once per job line (frame i -> c_00001.bin, ...)."""
    script = ["set -e"]
    for i, line in enumerate(lines, start=1):
        script.append(f"{shlex.quote(binary)} {common} {line} -floatfile c_{i:05d}.bin > /dev/null")
    path = os.path.join(directory, "loop.sh")
    with open(path, "w") as f:
        f.write("\n".join(script) + "\n")
    return ["bash", path]


def scenario(name, binary, threads, repeat, count):
    from nbjax import batch

    with tempfile.TemporaryDirectory() as scratch:
        for f in ("A.mat", "scaled.hkl"):
            os.symlink(os.path.join(INPUTS, f), os.path.join(scratch, f))
        if name == "series":
            common = SERIES
            jobs = batch.series_lines(shlex.split(common), count)
            nb = ["nbjax", "series", "--frames", str(count)]
        else:
            common = STILLS
            jobs = batch.stills_lines(count, 1)
            nb = ["nbjax", "stills", "--shots", str(count), "--seed", "1"]
        lines = [" ".join(shlex.quote(t) for t in job.tokens) for job in jobs]
        nb += shlex.split(common) + ["-floatfile", "nb_#####.bin", "--c-parity", "--quiet"]
        nb = [shutil.which("nbjax") or "nbjax"] + nb[1:]
        c_env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        nb_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                      NBJAX_CACHE_DIR=os.path.join(scratch, "cache"))
        measured(nb, scratch, nb_env)  # fills the compilation cache of the warm runs
        rows = []
        for _ in range(repeat):
            c_time, c_rss = measured(c_loop(binary, common, lines, scratch), scratch, c_env)
            cold, nb_rss = measured(nb + ["--no-compile-cache"], scratch, nb_env)
            warm, _ = measured(nb, scratch, nb_env)
            rows.append(dict(c_s=c_time, nbjax_s=cold, nbjax_warm_s=warm, speedup=c_time / cold,
                             speedup_warm=c_time / warm, c_fps=count / c_time, nbjax_fps=count / cold,
                             nbjax_warm_fps=count / warm, c_rss_mb=c_rss, nbjax_rss_mb=nb_rss))
        checks = [agreement(os.path.join(scratch, f"c_{i:05d}.bin"), os.path.join(scratch, f"nb_{i:05d}.bin"))
                  for i in (1, count)]
    return dict(scenario=name, images=count, command=" ".join(shlex.quote(t) for t in nb[1:]), runs=rows,
                agreement=[dict(pearson_r=r, max_rel_err=e) for r, e in checks])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="alternating pairs per scenario")
    parser.add_argument("--quick", action="store_true", help="12 frames and 40 stills instead of 60 and 200")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS for nanoBragg.c")
    parser.add_argument("--only", choices=("series", "stills"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    binary = os.environ.get("NB_C_BIN", "/tmp/nbc/nanoBragg")
    if not os.access(binary, os.X_OK):
        sys.exit(f"no nanoBragg binary at {binary} (set NB_C_BIN)")
    sizes = {"series": 12 if args.quick else 60, "stills": 40 if args.quick else 200}
    names = [args.only] if args.only else ["series", "stills"]
    results = [scenario(n, binary, args.threads, args.repeat, sizes[n]) for n in names]
    m = machine()
    if args.json:
        print(json.dumps(dict(machine=m, results=results), indent=1))
        return
    print(f"{'scenario':<8} {'images':>6} {'C s':>8} {'nbjax s':>8} {'warm s':>7} {'speed-up':>8} {'warm':>6}"
          f" {'C fps':>7} {'nbjax fps':>9} {'warm fps':>8} {'C MB':>6} {'nbjax MB':>8}")
    for res in results:
        for row in res["runs"]:
            print(f"{res['scenario']:<8} {res['images']:>6} {row['c_s']:>8.2f} {row['nbjax_s']:>8.2f}"
                  f" {row['nbjax_warm_s']:>7.2f} {row['speedup']:>8.2f} {row['speedup_warm']:>6.2f}"
                  f" {row['c_fps']:>7.2f} {row['nbjax_fps']:>9.2f} {row['nbjax_warm_fps']:>8.2f}"
                  f" {row['c_rss_mb']:>6.0f} {row['nbjax_rss_mb']:>8.0f}")
        worst = max(a["max_rel_err"] for a in res["agreement"])
        print(f"         first/last image vs C: r >= {min(a['pearson_r'] for a in res['agreement']):.7f},"
              f" max rel err {worst:.2e}; nbjax {res['command']}")
    print(f"\nmachine: {m['cpu']}, {m['cores']} cores; jax {m['jax']} on {m['devices']}; python {m['python']};"
          f" load {m['loadavg']}; nanoBragg.c with OMP_NUM_THREADS={args.threads}")


if __name__ == "__main__":
    main()
