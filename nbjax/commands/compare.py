"""``nbjax compare A B``: how far image B is from the reference A.

Prints the metrics of :func:`nbjax.compare.metrics` (Pearson r, sum ratio,
maximum relative error, RMSE, mean distance of the brightest peaks) as text or
``--json``, and with ``--png`` draws A, B, B - A and their radial profiles.
"""

from __future__ import annotations

import json
import math

from nbjax.commands.options import split_options
from nbjax.compare import metrics
from nbjax.errors import InputError
from nbjax.io.images import read_image


def main(argv) -> int:
    shape, rest = _shape_option(list(argv))
    options, paths = split_options(rest, {"--json": 0, "--png": 1})
    if len(paths) != 2:
        raise InputError("compare: give two images, A (reference) and B")
    first = read_image(paths[0], shape)
    second = read_image(paths[1], shape if shape else (first.shape if first.ndim == 2 else None))
    if first.ndim == 1 and second.ndim == 2:
        first = read_image(paths[0], second.shape)
    if first.ndim == 1 or second.ndim == 1:
        raise InputError("compare: float images need --shape SLOW FAST (or an SMV image to take it from)")
    result = metrics(first, second)
    if options.get("--json"):
        print(json.dumps({k: (v if math.isfinite(v) else None) for k, v in result.as_dict().items()}))
    else:
        for key, value in result.as_dict().items():
            print(f"{key:20s} {value:.9g}")
    if "--png" in options:
        from nbjax import pictures

        pictures.write_comparison(options["--png"], first, second, result)
    return 0


#: nanoBragg's detector-size flags that may give a float image's shape instead of --shape.
SHAPE_FLAGS = {"-detpixels": "both", "-detpixels_x": "fast", "-detpixels_f": "fast", "-detpixels_y": "slow",
               "-detpixels_s": "slow"}


def _shape_option(argv):
    """Remove ``--shape SLOW FAST`` / ``--shape=SLOW,FAST`` (or nanoBragg's ``-detpixels``,
    ``-detpixels_x``/``_f``, ``-detpixels_y``/``_s``) from argv; return (shape, rest)."""
    from nbjax.io.numbers import parse_int

    sizes, rest = {}, []
    i = 0
    while i < len(argv):
        flag = argv[i]
        if flag in SHAPE_FLAGS:
            if i + 1 >= len(argv):
                raise InputError(f"{flag}: needs a value")
            value = parse_int(argv[i + 1], flag)
            if value <= 0:
                raise InputError(f"{flag}: must be a positive number of pixels, got {value}")
            for axis in (("slow", "fast") if SHAPE_FLAGS[flag] == "both" else (SHAPE_FLAGS[flag],)):
                sizes[axis] = value
            i += 2
            continue
        rest.append(flag)
        i += 1
    if sizes:
        if len(sizes) != 2:
            raise InputError("-detpixels_x/-detpixels_y: give both sizes (or -detpixels N)")
        if any(a == "--shape" or a.startswith("--shape=") for a in rest):
            raise InputError("--shape: give either --shape or -detpixels, not both")
        return (sizes["slow"], sizes["fast"]), rest
    argv = rest
    for i, arg in enumerate(argv):
        if arg == "--shape":
            values, rest = argv[i + 1:i + 3], argv[:i] + argv[i + 3:]
        elif arg.startswith("--shape="):
            values, rest = arg.split("=", 1)[1].split(","), argv[:i] + argv[i + 1:]
        else:
            continue
        if len(values) != 2:
            raise InputError("--shape: needs two integers, SLOW FAST")
        slow, fast = (parse_int(v, "--shape") for v in values)
        if slow <= 0 or fast <= 0:
            raise InputError("--shape: sizes must be positive")
        return (slow, fast), rest
    return None, argv
