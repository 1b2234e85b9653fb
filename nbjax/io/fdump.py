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
by ``\\n\\f`` and the file must hold exactly the number of bytes the header
implies.  (C reads the header with ``fscanf("%d...%d\\n\\f")``; the white space
in that format also swallows any leading bytes of the first float64 that
happen to be white-space characters, which would misalign the grid.  nbjax
reads the data from right after the form feed.)
"""

from __future__ import annotations

import os
import re

import numpy as np

from nbjax.errors import InputError
from nbjax.io.atomic import atomic_write, read_file_bytes
from nbjax.io.hkl import HKLTable, grid_shape

__all__ = ["write_fdump", "read_fdump"]

_HEADER = re.compile(rb"(-?[0-9]+) (-?[0-9]+) (-?[0-9]+) (-?[0-9]+) (-?[0-9]+) (-?[0-9]+)\n\f")
_LONGEST_HEADER = 6 * 21 + 2  # six 64-bit integers with signs and separators


def fdump_bytes(table: HKLTable) -> bytes:
    """The complete Fdump.bin content for ``table``."""
    h_min, k_min, l_min = table.hkl_min
    h_max, k_max, l_max = table.hkl_max
    header = f"{h_min} {h_max} {k_min} {k_max} {l_min} {l_max}\n\f".encode("ascii")
    expected_shape = tuple(r + 1 for r in table.ranges)
    if table.values.shape != expected_shape:
        raise ValueError(f"HKLTable values have shape {table.values.shape}, expected {expected_shape}")
    return header + np.ascontiguousarray(table.values, dtype="<f8").tobytes()


def write_fdump(path, table: HKLTable) -> None:
    """Write ``table`` as a nanoBragg.c-compatible Fdump.bin, atomically."""
    atomic_write(path, fdump_bytes(table))


def read_fdump(path) -> HKLTable:
    """Read a Fdump.bin written by nanoBragg.c or :func:`write_fdump`.

    ``count`` is set to ``h_range*k_range*l_range``, the value C uses.
    Raises :class:`InputError` naming the file if the header is malformed or
    the size does not match it.
    """
    source = os.fspath(path)
    raw = read_file_bytes(path)
    match = _HEADER.match(raw[:_LONGEST_HEADER])
    if match is None:
        raise InputError(f"{source}: not an Fdump.bin file (expected a header 'h_min h_max k_min k_max l_min l_max')")
    h_min, h_max, k_min, k_max, l_min, l_max = (int(v) for v in match.groups())
    hkl_min, hkl_max = (h_min, k_min, l_min), (h_max, k_max, l_max)
    shape = grid_shape(hkl_min, hkl_max, source)
    data = raw[match.end():]
    expected = 8 * shape[0] * shape[1] * shape[2]
    if len(data) != expected:
        raise InputError(
            f"{source}: Fdump.bin data is {len(data)} bytes, the header {hkl_min}..{hkl_max} "
            f"needs {expected} (truncated or corrupt file)"
        )
    values = np.frombuffer(data, dtype="<f8").astype(np.float64).reshape(shape)
    values.flags.writeable = False
    ranges = [s - 1 for s in shape]
    return HKLTable(values=values, hkl_min=hkl_min, hkl_max=hkl_max, count=ranges[0] * ranges[1] * ranges[2])
