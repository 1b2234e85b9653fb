"""Fdump.bin: nanoBragg's binary cache of the structure-factor grid.

nanoBragg.c writes this file after reading an ``-hkl`` file and reads it back
on a later run that names no ``-hkl`` file.  Layout, byte for byte:

1. an ASCII header ``"h_min h_max k_min k_max l_min l_max\\n\\f"`` -- six
   decimal integers separated by single spaces, a newline and a form feed;
2. the grid, ``(h_range+1) * (k_range+1) * (l_range+1)`` float64 values in
   little-endian byte order (the machine order of the x86 hosts C runs on),
   h slowest and l fastest, where ``h_range = h_max - h_min + 1`` etc.  The
   last slab of each axis is the zero padding described in
   :mod:`nbjax.io.hkl`.  Values are structure factors in electrons.

That is exactly ``HKLTable.values`` as C-ordered bytes.

The reader here is stricter than C's: the header must be six integers followed
by ``\\n\\f``, the file must hold exactly the number of bytes the header
implies (checked before the data are read), the grid must fit the limit of
:data:`nbjax.io.hkl.MAX_GRID_SLOTS`, and every value must be a finite number
no larger than :data:`nbjax.io.hkl.MAX_ABS_F` in magnitude, as in ``-hkl``
files (C uses whatever the file holds, NaN included).  (C reads the header with ``fscanf("%d...%d\\n\\f")``; the white space
in that format also swallows any leading bytes of the first float64 that
happen to be white-space characters, which would misalign the grid.  nbjax
reads the data from right after the form feed.)
"""

from __future__ import annotations

import os
import re

import numpy as np

from nbjax.errors import InputError
from nbjax.io.atomic import atomic_open, read_file_bytes, read_file_head
from nbjax.io.hkl import MAX_ABS_F, HKLTable, grid_shape

__all__ = ["write_fdump", "read_fdump"]

_HEADER = re.compile(rb"(-?[0-9]+) (-?[0-9]+) (-?[0-9]+) (-?[0-9]+) (-?[0-9]+) (-?[0-9]+)\n\f")
_LONGEST_HEADER = 6 * 21 + 2  # six 64-bit integers with signs and separators


def _header(table: HKLTable) -> bytes:
    h_min, k_min, l_min = table.hkl_min
    h_max, k_max, l_max = table.hkl_max
    header = f"{h_min} {h_max} {k_min} {k_max} {l_min} {l_max}\n\f".encode("ascii")
    expected_shape = tuple(r + 1 for r in table.ranges)
    if table.values.shape != expected_shape:
        raise ValueError(f"HKLTable values have shape {table.values.shape}, expected {expected_shape}")
    return header


def fdump_bytes(table: HKLTable) -> bytes:
    """The complete Fdump.bin content for ``table``."""
    return _header(table) + np.ascontiguousarray(table.values, dtype="<f8").tobytes()


def write_fdump(path, table: HKLTable) -> None:
    """Write ``table`` as a nanoBragg.c-compatible Fdump.bin, atomically (no copy of the grid in memory)."""
    header = _header(table)
    values = np.ascontiguousarray(table.values, dtype="<f8")
    target = os.fspath(path)
    try:
        with atomic_open(target, "wb") as handle:
            handle.write(header)
            handle.write(values.reshape(-1).view(np.uint8).data)
    except OSError as error:
        raise InputError(f"{target}: cannot write: {error.strerror or error}") from error


def read_fdump(path) -> HKLTable:
    """Read a Fdump.bin written by nanoBragg.c or :func:`write_fdump`.

    ``count`` is set to ``h_range*k_range*l_range``, the value C uses.
    Raises :class:`InputError` naming the file if the header is malformed or
    the size does not match it.
    """
    source = os.fspath(path)
    head, size = read_file_head(path, _LONGEST_HEADER)
    match = _HEADER.match(head)
    if match is None:
        raise InputError(f"{source}: not an Fdump.bin file (expected a header 'h_min h_max k_min k_max l_min l_max')")
    h_min, h_max, k_min, k_max, l_min, l_max = (int(v) for v in match.groups())
    hkl_min, hkl_max = (h_min, k_min, l_min), (h_max, k_max, l_max)
    shape = grid_shape(hkl_min, hkl_max, source, what="Fdump.bin")
    expected = 8 * shape[0] * shape[1] * shape[2]
    if size - match.end() != expected:
        raise InputError(
            f"{source}: Fdump.bin data is {size - match.end()} bytes, the header {hkl_min}..{hkl_max} "
            f"needs {expected} (truncated or corrupt file)"
        )
    raw = read_file_bytes(path, limit=match.end() + expected)
    if len(raw) != match.end() + expected:
        raise InputError(f"{source}: Fdump.bin changed while it was read")
    values = np.frombuffer(raw, dtype="<f8", offset=match.end()).astype(np.float64).reshape(shape)
    bad = ~(np.abs(values) <= MAX_ABS_F)
    if bad.any():
        h, k, l = (int(i) + low for i, low in zip(np.unravel_index(int(np.argmax(bad)), shape), hkl_min))
        raise InputError(
            f"{source}: Fdump.bin holds F = {values[h - h_min, k - k_min, l - l_min]:g} at h,k,l = {h},{k},{l} "
            f"({int(bad.sum())} such value(s); F must be finite and at most {MAX_ABS_F:.3g} in magnitude)"
        )
    values.flags.writeable = False
    ranges = [s - 1 for s in shape]
    return HKLTable(values=values, hkl_min=hkl_min, hkl_max=hkl_max, count=ranges[0] * ranges[1] * ranges[2])
