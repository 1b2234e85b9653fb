"""``nbjax example``: render the bundled example on a fresh machine.

The example is the "supervisor" command -- a 2463 x 2527 Pilatus-like detector,
a MOSFLM orientation matrix (``A.mat``) and a structure-factor list
(``scaled.hkl``), a 0.1 degree phi sweep in 10 steps -- run in a fresh folder
(default ``./nbjax-example``) with the files bundled in ``nbjax/examples_data``.
It writes nanoBragg's outputs there (``floatimage.bin``, ``intimage.img``,
``image.pgm``) and, when matplotlib is installed, ``preview.png``.
"""

from __future__ import annotations

import os
import shutil

from nbjax.errors import InputError

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples_data")

SUPERVISOR_ARGS = (
    "-mat A.mat -hkl scaled.hkl -nonoise -nointerpolate -oversample 1 -exposure 1 -flux 1e18 "
    "-beamsize 1.0 -spindle_axis -1 0 0 -Xbeam 217.742295 -Ybeam 213.907080 -distance 231.274660 "
    "-lambda 0.976800 -pixel 0.172 -detpixels_x 2463 -detpixels_y 2527 "
    "-odet_vector -0.000088 0.004914 -0.999988 -sdet_vector -0.005998 -0.999970 -0.004913 "
    "-fdet_vector 0.999982 -0.005998 -0.000118 -pix0_vector_mm -216.336293 215.205512 -230.200866 "
    "-beam_vector 0.00051387949 0.0 -0.99999986 -Na 36 -Nb 47 -Nc 29 -osc 0.1 -phi 0 -phisteps 10 "
    "-detector_rotx 0 -detector_roty 0 -detector_rotz 0 -twotheta 0"
).split()


def main(argv) -> int:
    from nbjax.commands.options import split_options
    from nbjax.commands.render import render_command

    options, rest = split_options(argv, {"--out": 1, "--c-parity": 0, "--precision": 1, "--quiet": 0,
                                         "--no-compile-cache": 0})
    if rest:
        raise InputError(f"example: unexpected argument {rest[0]!r}")
    out = os.path.abspath(options.pop("--out", "nbjax-example"))
    try:
        os.makedirs(out, exist_ok=True)
        for name in ("A.mat", "scaled.hkl"):
            shutil.copyfile(os.path.join(DATA, name), os.path.join(out, name))
    except OSError as error:
        raise InputError(f"--out {out}: cannot prepare the folder ({error.strerror})") from None
    extra = [f"{k}={v}" if v is not True else k for k, v in options.items()]
    try:
        import matplotlib  # noqa: F401

        extra += ["--preview", "preview.png"]
    except ImportError:
        pass
    here = os.getcwd()
    os.chdir(out)
    try:
        if "--quiet" not in options:
            print("nbjax " + " ".join(SUPERVISOR_ARGS + extra) + f"   (in {out})", flush=True)
        return render_command(SUPERVISOR_ARGS + extra)
    finally:
        os.chdir(here)
