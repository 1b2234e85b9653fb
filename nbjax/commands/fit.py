"""``nbjax fit --observed IMAGE --refine LIST [nanoBragg flags]``: refine a model against an image.

The command reads its options, sets JAX up and calls :func:`nbjax.fit.fit_args`
(the library's fit, :mod:`nbjax.fit`); it writes the result JSON (with the
equivalent nanoBragg command line) and, with ``--fitted``, the fitted image.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time

from nbjax.commands.options import positive_int_option, setup_jax, split_options
from nbjax.errors import InputError
from nbjax.fit import DEFAULT_SCHEDULE, POLISH_ONLY, refine_groups, fit_args, result_dict
from nbjax.io.outputs import OutputSet


FIT_OPTIONS = {
    "--observed": 1, "--refine": 1, "--loss": 1, "--out": 1, "--max-iter": 1, "--schedule": 1,
    "--fitted": 1, "--pedestal": 1, "--quiet": 0, "--debug": 0, "--no-compile-cache": 0,
    "--hkl-column": 1, "--model": 1, "--model-dmin": 1,
}
FIT_USAGE = """\
usage: nbjax fit --observed IMAGE --refine LIST [nanoBragg options] [fit options]

Refines the parameter groups in LIST (comma-separated: cell, misset, N,
distance, beam_center, detector_rot, twotheta, wavelength, scale, mosaic) of the
model the nanoBragg options describe so that its image matches IMAGE (a float
image of the detector's shape, an SMV image -- its -adc offset is subtracted --
or a .npy array).  -roi and -mask are honoured.  Give the -oversample the
observed image was rendered with: nanoBragg's automatic choice depends on N
and the cell, and the fit keeps the starting model's sampling throughout.

fit options:
  --loss poisson|lsq    Poisson deviance (default) or least squares
  --out FILE            result JSON (default: fit_result.json)
  --max-iter N          iterations of the final L-BFGS stage (default 60)
  --schedule S          default (coarse-to-fine, see docs/fitting.md) or polish
                        (the final stage only: for a starting model already
                        within a fraction of a pixel)
  --pedestal P          photons added to the model in the Poisson loss
  --fitted FILE         also write the fitted image as a float file
  --quiet               no progress lines
  --hkl-column C, --model FILE, --model-dmin D
                        structure factors as for the render command (an MTZ or
                        mmCIF column; F computed from a coordinate model)
"""


def main(argv) -> int:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help", "-help"):
        print(FIT_USAGE)
        return 0 if argv else 2
    options, cargs = split_options(argv, known=FIT_OPTIONS)
    for required in ("--observed", "--refine"):
        if required not in options:
            raise InputError(f"fit: {required} is required (see 'nbjax fit --help')")
    loss = options.get("--loss", "poisson")
    if loss not in ("poisson", "lsq"):
        raise InputError(f"--loss: expected poisson or lsq, got {loss!r}")
    groups = refine_groups(options["--refine"])
    schedule_name = options.get("--schedule", "default")
    if schedule_name not in ("default", "polish"):
        raise InputError(f"--schedule: expected default or polish, got {schedule_name!r}")
    schedule = DEFAULT_SCHEDULE if schedule_name == "default" else POLISH_ONLY
    max_iter = positive_int_option(options, "--max-iter")
    if max_iter is not None:
        schedule = schedule[:-1] + (dataclasses.replace(schedule[-1], max_iter=max_iter),)
    pedestal = None
    if "--pedestal" in options:
        from nbjax.io.numbers import parse_float

        pedestal = parse_float(options["--pedestal"], "--pedestal")
        if not (pedestal > 0 and math.isfinite(pedestal)):
            raise InputError(f"--pedestal: must be a positive number, got {options['--pedestal']}")
    for name, default in (("--out", "fit_result.json"), ("--fitted", None)):
        if options.get(name, default) is not None:  # fail now, not after the fit
            OutputSet.check(options.get(name, default), name)
    quiet = bool(options.get("--quiet"))
    setup_jax(options)
    started = time.perf_counter()
    say = (lambda line: None) if quiet else (lambda line: print(line, flush=True))
    structure_factors = {"hkl_column": options.get("--hkl-column"), "model": options.get("--model"),
                         "model_dmin": options.get("--model-dmin")}
    result = fit_args(cargs, options["--observed"], groups, loss=loss, schedule=schedule, progress=say,
                      pedestal=pedestal, structure_factors=structure_factors)
    out = result_dict(result, cargs)
    out["seconds"] = round(time.perf_counter() - started, 3)
    from nbjax.io.atomic import atomic_write

    path = options.get("--out", "fit_result.json")
    atomic_write(path, (json.dumps(out, indent=2) + "\n").encode())
    if "--fitted" in options:
        from nbjax.io import floatimage

        floatimage.write_float_image(options["--fitted"], result.image)
    if not quiet:
        for key, value in out.items():
            if key not in ("nanobragg_args",):
                print(f"{key}: {value}")
        print(f"wrote {path}", file=sys.stderr)
    return 0
