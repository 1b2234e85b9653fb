"""Worked example of nbjax fit: recover a known crystal and detector from its image.

Renders the 128x128 target of docs/fitting.md (small.hkl, cell 78 84 92 88 93 91,
misset 4 -7 11, N 9, distance 110 mm, beam centre 26.0/25.1 mm), starts from
cell +0.7 %, misset 0.35 deg off, N 11, distance +1.5 mm and beam centre 0.5 mm
off, refines cell, misset, N, distance and beam centre together, prints the
errors and draws

* fit_example_out/fit_loss.png   -- the loss of every iteration, stages marked;
* fit_example_out/fit_images.png -- observed, starting model, fitted model, residual.

(in the current folder; ``--out docs/images`` regenerates the pictures docs/fitting.md shows)

    python docs/examples/fit_example.py              # noise-free target
    python docs/examples/fit_example.py --poisson    # Poisson target, peak ~16,000 photons

Takes about a minute on two CPU cores (half of it compilation).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nbjax import params as P  # noqa: E402
from nbjax.fit import fit  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HKL = ROOT / "tests" / "golden" / "inputs" / "small.hkl"
IMAGES = ROOT / "docs" / "images"

BASE = ["-hkl", str(HKL)] + "-lambda 1.2 -pixel 0.4 -phi 0 -osc 0.5 -phisteps 3 -detpixels 128 -oversample 8".split()
TRUE = dict(cell=(78, 84, 92, 88, 93, 91), misset=(4, -7, 11), N=(9,), distance=(110,), Xbeam=(26.0,), Ybeam=(25.1,))
START = dict(cell=(78.546, 84.588, 92.644, 88.3, 92.8, 91.2), misset=(4.2, -7.2, 11.2), N=(11,), distance=(111.5,),
             Xbeam=(26.4,), Ybeam=(24.8,))
GROUPS = ["cell", "misset", "N", "distance", "beam_center"]


def flags(values, extra=()):
    out = list(BASE) + list(extra)
    for key, v in values.items():
        out += ["-" + key] + ["%.10g" % x for x in v]
    return out


def summary(p):
    return dict(cell=np.r_[np.asarray(p.crystal.cell_A), np.asarray(p.crystal.cell_angles_deg)],
                misset=np.asarray(p.crystal.misset_deg), N=np.asarray(p.crystal.n_cells),
                distance=np.asarray([float(p.detector.distance_mm)]),
                beam_center=np.asarray(p.detector.beam_center_mm))


def plot_loss(history, path):
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    colours = dict(coarse="tab:blue", medium="tab:orange", polish="tab:green")
    labels = dict(coarse="coarse: blurred (σ 1.5 px) Anscombe LSQ", medium="medium: blurred (σ 0.75 px)",
                  polish="polish: Poisson deviance")
    x = 0
    for name in dict.fromkeys(h[0] for h in history):
        rows = [h for h in history if h[0] == name]
        xs = np.arange(x, x + len(rows))
        ax.semilogy(xs, [max(h[2], 1e-300) for h in rows], ".-", ms=3, lw=1, color=colours.get(name),
                    label=labels.get(name, name))
        ax.axvline(x - 0.5, color="0.8", lw=0.8, zorder=0)
        x += len(rows)
    ax.set_xlabel("iteration (all stages; each stage starts at its iteration 0)")
    ax.set_ylabel("stage objective")
    ax.set_title("nbjax fit: loss per iteration")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_images(observed, start, fitted, path):
    fig, axes = plt.subplots(1, 4, figsize=(10.5, 3.0), dpi=90)
    scale = np.sqrt(max(observed.max(), 1e-300))
    show = lambda image: np.sqrt(np.maximum(image, 0.0)) / scale
    panels = [("observed", show(observed)), ("start model", show(start)), ("fitted model", show(fitted))]
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=0.25, interpolation="nearest")
        ax.set_title(title + " (√I)", fontsize=9)
    residual = observed - fitted
    limit = max(float(np.abs(residual).max()), 1e-300)
    im = axes[3].imshow(residual, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    axes[3].set_title(f"observed − fitted (peak {observed.max():.3g})", fontsize=9)
    fig.colorbar(im, ax=axes[3], fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poisson", action="store_true", help="fit a Poisson-noisy target (-fluence 2e27)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("fit_example_out"),
                        help=f"folder of the two PNGs (default ./fit_example_out; {IMAGES} holds the documented ones)")
    args = parser.parse_args()

    extra = ["-fluence", "2e27"] if args.poisson else []
    truth = P.from_args(flags(TRUE, extra))
    observed = np.asarray(P.simulate(truth.params, truth.config))
    if args.poisson:
        observed = np.random.default_rng(args.seed).poisson(observed).astype(np.float64)
    start = P.from_args(flags(START, extra))
    start_image = np.asarray(P.simulate(start.params, start.config))

    began = time.perf_counter()
    result = fit(observed, start.params, start.config, GROUPS,
                 progress=lambda line: print(line, flush=True) if " iter " not in line or "iter    0" in line
                 else None)
    seconds = time.perf_counter() - began
    print(f"fit: {seconds:.1f} s, {result.iterations} iterations, final loss {result.loss:.6g}")

    true, first, final = summary(truth.params), summary(start.params), summary(result.params)
    np.set_printoptions(precision=5, suppress=True)
    for key in true:
        print(f"{key:12s} start error {np.abs(first[key] - true[key])}  refined error {np.abs(final[key] - true[key])}")

    args.out.mkdir(parents=True, exist_ok=True)
    plot_loss(result.history, args.out / "fit_loss.png")
    plot_images(observed, start_image, result.image, args.out / "fit_images.png")
    print(f"wrote {args.out / 'fit_loss.png'} and {args.out / 'fit_images.png'}")


if __name__ == "__main__":
    main()
