"""The ``nbjax`` command's entry point: usage, dispatch to a subcommand, exit status.

``nbjax [nanoBragg flags]`` renders one image (:mod:`nbjax.commands.render`);
``nbjax example``, ``nbjax compare`` and ``nbjax fit`` are the subcommands.
Every error a user can cause is an :class:`~nbjax.errors.InputError`: one line
on stderr and exit status 2.  Anything else is reported as an internal error
(exit 1) unless ``--debug`` asks for the traceback.
"""

from __future__ import annotations

import os
import sys

from nbjax.commands import signals
from nbjax.commands.options import device_kind as _device_kind
from nbjax.errors import InputError, OutOfMemory

USAGE = """\
usage: nbjax [nanoBragg options] [nbjax options]
       nbjax example [--out DIR]          render the bundled example
       nbjax compare A B [options]        compare two images
       nbjax fit --observed IMAGE --refine LIST [nanoBragg options]
       nbjax batch JOBS [nanoBragg options]   one image per line of JOBS
       nbjax series --frames N [nanoBragg options]   a rotation series
       nbjax stills --shots N --seed S [nanoBragg options]   random stills

nanoBragg options are the single-dash flags of nanoBragg.c with the same meaning,
listed below; docs/flags.md has the full table (units, defaults, ranges, how
nbjax compares with nanoBragg.c).

nbjax options:
  --c-parity                 reproduce released nanoBragg.c, quirks included
                             (phi=0 carry-over, compounding -oversample_* factors,
                             stray values and unknown flags skipped with a warning)
  --phi-carryover-mode M     spec (default) or c-parity, the phi part alone
  --accumulation M           spec (default) or c-parity, the -oversample_* part alone
  --interpolation-fallback M c (default: switch interpolation off for the rest
                             of the image, as nanoBragg) or point (nearest
                             neighbour just where the neighbourhood leaves the table)
  --precision P              double (default) or single
  --rng R                    c (default: nanoBragg's exact noise stream) or jax
  --block-rows N             rows per render block (memory vs speed)
  --devices N                render across N local devices (rows sharded)
  --no-compile-cache         do not use the persistent caches (compiled renderers
                             and noise kernels)
                             (default dir: $NBJAX_CACHE_DIR or ~/.cache/nbjax)
  --preview PNG              also write a log-scaled PNG preview (beam centre marked)
  --npy FILE                 also write the float image as a NumPy .npy file
  --cbffile FILE             also write the -intfile pixels as a Pilatus-style
                             miniCBF (needs fabio: pip install 'nbjax[interop]')
  --hkl-column NAME          the MTZ/mmCIF column -hkl reads (docs/inputs.md)
  --model FILE               F from an atomic model (PDB/mmCIF) instead of -hkl
  --model-dmin D             resolution (A) of --model (default: the detector's reach)
  --allow-huge               render even beyond 1e13 structure-factor evaluations
                             (pixels x sub-pixels x layers x sources x phi x
                             mosaic domains); without it such a run is refused
  --quiet                    print nothing but errors (no summary, no progress bar)
  --debug                    show Python tracebacks
  -h, --help                 this help
  --version                  print nbjax's version

A progress bar (stderr) appears on renders that run longer than a second when
stderr is a terminal; -noprogress or --quiet turn it off.  Output files appear
together at the end of a successful run; a failed or interrupted run leaves
none of them.  Exit status: 0 success (also when stdout was closed early,
e.g. by `| head`: the files are still written), 2 bad input (one line on
stderr), 1 internal error or out of memory, 130/143/129 ended by SIGINT,
SIGTERM or SIGHUP (within a second; no output or temporary file left).
"""


SUBCOMMAND_HELP = {
    "example": "usage: nbjax example [--out DIR] [--c-parity] [--precision P] [--quiet] [--no-compile-cache]\n"
               "render the bundled example (the 2463x2527 'supervisor' image) into DIR (default ./nbjax-example)",
    "compare": "usage: nbjax compare A B [--shape SLOW FAST | -detpixels_x F -detpixels_y S] [--json] [--png FILE]\n"
               "compare image B with the reference A (float32 files need a shape unless the other image is\n"
               "SMV, PGM or .npy, which carry theirs); prints pearson_r, sum_ratio, max_rel_err, rmse and\n"
               "mean_peak_distance; --png draws A, B, B-A and radial profiles",
}


BATCH_COMMANDS = {"batch": "batch_main", "series": "series_main", "stills": "stills_main"}


def main(argv=None) -> int:
    """Run the command ``argv`` (default: the process's own command line) and return its exit status.

    Called without ``argv`` (the ``nbjax`` console script, ``python -m nbjax``)
    the process ends here once the command has returned, every file written
    and closed and the streams flushed, without the interpreter's shutdown:
    tearing down JAX's runtime and the imported modules takes 0.2-0.3 s of
    every process, a fifth of a warm 2048 x 2048 render.  Nothing is left
    pending at that point (outputs are committed, caches written, the render
    thread joined).  ``main(argv)`` with a list returns, for callers in Python.
    """
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    with signals.installed():
        code = _main(argv)
        received = signals.pending() is not None
    if received or from_command_line:
        # after a signal XLA's threads may still be working: the interpreter's shutdown
        # could race with them (abort, segfault); otherwise it is only slow
        signals.exit_now(code)
    return code


def _main(argv) -> int:
    debug = "--debug" in argv
    if debug and argv and argv[0] in ("example", "compare", "fit"):
        argv = [a for a in argv if a != "--debug"]  # the subcommands' own options do not include it
    if not argv or argv[0] in ("-h", "--help", "-help"):
        from nbjax import flaghelp

        try:
            print(USAGE + "\nnanoBragg options (docs/flags.md has the full table):\n\n" + flaghelp.flag_listing(),
                  flush=True)
        except BrokenPipeError:  # nbjax --help | head
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0 if argv else 2
    if "--version" in argv and argv[0] not in ("example", "compare", "fit"):
        from nbjax import flaghelp

        print(flaghelp.version_text())
        return 0
    if argv[0] in SUBCOMMAND_HELP and any(a in ("-h", "--help") for a in argv[1:]):
        print(SUBCOMMAND_HELP[argv[0]])
        return 0
    if argv[0] in BATCH_COMMANDS:
        from nbjax.commands import batch

        if any(a in ("-h", "--help") for a in argv[1:]):
            print(batch.HELP)
            return 0
    try:
        if argv[0] == "example":
            from nbjax.commands import example

            return example.main(argv[1:])
        if argv[0] == "compare":
            from nbjax.commands import compare

            return compare.main(argv[1:])
        if argv[0] == "fit":
            from nbjax.commands import fit

            return fit.main(argv[1:])
        if argv[0] in BATCH_COMMANDS:
            return getattr(batch, BATCH_COMMANDS[argv[0]])([a for a in argv[1:] if a != "--debug"])
        from nbjax.commands.render import render_command

        return render_command(argv)
    except InputError as error:
        if debug:
            raise
        if hasattr(error, "errors"):  # nbjax.batch.JobErrors: every bad line of a batch
            from nbjax.commands.batch import print_job_errors

            return print_job_errors(error)
        print(f"nbjax: error: {error}", file=sys.stderr)
        return InputError.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        signals.safe_print("nbjax: interrupted (no output files written)", file=sys.stderr)
        return 130
    except signals.Terminated as error:
        if debug:
            raise
        signals.safe_print(f"nbjax: ended by {error.name} (no output files written)", file=sys.stderr)
        return error.exit_code
    except OutOfMemory as error:
        if debug:
            raise
        print(f"nbjax: error: {error}", file=sys.stderr)
        return OutOfMemory.exit_code
    except MemoryError:
        if debug:
            raise
        print(f"nbjax: error: out of {_device_kind()} memory outside the render (a large input file, "
              "e.g. an -hkl index range, or a large image to write?)", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # stdout closed outside the render's summary printing (that one carries on)
        signals.silence(sys.stdout)
        signals.safe_print("nbjax: stdout was closed before the run finished", file=sys.stderr)
        return 141
    except Exception as error:  # a bug in nbjax, or the machine ran out of something
        if debug:
            raise
        text = " ".join(str(error).split())[:300]
        if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
            print(f"nbjax: error: out of {_device_kind()} memory (try a smaller --block-rows): {text}",
                  file=sys.stderr)
        else:
            print(f"nbjax: internal error: {type(error).__name__}: {text} "
                  "(run again with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
