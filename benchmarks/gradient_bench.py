"""nbjax gradients: what one gradient costs next to a forward render.

usage: python benchmarks/gradient_bench.py [--json] [--only NAME,...] [--repeat N] [--quick]

For every scene (a nanoBragg command line on the bundled inputs, float64) it
measures, each measurement in a fresh subprocess so that its peak RSS is its
own:

* ``forward``: the steady-state time of one render, ``simulate(params, config)``
  (best of at least ``--repeat`` calls after a warm-up, and of 2 s of calls);
* ``adjoint``: the steady-state time of ``value_and_grad`` of a Poisson
  deviance w.r.t. every refinable group at once (cell, misset, N, distance,
  beam centre, detector rotations, two-theta, wavelength, scale, mosaic: the
  vector ``nbjax fit --refine all`` would move), reverse mode through the
  adjoint render (``gradient=Adjoint()``, what ``nbjax fit`` uses);
* ``plain``: the same through plain autodiff of the engine's scans with the
  row blocks checkpointed (``gradient=Autodiff(checkpoint=True)``);

and for each: the compile time, XLA's scratch ("temp") memory of the compiled
program, and the peak RSS of the process (which includes JAX itself, the
compiler and the set-up).  ``ratio`` is gradient time / forward time.

The observed image is the forward image scaled by 1.05 plus 0.5 photon, so the
gradient is not zero; the model gets a pedestal of 1 photon.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import CHILD_PRELUDE, machine  # noqa: E402  (the shared child prelude and machine description)
ROOT = os.path.dirname(HERE)
INPUTS = os.path.join(ROOT, "tests", "golden", "inputs")

# the scene of the fit issue (no -oversample: nanoBragg's automatic choice, 8 here)
FIT = ("-hkl small.hkl -cell 78 84 92 88 93 91 -misset 4 -7 11 -lambda 1.2 -N 9 -detpixels 128 -pixel 0.4 "
       "-distance 110 -Xbeam 26.0 -Ybeam 25.1 -phi 0 -osc 0.5 -phisteps 3 -nonoise")

SCENES = {
    "fit 128^2": (FIT, {}),
    # the same field of view in 512^2 pixels of 0.1 mm (automatic oversampling: 2)
    "fit 512^2 (0.1 mm pixels)": (FIT.replace("-detpixels 128 -pixel 0.4", "-detpixels 512 -pixel 0.1"), {}),
    "fit 128^2 + 4 domains, 2 layers, os 2": (
        FIT + " -oversample 2 -mosaic 0.3 -mosaic_domains 4 -detector_thick 100 -detector_abs 400 "
              "-detector_thicksteps 2", {"slow": True}),
    # 16x the pixels of the first scene at its oversampling (8): 50 M evaluations.  Plain autodiff
    # keeps a whole 256-row block's residuals (~16 GB here), so only the adjoint is measured.
    "fit 512^2 (0.4 mm pixels, os 8)": (FIT.replace("-detpixels 128", "-detpixels 512"),
                                        {"slow": True, "skip": ("plain",)}),
    # the shape of a real fit: a megapixel image, no oversampling, so the per-pixel work of the
    # gradient (prefactors, rays) weighs more than the per-evaluation work
    "fit 1024^2 (0.05 mm pixels, os 1)": (FIT.replace("-detpixels 128 -pixel 0.4", "-detpixels 1024 -pixel 0.05")
                                          + " -oversample 1", {"slow": True, "skip": ("plain",)}),
}

MEASUREMENTS = ("forward", "adjoint", "plain")

CHILD = CHILD_PRELUDE + r"""
from nbjax import groups as G
from nbjax import params as P

argv, kind, repeat, min_total = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
model = P.from_args(argv)
params, config = model.params, model.config
groups = G.GROUPS
theta0 = G.get_groups(params, groups, config)
unpack = lambda theta: G.set_groups(params, groups, config, theta)

if kind == "forward":
    fun = jax.jit(lambda theta: P.simulate_core(unpack(theta), config))
    args = (theta0,)
else:
    observed = jnp.asarray(np.load("observed.npy"))

    def loss(theta):
        gradient = P.Adjoint() if kind == "adjoint" else P.Autodiff(checkpoint=True)
        mu = P.simulate_core(unpack(theta), config, gradient=gradient) + 1.0
        return jnp.sum(mu - observed + observed * jnp.log(observed / mu))

    fun = jax.jit(jax.value_and_grad(loss))
    args = (theta0,)

t0 = time.perf_counter()
compiled = fun.lower(*args).compile()
compile_s = time.perf_counter() - t0
memory = compiled.memory_analysis()
temp_mb = getattr(memory, "temp_size_in_bytes", 0) / 2**20 if memory is not None else float("nan")
out = jax.block_until_ready(compiled(*args))
times = []
while len(times) < repeat or (sum(times) < min_total and len(times) < 100):
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
result = dict(steady=min(times), compile=compile_s, temp_mb=temp_mb,
              rss_mb=peak_rss_mb())
if kind == "forward":
    image = np.asarray(out)
    np.save("observed.npy", 1.05 * image + 0.5)
    r = config.render
    steps = params.beam.incident.shape[0] * params.crystal.mosaic_axes.shape[0] * params.crystal.phi_rad.shape[0]
    result.update(shape=list(image.shape), oversample=r.oversample, thicksteps=r.thicksteps, block_rows=r.block_rows,
                  evaluations=image.size * steps * r.oversample ** 2 * r.thicksteps)
else:
    value, grad = out
    grad = np.asarray(grad)
    result.update(finite=bool(np.isfinite(float(value)) and np.all(np.isfinite(grad))), n_params=int(grad.size))
print(json.dumps(result))
"""


def run_child(argv, kind, repeat, min_total, cwd):
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(argv), kind, str(repeat), str(min_total)], cwd=cwd,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(name, command, repeat, min_total, skip=()):
    argv = shlex.split(command)
    row = dict(scene=name)
    with tempfile.TemporaryDirectory() as tmp:
        for f in os.listdir(INPUTS):
            os.symlink(os.path.join(INPUTS, f), os.path.join(tmp, f))
        for kind in MEASUREMENTS:  # forward first: it writes the observed image
            if kind not in skip:
                row[kind] = run_child(argv, kind, repeat, min_total, tmp)
    forward = row["forward"]["steady"]
    for kind in MEASUREMENTS[1:]:
        if kind in row:
            row[kind]["ratio"] = row[kind]["steady"] / forward
    return row


COLUMNS = [("scene", 40), ("pixels", 8), ("os", 3), ("evals", 7), ("what", 8), ("time s", 8), ("ratio", 6),
           ("compile s", 9), ("temp MB", 8), ("peak RSS MB", 11)]


def _header():
    return "  ".join(k.ljust(w) if i == 0 else k.rjust(w) for i, (k, w) in enumerate(COLUMNS))


def _format(row):
    f = row["forward"]
    lines = []
    for i, kind in enumerate(MEASUREMENTS):
        m = row.get(kind)
        cells = [row["scene"] if i == 0 else "", "x".join(map(str, f["shape"])) if i == 0 else "",
                 str(f["oversample"]) if i == 0 else "", "%.3g" % f["evaluations"] if i == 0 else "", kind]
        if m is None:
            cells += ["skipped", "", "", "", ""]
        else:
            cells += ["%.3f" % m["steady"], "-" if kind == "forward" else "%.2f" % m["ratio"],
                      "%.1f" % m["compile"], "%.1f" % m["temp_mb"], "%.0f" % m["rss_mb"]]
        if m is not None and kind != "forward" and not m.get("finite", True):
            cells[4] += "!"
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, (_, w)) in enumerate(zip(cells, COLUMNS))))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--only", default="", help="comma-separated scene names, or one whole name (names may hold commas)")
    ap.add_argument("--repeat", type=int, default=3, help="least number of timed calls after the warm-up "
                    "(more until 2 s are spent; the best is reported)")
    ap.add_argument("--quick", action="store_true", help="skip the slow scenes; one timed call (0.3 s of calls)")
    args = ap.parse_args()
    repeat = 1 if args.quick else max(args.repeat, 1)
    rows = []
    for name, (command, opts) in SCENES.items():
        if args.only and name != args.only and name not in args.only.split(","):
            continue
        if args.quick and opts.get("slow") and not args.only:
            continue
        row = measure(name, command, repeat, 0.3 if args.quick else 2.0, opts.get("skip", ()))
        rows.append(row)
        if not args.json:
            if len(rows) == 1:
                print(_header())
            print(_format(row), flush=True)
    if args.json:
        print(json.dumps(dict(machine=machine(), rows=rows), indent=1))
    else:
        m = machine()
        print(f"\nmachine: {m['cpu']}, {m['cores']} cores (load {m['loadavg']}); jax {m['jax']} on {m['devices']}; "
              f"python {m['python']}")
        print("gradient: value_and_grad of a Poisson deviance w.r.t. all refinable groups "
              "(%s); ratio = gradient time / forward time" % ", ".join(_groups()))


def _groups():
    try:
        from nbjax.params import GROUPS

        return GROUPS
    except Exception:  # pragma: no cover
        return ("?",)


if __name__ == "__main__":
    main()
