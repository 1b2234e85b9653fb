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

import dataclasses
import math
import os
import secrets
import sys
import time

from nbjax.errors import InputError

USAGE = """\
usage: nbjax [nanoBragg options] [nbjax options]
       nbjax example [--out DIR]          render the bundled example
       nbjax compare A B [options]        compare two images
       nbjax fit --observed IMAGE --refine LIST [nanoBragg options]

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
  --no-compile-cache         do not use the persistent compilation cache
                             (default dir: $NBJAX_CACHE_DIR or ~/.cache/nbjax)
  --preview PNG              also write a log-scaled PNG preview (beam centre marked)
  --npy FILE                 also write the float image as a NumPy .npy file
  --cbffile FILE             also write the -intfile pixels as a Pilatus-style
                             miniCBF (needs fabio: pip install 'nbjax[interop]')
  --quiet                    print nothing but errors (no summary, no progress bar)
  --debug                    show Python tracebacks
  -h, --help                 this help
  --version                  print nbjax's version

A progress bar (stderr) appears on renders that run longer than a second when
stderr is a terminal; -noprogress or --quiet turn it off.  Output files appear
together at the end of a successful run; a failed or interrupted run leaves
none of them.  Exit status: 0 success, 2 bad input (one line on stderr),
1 internal error, 130 interrupted.
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
    "--cbffile": 1,
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
                if i + 1 >= len(argv) or argv[i + 1].partition("=")[0] in known:
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


def setup_jax(options, *, synchronous_cpu: bool = False):
    """Precision and compilation cache (the CLI, not the library, decides these).

    ``synchronous_cpu`` turns off JAX's asynchronous dispatch on CPU, so that a
    progress bar advances when a row block is done rather than when it is
    queued (it has to be set before the first computation; the render takes
    the same time).
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    if synchronous_cpu:
        try:
            jax.config.update("jax_cpu_enable_async_dispatch", False)
        except (AttributeError, KeyError, ValueError):
            pass  # an older jax: the bar runs ahead of the work, nothing worse
    cache = compile_cache_dir(options, existing=False)
    if cache is not None:
        try:
            os.makedirs(cache, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        except OSError:
            pass  # no cache: slower start, same results
    return jax


def compile_cache_dir(options, *, existing=True):
    """The persistent cache folder ($NBJAX_CACHE_DIR, $XDG_CACHE_HOME/nbjax or ~/.cache/nbjax).

    None with ``--no-compile-cache`` (or, with ``existing``, when the folder is not there).
    """
    if options.get("--no-compile-cache"):
        return None
    cache = os.environ.get("NBJAX_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "nbjax"
    )
    return cache if not existing or os.path.isdir(cache) else None


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


class OutputSet:
    """The files of one run, written under temporary names and renamed together at the end.

    :meth:`reserve` checks a target (a file name, in an existing directory, not
    a directory itself) and returns the temporary name to write it under --
    ``.<name>.<random>.part`` next to it, so the final rename stays on one file
    system.  :meth:`commit` renames them all into place once everything has
    been written (undoing the renames already made if one fails);
    :meth:`discard` (on any failure, Ctrl-C included) deletes the temporary
    files, so a run that does not finish leaves none of its outputs and the
    files it would have replaced as they were.
    Optional files (nanoBragg's Fdump.bin cache) only cost a warning when they
    cannot be written.
    """

    def __init__(self):
        self._pending = []  # (temporary, target, optional)

    @staticmethod
    def check(target, what):
        """InputError naming ``what`` when ``target`` cannot be an output file."""
        if not isinstance(target, str) or not target or "\0" in target:
            raise InputError(f"{what}: {target!r} is not a usable file name")
        if os.path.isdir(target):
            raise InputError(f"{what}: {target} is a directory, not a file name")
        directory = os.path.dirname(target) or "."
        if not os.path.isdir(directory):
            raise InputError(f"{what}: cannot write {target}: no such directory {directory}")
        if not os.access(directory, os.W_OK):
            raise InputError(f"{what}: cannot write {target}: the directory {directory} is not writable")

    def reserve(self, target, what, *, optional=False):
        if optional:
            try:
                self.check(target, what)
            except InputError:
                return None
        else:
            self.check(target, what)
        directory, name = os.path.split(target)
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.part")
        self._pending.append((temporary, target, optional))
        return temporary

    def drop(self, temporary):
        """Forget an optional file that could not be written."""
        self._pending = [p for p in self._pending if p[0] != temporary]
        _remove_quietly(temporary)

    def commit(self):
        """Rename every file into place; on a failure put back what was there before.

        An existing target is first hard-linked to a backup name, so that a
        rename failing half-way through the set can be undone: the files
        already renamed are removed again (or restored from their backups).
        """
        warnings = []
        pending, self._pending = self._pending, []
        done = []  # (target, backup or None), in order
        try:
            for index, (temporary, target, optional) in enumerate(pending):
                backup = None
                if os.path.isfile(target):
                    directory, name = os.path.split(target)
                    backup = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.old")
                    try:
                        os.link(target, backup)
                    except OSError:
                        backup = None  # no hard links here: the old file cannot come back
                try:
                    os.replace(temporary, target)
                except OSError as error:
                    if backup is not None:
                        _remove_quietly(backup)
                    if optional:
                        _remove_quietly(temporary)
                        warnings.append(f"WARNING: unable to open dump file: {target}")
                        continue
                    raise InputError(f"{target}: cannot write: {error.strerror or error}") from None
                done.append((target, backup))
        except BaseException:
            for target, backup in reversed(done):
                if backup is not None:
                    try:
                        os.replace(backup, target)
                        continue
                    except OSError:
                        _remove_quietly(backup)
                _remove_quietly(target)
            for temporary, _, _ in pending:
                _remove_quietly(temporary)
            raise
        for _, backup in done:
            if backup is not None:
                _remove_quietly(backup)
        return warnings

    def discard(self):
        pending, self._pending = self._pending, []
        for temporary, _, _ in pending:
            _remove_quietly(temporary)


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _settings(cargs, c_parity=False):
    """nanoBragg's variables for the flags (validated; -img/-mask headers not read)."""
    from nbjax import cflags

    return cflags.parse(cargs, c_parity=c_parity)


def render_command(argv) -> int:
    options, cargs = split_options(argv)
    quiet = bool(options.get("--quiet"))
    say = Printer(quiet)
    from nbjax import progress

    devices = positive_int_option(options, "--devices", 1)
    scan = "c-parity" if options.get("--c-parity") else "spec"
    show_bar = devices == 1 and progress.wanted(quiet=quiet, meter=_settings(cargs, scan == "c-parity").progress_meter)
    jax = setup_jax(options, synchronous_cpu=show_bar)
    # missing optional packages are refused before rendering, not after
    if "--cbffile" in options:
        _fabio_cbf()
    if "--preview" in options:
        from nbjax import pictures

        pictures.require_matplotlib()
    import jax.numpy as jnp

    from nbjax import experiment

    accumulation, phi_carryover = modes(options)
    exp = experiment.build(
        cargs,
        accumulation=accumulation,
        phi_carryover=phi_carryover,
        argument_scan=scan,
        interpolation_fallback=options.get("--interpolation-fallback", "c"),
        # single precision: float32 per-evaluation arithmetic, float64 pixel geometry
        dtype=jnp.float64,
        evaluation_dtype="float32" if options.get("--precision") == "single" else None,
        block_rows=positive_int_option(options, "--block-rows"),
    )
    # nanoBragg keeps a float image: render straight into float32
    exp = dataclasses.replace(exp, config=dataclasses.replace(exp.config, output_dtype="float32"))
    if devices > len(jax.devices()):
        raise InputError(f"--devices: {devices} requested but only {len(jax.devices())} available")
    _check_sources(exp)
    out = exp.outputs
    files = OutputSet()
    # every output name is checked before the render, so a typo costs nothing
    targets = [(out.floatfile, "-floatfile"), (out.intfile, "-intfile")]
    targets += [(out.pgmfile, "-pgmfile")] if out.pgmfile is not None else []
    targets += [(out.noisefile, "-noisefile")] if out.noisefile is not None else []
    targets += [(options[k], k) for k in ("--npy", "--preview", "--cbffile") if k in options]
    for target, what in targets:
        OutputSet.check(target, what)

    from nbjax import flaghelp

    say("nanoBragg nanocrystal diffraction simulator - James Holton and Ken Frankel 5-17-17 "
        f"({flaghelp.mode_text(accumulation, phi_carryover, scan)})")
    for line in exp.log:
        say(line)
    for line in exp.warnings:
        say(line)
    for note in exp.notes:
        say.note(note)
    try:
        _render_and_write(options, exp, files, say, show_bar=show_bar, devices=devices)
        for warning in files.commit():
            say(warning)
    except BaseException:
        files.discard()
        raise
    return 0


def _render_and_write(options, exp, files, say, *, show_bar, devices):
    """Render ``exp`` and write its files under ``files``' temporary names."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nbjax import engine, products, progress
    from nbjax.io import floatimage, pgm, smv
    from nbjax.io.fdump import write_fdump

    if exp.fdump is not None:
        # nanoBragg writes its structure-factor cache before rendering; nbjax
        # writes it with the other outputs, so a failed run leaves none behind
        path, table = exp.fdump
        temporary = files.reserve(path, "-dump", optional=True)
        written = False
        if temporary is not None:
            try:
                write_fdump(temporary, table)
                written = True
            except InputError:
                files.drop(temporary)
        if not written:
            say(f"WARNING: unable to open dump file: {path}")  # nanoBragg goes on without it

    mask = None if exp.mask is None else jnp.asarray(exp.mask)
    started = time.perf_counter()
    if devices > 1:
        from nbjax import sharding

        result = sharding.render_sharded(exp.scene, exp.config, mask, devices=devices)
    elif show_bar and engine.n_blocks(exp.config) > 1:
        with progress.Bar(engine.n_blocks(exp.config), "rendering", unit="block") as bar:
            result = engine.render_blocks(exp.scene, exp.config, mask, on_block=bar.update_to)
            result.image.block_until_ready()
    elif compile_cache_dir(options) is not None:
        from nbjax import aot  # the lowered renderer kept next to the compiled one: a faster start

        result = aot.render(exp.scene, exp.config, mask, cache_dir=compile_cache_dir(options))
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
    if not np.all(np.isfinite(image)):
        say.note("WARNING: the image has NaN or infinite pixels (check the geometry and the inputs)")

    roi = exp.header["roi"]
    out = exp.outputs
    stats = products.statistics(image, roi, exp.mask, pixel_size_m=exp.header["pixel_size_m"],
                                oversample=exp.header["oversample"])
    say(f"writing {out.floatfile} as {image.size} 4-byte floats")
    floatimage.write_float_image(files.reserve(out.floatfile, "-floatfile"), image)
    if "--npy" in options:
        from nbjax.io.atomic import atomic_open

        with atomic_open(files.reserve(options["--npy"], "--npy")) as handle:
            np.save(handle, image)
    say(f"max_I = {stats.max_I:g}  at {stats.max_I_x_m:g} {stats.max_I_y_m:g}")
    say(f"mean= {stats.mean:g} rms= {stats.rms:g} rmsd= {stats.rmsd:g}")
    scale = products.int_scale(out.intfile_scale, stats.max_I)
    say(f"intfile_scale = {scale:g}")
    header = smv.nanobragg_header(**_header_fields(exp.header))
    say(f"writing {out.intfile} as 2-byte integers")
    int_pixels = products.int_image(image, roi, scale, out.adc_offset)
    smv.write_smv(files.reserve(out.intfile, "-intfile"), int_pixels, header)
    if "--cbffile" in options:
        _write_cbf(files.reserve(options["--cbffile"], "--cbffile"), int_pixels, exp)
    if out.pgmfile is not None:
        pscale = products.pgm_scale(out.pgm_scale, scale, stats.rmsd)
        say(f"pgm_scale = {pscale:g}")
        say(f"writing {out.pgmfile} as 1-byte integers")
        pgm.write_pgm(files.reserve(out.pgmfile, "-pgmfile"), products.pgm_image(image, roi, pscale), pscale)
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
        smv.write_smv(files.reserve(out.noisefile, "-noisefile"), np.asarray(noisy, dtype=np.uint16), header)
    if "--preview" in options:
        from nbjax import pictures

        pictures.write_preview(files.reserve(options["--preview"], "--preview"), image,
                               beam_center_px=_beam_px(exp))


def _check_sources(exp):
    """Every source must give the beam a direction (a -sourcefile line at 0 0 0 does not)."""
    import numpy as np

    incident = np.asarray(exp.scene.incident, dtype=np.float64).reshape(-1, 3)
    if incident.size and not np.all(np.any(incident != 0.0, axis=1)):
        row = int(np.argmin(np.any(incident != 0.0, axis=1)))
        raise InputError(f"-sourcefile: source {row + 1} sits at the sample (position 0 0 0): it gives no beam direction")


def _fabio_cbf():
    try:
        from fabio import cbfimage
    except ImportError:
        raise InputError("--cbffile: CBF output needs fabio: pip install 'nbjax[interop]'") from None
    return cbfimage


def _write_cbf(path, pixels, exp):
    """The integer image as a Pilatus-style miniCBF (byte-offset compressed, int32)."""
    import numpy as np

    h = exp.header
    px_m = h["pixel_size_mm"] / 1000.0
    beam_fast, beam_slow = _beam_px(exp)
    contents = "\n".join([
        "# Detector: nbjax simulated detector (nanoBragg)",
        f"# Pixel_size {px_m:.6g} m x {px_m:.6g} m",
        f"# Wavelength {h['wavelength_A']:.8g} A",
        f"# Detector_distance {h['distance_mm'] / 1000.0:.8g} m",
        f"# Beam_xy ({beam_fast:.4f}, {beam_slow:.4f}) pixels",
        f"# Start_angle {h['osc_start_deg']:.6g} deg.",
        f"# Angle_increment {h['osc_range_deg']:.6g} deg.",
        f"# Detector_2theta {h['twotheta_deg']:.6g} deg.",
    ])
    image = _fabio_cbf().CbfImage(
        data=np.ascontiguousarray(pixels, dtype=np.int32),
        header={"_array_data.header_convention": "PILATUS_1.2", "_array_data.header_contents": contents},
    )
    try:
        image.write(path)
    except OSError as error:
        raise InputError(f"--cbffile: cannot write {path}: {error.strerror or error}") from None


def _header_fields(header):
    keys = ("fpixels", "spixels", "pixel_size_mm", "distance_mm", "wavelength_A", "beam_center_x_mm",
            "beam_center_y_mm", "adxv_center_x_mm", "adxv_center_y_mm", "mosflm_center_x_mm",
            "mosflm_center_y_mm", "denzo_x_beam_mm", "denzo_y_beam_mm", "dials_origin_mm", "xds_orgx",
            "xds_orgy", "close_distance_mm", "phi_deg", "osc_start_deg", "osc_range_deg", "twotheta_deg")
    return {k: header[k] for k in keys}


def _beam_px(exp):
    """Direct-beam position (fast, slow) in pixels from the first pixel's outer corner."""
    px = exp.header["pixel_size_mm"]
    return exp.header["adxv_center_x_mm"] / px, exp.header["spixels"] - exp.header["adxv_center_y_mm"] / px


SUBCOMMAND_HELP = {
    "example": "usage: nbjax example [--out DIR] [--c-parity] [--precision P] [--quiet] [--no-compile-cache]\n"
               "render the bundled example (the 2463x2527 'supervisor' image) into DIR (default ./nbjax-example)",
    "compare": "usage: nbjax compare A B [--shape SLOW FAST | -detpixels_x F -detpixels_y S] [--json] [--png FILE]\n"
               "compare image B with the reference A (float32 files need a shape unless the other image is\n"
               "SMV, PGM or .npy, which carry theirs); prints pearson_r, sum_ratio, max_rel_err, rmse and\n"
               "mean_peak_distance; --png draws A, B, B-A and radial profiles",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug and argv[0] in ("example", "compare", "fit"):
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
    try:
        if argv[0] == "example":
            from nbjax import examples

            return examples.main(argv[1:])
        if argv[0] == "compare":
            from nbjax import compare

            return compare.main(argv[1:])
        if argv[0] == "fit":
            import importlib

            fit = importlib.import_module("nbjax.fit")

            return fit.main(argv[1:])
        return render_command(argv)
    except InputError as error:
        if debug:
            raise
        print(f"nbjax: error: {error}", file=sys.stderr)
        return InputError.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("nbjax: interrupted (no output files written)", file=sys.stderr)
        return 130
    except MemoryError:
        if debug:
            raise
        print("nbjax: error: out of memory (try a smaller --block-rows)", file=sys.stderr)
        return 1
    except Exception as error:  # a bug in nbjax, or the machine ran out of something
        if debug:
            raise
        text = " ".join(str(error).split())[:300]
        if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
            print(f"nbjax: error: out of device memory (try a smaller --block-rows): {text}", file=sys.stderr)
        else:
            print(f"nbjax: internal error: {type(error).__name__}: {text} "
                  "(run again with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
