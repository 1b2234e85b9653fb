"""One script for a machine with an accelerator: parity, render speed, batch throughput, gradient cost.

usage: python benchmarks/gpu_check.py [--quick] [--golden DIR] [--budget SECONDS] [--json]

Runs in one process on JAX's default device (a GPU when there is one; the CPU
otherwise, which is how it is tested) and prints one table headed by the
machine line of ``benchmarks/run.py``:

* parity: six varied golden cases (Miller-index file and misset, mosaic
  domains, a source file, tricubic interpolation, oversampling with a thick
  detector, a mask), each in both modes against its oracle -- ``--c-parity``
  against ``cases/`` (released nanoBragg.c), the default mode against
  ``cases_spec/`` -- and the 2463x2527 supervisor image in float64 (both
  modes) and in float32 evaluation (against the C oracle, with the bound of
  tests/test_precision.py: Pearson r >= 0.999999, max relative error <= 1e-3
  on pixels above 1e-3 of the maximum).  A float64 case passes at the parity
  scoreboard's STRICT level; the share of bit-identical pixels is shown;
* the supervisor's steady-state render time (best of a few after the
  compiling call), float64 and float32;
* batch throughput: ``nbjax.renderer.sharding.render_batch`` on one device
  (``jax.vmap`` of ``engine.render_core``, compiled once), over a
  batch of scenes that differ in crystal orientation (``-misset``), in frames
  per second after the compiling call, float64 and float32;
* gradient cost: ``value_and_grad`` of a Poisson deviance w.r.t. every group
  ``nbjax fit`` can refine, through the adjoint render, next to the forward
  render (as benchmarks/gradient_bench.py), float64.

Golden data: ``--golden DIR`` or ``$NBJAX_GOLDEN``, else ``../shared/golden``
next to the checkout, else the small copies in ``tests/golden`` (which lack
the supervisor image: its parity rows then say so, its timings still run).

``--quick`` shrinks everything so that the script runs on a CPU in about two
minutes: the supervisor becomes a 96x96 window around the beam (-roi; spec
mode, where pixels do not depend on the ones rendered before them), the batch
scenes 64x64, the gradient scene 32x32, and each parity case runs in one mode
(alternating).  The full run is sized for about 5 minutes on one GPU; a
``--budget`` (default 450 s) skips what would start after it, saying so.
Exit status 1 when a parity check fails.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shlex
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

PARITY_CASES = (
    "p07_triclinic_misset_hkl",  # -hkl, triclinic cell, misset
    "p17_mosaic_seeded",         # mosaic domains from the C random stream
    "p22_sourcefile",            # sources from a file
    "p27_interpolate_forced",    # tricubic interpolation
    "p29_oversample_thick",      # oversampling, detector thickness
    "p39_mask",                  # -mask image
)
SUPERVISOR_QUICK_ROI = (1216, 1311, 1216, 1311)  # 96x96 pixels around the direct beam

FIT = ("-hkl small.hkl -cell 78 84 92 88 93 91 -misset 4 -7 11 -lambda 1.2 -N 9 -detpixels 128 -pixel 0.4 "
       "-distance 110 -Xbeam 26.0 -Ybeam 25.1 -phi 0 -osc 0.5 -phisteps 3 -nonoise")
BATCH = ("-hkl small.hkl -cell 78 84 92 88 93 91 -lambda 1.2 -N 9 -detpixels 512 -pixel 0.1 -distance 110 "
         "-oversample 1 -nonoise")


def golden_dir(explicit: str | None) -> str:
    for candidate in (explicit, os.environ.get("NBJAX_GOLDEN"), os.path.join(ROOT, "..", "shared", "golden"),
                      "/work/shared/golden", os.path.join(ROOT, "tests", "golden")):
        if candidate and os.path.isdir(os.path.join(candidate, "cases")):
            return os.path.abspath(candidate)
    raise SystemExit("no golden data found (give --golden DIR)")


def reference(golden: str, name: str, oracle: str):
    import numpy as np

    path = os.path.join(golden, "cases" if oracle == "c" else "cases_spec", name, "float.bin.gz")
    if not os.path.exists(path):
        return None
    with gzip.open(path) as handle:
        return np.frombuffer(handle.read(), dtype=np.float32)


def case_argv(golden: str, name: str):
    with open(os.path.join(golden, "cases", name, "args.txt")) as handle:
        return shlex.split(handle.read())


def steady(fn, repeat: int):
    """(first call, best of ``repeat`` later calls), seconds; ``fn`` must block until done."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, min(times)


class Budget:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> bool:
        return time.perf_counter() < self.end


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: about two minutes on a CPU")
    parser.add_argument("--golden", help="golden data folder (with cases/, cases_spec/, inputs/)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds after which no new check starts")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    from nbjax import experiment
    from nbjax.renderer import engine, sharding
    from nbjax import groups as G
    from nbjax import params as P
    from nbjax.compare import metrics
    from run import machine

    golden = golden_dir(args.golden)
    budget = Budget(args.budget)
    rows = []
    failed = []
    started = time.perf_counter()

    def row(check, setting, result, seconds=None, ok=None):
        rows.append(dict(check=check, setting=setting, result=result, seconds=seconds, ok=ok))
        mark = "" if ok is None else ("ok  " if ok else "FAIL")
        secs = "" if seconds is None else f"{seconds:9.3f}"
        print(f"  {mark:4} {check:<13} {setting:<44} {secs:>9}  {result}", flush=True)
        if ok is False:
            failed.append(f"{check} {setting}")

    def skipped(check, setting):
        row(check, setting, "skipped: over the --budget")

    modes = {"c": dict(accumulation="c-parity", phi_carryover="c-parity"), "spec": {}}

    def render(argv, mode, dtype=None, roi=None):
        extra = [] if roi is None else ["-roi", *map(str, roi)]
        exp = experiment.build(list(argv) + extra, **modes[mode], evaluation_dtype=dtype)
        mask = None if exp.mask is None else jnp.asarray(exp.mask)
        result = {}

        def once():
            result["image"] = np.asarray(engine.render(exp.scene, exp.config, mask).image, dtype=np.float32)

        t0 = time.perf_counter()
        once()
        return result["image"], time.perf_counter() - t0, exp, once

    def judge(ref, image, roi=None, single=False):
        if roi is not None:
            x0, x1, y0, y1 = roi
            ref = ref.reshape(image.shape)[y0:y1 + 1, x0:x1 + 1]
            image = image[y0:y1 + 1, x0:x1 + 1]
        ref = ref.reshape(image.shape)
        m = metrics(ref, image)
        equal = float(np.mean(ref == image))
        ok = (m.pearson_r >= 0.999999 and m.max_rel_err <= 1e-3 and abs(m.sum_ratio - 1) <= 1e-4) if single \
            else bool(m.strict)
        return ok, f"r={m.pearson_r:.9f} max_rel={m.max_rel_err:.2e} equal_px={100 * equal:.3f}%"

    info = machine()
    print(f"# machine: {info['cpu']}, {info['cores']} cores, load {info['loadavg']}; devices: {info['devices']}; "
          f"jax {info['jax']}, python {info['python']}")
    print(f"# golden data: {golden}; {'--quick' if args.quick else 'full run'}")
    print(f"  {'':4} {'check':<13} {'setting':<44} {'seconds':>9}  result")

    with tempfile.TemporaryDirectory() as work:
        inputs = os.path.join(golden, "inputs")
        for name in os.listdir(inputs):
            os.symlink(os.path.join(inputs, name), os.path.join(work, name))
        home = os.getcwd()
        os.chdir(work)
        try:
            # ---- parity of six golden cases ------------------------------------------------
            for i, name in enumerate(PARITY_CASES):
                for mode in (("c", "spec") if not args.quick else (("c", "spec")[i % 2],)):
                    setting = f"{name} {'--c-parity' if mode == 'c' else 'spec'}"
                    if not budget.left():
                        skipped("parity", setting)
                        continue
                    image, first, _, _ = render(case_argv(golden, name), mode)
                    ok, text = judge(reference(golden, name, mode), image)
                    row("parity", setting, text, first, ok)

            # ---- the supervisor: parity and steady-state time, float64 and float32 -------------
            sup = case_argv(golden, "supervisor") if os.path.exists(
                os.path.join(golden, "cases", "supervisor", "args.txt")) else None
            if sup is None:
                from run import SUPERVISOR

                sup = shlex.split(SUPERVISOR) + ["-floatfile", "float.bin", "-noprogress"]
            roi = SUPERVISOR_QUICK_ROI if args.quick else None
            size = "96x96 window" if args.quick else "2463x2527"
            # float64 against both oracles, float32 against the C one (quick: spec mode only)
            plan = ((None, ("spec",)), ("float32", ("spec",))) if args.quick else \
                ((None, ("c", "spec")), ("float32", ("c",)))
            for dtype, oracle_modes in plan:
                label = "float32" if dtype else "float64"
                for mode in oracle_modes:
                    setting = f"supervisor {size} {label} {'--c-parity' if mode == 'c' else 'spec'}"
                    if not budget.left():
                        skipped("supervisor", setting)
                        continue
                    image, first, _, once = render(sup, mode, dtype, roi)
                    _, best = steady(once, 2 if args.quick else 3)
                    ref = reference(golden, "supervisor", mode)
                    if ref is None:
                        row("supervisor", setting, "no reference image here (timing only)", best)
                    else:
                        ok, text = judge(ref, image, roi, single=dtype is not None)
                        row("supervisor", setting, text, best, ok)
                    rows[-1]["compile_s"] = first - best
                    row("render time", f"supervisor {size} {label} steady state",
                        f"compile+first {first:.2f} s", best)

            # ---- batch throughput: vmap over scenes differing in orientation -------------------
            n_batch = 4 if args.quick else 16
            pixels = 64 if args.quick else 512
            base = shlex.split(BATCH.replace("-detpixels 512", f"-detpixels {pixels}"))
            for dtype in (None, "float32"):
                label = "float32" if dtype else "float64"
                setting = f"{n_batch} x {pixels}^2, misset varied, {label}"
                if not budget.left():
                    skipped("batch", setting)
                    continue
                exps = [experiment.build(base + ["-misset", str(3 * k), str(-2 * k), str(k)], evaluation_dtype=dtype)
                        for k in range(n_batch)]
                scenes = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *[e.scene for e in exps])
                cfg = exps[0].config
                out = {}

                def batch_once():  # the batch renderer, compiled once per configuration, on one device
                    out["images"] = np.asarray(sharding.render_batch(scenes, cfg, devices=1).image)

                first, best = steady(batch_once, 2)
                single = np.asarray(engine.render(exps[-1].scene, cfg).image)
                same = bool(np.allclose(out["images"][-1], single, rtol=1e-6 if dtype is None else 1e-4,
                                        atol=1e-12 * float(np.abs(single).max() or 1.0)))
                row("batch", setting, f"{n_batch / best:.2f} frames/s (last frame = a single render: {same})",
                    best, same)

            # ---- gradient cost -----------------------------------------------------------------
            scene = FIT.replace("-detpixels 128 -pixel 0.4", "-detpixels 32 -pixel 1.6") if args.quick else \
                FIT.replace("-detpixels 128 -pixel 0.4", "-detpixels 512 -pixel 0.1")
            setting = f"fit {'32' if args.quick else '512'}^2, all {len(G.GROUPS)} groups, float64"
            if not budget.left():
                skipped("gradient", setting)
            else:
                model = P.from_args(shlex.split(scene))
                params, config = model.params, model.config
                theta0 = G.get_groups(params, G.GROUPS, config)
                unpack = lambda theta: G.set_groups(params, G.GROUPS, config, theta)  # noqa: E731
                forward = jax.jit(lambda theta: P.simulate_core(unpack(theta), config))
                observed = 1.05 * forward(theta0) + 0.5

                def loss(theta):
                    mu = P.simulate_core(unpack(theta), config, gradient=P.Adjoint()) + 1.0
                    return jnp.sum(mu - observed + observed * jnp.log(observed / mu))

                gradient = jax.jit(jax.value_and_grad(loss))
                _, f_best = steady(lambda: jax.block_until_ready(forward(theta0)), 3)
                g_first, g_best = steady(lambda: jax.block_until_ready(gradient(theta0)), 3)
                value, grad = gradient(theta0)
                finite = bool(np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad))))
                row("gradient", setting, f"forward {f_best:.4f} s, gradient/forward = {g_best / f_best:.2f}, "
                    f"{np.asarray(grad).size} parameters, finite: {finite}", g_best, finite)
        finally:
            os.chdir(home)

    total = time.perf_counter() - started
    print(f"# total {total:.1f} s; {'all checks passed' if not failed else 'FAILED: ' + '; '.join(failed)}")
    if args.json:
        print(json.dumps(dict(machine=info, quick=args.quick, rows=rows, total_s=total)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
