"""The ``nbjax`` command: nanoBragg's command line on the nbjax engine.

``nbjax [nanoBragg options] [--nbjax-options]`` reads the single-dash options
exactly as nanoBragg.c does (:mod:`nbjax.cflags`), sets the experiment up
(:mod:`nbjax.experiment`), renders it (:mod:`nbjax.engine`) and writes the same
files nanoBragg writes (float image, SMV integer image, PGM, noise image) with
the same default names, printing nanoBragg's summary lines.  No physics lives
here.  Subcommands: ``nbjax example``, ``nbjax compare``, ``nbjax fit``.

Bad input ends with one line on stderr and exit status 2; output files are
written under a temporary name and renamed, so none is ever half-written.
"""

from __future__ import annotations

import math
import os
import sys
import time

from nbjax.errors import InputError

USAGE = """\
usage: nbjax [nanoBragg options] [nbjax options]
       nbjax example [--out DIR]          render the bundled example
       nbjax compare A B [options]        compare two images
       nbjax fit --observed IMAGE --refine LIST [nanoBragg options]

nanoBragg options are the single-dash flags of nanoBragg.c (-mat, -hkl, -cell,
-lambda, -distance, -detpixels, -floatfile, ...) with the same meaning; see
docs/cli.md for the full table.

nbjax options:
  --c-parity                 reproduce released nanoBragg.c, quirks included
                             (phi=0 carry-over, compounding -oversample_* factors)
  --phi-carryover-mode M     spec (default) or c-parity, the phi part alone
  --accumulation M           spec (default) or c-parity, the -oversample_* part alone
  --interpolation-fallback M c (default: switch interpolation off for the rest
                             of the image, as nanoBragg) or point (nearest
                             neighbour just where the neighbourhood leaves the table)
  --precision P              double (default) or single
  --rng R                    c (default: nanoBragg's exact noise stream) or jax
  --block-rows N             rows per render block (memory vs speed)
  --devices N                render across N local devices (rows sharded)
  --no-compile-cache         do not use the persistent compilation cache
                             (default dir: $NBJAX_CACHE_DIR or ~/.cache/nbjax)
  --preview PNG              also write a log-scaled PNG preview
  --npy FILE                 also write the float image as a NumPy .npy file
  --quiet                    print nothing but errors
  --debug                    show Python tracebacks
  -h, --help                 this help
"""

# nbjax's own options: name -> number of values
NBJAX_OPTIONS = {
    "--c-parity": 0,
    "--phi-carryover-mode": 1,
    "--accumulation": 1,
    "--interpolation-fallback": 1,
    "--precision": 1,
    "--rng": 1,
    "--block-rows": 1,
    "--devices": 1,
    "--no-compile-cache": 0,
    "--preview": 1,
    "--npy": 1,
    "--quiet": 0,
    "--debug": 0,
}
CHOICES = {
    "--phi-carryover-mode": ("spec", "c-parity"),
    "--accumulation": ("spec", "c-parity"),
    "--interpolation-fallback": ("c", "point"),
    "--precision": ("double", "single"),
    "--rng": ("c", "jax"),
}


def split_options(argv, known=NBJAX_OPTIONS):
    """Separate nbjax's ``--options`` from nanoBragg's flags.

    Returns ``(options dict, remaining argv)``; ``--opt=value`` is accepted.
    """
    options, rest = {}, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name not in known:
                raise InputError(f"{name}: unknown option (see 'nbjax --help')")
            if known[name] == 0:
                if eq:
                    raise InputError(f"{name}: takes no value")
                options[name] = True
                i += 1
                continue
            if not eq:
                if i + 1 >= len(argv):
                    raise InputError(f"{name}: needs a value")
                value = argv[i + 1]
                i += 1
            if name in CHOICES and value not in CHOICES[name]:
                raise InputError(f"{name}: expected one of {', '.join(CHOICES[name])}, got {value!r}")
            options[name] = value
            i += 1
            continue
        rest.append(arg)
        i += 1
    return options, rest


def positive_int_option(options, name, default=None):
    if name not in options:
        return default
    from nbjax.io.numbers import parse_int

    value = parse_int(options[name], name)
    if value <= 0:
        raise InputError(f"{name}: must be a positive integer, got {value}")
    return value


def setup_jax(options):
    """Precision and compilation cache (the CLI, not the library, decides these)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    if not options.get("--no-compile-cache"):
        cache = os.environ.get("NBJAX_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "nbjax"
        )
        try:
            os.makedirs(cache, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        except OSError:
            pass  # no cache: slower start, same results
    return jax


def modes(options):
    """(accumulation, phi_carryover) from --c-parity and the per-part switches."""
    base = "c-parity" if options.get("--c-parity") else "spec"
    return options.get("--accumulation", base), options.get("--phi-carryover-mode", base)


class Printer:
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, line=""):
        if not self.quiet:
            print(line, flush=True)

    def note(self, line):
        if not self.quiet:
            print(f"nbjax: {line}", file=sys.stderr, flush=True)


def render_command(argv) -> int:
    options, cargs = split_options(argv)
    say = Printer(bool(options.get("--quiet")))
    jax = setup_jax(options)
    import jax.numpy as jnp
    import numpy as np

    from nbjax import engine, experiment, products
    from nbjax.io import floatimage, pgm, smv

    accumulation, phi_carryover = modes(options)
    dtype = jnp.float32 if options.get("--precision") == "single" else jnp.float64
    exp = experiment.build(
        cargs,
        accumulation=accumulation,
        phi_carryover=phi_carryover,
        interpolation_fallback=options.get("--interpolation-fallback", "c"),
        dtype=dtype,
        block_rows=positive_int_option(options, "--block-rows"),
    )
    devices = positive_int_option(options, "--devices", 1)
    if devices > len(jax.devices()):
        raise InputError(f"--devices: {devices} requested but only {len(jax.devices())} available")
    say("nanoBragg nanocrystal diffraction simulator - James Holton and Ken Frankel 5-17-17 (nbjax engine)")
    for line in exp.log:
        say(line)
    for line in exp.warnings:
        say(line)
    for note in exp.notes:
        say.note(note)
    warning = experiment.write_fdump_cache(exp)
    if warning:
        say(warning)

    mask = None if exp.mask is None else jnp.asarray(exp.mask)
    started = time.perf_counter()
    if devices > 1:
        from nbjax import sharding

        result = sharding.render_sharded(exp.scene, exp.config, mask, devices=devices)
    else:
        result = engine.render(exp.scene, exp.config, mask)
    image = np.asarray(result.image, dtype=np.float32)
    elapsed = time.perf_counter() - started
    interp = np.asarray(result.interpolation_off_at)
    if interp[0]:
        say("WARNING: out of range for three point interpolation: h,k,l,h0,k0,l0: %g,%g,%g,%d,%d,%d "
            % (interp[1], interp[2], interp[3], interp[4], interp[5], interp[6]))
        say("WARNING: further warnings will not be printed! ")
    say()
    steps = exp.header["steps"]
    omega_sum = float(result.omega_sum)
    say(f"solid angle subtended by detector = {omega_sum / steps:g} steradian ( {100 * omega_sum / steps / 4 / math.pi:g}% sphere)")
    say.note(f"rendered in {elapsed:.3f} s")

    roi = exp.header["roi"]
    out = exp.outputs
    stats = products.statistics(image, roi, exp.mask, pixel_size_m=exp.header["pixel_size_m"],
                                oversample=exp.header["oversample"])
    say(f"writing {out.floatfile} as {image.size} 4-byte floats")
    floatimage.write_float_image(out.floatfile, image)
    if "--npy" in options:
        from nbjax.io.atomic import atomic_open

        with atomic_open(options["--npy"]) as handle:
            np.save(handle, image)
    say(f"max_I = {stats.max_I:g}  at {stats.max_I_x_m:g} {stats.max_I_y_m:g}")
    say(f"mean= {stats.mean:g} rms= {stats.rms:g} rmsd= {stats.rmsd:g}")
    scale = products.int_scale(out.intfile_scale, stats.max_I)
    say(f"intfile_scale = {scale:g}")
    header = smv.nanobragg_header(**_header_fields(exp.header))
    say(f"writing {out.intfile} as 2-byte integers")
    smv.write_smv(out.intfile, products.int_image(image, roi, scale, out.adc_offset), header)
    if out.pgmfile is not None:
        pscale = products.pgm_scale(out.pgm_scale, scale, stats.rmsd)
        say(f"pgm_scale = {pscale:g}")
        say(f"writing {out.pgmfile} as 1-byte integers")
        pgm.write_pgm(out.pgmfile, products.pgm_image(image, roi, pscale), pscale)
    if out.noisefile is not None:
        from nbjax.physics import noise

        if options.get("--rng") == "jax":
            key = jax.random.PRNGKey(abs(int(out.noise_seed)) % (2**32))
            noisy, photons, overloads = noise.noise_image_jax(image, key, adc_offset=out.adc_offset, roi=roi)
        else:
            noisy, photons, overloads = noise.noise_image_c(image, out.noise_seed, adc_offset=out.adc_offset,
                                                            roi=roi, state=exp.rng_state)
        say(f"{photons:.0f} photons on noise image ({overloads} overloads)")
        say(f"writing {out.noisefile} as 2-byte integers")
        smv.write_smv(out.noisefile, np.asarray(noisy, dtype=np.uint16), header)
    if "--preview" in options:
        from nbjax import pictures

        pictures.write_preview(options["--preview"], image, beam_center_px=_beam_px(exp))
    return 0


def _header_fields(header):
    keys = ("fpixels", "spixels", "pixel_size_mm", "distance_mm", "wavelength_A", "beam_center_x_mm",
            "beam_center_y_mm", "adxv_center_x_mm", "adxv_center_y_mm", "mosflm_center_x_mm",
            "mosflm_center_y_mm", "denzo_x_beam_mm", "denzo_y_beam_mm", "dials_origin_mm", "xds_orgx",
            "xds_orgy", "close_distance_mm", "phi_deg", "osc_start_deg", "osc_range_deg", "twotheta_deg")
    return {k: header[k] for k in keys}


def _beam_px(exp):
    """Direct-beam position (fast, slow) in pixels, for the preview marker."""
    px = exp.header["pixel_size_mm"]
    return exp.header["adxv_center_x_mm"] / px, exp.header["spixels"] - exp.header["adxv_center_y_mm"] / px


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if not argv or argv[0] in ("-h", "--help", "-help"):
        print(USAGE)
        return 0 if argv else 2
    try:
        if argv[0] == "example":
            from nbjax import examples

            return examples.main(argv[1:])
        if argv[0] == "compare":
            from nbjax import compare

            return compare.main(argv[1:])
        if argv[0] == "fit":
            from nbjax import fit

            return fit.main(argv[1:])
        return render_command(argv)
    except InputError as error:
        if debug:
            raise
        print(f"nbjax: error: {error}", file=sys.stderr)
        return InputError.exit_code
    except KeyboardInterrupt:
        print("nbjax: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
