"""nbjax against nanoBragg.c: a table of timings on this machine.

usage: python benchmarks/run.py [--json] [--only NAME,...] [--repeat N] [--quick]

For every scenario (nanoBragg command lines on the bundled inputs) it measures,
each scenario in a fresh subprocess so that peak memory is its own:

* nbjax steady-state render time (best of ``--repeat`` after a warm-up) and the
  compile time (first call minus steady state), float64 unless the name says f32;
* the end-to-end ``nbjax`` command (process start to files written), cold
  (empty persistent compilation cache) and warm (cache filled by the cold run);
* pixel·step evaluations per second and peak RSS of the process;
* when ``NB_C_BIN`` names a nanoBragg binary: the C program's time for the same
  command (OMP_NUM_THREADS = the cores JAX uses), the speed-up, and the
  agreement of the two float images (Pearson r, max relative error on pixels
  above 1e-3 of the maximum), nbjax running with ``--c-parity``;
* for the gradient scenario: the time of the value and gradient of a Poisson fit
  loss with respect to the cell, misset, N, distance and beam centre (adjoint
  render), the forward loss alone, and their ratio (``grad_ratio``).

The script never builds nanoBragg; point NB_C_BIN at a binary you built.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INPUTS = os.path.join(ROOT, "tests", "golden", "inputs")

SUPERVISOR = (
    "-mat A.mat -hkl scaled.hkl -nonoise -nointerpolate -oversample 1 -exposure 1 -flux 1e18 -beamsize 1.0 "
    "-spindle_axis -1 0 0 -Xbeam 217.742295 -Ybeam 213.907080 -distance 231.274660 -lambda 0.976800 "
    "-pixel 0.172 -detpixels_x 2463 -detpixels_y 2527 -odet_vector -0.000088 0.004914 -0.999988 "
    "-sdet_vector -0.005998 -0.999970 -0.004913 -fdet_vector 0.999982 -0.005998 -0.000118 "
    "-pix0_vector_mm -216.336293 215.205512 -230.200866 -beam_vector 0.00051387949 0.0 -0.99999986 "
    "-Na 36 -Nb 47 -Nc 29 -osc 0.1 -phi 0 -phisteps 10 -detector_rotx 0 -detector_roty 0 "
    "-detector_rotz 0 -twotheta 0"
)

SCENARIOS = {
    "supervisor": (SUPERVISOR, {}),
    "supervisor --c-parity": (SUPERVISOR, {"mode": "c-parity"}),
    "supervisor f32": (SUPERVISOR, {"precision": "single"}),
    "1024^2 10 domains x 9 sources x os2 x 3 layers": (
        "-hkl small.hkl -cell 100 100 100 90 90 90 -misset 3 7 11 -lambda 1.2 -N 10 -detpixels 1024 "
        "-pixel 0.1 -distance 150 -mosaic 0.5 -mosaic_domains 10 -divergence 0.5 -divsteps 3 -square_div "
        "-oversample 2 -detector_thick 100 -detector_abs 500 -detector_thicksteps 3 -nonoise", {}),
    "4096^2 simple cubic": (
        "-default_F 100 -cell 100 100 100 90 90 90 -lambda 1.0 -N 10 -detpixels 4096 -pixel 0.05 "
        "-distance 200 -oversample 1 -nonoise", {}),
    "4096^2 oversample 4": (
        "-default_F 100 -cell 100 100 100 90 90 90 -lambda 1.0 -N 10 -detpixels 4096 -pixel 0.05 "
        "-distance 200 -oversample 4 -nonoise", {"repeat": 1, "slow": True}),
    "tricubic interpolation": (
        "-hkl small.hkl -cell 100 100 100 90 90 90 -misset 3 7 11 -lambda 1.2 -N 2 -detpixels 512 "
        "-pixel 0.1 -distance 200 -interpolate -oversample 1 -nonoise", {}),
    "thickness/absorption": (
        "-hkl small.hkl -cell 100 100 100 90 90 90 -lambda 1.2 -N 8 -detpixels 1024 -pixel 0.1 "
        "-distance 100 -twotheta 10 -detector_thick 200 -detector_abs 80 -detector_thicksteps 3 "
        "-oversample 1 -nonoise", {}),
    "fit-loss gradient 512^2": (
        "-hkl small.hkl -cell 78 84 92 88 93 91 -misset 4 -7 11 -lambda 1.2 -N 9 -detpixels 512 -pixel 0.1 "
        "-distance 110 -Xbeam 26.0 -Ybeam 25.1 -phi 0 -osc 0.5 -phisteps 3 -nonoise", {"gradient": True}),
}

# what every measuring child process starts with (float64, its own peak RSS)
CHILD_PRELUDE = r"""
import json, os, resource, shlex, sys, time
def peak_rss_mb():
    # VmHWM: this process's own high-water mark (ru_maxrss can carry the parent's over fork+exec)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
try:  # the vector width the nbjax command asks XLA:CPU for (where this nbjax has it)
    from nbjax.commands.options import tune_xla_cpu
    tune_xla_cpu()
except ImportError:
    pass
import numpy as np, jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
"""

CHILD = CHILD_PRELUDE + r"""
from nbjax import experiment
from nbjax.renderer import engine
argv, opts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
mode = opts.get("mode", "spec")
exp = experiment.build(argv, accumulation=mode, phi_carryover=mode,
                       evaluation_dtype="float32" if opts.get("precision") == "single" else None)
cfg = exp.config
t0 = time.perf_counter()
image = np.asarray(engine.render(exp.scene, cfg, exp.mask).image)
first = time.perf_counter() - t0
times = []
for _ in range(opts.get("repeat", 3)):
    t0 = time.perf_counter()
    image = np.asarray(engine.render(exp.scene, cfg, exp.mask).image)
    times.append(time.perf_counter() - t0)
steady = min(times) if times else first
rows, width = cfg.roi_shape
evaluations = rows * width * exp.header["steps"] * cfg.thicksteps
np.asarray(image, np.float32).tofile("nbjax.bin")
print(json.dumps(dict(steady=steady, compile=max(first - steady, 0.0), evals=evaluations,
                      rss_mb=peak_rss_mb(),
                      shape=list(image.shape))))
"""

# the gradient of a Poisson fit loss with respect to the groups `nbjax fit` refines
GRAD_CHILD = CHILD_PRELUDE + r"""
from nbjax import groups as G
from nbjax import params as P
argv, opts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
model = P.from_args(argv)
params, config = model.params, model.config
groups = ("cell", "misset", "N", "distance", "beam_center")
observed = np.asarray(P.simulate(params, config)) * 1.01
theta0 = G.get_groups(params, groups, config)

def loss(theta):
    mu = P.simulate_core(G.set_groups(params, groups, config, theta), config, gradient=P.Adjoint()) + 1e-6
    return jnp.sum(mu - observed * jnp.log(mu))

forward = jax.jit(lambda th: loss(th))
gradient = jax.jit(jax.value_and_grad(loss))
def best(fn, n):
    t0 = time.perf_counter(); jax.block_until_ready(fn(theta0)); first = time.perf_counter() - t0
    times = []
    for _ in range(n):
        t0 = time.perf_counter(); jax.block_until_ready(fn(theta0)); times.append(time.perf_counter() - t0)
    return first, min(times)
f_first, f_steady = best(forward, opts.get("repeat", 3))
g_first, g_steady = best(gradient, opts.get("repeat", 3))
rows, width = config.render.roi_shape
evals = rows * width * len(np.asarray(params.crystal.phi_rad)) * config.render.oversample ** 2
print(json.dumps(dict(steady=g_steady, compile=max(g_first - g_steady, 0.0), evals=evals, forward=f_steady,
                      grad_ratio=g_steady / f_steady,
                      rss_mb=peak_rss_mb())))
"""


def run_child(argv, opts, cwd):
    child = GRAD_CHILD if opts.get("gradient") else CHILD
    proc = subprocess.run([sys.executable, "-c", child, json.dumps(argv), json.dumps(opts)], cwd=cwd,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_command(cmd, cwd, env=None):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {(proc.stderr or proc.stdout)[-500:]}")
    return elapsed


def agreement(reference, test):
    import numpy as np

    a = np.fromfile(reference, np.float32).astype(float)
    b = np.fromfile(test, np.float32).astype(float)
    r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    strong = a > 1e-3 * a.max()
    rel = float(np.max(np.abs(b[strong] - a[strong]) / a[strong])) if strong.any() else 0.0
    return r, rel


def machine():
    try:
        import jax

        devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
        jax_version = jax.__version__
    except Exception:  # pragma: no cover
        devices, jax_version = "?", "?"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:  # pragma: no cover
        load = "?"
    return dict(cpu=cpu, cores=os.cpu_count(), jax=jax_version, devices=devices, python=platform.python_version(),
                loadavg=load)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", default="")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the slow scenarios and the CLI timings")
    args = ap.parse_args()
    c_bin = os.environ.get("NB_C_BIN")
    nbjax_cmd = shutil.which("nbjax") or ""
    rows = []
    for name, (command, opts) in SCENARIOS.items():
        if args.only and name not in args.only.split(","):
            continue
        if args.quick and opts.get("slow"):
            continue
        opts = dict(opts)
        opts.setdefault("repeat", args.repeat)
        argv = shlex.split(command)
        with tempfile.TemporaryDirectory() as tmp:
            for f in os.listdir(INPUTS):
                os.symlink(os.path.join(INPUTS, f), os.path.join(tmp, f))
            row = dict(scenario=name)
            row.update(run_child(argv, opts, tmp))
            extra = []
            if opts.get("mode") == "c-parity":
                extra.append("--c-parity")
            if opts.get("precision") == "single":
                extra += ["--precision", "single"]
            if nbjax_cmd and not args.quick and not opts.get("gradient"):
                cache = os.path.join(tmp, "cache")
                env = dict(os.environ, NBJAX_CACHE_DIR=cache)
                cli = [nbjax_cmd] + argv + ["-floatfile", "cli.bin", "-nopgm", "--quiet"] + extra
                row["cli_cold"] = time_command(cli, tmp, env)
                row["cli_warm"] = time_command(cli, tmp, env)
            if c_bin and not opts.get("gradient"):
                env = dict(os.environ, OMP_NUM_THREADS=str(os.cpu_count()))
                row["c"] = time_command([c_bin] + argv + ["-floatfile", "c.bin", "-nopgm", "-noprogress"], tmp, env)
                if opts.get("mode") != "c-parity":
                    # agreement is measured like for like: nbjax in --c-parity mode
                    run_child(argv, dict(opts, mode="c-parity", repeat=0), tmp)
                row["r"], row["max_rel_err"] = agreement(os.path.join(tmp, "c.bin"), os.path.join(tmp, "nbjax.bin"))
        row["evals_per_s"] = row["evals"] / row["steady"]
        if "c" in row:
            row["speedup"] = row["c"] / row["steady"]
        rows.append(row)
        if not args.json:
            print(_format_row(row), flush=True)
    if args.json:
        print(json.dumps(dict(machine=machine(), rows=rows), indent=1))
    else:
        m = machine()
        print(f"\nmachine: {m['cpu']}, {m['cores']} cores; jax {m['jax']} on {m['devices']}; python {m['python']}")


HEADER_PRINTED = False


def _format_row(row):
    global HEADER_PRINTED
    cols = [("scenario", 46, "{}"), ("c", 8, "{:.3f}"), ("steady", 8, "{:.3f}"), ("compile", 8, "{:.2f}"),
            ("cli_cold", 9, "{:.2f}"), ("cli_warm", 9, "{:.2f}"), ("speedup", 8, "{:.1f}x"),
            ("evals_per_s", 11, "{:.3g}"), ("rss_mb", 8, "{:.0f}"), ("r", 12, "{:.9f}"), ("max_rel_err", 11, "{:.2e}"),
            ("grad_ratio", 10, "{:.2f}x")]
    line = "  ".join(fmt.format(row[k]).rjust(w) if k in row else "-".rjust(w) for k, w, fmt in cols)
    line = line.replace(line[:46], row["scenario"].ljust(46), 1)
    if not HEADER_PRINTED:
        HEADER_PRINTED = True
        head = "  ".join(k.ljust(w) if i == 0 else k.rjust(w) for i, (k, w, _) in enumerate(cols))
        return head + "\n" + line
    return line


if __name__ == "__main__":
    main()
