"""``nbjax [nanoBragg flags]``: one image, as nanoBragg renders and writes it.

Reads the single-dash flags exactly as nanoBragg.c does (:mod:`nbjax.cflags`),
sets the experiment up (:mod:`nbjax.experiment`), renders it
(:mod:`nbjax.renderer.engine`) and writes the same files nanoBragg writes (float image,
SMV integer image, PGM, noise image) with the same default names, printing
nanoBragg's summary lines.  No physics lives here.  Every output name is
checked before the render, and the files are written under temporary names
and renamed together at the end (:class:`nbjax.io.outputs.OutputSet`).
"""

from __future__ import annotations

import dataclasses
import math
import time

from nbjax.commands import signals
from nbjax.commands.options import Printer, compile_cache_dir, modes, positive_int_option, setup_jax, split_options
from nbjax.errors import InputError
from nbjax.io import cbf
from nbjax.io.outputs import OutputSet


def _settings(cargs, c_parity=False):
    """nanoBragg's variables for the flags (validated; -img/-mask headers not read)."""
    from nbjax import cflags

    return cflags.parse(cargs, c_parity=c_parity)


def argument_scan(options) -> str:
    """How the nanoBragg flags are read: "c-parity" (as released nanoBragg.c) or "spec"."""
    return "c-parity" if options.get("--c-parity") else "spec"


def banner(options) -> str:
    """The summary's first line: nanoBragg's, with the mode that runs."""
    from nbjax import flaghelp

    accumulation, phi_carryover = modes(options)
    return ("nanoBragg nanocrystal diffraction simulator - James Holton and Ken Frankel 5-17-17 "
            f"({flaghelp.mode_text(accumulation, phi_carryover, argument_scan(options))})")


def render_command(argv) -> int:
    options, cargs = split_options(argv)
    quiet = bool(options.get("--quiet"))
    say = Printer(quiet)
    from nbjax import progress

    devices = positive_int_option(options, "--devices", 1)
    show_bar = devices == 1 and progress.wanted(
        quiet=quiet, meter=_settings(cargs, argument_scan(options) == "c-parity").progress_meter)
    jax = setup_jax(options, synchronous_cpu=show_bar)
    check_optional_outputs(options)
    exp = build_experiment(options, cargs)
    if devices > len(jax.devices()):
        raise InputError(f"--devices: {devices} requested but only {len(jax.devices())} available")
    targets = output_targets(options, exp)
    for target, what in targets:
        OutputSet.check(target, what)
    dump = [(exp.fdump[0], "-dump (Fdump.bin cache)")] if exp.fdump is not None else []
    OutputSet.check_distinct(dump + targets)  # two outputs with one name: one image would be lost

    say(banner(options))
    for line in exp.log:
        say(line)
    for line in exp.warnings:
        say(line)
    for note in exp.notes:
        say.note(note)
    files = OutputSet()
    try:
        # signals are acted on at check points only: while waiting for the render, and before the commit
        with signals.deferred():
            write_fdump(exp, files, say)
            started = time.perf_counter()
            # traced, compiled and run in a worker thread: a signal ends the run at once (commands.signals)
            result, image = _out_of_memory_named(
                lambda: signals.run(lambda: _with_image(_render(options, exp, show_bar=show_bar, devices=devices))),
                exp)
            require_finite(exp, image)  # before any file is committed
            say_render_summary(exp, result, say)
            say.note(f"rendered in {time.perf_counter() - started:.3f} s")
            write_products(options, exp, image, files, say)
        # a signal during the renames raises at once; commit() then puts everything back
        for warning in files.commit():
            say(warning)
    except BaseException:
        files.discard()
        raise
    return 0


def check_optional_outputs(options):
    """Missing optional packages are refused before rendering, not after."""
    if "--cbffile" in options:
        try:
            cbf.require_fabio()
        except InputError as error:
            raise InputError(f"--cbffile: {error}") from None
    if "--preview" in options:
        from nbjax import pictures

        pictures.require_matplotlib()


def build_experiment(options, cargs, **overrides):
    """The Experiment of nanoBragg flags ``cargs`` under nbjax's ``options`` (float32 image)."""
    import jax.numpy as jnp

    from nbjax import experiment

    accumulation, phi_carryover = modes(options)
    exp = experiment.build(
        cargs,
        accumulation=accumulation,
        phi_carryover=phi_carryover,
        argument_scan=argument_scan(options),
        interpolation_fallback=options.get("--interpolation-fallback", "c"),
        # single precision: float32 per-evaluation arithmetic, float64 pixel geometry
        dtype=jnp.float64,
        evaluation_dtype="float32" if options.get("--precision") == "single" else None,
        block_rows=positive_int_option(options, "--block-rows"),
        hkl_column=options.get("--hkl-column"), model=options.get("--model"), model_dmin=options.get("--model-dmin"),
        work_limit=math.inf if options.get("--allow-huge") else None,
        **overrides,
    )
    # nanoBragg keeps a float image: render straight into float32
    exp = dataclasses.replace(exp, config=dataclasses.replace(exp.config, output_dtype="float32"))
    _check_sources(exp)
    return exp


def output_targets(options, exp):
    """Every (file name, flag) the run writes (the Fdump.bin cache aside)."""
    out = exp.outputs
    targets = [(out.floatfile, "-floatfile"), (out.intfile, "-intfile")]
    targets += [(out.pgmfile, "-pgmfile")] if out.pgmfile is not None else []
    targets += [(out.noisefile, "-noisefile")] if out.noisefile is not None else []
    targets += [(options[k], k) for k in ("--npy", "--preview", "--cbffile") if k in options]
    return targets


def write_fdump(exp, files, say):
    """nanoBragg's structure-factor cache (Fdump.bin), under ``files`` (optional: a warning if it fails)."""
    from nbjax.io.fdump import write_fdump as write_table

    if exp.fdump is None:
        return
    # nanoBragg writes its structure-factor cache before rendering; nbjax
    # writes it with the other outputs, so a failed run leaves none behind
    path, table = exp.fdump
    temporary = files.reserve(path, "-dump", optional=True)
    written = False
    if temporary is not None:
        try:
            write_table(temporary, table)
            written = True
        except InputError:
            files.drop(temporary)
    if not written:
        say(f"WARNING: unable to open dump file: {path}")  # nanoBragg goes on without it


def _render(options, exp, *, show_bar, devices):
    """Render ``exp`` (one device, several, or block by block under a progress bar)."""
    import jax.numpy as jnp

    from nbjax import progress
    from nbjax.renderer import engine

    mask = None if exp.mask is None else jnp.asarray(exp.mask)
    if devices > 1:
        from nbjax.renderer import sharding

        return sharding.render_sharded(exp.scene, exp.config, mask, devices=devices)
    if show_bar and engine.n_blocks(exp.config) > 1:
        with progress.Bar(engine.n_blocks(exp.config), "rendering", unit="block") as bar:
            result = engine.render_blocks(exp.scene, exp.config, mask, on_block=bar.update_to)
            result.image.block_until_ready()
        return result
    if compile_cache_dir(options) is not None:
        from nbjax.renderer import aot  # the lowered renderer kept next to the compiled one: a faster start

        return aot.render(exp.scene, exp.config, mask, cache_dir=compile_cache_dir(options))
    return engine.render(exp.scene, exp.config, mask)


def _numpy_image(result):
    import numpy as np

    return np.asarray(result.image, dtype=np.float32)


def _with_image(result):
    """(result, the image as a float32 numpy array): the transfer waits for the render to finish."""
    return result, _numpy_image(result)


def require_finite(exp, image):
    """InputError naming the likely cause when the image has NaN or infinite pixels (nothing is written)."""
    import numpy as np

    from nbjax import experiment, products

    if np.isfinite(image).all():  # the usual case: no need to look for suspects
        return
    products.require_finite(image, experiment.overflow_suspects(exp))


def _out_of_memory_named(function, exp):
    """``function()``, with running out of memory reported with the sizes that took it."""
    from nbjax import experiment
    from nbjax.commands.options import device_kind
    from nbjax.errors import OutOfMemory

    try:
        return function()
    except MemoryError:
        raise OutOfMemory(f"out of {device_kind()} memory while rendering: {experiment.memory_summary(exp)}") from None
    except Exception as error:
        text = " ".join(str(error).split())
        if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
            raise OutOfMemory(f"out of {device_kind()} memory while rendering: {experiment.memory_summary(exp)} "
                              f"({text[:160]})") from None
        raise


def say_render_summary(exp, result, say):
    """nanoBragg's lines after the render: the interpolation switch-off and the solid angle."""
    import numpy as np

    interp = np.asarray(result.interpolation_off_at)
    if interp[0]:
        say("WARNING: out of range for three point interpolation: h,k,l,h0,k0,l0: %g,%g,%g,%d,%d,%d "
            % (interp[1], interp[2], interp[3], interp[4], interp[5], interp[6]))
        say("WARNING: further warnings will not be printed! ")
    say()
    steps = exp.header["steps"]
    omega_sum = float(result.omega_sum)
    say(f"solid angle subtended by detector = {omega_sum / steps:g} steradian ( {100 * omega_sum / steps / 4 / math.pi:g}% sphere)")


def write_products(options, exp, image, files, say):
    """Write the files of one rendered float ``image`` under ``files``' temporary names.

    The float image, the SMV integer image, the optional PGM, noise image,
    .npy, miniCBF and PNG preview -- every rule in one place, used by the
    one-image command and by ``nbjax batch``.  Returns the image statistics
    (:func:`nbjax.products.statistics`) and, with a noise image, the photon
    count.
    """
    import jax
    import numpy as np

    from nbjax import products
    from nbjax.io import floatimage, pgm, smv

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
    photons = None
    if out.noisefile is not None:
        from nbjax.physics import noise

        if options.get("--rng") == "jax":
            key = jax.random.PRNGKey(abs(int(out.noise_seed)) % (2**32))
            noisy, photons, overloads = noise.noise_image_jax(image, key, adc_offset=out.adc_offset, roi=roi)
        else:
            # with the cache folder: the kernels compiled ahead of time, no numba import (physics._noise_aot)
            noisy, photons, overloads = noise.noise_image_c(image, out.noise_seed, adc_offset=out.adc_offset,
                                                            roi=roi, state=exp.rng_state,
                                                            cache_dir=compile_cache_dir(options))
        say(f"{photons:.0f} photons on noise image ({overloads} overloads)")
        say(f"writing {out.noisefile} as 2-byte integers")
        smv.write_smv(files.reserve(out.noisefile, "-noisefile"), np.asarray(noisy, dtype=np.uint16), header)
    if "--preview" in options:
        from nbjax import pictures

        pictures.write_preview(files.reserve(options["--preview"], "--preview"), image,
                               beam_center_px=cbf.beam_xy_px(exp.header))
    return stats, photons


def _check_sources(exp):
    """Every source must give the beam a direction (a -sourcefile line at 0 0 0 does not)."""
    import numpy as np

    incident = np.asarray(exp.scene.incident, dtype=np.float64).reshape(-1, 3)
    if incident.size and not np.all(np.any(incident != 0.0, axis=1)):
        row = int(np.argmin(np.any(incident != 0.0, axis=1)))
        raise InputError(f"-sourcefile: source {row + 1} sits at the sample (position 0 0 0): it gives no beam direction")


def _write_cbf(path, pixels, exp):
    """The integer image as a Pilatus-style miniCBF (byte-offset compressed, int32)."""
    cbf.write_cbf(path, pixels, cbf.cbf_header(exp))


def _header_fields(header):
    keys = ("fpixels", "spixels", "pixel_size_mm", "distance_mm", "wavelength_A", "beam_center_x_mm",
            "beam_center_y_mm", "adxv_center_x_mm", "adxv_center_y_mm", "mosflm_center_x_mm",
            "mosflm_center_y_mm", "denzo_x_beam_mm", "denzo_y_beam_mm", "dials_origin_mm", "xds_orgx",
            "xds_orgy", "close_distance_mm", "phi_deg", "osc_start_deg", "osc_range_deg", "twotheta_deg")
    return {k: header[k] for k in keys}
