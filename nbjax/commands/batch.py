"""``nbjax batch``, ``nbjax series``, ``nbjax stills``: many images in one process.

``nbjax batch JOBS [common flags]`` renders every job line of the text file
JOBS after the common flags; ``nbjax series --frames N [flags]`` a rotation
series; ``nbjax stills --shots N --seed S [flags]`` randomly oriented stills
(it writes the jobs file it used).  All three set up the jobs with
:mod:`nbjax.batch` (grouping, batched renders) and write each image's files
exactly as the one-image command does (:func:`nbjax.commands.render.write_products`),
under templated names, each image's files atomically (an interrupted batch
leaves complete images only; ``--resume`` skips the jobs whose files exist).

Scale-out: ``--num-processes P --process-id I --coordinator HOST:PORT`` (or
nothing under Slurm / Open MPI with more than one task) start
``jax.distributed``; job i is rendered by process ``(i - 1) mod P``.  The
NeXus file (``--nexus``) is written by process 0 after a barrier, from the
float images the processes wrote.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from nbjax.commands import signals
from nbjax.commands.options import (NBJAX_OPTIONS, Printer, compile_cache_dir, positive_int_option, setup_jax,
                                    split_options)
from nbjax.errors import InputError

BATCH_OPTIONS = dict(NBJAX_OPTIONS)
BATCH_OPTIONS.update({
    "--resume": 0, "--batch-size": 1, "--nexus": 1, "--nexus-compression": 1,
    "--num-processes": 1, "--process-id": 1, "--coordinator": 1,
})
SERIES_OPTIONS = dict(BATCH_OPTIONS, **{"--frames": 1})
STILLS_OPTIONS = dict(BATCH_OPTIONS, **{"--shots": 1, "--seed": 1, "--jobs-out": 1})
#: nbjax options a job line may set (per-image output files)
LINE_OPTIONS = {"--npy": 1, "--cbffile": 1, "--preview": 1}
TEMPLATED_OPTIONS = ("--npy", "--cbffile", "--preview")

HELP = """\
usage: nbjax batch JOBS [nanoBragg flags] [nbjax options] [batch options]
       nbjax series --frames N [nanoBragg flags] [options]
       nbjax stills --shots N --seed S [nanoBragg flags] [options]

JOBS: a text file, one list of nanoBragg flags per line (blank and # lines
skipped), added after the common flags; job i writes the files of
'nbjax [common] [line i]'.  Output names are templates: a run of # becomes the
zero-padded job number (shot_#####.cbf), a name without # gets _00001 before
its extension.  series: frame i is -phi phi0+(i-1)*osc.  stills: Haar-random
orientations from --seed, written as -misset lines to --jobs-out
(default: stills_jobs.txt next to the float images).

batch options:
  --resume                 skip jobs whose output files all exist
  --batch-size B           images rendered together (default: from the image size)
  --nexus FILE.h5          also write every float frame to one NeXus/NXmx file
  --nexus-compression C    none (default), gzip, bslz4 or auto
  --num-processes P --process-id I --coordinator HOST:PORT
                           split the jobs over P processes (jax.distributed;
                           automatic under Slurm / Open MPI)
  --quiet                  no per-image lines, no progress bar, no table
"""


# --------------------------------------------------------------------------
# entry points


def batch_main(argv) -> int:
    if not argv or argv[0].startswith("-"):
        raise InputError("batch: the first argument must be the jobs file (nbjax batch JOBS [flags])")
    from nbjax import batch

    options, cargs = split_options(argv[1:], BATCH_OPTIONS)
    jobs = batch.read_jobs(argv[0])
    return run(jobs, cargs, options, source=argv[0], scan=None)


def series_main(argv) -> int:
    from nbjax import batch

    options, cargs = split_options(argv, SERIES_OPTIONS)
    frames = positive_int_option(options, "--frames")
    if frames is None:
        raise InputError("--frames: nbjax series needs the number of frames (--frames N)")
    jobs = batch.series_lines(cargs, frames)
    return run(jobs, cargs, options, source="series", scan="rotation")


def stills_main(argv) -> int:
    from nbjax import batch, cflags
    from nbjax.io.atomic import atomic_write
    from nbjax.io.numbers import parse_int

    options, cargs = split_options(argv, STILLS_OPTIONS)
    shots = positive_int_option(options, "--shots")
    if shots is None:
        raise InputError("--shots: nbjax stills needs the number of shots (--shots N)")
    if "--seed" not in options:
        raise InputError("--seed: nbjax stills needs a seed for the orientations (--seed S)")
    seed = parse_int(options["--seed"], "--seed")
    if seed < 0:
        raise InputError(f"--seed: must not be negative, got {seed}")
    jobs = batch.stills_lines(shots, seed)
    floatfile = cflags.parse(cargs).floatfilename
    jobs_path = options.get("--jobs-out") or os.path.join(os.path.dirname(floatfile), "stills_jobs.txt")
    from nbjax.io.outputs import OutputSet

    OutputSet.check(jobs_path, "--jobs-out")
    header = (f"nbjax stills --shots {shots} --seed {seed}: one line per shot, -misset rotx roty rotz in degrees\n"
              "render again with: nbjax batch THIS_FILE [the same flags]  (or nanoBragg [flags] [line])")
    return run(jobs, cargs, options, source="stills", scan="stills",
               jobs_file=(jobs_path, batch.jobs_text(jobs, header)), write_jobs=atomic_write)


# --------------------------------------------------------------------------
# the shared machinery


def _distributed(options):
    """(process count, process index): jax.distributed from the flags or the cluster's environment."""
    flags = [k for k in ("--num-processes", "--process-id", "--coordinator") if k in options]
    cluster = any(int(os.environ.get(v, "1") or 1) > 1 for v in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))
    if not flags and not cluster:
        return 1, 0
    import jax

    if flags:
        missing = {"--num-processes", "--process-id", "--coordinator"} - set(flags)
        if missing:
            raise InputError(f"{sorted(missing)[0]}: --num-processes, --process-id and --coordinator go together")
        count = positive_int_option(options, "--num-processes")
        from nbjax.io.numbers import parse_int

        index = parse_int(options["--process-id"], "--process-id")
        if not 0 <= index < count:
            raise InputError(f"--process-id: must be in 0..{count - 1}, got {index}")
        if count == 1:
            return 1, 0
        jax.distributed.initialize(coordinator_address=options["--coordinator"], num_processes=count,
                                   process_id=index)
    else:
        jax.distributed.initialize()
    return jax.process_count(), jax.process_index()


def _barrier(name):
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def _line_options(jobs, source):
    """Split per-image nbjax options (--npy, --cbffile, --preview) off the job lines."""
    from nbjax import batch

    plain, per_line, errors = [], [], []
    for job in jobs:
        try:
            opts, rest = split_options(list(job.tokens), LINE_OPTIONS)
        except InputError as error:
            errors.append((job.line_no, f"{source}:{job.line_no}: {error} (a job line takes nanoBragg flags and "
                                        "--npy/--cbffile/--preview)"))
            opts, rest = {}, []
        plain.append(batch.Job(job.line_no, tuple(rest)))
        per_line.append(opts)
    return plain, per_line, errors


class _FloatFrames:
    """The float images of the batch, read back one at a time (for the NeXus file)."""

    def __init__(self, experiments):
        self.experiments = experiments

    def __len__(self):
        return len(self.experiments)

    def __getitem__(self, k):
        from nbjax.io.floatimage import read_float_image

        exp = self.experiments[k]
        return read_float_image(exp.outputs.floatfile, (exp.config.spixels, exp.config.fpixels))


def _check_one_detector(experiments):
    import numpy as np

    first = experiments[0]
    for k, exp in enumerate(experiments[1:], start=2):
        if (exp.config.fpixels, exp.config.spixels) != (first.config.fpixels, first.config.spixels):
            raise InputError(f"--nexus: job {k} changes the detector size; one NeXus file holds one detector")
        for name in ("pix0_m", "fdet", "sdet", "odet", "pixel_size_m", "distance_m", "close_distance_m", "beam"):
            if not np.array_equal(np.asarray(getattr(exp.scene, name)), np.asarray(getattr(first.scene, name))):
                raise InputError(f"--nexus: job {k} changes the detector geometry ({name}); "
                                 "one NeXus file holds one detector")


def run(jobs, cargs, options, *, source, scan, jobs_file=None, write_jobs=None) -> int:
    from nbjax import batch, cflags, progress
    from nbjax.commands import render
    from nbjax.io.outputs import OutputSet, sweep_stale_all

    quiet = bool(options.get("--quiet"))
    say = Printer(quiet)
    silent = Printer(True)
    if positive_int_option(options, "--devices", 1) > 1:
        raise InputError("--devices: not used by batch commands (split the jobs with --num-processes)")
    batch_size = positive_int_option(options, "--batch-size")
    meter = cflags.parse(cargs).progress_meter if cargs else True
    setup_jax(options)
    count, index = _distributed(options)
    render.check_optional_outputs(options)
    nexus_path = options.get("--nexus")
    if nexus_path is not None:
        OutputSet.check(nexus_path, "--nexus")

    # ---- every job set up and checked before anything renders ----------------------
    jobs, line_options, errors = _line_options(jobs, source)
    arguments = batch.job_arguments(cargs, jobs, source=source, errors=errors)
    experiments = batch.build_jobs(arguments, lambda argv: render.build_experiment(options, argv),
                                   jobs=jobs, source=source, errors=errors)
    per_image, targets, seen, errors = [], [], {}, []  # build_jobs raised any earlier errors
    for i, (exp, extra, job) in enumerate(zip(experiments, line_options, jobs), start=1):
        opts = dict(options)
        opts.update(extra)
        for key in TEMPLATED_OPTIONS:
            if key in opts:
                opts[key] = batch.template_name(opts[key], i)
        per_image.append(opts)
        names = render.output_targets(opts, exp)
        try:
            OutputSet.check_distinct(names)
        except InputError as error:
            errors.append((job.line_no, f"{source}:{job.line_no}: {error}"))
        for name, what in names:
            try:
                OutputSet.check(name, what)
            except InputError as error:
                errors.append((job.line_no, f"{source}:{job.line_no}: {error}"))
            key = os.path.abspath(name)
            if key in seen:
                errors.append((job.line_no, f"{source}:{job.line_no}: {what}: {name} is also written by job {seen[key]}"))
            seen[key] = i
        targets.append([name for name, _ in names])
    if errors:
        raise batch.JobErrors(errors)
    if nexus_path is not None:
        _check_one_detector(experiments)

    n = len(experiments)
    mine = [p for p in range(n) if p % count == index]
    done = [p for p in mine if options.get("--resume") and all(os.path.isfile(t) for t in targets[p])]
    todo = [p for p in mine if p not in set(done)]
    groups = len(batch.group_jobs(experiments))
    where = f" (process {index} of {count})" if count > 1 else ""
    say(f"nbjax {source}: {n} images in {groups} group{'s' * (groups != 1)} of one compiled renderer each"
        f"{where}; {len(todo)} to render" + (f", {len(done)} already complete (--resume)" if done else ""))
    for line in experiments[0].warnings:
        say(line)

    import jax

    jax.devices()  # the runtime started (it may install a SIGTERM handler of its own) ...
    signals.reinstall()  # ... and nbjax's handlers (nbjax.commands.signals, from main) back on top
    written = 0
    table = []
    started = time.perf_counter()
    try:
        if index == 0:
            setup_files = OutputSet()
            try:
                if jobs_file is not None:
                    write_jobs(setup_files.reserve(jobs_file[0], "--jobs-out"), jobs_file[1].encode())
                first_dump = next((e for e in experiments if e.fdump is not None), None)
                if first_dump is not None:
                    render.write_fdump(first_dump, setup_files, say)
                for warning in setup_files.commit():
                    say(warning)
            except BaseException:
                setup_files.discard()
                raise
        sweep_stale_all([name for p in todo for name in targets[p]])
        enabled = progress.wanted(quiet=quiet, meter=meter)
        with progress.Bar(len(todo), source, unit="image", enabled=enabled, delay=0.0) as bar:
            def on_group(number, members, size):
                cfg = experiments[members[0]].config
                table.append(dict(group=number, images=len(members), batch=size,
                                  pixels=f"{cfg.fpixels}x{cfg.spixels}", oversample=cfg.oversample,
                                  phi_steps=len(cfg.phi_zero), started=time.perf_counter()))

            tick = time.perf_counter()
            for position, result in batch.render_jobs(experiments, todo, batch_size=batch_size, on_group=on_group,
                                                          cache_dir=compile_cache_dir(options)):
                exp, opts = experiments[position], per_image[position]
                image = render._numpy_image(result)
                render.require_finite(exp, image)
                files = OutputSet(sweep=False)  # swept above, one directory read for all images
                with signals.deferred():  # a signal now is acted on once this image's files are committed
                    try:
                        stats, photons = render.write_products(opts, exp, image, files, silent)
                        files.commit()
                    except BaseException:
                        files.discard()
                        raise
                    written += 1
                now = time.perf_counter()
                table[-1]["seconds"] = now - table[-1]["started"]
                line = (f"{position + 1:>6} {exp.outputs.floatfile}  max_I={stats.max_I:g} mean={stats.mean:g}"
                        f" rms={stats.rms:g}")
                if exp.outputs.noisefile is not None:
                    line += f"  seed={-exp.outputs.noise_seed} photons={photons:.0f}"
                line += f"  {now - tick:.3f} s"
                tick = now
                if not quiet:
                    bar.write(line) if bar.active else say(line)
                bar.update_to(written)
    except (KeyboardInterrupt, signals.Terminated) as error:
        # SIGINT, SIGTERM and SIGHUP alike (nbjax.commands.signals); main() then ends the process at once
        # with the status a single render gives: 128 + the signal's number
        signals.safe_print(f"nbjax: interrupted after {written} of {len(todo)} images (those are complete; "
                           "run again with --resume to finish)", file=sys.stderr)
        return getattr(error, "exit_code", signals.HANDLED[signal.SIGINT])
    elapsed = time.perf_counter() - started

    if not quiet and table:
        say()
        say("group  images  batch  detector    oversample  phi steps  seconds")
        for row in table:
            say(f"{row['group']:>5}  {row['images']:>6}  {row['batch']:>5}  {row['pixels']:<10}  {row['oversample']:>10}"
                f"  {row['phi_steps']:>9}  {row.get('seconds', 0.0):>7.2f}")
        rate = written / elapsed if elapsed > 0 else float("inf")
        say(f"total  {written:>6}  images in {elapsed:.2f} s ({rate:.2f} images/s), {len(table)} group"
            f"{'s' * (len(table) != 1)} compiled")

    if count > 1:
        _barrier("nbjax-batch-images-written")
    if nexus_path is not None and index == 0:
        from nbjax.io import nexus

        compression = options.get("--nexus-compression", "none")
        nexus.write_nxmx(nexus_path, _FloatFrames(experiments), nexus.geometry_from_experiment(experiments[0]),
                         scan=scan, compression=None if compression == "none" else compression)
        say(f"wrote {nexus_path}: {n} frames")
    if count > 1:
        _barrier("nbjax-batch-done")
    return 0


def print_job_errors(error) -> int:
    for message in error.errors:
        print(f"nbjax: error: {message}", file=sys.stderr)
    return InputError.exit_code
