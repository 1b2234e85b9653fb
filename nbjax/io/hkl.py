"""Structure-factor tables: the ``-hkl`` text file and its in-memory grid.

File format
-----------
Plain text, one reflection per line::

    h k l F [anything else ...]

``h``, ``k``, ``l`` are Miller indices (integers, negative allowed; ``2.0`` is
read as 2, ``1.5`` is refused) and ``F`` is the structure-factor amplitude in
electrons (not an intensity).  Fields are separated by white space or commas.
Columns after the fourth (sigma, phase, ...) are ignored.  Blank lines are
skipped and ``#`` starts a comment that runs to the end of the line.  A line
ends at LF, CR LF or a lone CR (old Mac files).  Numbers are plain decimals
(``-3``, ``76.14``, ``1e3``); ``nan``, ``inf`` and hexadecimal are refused,
and so is an ``F`` beyond :data:`MAX_ABS_F` (about 1.3e154 electrons), whose
square -- the intensity -- would overflow.

A file that is not laid out one reflection per line is read as nanoBragg.c
reads every file, as a stream of numbers taken four at a time: a file whose
only data line holds eight numbers or more (all reflections on one line), or
in which some data line holds fewer than four numbers (records wrapped over
lines).  Such a stream must hold a whole number of reflections.

Deviations from nanoBragg.c, which reads the stream with ``fscanf("%lg")``
until the first thing that is not a number: C silently stops at a word or a
comment (the reflections after it are lost) and silently drops a last,
incomplete record; nbjax refuses both, naming the line.  C reads an extra
column as the next reflection's h; nbjax ignores it.  C only warns about
non-integer indices.

In memory
---------
:class:`HKLTable` holds the dense grid nanoBragg.c builds: with ``h_range =
h_max - h_min + 1`` (and likewise for k and l), ``values`` has shape
``(h_range + 1, k_range + 1, l_range + 1)`` and ``values[h - h_min, k - k_min,
l - l_min]`` is F(h, k, l).  The extra slab at the high end of each axis (index
``range``) always holds 0.0: C allocates it but never fills it, and the
interpolation code may read it.  With a nonzero ``default_F`` every slot below
``range`` on all three axes starts at ``default_F``; listed reflections
overwrite their slot, the last line winning for duplicates.  The grid may hold
at most :data:`MAX_GRID_SLOTS` (2^27) values, 1 GiB of float64.

Speed
-----
Three readers give the same table: numpy's ``loadtxt`` for ordinary files, a
one-pass compiled scanner (numba) for files of :data:`KERNEL_MIN_BYTES` or
more, and a line-by-line reader, which is the reference and which writes the
error messages (the other two hand over to it for anything unusual).  Files of
:data:`CACHE_MIN_BYTES` or more are also cached: the reflections, deduplicated,
are kept in the nbjax cache folder (:mod:`nbjax.io.cachedir`) under
``hkl/<SHA-256 of the file's bytes>.bin``, so a second read of the same content
costs a hash and a load.  An entry whose format version, key, sizes or CRC-32
do not match is ignored and rewritten; entries are written atomically, and only
the :data:`CACHE_ENTRIES` most recently used are kept.  Beside each entry the
cache remembers which file had that content (``hkl/<hash of the real path>.id``:
device, inode, size, modification and change times in ns), so that reading the
same, unchanged file again skips reading and hashing its bytes (0.05 s of a
32 MB file): a record is written only for a file last changed at least
:data:`IDENTITY_MIN_AGE_NS` before its bytes were read (a change in the same
clock tick as the read could leave every stat field as it was), and any write,
rename over, ``touch`` or permission change of the file makes it miss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import mmap
import os
import re
import time
import zlib

import numpy as np

from nbjax.errors import InputError
from nbjax.io.atomic import atomic_write, map_file, read_file_bytes
from nbjax.io.cachedir import cache_dir
from nbjax.io.memo import memoized_read

__all__ = ["HKLTable", "read_hkl", "MAX_GRID_SLOTS", "MAX_ABS_F", "MAX_HKL_BYTES"]


# Refuse index ranges whose grid would hold more slots than this: 2^27 float64
# values are 1 GiB (and a 1 GiB Fdump.bin), a box of 512^3 indices (a 500 A
# cell to 2 A); a bigger box is almost certainly a mistake such as a stray
# h = 1000000.
MAX_GRID_SLOTS = 1 << 27
# The largest -hkl file read (2 GiB of text is ~100 million reflections).
MAX_HKL_BYTES = 1 << 31
# |F| above this would make F^2 (the intensity) overflow float64.
MAX_ABS_F = math.sqrt(np.finfo(np.float64).max)
# Files at least this large are cached (a 1.3 MB file: a 3 ms load instead of a 50 ms parse);
# files of KERNEL_MIN_BYTES or more are parsed by the compiled scanner.
CACHE_MIN_BYTES = 256 << 10
KERNEL_MIN_BYTES = 8 << 20
CACHE_ENTRIES = 16
# A file is remembered by its identity only when it was last changed this long before it was read.
IDENTITY_MIN_AGE_NS = 2_000_000_000

# A plain decimal number (ASCII digits only).
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Bytes allowed in a file that takes the loadtxt path.
_PLAIN_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n\v\f\r"
# A line with something other than separators before any '#'.
_HAS_DATA_LINE = re.compile(rb"^[ \t\v\f\r,]*[^#\s,]", re.MULTILINE)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclasses.dataclass(frozen=True, eq=False)
class HKLTable:
    """Dense grid of structure factors F(h, k, l) over a box of Miller indices.

    ``values``: float64 array of shape ``(h_range+1, k_range+1, l_range+1)``,
    read-only, ``values[h-h_min, k-k_min, l-l_min]`` = F in electrons.
    ``hkl_min``/``hkl_max``: inclusive index bounds.  ``count``: number of
    reflections read (nanoBragg's ``hkls``; for a table read from Fdump.bin it
    is ``h_range*k_range*l_range``, as in C).
    """

    values: np.ndarray
    hkl_min: tuple[int, int, int]
    hkl_max: tuple[int, int, int]
    count: int

    @property
    def ranges(self) -> tuple[int, int, int]:
        """(h_range, k_range, l_range): number of indices on each axis, max - min + 1."""
        return tuple(high - low + 1 for low, high in zip(self.hkl_min, self.hkl_max))

    def __eq__(self, other) -> bool:
        if not isinstance(other, HKLTable):
            return NotImplemented
        return (
            self.hkl_min == other.hkl_min
            and self.hkl_max == other.hkl_max
            and self.count == other.count
            and self.values.shape == other.values.shape
            and np.array_equal(self.values, other.values, equal_nan=True)
        )

    __hash__ = None


def grid_shape(hkl_min, hkl_max, source: str, what: str = "-hkl") -> tuple[int, int, int]:
    """Shape of the C grid for these bounds; InputError (naming ``source``) if unusable."""
    shape = tuple(int(high) - int(low) + 2 for low, high in zip(hkl_min, hkl_max))
    if any(extent < 2 for extent in shape):
        raise InputError(f"{source}: empty Miller index range {tuple(hkl_min)}..{tuple(hkl_max)}")
    cells = math.prod(shape)
    if cells > MAX_GRID_SLOTS:
        raise InputError(
            f"{source}: {what} Miller index range {tuple(hkl_min)}..{tuple(hkl_max)} is too large: "
            f"its grid of {shape[0]}x{shape[1]}x{shape[2]} = {cells} values ({cells * 8 / 2**30:.1f} GiB) "
            f"exceeds the limit of {MAX_GRID_SLOTS} (2^27)"
        )
    return shape


@dataclasses.dataclass(frozen=True)
class _Reflections:
    """The listed reflections, one per grid slot: ``flat`` (sorted, unique) indices into the grid."""

    hkl_min: tuple[int, int, int]
    hkl_max: tuple[int, int, int]
    count: int
    flat: np.ndarray  # int64
    amplitudes: np.ndarray  # float64

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(high - low + 2 for low, high in zip(self.hkl_min, self.hkl_max))


def _reflections(indices: np.ndarray, amplitudes: np.ndarray, source: str) -> _Reflections:
    """Deduplicate reflections (``indices`` int64 (n, 3)), the last one of each index winning."""
    hkl_min = tuple(int(v) for v in indices.min(axis=0))
    hkl_max = tuple(int(v) for v in indices.max(axis=0))
    shape = grid_shape(hkl_min, hkl_max, source)
    offsets = indices - np.asarray(hkl_min, dtype=np.int64)
    flat = (offsets[:, 0] * shape[1] + offsets[:, 1]) * shape[2] + offsets[:, 2]
    if len(flat) > 1 and not (flat[1:] > flat[:-1]).all():  # not already sorted without repeats
        _, first_from_end = np.unique(flat[::-1], return_index=True)
        last = len(flat) - 1 - first_from_end
        flat, amplitudes = flat[last], amplitudes[last]
    return _Reflections(hkl_min, hkl_max, len(indices), flat, np.asarray(amplitudes, dtype=np.float64))


def _grid(refl: _Reflections, default_F: float, source: str) -> HKLTable:
    shape = refl.shape
    try:
        values = np.zeros(shape, dtype=np.float64)
        if default_F != 0.0:
            values[:-1, :-1, :-1] = default_F
    except MemoryError as error:
        raise InputError(f"{source}: not enough memory for a {shape} structure-factor grid") from error
    values.reshape(-1)[refl.flat] = refl.amplitudes
    values.flags.writeable = False
    return HKLTable(values=values, hkl_min=refl.hkl_min, hkl_max=refl.hkl_max, count=refl.count)


def build_grid(indices: np.ndarray, amplitudes: np.ndarray, default_F: float, source: str) -> HKLTable:
    """Place reflections (``indices`` int64 (n, 3), ``amplitudes`` (n,)) on the C grid."""
    return _grid(_reflections(indices, amplitudes, source), float(default_F), source)


def _shorten(text: str, limit: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- readers

def _is_stream(counts) -> bool:
    """Whether lines holding ``counts`` numbers are a stream (True) or one reflection per line."""
    return (len(counts) == 1 and counts[0] >= 8) or int(np.min(counts)) < 4


def _parse_fast(raw: bytes) -> np.ndarray | None:
    """All reflections as an (n, 4) float array via numpy's loadtxt, or None if anything looks off.

    None sends the caller to the line-by-line reader, which either accepts the
    file in the same way or produces a precise error message.
    """
    if raw.translate(None, _PLAIN_TEXT_BYTES):
        return None  # non-ASCII or control bytes somewhere
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not _HAS_DATA_LINE.search(raw):
        return None  # numpy would only warn about an empty file
    text = raw.replace(b",", b" ").decode("ascii")
    try:
        table = np.loadtxt(io.StringIO(text), usecols=(0, 1, 2, 3), comments="#", ndmin=2, dtype=np.float64)
    except (ValueError, IndexError, TypeError):
        return None  # e.g. a line of fewer than four numbers: perhaps a stream
    if table.shape[0] <= 1 or not np.isfinite(table).all():
        return None  # one line: perhaps all reflections on it
    return table


_kernel = None


def _scanner():
    """The compiled one-pass scanner (numba is imported only for large files)."""
    global _kernel
    if _kernel is None:
        from nbjax.io import _hkl_scan

        _kernel = _hkl_scan.scan
    return _kernel


def _parse_kernel(raw: bytes) -> np.ndarray | None:
    """Like :func:`_parse_fast`, with the compiled scanner of :mod:`nbjax.io._hkl_scan`."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    capacity = len(raw) // 2 + 1
    values = np.empty(capacity, dtype=np.float64)
    slow = np.empty((capacity, 3), dtype=np.int64)
    first = np.empty(capacity, dtype=np.int64)
    count = np.empty(capacity, dtype=np.int64)
    ntok, nslow, nlines = _scanner()(buf, values, slow, first, count)
    if ntok <= 0:
        return None
    if nslow:  # numbers beyond the scanner's exact conversion: Python's float (C's strtod rounding)
        token, start, end = slow[:nslow].T
        values[token] = [float(raw[s:e]) for s, e in zip(start.tolist(), end.tolist())]
    values, first, count = values[:ntok], first[:nlines], count[:nlines]
    if _is_stream(count):
        table = values.reshape(-1, 4) if ntok % 4 == 0 else None
    elif (count == 4).all():
        table = values.reshape(-1, 4)
    else:
        table = values[first[:, None] + np.arange(4)]  # extra columns ignored
    return table if table is not None and np.isfinite(table).all() else None


def _parse_line_by_line(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The reference reader: (n, 4) floats and each reflection's line number; InputError naming a bad line."""
    text = raw.decode("utf-8", errors="replace")
    lines = []
    for line_number, line in enumerate(_LINE_BREAK.split(text), start=1):
        fields = line.split("#", 1)[0].replace(",", " ").split()
        if fields:
            lines.append((line_number, line, fields))
    if not lines:
        raise InputError(f"{source}: no reflections (expected lines of 'h k l F')")

    def number(field, line_number, line):
        if not _DECIMAL.fullmatch(field) or not math.isfinite(value := float(field)):
            raise InputError(
                f"{source}: line {line_number}: expected 'h k l F', got {_shorten(line)!r} "
                f"({field!r} is not a finite number)"
            )
        return value

    if not _is_stream([len(fields) for _, _, fields in lines]):
        rows = [[number(f, n, line) for f in fields[:4]] for n, line, fields in lines]
        return np.asarray(rows, dtype=np.float64), np.asarray([n for n, _, _ in lines], dtype=np.int64)
    # a stream of numbers, four to a reflection, as nanoBragg.c reads every file
    numbers, where = [], []
    for n, line, fields in lines:
        for field in fields:
            numbers.append(number(field, n, line))
            where.append(n)
    if len(numbers) % 4:
        n, line = where[-(len(numbers) % 4)], dict((n, l) for n, l, _ in lines)[where[-(len(numbers) % 4)]]
        raise InputError(
            f"{source}: line {n}: expected 'h k l F', got {_shorten(line)!r} (the file holds {len(numbers)} "
            f"numbers, not a whole number of reflections: the last one has only {len(numbers) % 4})"
        )
    return np.asarray(numbers, dtype=np.float64).reshape(-1, 4), np.asarray(where[::4], dtype=np.int64)


def _parse(raw: bytes, source: str) -> np.ndarray:
    table = _parse_kernel(raw) if len(raw) >= KERNEL_MIN_BYTES else None
    if table is None:  # small, or something the scanner leaves alone (e.g. words in extra columns)
        table = _parse_fast(raw)
    if table is None:
        table, _ = _parse_line_by_line(raw, source)
    return table


def _check(table: np.ndarray, raw: bytes, source: str) -> np.ndarray:
    """The h, k, l columns as int64; InputError naming the line of a non-integer index or a bad F."""
    hkl, F = table[:, :3], table[:, 3]
    whole = np.floor(hkl) == hkl
    if not whole.all():
        bad_row = int(np.argwhere(~whole.all(axis=1))[0, 0])
        h, k, l = (float(v) for v in hkl[bad_row])
        raise InputError(
            f"{source}: line {_line_of_row(raw, source, bad_row)}: Miller indices must be integers, "
            f"got h={h:g} k={k:g} l={l:g}"
        )
    if np.abs(hkl).max() > MAX_GRID_SLOTS:
        raise InputError(f"{source}: Miller index out of range (|index| > {MAX_GRID_SLOTS})")
    too_large = ~(np.abs(F) <= MAX_ABS_F)
    if too_large.any():
        bad_row = int(np.argmax(too_large))
        raise InputError(
            f"{source}: line {_line_of_row(raw, source, bad_row)}: F = {F[bad_row]:g} is too large "
            f"(|F| must be at most {MAX_ABS_F:.3g} electrons, or F^2 overflows)"
        )
    return hkl.astype(np.int64)


def _line_of_row(raw: bytes, source: str, row: int) -> int:
    """1-based line number where reflection ``row`` (0-based) starts, from the reference reader."""
    return int(_parse_line_by_line(raw, source)[1][row])


# ----------------------------------------------------------------------------- cache

_MAGIC = b"nbjax hkl cache\n"
_CACHE_VERSION = 1


def _cache_path(key: str, folder: str) -> str:
    return os.path.join(folder, "hkl", key + ".bin")


def _cache_load(key: str, folder: str) -> _Reflections | None:
    """The cached reflections for ``key``, or None when absent, stale or damaged."""
    path = _cache_path(key, folder)
    try:
        with open(path, "rb") as handle:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)  # entries are replaced, never rewritten
    except (OSError, ValueError):
        return None
    try:
        at = len(_MAGIC)
        if data[:at] != _MAGIC:
            return None
        header_size = int.from_bytes(data[at : at + 8], "little")
        header = json.loads(data[at + 8 : at + 8 + header_size])
        payload = memoryview(data)[at + 8 + header_size :]
        entries = int(header["entries"])
        if (
            header["version"] != _CACHE_VERSION
            or header["key"] != key
            or len(payload) != 12 * entries
            or zlib.crc32(payload) != header["crc32"]
        ):
            return None
        hkl_min, hkl_max = tuple(map(int, header["hkl_min"])), tuple(map(int, header["hkl_max"]))
        flat = np.frombuffer(payload, dtype="<u4", count=entries).astype(np.int64)
        amplitudes = np.frombuffer(payload, dtype="<f8", count=entries, offset=4 * entries)
        refl = _Reflections(hkl_min, hkl_max, int(header["count"]), flat, amplitudes)
        if entries and (math.prod(refl.shape) > MAX_GRID_SLOTS or flat[-1] >= math.prod(refl.shape)):
            return None
    except (ValueError, KeyError, TypeError, IndexError):
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used
    return refl


def _cache_store(key: str, folder: str, refl: _Reflections) -> None:
    """Keep ``refl`` under ``key`` (atomically); failures only cost the next read its speed."""
    payload = refl.flat.astype("<u4").tobytes() + refl.amplitudes.astype("<f8").tobytes()
    header = json.dumps({
        "version": _CACHE_VERSION, "key": key, "hkl_min": list(refl.hkl_min), "hkl_max": list(refl.hkl_max),
        "count": refl.count, "entries": len(refl.flat), "crc32": zlib.crc32(payload),
    }).encode("ascii")
    path = _cache_path(key, folder)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, _MAGIC + len(header).to_bytes(8, "little") + header + payload)
        for suffix, keep in ((".bin", CACHE_ENTRIES), (".id", 4 * CACHE_ENTRIES)):
            entries = sorted(
                (entry for entry in os.scandir(os.path.dirname(path)) if entry.name.endswith(suffix)),
                key=lambda entry: entry.stat().st_mtime,
            )
            for entry in entries[:-keep]:
                os.remove(entry.path)
    except (OSError, InputError):
        pass


def _identity(path) -> tuple[str, list[int]] | None:
    """(real path, [device, inode, size, mtime ns, ctime ns]) of the file ``path``, or None."""
    try:
        real = os.path.realpath(path)
        info = os.stat(real)
    except (OSError, ValueError, TypeError):
        return None
    return real, [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _identity_path(real: str, folder: str) -> str:
    return os.path.join(folder, "hkl", hashlib.sha256(os.fsencode(real)).hexdigest()[:32] + ".id")


def _known_key(path, folder: str) -> str | None:
    """The content key recorded for the file ``path`` if it has not changed since, else None."""
    identity = _identity(path)
    if identity is None or identity[1][2] < CACHE_MIN_BYTES:
        return None
    real, fields = identity
    try:
        with open(_identity_path(real, folder), "rb") as handle:
            record = json.loads(handle.read(4096))
        if record["path"] == real and record["stat"] == fields and isinstance(record["key"], str):
            return record["key"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _remember_key(path, folder: str, key: str, read_started_ns: int) -> None:
    """Record that the file ``path``, whose bytes were read from ``read_started_ns`` on, has content ``key``."""
    identity = _identity(path)
    if identity is None:
        return
    real, fields = identity
    if max(fields[3], fields[4]) > read_started_ns - IDENTITY_MIN_AGE_NS:
        return  # changed shortly before (or since) the read: its stat fields may not tell a later change
    record = json.dumps({"path": real, "stat": fields, "key": key}).encode()
    with contextlib.suppress(OSError, InputError):
        atomic_write(_identity_path(real, folder), record)


def cached_table(path, default_F: float = 0.0, *, cache=None) -> HKLTable | None:
    """The table of the text ``-hkl`` file ``path`` from the cache when the file is known and unchanged, else None.

    Known: :func:`read_hkl` read it before (with this cache folder, default
    the nbjax cache folder) and remembered it (see the module docstring);
    nothing of the file is read here.  None means: read the file.
    """
    folder = cache_dir() if cache is None else cache
    if not isinstance(path, (str, os.PathLike)):
        return None
    key = _known_key(path, folder)
    refl = _cache_load(key, folder) if key is not None else None
    if refl is None:
        return None
    return _grid(refl, float(default_F), os.fspath(path))


# ----------------------------------------------------------------------------- entry point

_USE_CACHE = object()


def read_hkl(path, default_F: float = 0.0, *, cache=_USE_CACHE, raw: bytes | None = None,
             raw_read_at_ns: int | None = None) -> HKLTable:
    """Read an ``h k l F`` text file into the dense grid nanoBragg.c uses.

    ``default_F`` (electrons) fills every slot of the box that the file does
    not list, except the extra high-end slabs, which stay 0.0.  Raises
    :class:`InputError` naming the file (and line) for anything unusable.
    ``cache``: folder of the parsed-file cache (default: the nbjax cache
    folder), or None for no cache; only files of at least
    :data:`CACHE_MIN_BYTES` are cached.  ``raw``: the file's bytes when the
    caller has read them already (they are not read again); ``raw_read_at_ns``:
    ``time.time_ns()`` taken before they were read (without it the file is
    not remembered by its identity, see the module docstring).
    """
    source = os.fspath(path) if isinstance(path, (str, os.PathLike)) else repr(path)
    return memoized_read(path, ("read_hkl", float(default_F)),
                         lambda: _read_hkl(path, source, default_F, cache, raw, raw_read_at_ns))


def _read_hkl(path, source, default_F, cache, raw, read_started_ns):
    folder = cache_dir() if cache is _USE_CACHE else cache
    key = refl = None
    if raw is not None:
        if len(raw) > MAX_HKL_BYTES:
            raise InputError(f"{source}: file too large (more than {MAX_HKL_BYTES} bytes)")
        if folder is not None and len(raw) >= CACHE_MIN_BYTES:
            key = hashlib.sha256(raw).hexdigest()
            refl = _cache_load(key, folder)
    elif folder is not None:
        known = cached_table(path, default_F, cache=folder)
        if known is not None:
            return known  # the same file, unchanged: its bytes are not read
        read_started_ns = time.time_ns()
        view = map_file(path, limit=MAX_HKL_BYTES)
        if len(view) >= CACHE_MIN_BYTES:
            key = hashlib.sha256(view).hexdigest()
            refl = _cache_load(key, folder)
        raw = None if refl is not None else bytes(view)
        if hasattr(view, "close"):
            view.close()
    else:
        raw = read_file_bytes(path, limit=MAX_HKL_BYTES)
    if refl is None:
        table = _parse(raw, source)
        indices = _check(table, raw, source)
        refl = _reflections(indices, table[:, 3].copy(), source)
        if key:
            _cache_store(key, folder, refl)
    if key and read_started_ns is not None and isinstance(path, (str, os.PathLike)):
        _remember_key(path, folder, key, read_started_ns)
    return _grid(refl, float(default_F), source)
