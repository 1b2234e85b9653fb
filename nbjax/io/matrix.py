"""MOSFLM orientation matrix files (``-mat``).

A MOSFLM matrix file starts with the 3x3 "A matrix", three lines of three
numbers; its columns are the reciprocal cell vectors a*, b*, c* in the lab
frame, multiplied by the wavelength (so the numbers are dimensionless:
Å⁻¹ × Å).  Later lines of a MOSFLM file (missetting angles, U matrix, cell)
are ignored::

    a*_x  b*_x  c*_x
    a*_y  b*_y  c*_y
    a*_z  b*_z  c*_z

nanoBragg.c reads the first nine numbers of the file as a stream (line breaks
do not matter), three per ``fscanf("%lg%lg%lg")`` call; it then divides by the
wavelength (multiplies by ``1e-10/lambda`` with lambda in metres) to get
reciprocal vectors in Å⁻¹ -- that scaling is the engine's job, not this
reader's.  nbjax requires the first nine white-space separated fields to be
finite numbers, where C would quietly keep whatever it had parsed.
"""

from __future__ import annotations

import math
import os

import numpy as np

from nbjax.errors import InputError
from nbjax.io.atomic import read_file_bytes
from nbjax.io.memo import memoized_read
from nbjax.io.numbers import c_strtod, is_number

__all__ = ["read_mosflm_matrix"]


def read_mosflm_matrix(path) -> np.ndarray:
    """The raw MOSFLM A matrix of ``path``: float64 (3, 3), columns a*, b*, c* (times lambda).

    ``M[i, 0]``, ``M[i, 1]``, ``M[i, 2]`` are component i (x, y, z) of a*, b*
    and c*.  Raises :class:`InputError` naming the file (and line) when the
    file has fewer than nine numbers or a field among them is not a number.
    Read once per file inside :class:`nbjax.io.memo.memoized_files` (a batch).
    """
    return memoized_read(path, ("read_mosflm_matrix",), lambda: _read_mosflm_matrix(path)).copy()


def _read_mosflm_matrix(path) -> np.ndarray:
    source = os.fspath(path)
    text = read_file_bytes(path).decode("utf-8", errors="replace")
    numbers: list[float] = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        for field in line.split():
            if len(numbers) == 9:
                break
            value = c_strtod(field)[0] if is_number(field) else math.nan
            if not math.isfinite(value):
                shown = field if len(field) <= 40 else field[:37] + "..."
                raise InputError(
                    f"{source}: line {line_number}: expected a number of the 3x3 MOSFLM matrix, got {shown!r}"
                )
            numbers.append(value)
        if len(numbers) == 9:
            break
    if len(numbers) < 9:
        raise InputError(f"{source}: expected 9 numbers (3x3 MOSFLM A matrix), found {len(numbers)}")
    return np.asarray(numbers, dtype=np.float64).reshape(3, 3)
