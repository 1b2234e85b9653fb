"""Many images in one process: jobs files, rotation series, stills -- compiled once, rendered in batches.

A *batch* is a list of nanoBragg command lines that share common flags: job
``i`` (1-based) is ``[common flags] [line i flags]``, the later value of a flag
winning as when nanoBragg reads a flag twice.  Each job is set up exactly as a
single ``nbjax`` run (:func:`nbjax.experiment.build`), so its image is the one
that run renders, pixel for pixel.

What is shared.  Jobs whose static :class:`~nbjax.renderer.engine.RenderConfig`, array
shapes and mask agree form a *group*: one compiled renderer serves the whole
group, and the group's scenes are rendered ``batch_size`` at a time with
``jax.vmap`` over a leading batch axis.  Only the scene leaves that differ
between the group's jobs get that axis (in a series the phi angles, in stills
the cell vectors); a leaf equal in every job -- the detector, the beam, the
structure-factor table -- is passed once, so the per-pixel geometry computed
from those alone (position, ray, solid angle, polarization, scattering
vector) is computed once per block for all images of a chunk.  Continuous
parameters (orientation, cell, N, distance, beam centre, wavelength, fluence,
mosaic spread, phi start, ...) live in the scene and do not split a group;
pixel counts, step counts, oversampling, input files and anything else in the
configuration do (including, in ``--c-parity`` mode only, whether a phi step
is exactly 0, which decides nanoBragg's phi carry-over).  The per-image state nanoBragg carries from
pixel to pixel (phi carry-over, interpolation switch-off) starts afresh for
every image of the batch (:func:`nbjax.renderer.engine.initial_carry` inside the map).
Input files (structure factors, -mat) are read once per batch
(:class:`nbjax.io.memo.memoized_files`).

Speed.  The per-image work outside the render is kept small: the jobs are
set up with host (numpy) scene arrays (:func:`nbjax.experiment.host_scene_arrays`),
stacked per chunk and sent to the device once (the group's unbatched leaves
once per group, with ``jax.device_put``: ``jax.numpy`` constructors would each
load a little program); structure-factor files are read
once; a line that only sets ``-phi`` or ``-misset`` takes its output names
from one parse of the common flags; the batched renderer
(:func:`nbjax.renderer.sharding.mapped_render`) comes from the export cache
(:func:`nbjax.renderer.aot.render_mapped`) when a cache folder is given,
instead of being traced; and the next chunk is dispatched before the
previous chunk's images are handed out, so writing them overlaps the render.

Memory.  A render holds one row block (about 2^17 pixels, see
:func:`nbjax.experiment.default_block_rows`) of every image in flight, so the
default batch size is ``2^19 / block pixels`` (at least 1): 32 images of
128x128, 4 of 512x512 or of a full 6M detector.  Besides the chunk being
rendered, the finished images of the previous chunk are held while they are
written (two chunks' images, float32, at most).

Series and stills.  :func:`series_lines` makes the lines of a rotation series
(frame i: ``-phi phi0 + (i-1)*osc``, each frame spanning ``-osc`` in
``-phisteps`` steps, like nanoBragg run once per frame); :func:`stills_lines`
those of randomly oriented stills: rotations uniform over SO(3) (Haar measure:
normalised 4-D Gaussian quaternions from ``numpy.random.default_rng(seed)``),
written as ``-misset rotx roty rotz`` in degrees with 17 significant digits so
that nanoBragg.c reads back the same doubles.

Noise seeds (:func:`job_arguments`): a line's own ``-seed`` is used as given;
``-seed S`` in the common flags alone gives job i the seed ``S + i - 1``; with
no seed anywhere every job draws its own.

Output names (:func:`template_name`): a run of ``#`` in a name becomes the
zero-padded job number; a name without ``#`` gets ``_00001`` before its
extension.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import secrets
import shlex
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

from nbjax.errors import InputError

__all__ = [
    "Job", "JobErrors", "BatchImage", "read_jobs", "parse_lines", "template_name", "job_arguments", "series_lines",
    "stills_lines", "build_jobs", "group_jobs", "default_batch_size", "render_jobs", "render_batch",
    "render_series", "render_stills", "RTD",
]

RTD = 180.0 / math.pi
#: Block pixels of all images in flight in one vmapped render (sets the default batch size).
BATCH_PIXEL_BUDGET = 1 << 19
_HASH = re.compile(r"#+")


class JobErrors(InputError):
    """Every bad line of a batch (``errors``: one message per line, ``FILE:LINE: flag: problem``)."""

    def __init__(self, errors):
        pairs = [e if isinstance(e, tuple) else (0, e) for e in errors]
        self.errors = [message for _, message in sorted(pairs, key=lambda e: e[0])]
        super().__init__("; ".join(self.errors))


class Job(NamedTuple):
    """One line of a jobs file: its number in the file and its flags."""

    line_no: int
    tokens: tuple


class BatchImage(NamedTuple):
    """One rendered image of a batch: job number (1-based), float32 image, its experiment and result."""

    index: int
    image: np.ndarray
    experiment: object
    result: object


# --------------------------------------------------------------------------
# lines


def parse_lines(lines: Sequence, source: str = "jobs") -> list:
    """Jobs from text lines (shell-quoted flags) or token lists; blank and ``#`` lines skipped."""
    jobs = []
    for number, line in enumerate(lines, start=1):
        if isinstance(line, Job):
            jobs.append(line)
            continue
        if isinstance(line, str):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                tokens = shlex.split(text)
            except ValueError as error:
                raise InputError(f"{source}:{number}: {error}") from None
            if not tokens:
                continue
        else:
            tokens = [str(t) for t in line]
        jobs.append(Job(number, tuple(tokens)))
    return jobs


def read_jobs(path) -> list:
    """The jobs of the text file ``path`` (one list of nanoBragg flags per non-blank, non-``#`` line)."""
    from nbjax.io.atomic import read_file_bytes

    raw = read_file_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{os.fspath(path)}: not a text file") from None
    jobs = parse_lines(text.splitlines(), os.fspath(path))
    if not jobs:
        raise InputError(f"{os.fspath(path)}: no jobs (every line is empty or a # comment)")
    return jobs


def template_name(name: str, index: int, width: int = 5) -> str:
    """``name`` for job ``index``: runs of ``#`` become the zero-padded number, else ``_00001`` before the extension."""
    directory, base = os.path.split(name)
    if "#" in base:
        base = _HASH.sub(lambda m: str(index).zfill(len(m.group(0))), base)
    else:
        root, ext = os.path.splitext(base)
        base = f"{root}_{index:0{width}d}{ext}"
    return os.path.join(directory, base)


def _last_value(tokens, flag):
    value = None
    for k, token in enumerate(tokens):
        if token == flag and k + 1 < len(tokens):
            value = tokens[k + 1]
    return value


def job_arguments(common: Sequence[str], jobs: Sequence[Job], *, source: str = "jobs", seed_draw=None,
                  errors: list | None = None) -> list:
    """The full nanoBragg argument list of every job, output names templated, noise seeds set.

    Returns one list per job (``common + line + -seed/-floatfile/... overrides``);
    raises one :class:`JobErrors` listing every bad line (file line number and
    flag) -- or, given an ``errors`` list, appends ``(line, message)`` to it
    and returns None for the bad lines.
    """
    from nbjax import cflags
    from nbjax.io.numbers import parse_int

    common = [str(t) for t in common]
    collect = errors is not None
    errors = errors if collect else []
    common_seed = _last_value(common, "-seed")
    base_seed = None
    if common_seed is not None:
        try:
            base_seed = parse_int(common_seed, "-seed")
        except InputError as error:
            raise InputError(f"common flags: {error}") from None
    draw = seed_draw or (lambda: secrets.randbelow(2**31 - 2) + 1)
    try:  # the output names of a line that only turns the crystal are those of the common flags
        common_settings = cflags.parse(common)
    except InputError:
        common_settings = None
    arguments = []
    for i, job in enumerate(jobs, start=1):
        argv = common + list(job.tokens)
        try:
            st = common_settings if common_settings is not None and _turns_only(job.tokens) else cflags.parse(argv)
        except InputError as error:
            errors.append((job.line_no, f"{source}:{job.line_no}: {error}"))
            arguments.append(None)
            continue
        extra = []
        if _last_value(job.tokens, "-seed") is None:
            extra += ["-seed", str(base_seed + i - 1 if base_seed is not None else draw())]
        extra += ["-floatfile", template_name(st.floatfilename, i), "-intfile", template_name(st.intfilename, i)]
        if st.write_pgm:
            extra += ["-pgmfile", template_name(st.pgmfilename, i)]
        if st.calculate_noise:
            extra += ["-noisefile", template_name(st.noisefilename, i)]
        arguments.append(argv + extra)
    if errors and not collect:
        raise JobErrors(errors)
    return arguments


def _turns_only(tokens) -> bool:
    """A line ``-phi X`` or ``-misset X Y Z`` (numbers): it changes no output name nor any noise setting.

    (Neither option name contains another option's name, so nanoBragg's
    substring matching reads them as themselves; the numbers are checked when
    the job is set up.)
    """
    from nbjax.io.numbers import is_number

    shape = {"-phi": 2, "-misset": 4}
    return (len(tokens) >= 2 and shape.get(tokens[0]) == len(tokens)
            and all(is_number(t) for t in tokens[1:]))


def series_lines(common: Sequence[str], frames: int) -> list:
    """Jobs of a rotation series: frame i is ``-phi phi0 + (i-1)*osc`` (degrees)."""
    from nbjax import cflags
    from nbjax.io.numbers import parse_float
    from nbjax.physics import sources

    if frames <= 0:
        raise InputError(f"--frames: must be a positive integer, got {frames}")
    common = [str(t) for t in common]
    st = cflags.parse(common)
    phi_text = _last_value(common, "-phi")
    phi0 = parse_float(phi_text, "-phi") if phi_text is not None else st.phi0 * RTD
    osc_text = _last_value(common, "-osc")
    if osc_text is not None:
        osc = parse_float(osc_text, "-osc")
    else:
        _, osc_rad, _ = sources.phi_steps(st.phisteps, st.osc, st.phistep)
        osc = osc_rad * RTD
    if not osc > 0:
        raise InputError("-osc: a rotation series needs an oscillation range > 0 per frame")
    return [Job(i, ("-phi", repr(phi0 + (i - 1) * osc))) for i in range(1, frames + 1)]


def random_rotations(shots: int, seed: int) -> np.ndarray:
    """``shots`` rotation matrices uniform over SO(3) (Haar), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((shots, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def stills_lines(shots: int, seed: int) -> list:
    """Jobs of ``shots`` stills: ``-misset rotx roty rotz`` (degrees, 17 digits) of Haar-random rotations.

    ``-misset`` rotates the cell about x, then y, then z
    (:func:`nbjax.geometry.rotation.rotate_xyz`); the angles are those of the
    rotation matrix by :func:`nbjax.geometry.rotation.umat2misset`.
    """
    from nbjax.geometry.rotation import umat2misset

    if shots <= 0:
        raise InputError(f"--shots: must be a positive integer, got {shots}")
    jobs = []
    for i, matrix in enumerate(random_rotations(shots, seed), start=1):
        angles = np.asarray(umat2misset(matrix)) * RTD
        jobs.append(Job(i, ("-misset",) + tuple("%.17g" % a for a in angles)))
    return jobs


def jobs_text(jobs: Sequence[Job], header: str = "") -> str:
    """A jobs file: one shell-quoted line of flags per job."""
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines += [" ".join(shlex.quote(t) for t in job.tokens) for job in jobs]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# set-up


def build_jobs(arguments: Sequence, builder: Callable, *, jobs: Sequence[Job] | None = None,
               source: str = "jobs", errors: list | None = None) -> list:
    """``builder(argv)`` for every argument list, every bad one reported at once (file line numbers).

    Entries of ``arguments`` that are None (lines already found bad) are
    skipped.  Raises :class:`JobErrors` with the errors of ``errors`` (earlier
    stages) and its own, by line number.  Structure-factor files are read
    once; jobs reading the same table share one array of it.
    """
    from nbjax import experiment
    from nbjax.io import memo

    errors = list(errors or [])
    experiments = []
    shared_tables, shared_masks = {}, {}
    with memo.memoized_files(), experiment.host_scene_arrays():
        for k, argv in enumerate(arguments):
            line = jobs[k].line_no if jobs is not None else k + 1
            if argv is None:
                continue
            try:
                exp = builder(argv)
            except InputError as error:
                errors.append((line, f"{source}:{line}: {error}"))
                continue
            exp = _canonical(exp)
            if exp.mask is not None:  # one array per distinct mask, not one per job
                mask = np.ascontiguousarray(exp.mask)
                key = (mask.shape, mask.dtype.str, hashlib.sha1(mask.tobytes()).hexdigest())
                exp = dataclasses.replace(exp, mask=shared_masks.setdefault(key, exp.mask))
            if exp.fdump is not None:  # -hkl: the memoized table object says which jobs share it
                key = id(exp.fdump[1])
                first = shared_tables.setdefault(key, (exp.fdump[1], exp.scene.F_table))
            else:  # a table read from Fdump.bin (or none): shared by content
                table = np.asarray(exp.scene.F_table)
                key = (table.shape, hashlib.sha1(np.ascontiguousarray(table).tobytes()).hexdigest())
                first = shared_tables.setdefault(key, (None, exp.scene.F_table))
            exp = dataclasses.replace(exp, scene=dataclasses.replace(exp.scene, F_table=first[1]))
            experiments.append(exp)
    if errors:
        raise JobErrors(errors)
    return experiments


def _canonical(exp):
    """The experiment with configuration fields the renderer ignores set alike (fewer groups).

    Which phi steps are exactly 0 matters only to nanoBragg's phi carry-over
    (``--c-parity``); elsewhere a series' frame at phi = 0 shares the others' renderer.
    """
    cfg = exp.config
    if cfg.phi_zero and not cfg.uses_carryover and any(cfg.phi_zero):
        cfg = dataclasses.replace(cfg, phi_zero=(False,) * len(cfg.phi_zero))
        exp = dataclasses.replace(exp, config=cfg)
    return exp


def group_key(exp):
    """Jobs with equal keys share one compiled renderer."""
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(exp.scene)
    shapes = tuple((np.shape(x), np.dtype(x.dtype).str) for x in leaves)  # dtype.str: str(dtype) is slow
    mask = None
    if exp.mask is not None:
        array = np.ascontiguousarray(exp.mask)
        mask = (array.shape, hashlib.sha1(array.tobytes()).hexdigest())
    return exp.config, treedef, shapes, mask


def group_jobs(experiments: Sequence) -> list:
    """Positions of the experiments, grouped by :func:`group_key` (groups in order of first appearance)."""
    groups = {}
    for position, exp in enumerate(experiments):
        groups.setdefault(group_key(exp), []).append(position)
    return list(groups.values())


def default_batch_size(config) -> int:
    """Images rendered together: about 2^19 block pixels in flight (at least 1)."""
    x0, x1, _, _ = config.roi_bounds
    block_pixels = max(1, (x1 - x0 + 1) * config.block_rows)
    return max(1, BATCH_PIXEL_BUDGET // block_pixels)


def _same(values) -> bool:
    """Every value is the first one, bit for bit (same shape, dtype and bytes; one object is quickest)."""
    first = values[0]
    if all(v is first for v in values[1:]):
        return True
    a = np.asarray(first)
    for v in values[1:]:
        b = np.asarray(v)
        if b.shape != a.shape or b.dtype != a.dtype or b.tobytes() != a.tobytes():
            return False
    return True


def _batched_leaves(experiments) -> tuple:
    """Per scene leaf: does it get a batch axis -- only the leaves that differ between the group's scenes.

    A leaf equal in every scene of the group (the detector, the beam, the
    structure-factor table, ... in a series or stills, where only the crystal
    turns) is passed once and stays unbatched inside ``jax.vmap``, so
    everything computed from such leaves alone -- each pixel's position, ray,
    solid angle, polarization, scattering vector and cuts -- is computed once
    per block for the whole chunk instead of once per image.  The flags are
    part of the export key (:func:`nbjax.renderer.aot.render_mapped`).  When
    nothing differs (a jobs file repeating one line), the smallest leaf gets
    the batch axis: ``vmap`` needs one.
    """
    import jax

    flat = [jax.tree_util.tree_leaves(e.scene) for e in experiments]
    varies = [not _same([f[k] for f in flat]) for k in range(len(flat[0]))]
    if not any(varies):
        varies[min(range(len(varies)), key=lambda k: np.size(flat[0][k]))] = True
    return tuple(varies)


def _dispatch_chunk(experiments, batch_size, varies, shared, mask, cache_dir):
    """Start rendering one chunk of a group; returns a function that waits and gives its numpy results.

    The batch is padded to ``batch_size`` with the last scene.  ``shared``:
    the group's unbatched leaves already on the device (by leaf index);
    ``mask``: the group's mask on the device, or None.  With ``cache_dir``
    the renderer comes from the export cache (:mod:`nbjax.renderer.aot`)
    instead of being traced.
    """
    import jax

    from nbjax.renderer import aot, engine

    first = experiments[0]
    count = len(experiments)
    if batch_size == 1:
        result = aot.render(first.scene, first.config, mask, cache_dir=cache_dir)  # traced when cache_dir is None
        return lambda: [jax.tree_util.tree_map(np.asarray, result)]
    scenes = [e.scene for e in experiments]
    scenes += [scenes[-1]] * (batch_size - count)
    flat = [jax.tree_util.tree_flatten(s)[0] for s in scenes]
    treedef = jax.tree_util.tree_structure(first.scene)
    leaves = [_stack([f[k] for f in flat]) if v else shared.get(k, flat[0][k]) for k, v in enumerate(varies)]
    axes = tuple(0 if v else None for v in varies)
    batched = jax.tree_util.tree_unflatten(treedef, leaves)
    out = aot.render_mapped(batched, axes, first.config, mask, cache_dir=cache_dir)
    if out is None:  # no export cache: traced (once per configuration and shapes)
        from nbjax.renderer import sharding

        out = sharding.render_batch(batched, first.config, mask, devices=jax.local_devices()[:1], axes=axes)

    def collect():
        fields = jax.tree_util.tree_map(np.asarray, tuple(out))
        return [engine.RenderResult(*(field[k] for field in fields)) for k in range(count)]

    return collect


def _stack(values):
    """One batched leaf: host arrays stacked on the host (one transfer), device arrays on the device."""
    if all(isinstance(v, (np.ndarray, np.generic, float, int)) for v in values):
        return np.stack([np.asarray(v) for v in values])
    import jax.numpy as jnp

    return jnp.stack(values)


def render_jobs(experiments: Sequence, positions: Sequence[int] | None = None, *, batch_size: int | None = None,
                on_group=None, cache_dir: str | None = None) -> Iterator:
    """Render ``experiments`` (those at ``positions``, default all) group by group, chunk by chunk.

    Yields ``(position, RenderResult of numpy arrays)`` in render order
    (groups in order of first appearance, each in order).  ``on_group(number,
    positions, batch_size)`` is called before each group is rendered.  The
    next chunk is dispatched before a chunk's results are handed out, so the
    caller's work on them (writing files) overlaps the next render.
    ``cache_dir``: the folder of the exported renderers
    (:mod:`nbjax.renderer.aot`; None: trace them).
    """
    import jax

    wanted = list(range(len(experiments))) if positions is None else list(positions)
    groups = {}
    for position in wanted:
        groups.setdefault(group_key(experiments[position]), []).append(position)
    pending = None
    for number, members in enumerate(groups.values(), start=1):
        size = batch_size or default_batch_size(experiments[members[0]].config)
        size = max(1, min(size, len(members)))
        if pending is not None:  # the previous group's last images first: on_group starts this group's clock
            yield from zip(pending[0], pending[1]())
            pending = None
        if on_group is not None:
            on_group(number, members, size)
        group = [experiments[p] for p in members]
        varies = _batched_leaves(group)
        first_leaves = jax.tree_util.tree_leaves(group[0].scene)
        # to the device once per group; device_put, not jnp.asarray: that compiles (or loads from the
        # persistent cache) a little copy program per distinct shape, ~5-20 ms each
        unbatched = [k for k, v in enumerate(varies) if not v] if size > 1 else []
        shared = dict(zip(unbatched, jax.device_put([np.asarray(first_leaves[k]) for k in unbatched])))
        mask = None if group[0].mask is None else jax.device_put(np.asarray(group[0].mask))
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            collect = _dispatch_chunk([experiments[p] for p in chunk], size, varies, shared, mask, cache_dir)
            if pending is not None:
                yield from zip(pending[0], pending[1]())
            pending = (chunk, collect)
    if pending is not None:
        yield from zip(pending[0], pending[1]())


# --------------------------------------------------------------------------
# the Python API


def experiment_build(argv, *, c_parity: bool = False, **build_options):
    """:func:`nbjax.experiment.build` in the mode asked for, rendering a float32 image (as the command)."""
    from nbjax import experiment

    mode = "c-parity" if c_parity else "spec"
    options = dict(accumulation=mode, phi_carryover=mode)
    options.update(build_options)
    exp = experiment.build(argv, **options)
    return dataclasses.replace(exp, config=dataclasses.replace(exp.config, output_dtype="float32"))


def _default_builder(c_parity, build_options):
    return lambda argv: experiment_build(argv, c_parity=c_parity, **build_options)


def _in_order(stream, experiments):
    pending, following = {}, 0
    for position, result in stream:
        pending[position] = result
        while following in pending:
            result = pending.pop(following)
            yield BatchImage(following + 1, np.asarray(result.image, np.float32), experiments[following], result)
            following += 1


def render_batch(jobs, common: Sequence[str] = (), *, c_parity: bool = False, batch_size: int | None = None,
                 stream: bool = False, **build_options):
    """Render every job of a batch, as ``nbjax batch`` does, without writing files.

    ``jobs``: a jobs-file path, or a sequence of lines (strings of flags or
    token lists).  ``common``: the flags every job starts from.  Returns a
    float32 array ``(jobs, slow, fast)`` (a list when the shapes differ), or
    with ``stream=True`` a generator of :class:`BatchImage` in job order, one
    image at a time.  ``build_options`` go to :func:`nbjax.experiment.build`
    (e.g. ``dtype``, ``evaluation_dtype``).  Output flags in the jobs are
    ignored (nothing is written); noise seeds follow :func:`job_arguments`.
    """
    if isinstance(jobs, (str, os.PathLike)):
        job_list = read_jobs(jobs)
    else:
        job_list = parse_lines(list(jobs))
    arguments = job_arguments(common, job_list)
    experiments = build_jobs(arguments, _default_builder(c_parity, build_options), jobs=job_list)
    images = _in_order(render_jobs(experiments, batch_size=batch_size), experiments)
    if stream:
        return images
    frames = [item.image for item in images]
    if len({f.shape for f in frames}) == 1:
        return np.stack(frames)
    return frames


def render_series(common: Sequence[str], frames: int, **options):
    """A rotation series of ``frames`` frames (see :func:`series_lines`); options as :func:`render_batch`."""
    return render_batch(series_lines(common, frames), common, **options)


def render_stills(common: Sequence[str], shots: int, seed: int, **options):
    """``shots`` stills at Haar-random orientations from ``seed`` (see :func:`stills_lines`)."""
    return render_batch(stills_lines(shots, seed), common, **options)
