"""Structure-factor tables: the ``-hkl`` text file and its in-memory grid.

File format
-----------
Plain text, one reflection per line::

    h k l F [anything else ...]

``h``, ``k``, ``l`` are Miller indices (integers, negative allowed; ``2.0`` is
read as 2, ``1.5`` is refused) and ``F`` is the structure-factor amplitude in
electrons (not an intensity).  Fields are separated by white space or commas.
Columns after the fourth (sigma, phase, ...) are ignored.  Blank lines are
skipped and ``#`` starts a comment that runs to the end of the line.  Numbers
are plain decimals (``-3``, ``76.14``, ``1e3``); ``nan``, ``inf`` and
hexadecimal are refused.

This deliberately differs from nanoBragg.c, which reads the file as a stream
of numbers four at a time, so that extra columns shift every later
reflection; and which only warns about non-integer indices.

In memory
---------
:class:`HKLTable` holds the dense grid nanoBragg.c builds: with ``h_range =
h_max - h_min + 1`` (and likewise for k and l), ``values`` has shape
``(h_range + 1, k_range + 1, l_range + 1)`` and ``values[h - h_min, k - k_min,
l - l_min]`` is F(h, k, l).  The extra slab at the high end of each axis (index
``range``) always holds 0.0: C allocates it but never fills it, and the
interpolation code may read it.  With a nonzero ``default_F`` every slot below
``range`` on all three axes starts at ``default_F``; listed reflections
overwrite their slot, the last line winning for duplicates.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re

import numpy as np

from nbjax.errors import InputError
from nbjax.io.atomic import read_file_bytes

__all__ = ["HKLTable", "read_hkl", "MAX_GRID_SLOTS", "memoized_tables"]

# (path, mtime, size, default_F) -> HKLTable while memoized_tables() is active
_MEMO: dict | None = None

# Refuse index ranges whose grid would hold more slots than this (8 GiB of
# float64); such a file is almost certainly a mistake.
MAX_GRID_SLOTS = 1 << 30

# A plain decimal number (ASCII digits only).
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Bytes allowed in a file that takes the fast (numpy) parsing path.
_PLAIN_TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t\n\v\f\r"
# A line with something other than separators before any '#'.
_HAS_DATA_LINE = re.compile(rb"^[ \t\v\f\r,]*[^#\s,]", re.MULTILINE)


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


def grid_shape(hkl_min, hkl_max, source: str) -> tuple[int, int, int]:
    """Shape of the C grid for these bounds; InputError (naming ``source``) if unusable."""
    shape = tuple(int(high) - int(low) + 2 for low, high in zip(hkl_min, hkl_max))
    if any(extent < 2 for extent in shape):
        raise InputError(f"{source}: empty Miller index range {tuple(hkl_min)}..{tuple(hkl_max)}")
    if math.prod(shape) > MAX_GRID_SLOTS:
        raise InputError(
            f"{source}: Miller index range {tuple(hkl_min)}..{tuple(hkl_max)} is too large "
            f"(more than {MAX_GRID_SLOTS} grid points)"
        )
    return shape


def build_grid(indices: np.ndarray, amplitudes: np.ndarray, default_F: float, source: str) -> HKLTable:
    """Place reflections (``indices`` int64 (n, 3), ``amplitudes`` (n,)) on the C grid."""
    hkl_min = tuple(int(v) for v in indices.min(axis=0))
    hkl_max = tuple(int(v) for v in indices.max(axis=0))
    shape = grid_shape(hkl_min, hkl_max, source)
    try:
        values = np.zeros(shape, dtype=np.float64)
        if default_F != 0.0:
            values[:-1, :-1, :-1] = default_F
    except MemoryError as error:
        raise InputError(f"{source}: not enough memory for a {shape} structure-factor grid") from error
    offsets = indices - np.asarray(hkl_min, dtype=np.int64)
    flat = np.ravel_multi_index(offsets.T, shape)
    # Keep only the last line for each repeated index (later lines win).
    _, first_from_end = np.unique(flat[::-1], return_index=True)
    last = len(flat) - 1 - first_from_end
    values.reshape(-1)[flat[last]] = amplitudes[last]
    values.flags.writeable = False
    return HKLTable(values=values, hkl_min=hkl_min, hkl_max=hkl_max, count=len(amplitudes))


def _shorten(text: str, limit: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_fast(raw: bytes) -> np.ndarray | None:
    """All reflections as an (n, 4) float array via numpy, or None if anything looks off.

    None sends the caller to the line-by-line reader, which either accepts the
    file in the same way or produces a precise error message.
    """
    if raw.translate(None, _PLAIN_TEXT_BYTES):
        return None  # non-ASCII or control bytes somewhere
    if not _HAS_DATA_LINE.search(raw):
        return None  # numpy would only warn about an empty file
    text = raw.replace(b",", b" ").decode("ascii")
    try:
        table = np.loadtxt(io.StringIO(text), usecols=(0, 1, 2, 3), comments="#", ndmin=2, dtype=np.float64)
    except (ValueError, IndexError, TypeError):
        return None
    if table.shape[0] == 0 or not np.isfinite(table).all():
        return None
    return table


def _parse_line_by_line(raw: bytes, source: str) -> np.ndarray:
    """The reference reader: (n, 4) floats, or InputError naming the first bad line."""
    text = raw.decode("utf-8", errors="replace")
    rows = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        fields = line.split("#", 1)[0].replace(",", " ").split()
        if not fields:
            continue
        if len(fields) < 4:
            raise InputError(f"{source}: line {line_number}: expected 'h k l F', got {_shorten(line)!r}")
        numbers = []
        for field in fields[:4]:
            if not _DECIMAL.fullmatch(field) or not math.isfinite(value := float(field)):
                raise InputError(
                    f"{source}: line {line_number}: expected 'h k l F', got {_shorten(line)!r} "
                    f"({field!r} is not a finite number)"
                )
            numbers.append(value)
        rows.append(numbers)
    if not rows:
        raise InputError(f"{source}: no reflections (expected lines of 'h k l F')")
    return np.asarray(rows, dtype=np.float64)


def _check_integer_indices(table: np.ndarray, raw: bytes, source: str) -> np.ndarray:
    """The h, k, l columns as int64; InputError naming the line of a non-integer index."""
    hkl = table[:, :3]
    whole = np.floor(hkl) == hkl
    if not whole.all():
        bad_row = int(np.argwhere(~whole.all(axis=1))[0, 0])
        line_number = _data_line_number(raw, bad_row)
        h, k, l = (float(v) for v in hkl[bad_row])
        raise InputError(
            f"{source}: line {line_number}: Miller indices must be integers, got h={h:g} k={k:g} l={l:g}"
        )
    if np.abs(hkl).max() > MAX_GRID_SLOTS:
        raise InputError(f"{source}: Miller index out of range (|index| > {MAX_GRID_SLOTS})")
    return hkl.astype(np.int64)


def _data_line_number(raw: bytes, row: int) -> int:
    """1-based line number of the ``row``-th (0-based) reflection line."""
    seen = -1
    for line_number, line in enumerate(raw.decode("utf-8", errors="replace").split("\n"), start=1):
        if line.split("#", 1)[0].replace(",", " ").split():
            seen += 1
            if seen == row:
                return line_number
    return 0


def read_hkl(path, default_F: float = 0.0) -> HKLTable:
    """Read an ``h k l F`` text file into the dense grid nanoBragg.c uses.

    ``default_F`` (electrons) fills every slot of the box that the file does
    not list, except the extra high-end slabs, which stay 0.0.  Raises
    :class:`InputError` naming the file (and line) for anything unusable.
    """
    source = os.fspath(path) if isinstance(path, (str, os.PathLike)) else repr(path)
    key = None
    if _MEMO is not None and isinstance(path, (str, os.PathLike)):
        try:
            info = os.stat(path)
            key = (os.path.realpath(path), info.st_mtime_ns, info.st_size, float(default_F))
        except OSError:
            key = None  # read_file_bytes reports it
        if key in _MEMO:
            return _MEMO[key]
    table = _read_hkl(path, source, default_F)
    if key is not None:
        _MEMO[key] = table
    return table


class memoized_tables:
    """Within this context, :func:`read_hkl` reads each file once.

    Tables are kept by (path, modification time, size, default_F), so a batch
    of 1000 renders of one 32 MB file parses it once; a file changed on disk
    is read again.
    """

    def __enter__(self):
        global _MEMO
        self._outer = _MEMO
        if _MEMO is None:
            _MEMO = {}
        return self

    def __exit__(self, *exc):
        global _MEMO
        _MEMO = self._outer
        return False


def _read_hkl(path, source, default_F):
    raw = read_file_bytes(path)
    table = _parse_fast(raw)
    if table is None:
        table = _parse_line_by_line(raw, source)
    indices = _check_integer_indices(table, raw, source)
    return build_grid(indices, table[:, 3].copy(), float(default_F), source)
