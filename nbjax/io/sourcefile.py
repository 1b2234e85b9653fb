"""Source files (``-sourcefile``): one X-ray source point per line.

Each line holds up to five numbers::

    X  Y  Z  weight  wavelength

X, Y, Z: position of the source point in metres (lab frame; the direction
from it to the sample is the incident beam direction), weight: relative
intensity, wavelength: metres.  Values are separated by any run of the
characters space, tab, ``,``, ``;``, ``:``, ``!``.  A line may give fewer than
five values; the missing ones are NaN and the engine fills in nanoBragg's
defaults (position on the beam axis, weight 1, the ``-lambda`` wavelength).
Values after the fifth are ignored, whatever they are.

This mirrors nanoBragg.c's ``read_text_file``: each field is read with C
``atof`` (so ``1.5e-10m`` reads as 1.5e-10), and lines holding only separators
are skipped.  nbjax is stricter: a field among the first five in which no
number parses at all (a word) is an error, where C would read 0; so is an
infinite value, and a line placing the source at 0 0 0 (the sample: no beam
direction); and lines whose first non-separator character is ``#`` are
comments.  (``nan`` still reads as a missing value.)  It is also
more regular: C fills the missing columns of a line that does not end in a
bare ``\\n`` (the last line of a file without a final newline, or any line of a
CRLF file) with 0 instead of NaN; nbjax gives NaN for every short line and
treats a trailing ``\\r`` as white space.
"""

from __future__ import annotations

import os
import re

import numpy as np

from nbjax.errors import InputError
from nbjax.io.atomic import read_file_bytes
from nbjax.io.memo import memoized_read
from nbjax.io.numbers import C_WHITESPACE, c_strtod

__all__ = ["read_sourcefile", "SOURCE_COLUMNS"]

SOURCE_COLUMNS = 5
_SEPARATORS = re.compile(r"[ \t,;:!]+")


def read_sourcefile(path) -> np.ndarray:
    """Source points of ``path``: float64 array (n, 5) = X, Y, Z [m], weight, wavelength [m].

    Missing columns are NaN.  Raises :class:`InputError` naming the file (and
    line) when a field is not a number or is infinite, when a source sits at
    0 0 0, or when the file has no source lines.  Read once per file inside
    :class:`nbjax.io.memo.memoized_files` (a batch).
    """
    return memoized_read(path, ("read_sourcefile",), lambda: _read_sourcefile(path)).copy()


def _read_sourcefile(path) -> np.ndarray:
    source = os.fspath(path)
    text = read_file_bytes(path).decode("utf-8", errors="replace")
    rows = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        fields = [field for field in _SEPARATORS.split(line) if field.strip(C_WHITESPACE)]
        if not fields or fields[0].lstrip(C_WHITESPACE).startswith("#"):
            continue
        row = [np.nan] * SOURCE_COLUMNS
        for column, field in enumerate(fields[:SOURCE_COLUMNS]):
            value, consumed = c_strtod(field)
            if consumed == 0:
                shown = field if len(field) <= 40 else field[:37] + "..."
                raise InputError(
                    f"{source}: line {line_number}: expected numbers 'X Y Z weight wavelength', got {shown!r}"
                )
            if np.isinf(value):
                raise InputError(f"{source}: line {line_number}: {field.strip()!r} is not a finite number")
            row[column] = value
        if row[0] == 0.0 and row[1] == 0.0 and row[2] == 0.0:
            raise InputError(
                f"{source}: line {line_number}: source position 0 0 0 is the sample itself; "
                "it gives no beam direction"
            )
        rows.append(row)
    if not rows:
        raise InputError(f"{source}: no source lines (expected 'X Y Z weight wavelength')")
    return np.asarray(rows, dtype=np.float64)
