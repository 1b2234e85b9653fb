"""One-pass scanner of ``-hkl`` text, compiled with numba (large files only).

:func:`scan` reads the bytes once and converts every number as it goes.  It
accepts exactly the syntax of :mod:`nbjax.io.hkl` (plain decimal numbers
separated by white space or commas, ``#`` comments to the end of the line,
lines ending at LF, CR LF or CR); on anything else it gives up (returns 0
tokens) and the caller uses the line-by-line reader, which explains the
problem.

Conversion is exact: a number with at most 19 significant digits ``M`` and a
decimal exponent ``e`` is ``M * 10**e`` or ``M / 10**-e`` computed in float64,
which is the correctly rounded value (as C's ``strtod`` and Python's
``float`` give) whenever ``M < 2**53`` and ``|e| <= 22``, because both
operands are then exact and IEEE multiplication and division round correctly
(Clinger's fast path).  Other numbers are listed for the caller to convert
with Python's ``float``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_POW10 = 10.0 ** np.arange(23)
_EXACT = 1 << 53


@njit(cache=True, nogil=True, inline="always")
def _digits(buf, i, n, mantissa, significant):  # pragma: no cover - compiled
    """A run of decimal digits from ``buf[i]``: the first 19 significant ones go into ``mantissa``.

    Returns (index after the run, mantissa, significant digits so far, digits in the run).
    """
    count = 0
    while i < n and 48 <= buf[i] <= 57:
        d = buf[i] - 48
        if significant > 0 or d != 0:
            significant += 1
            if significant <= 19:
                mantissa = mantissa * np.uint64(10) + np.uint64(d)
        count += 1
        i += 1
    return i, mantissa, significant, count


@njit(cache=True, nogil=True)
def scan(buf, values, slow, first, count):  # pragma: no cover - compiled
    """Numbers of ``buf`` (uint8) into ``values``; per data line its first token and count.

    Returns ``(ntok, nslow, nlines)``; ``ntok = 0`` means "not plain syntax".
    ``slow[i] = (token, start, end)`` for numbers to convert in Python.
    """
    pow10 = _POW10
    n = buf.shape[0]
    i = 0
    line = 1
    data_line = 0  # line number of the last line that held a token
    ntok = 0
    nslow = 0
    nlines = 0
    while i < n:
        c = buf[i]
        if c == 10:
            line += 1
            i += 1
            continue
        if c == 13:
            line += 1
            i += 1
            if i < n and buf[i] == 10:
                i += 1
            continue
        if c == 32 or c == 9 or c == 11 or c == 12 or c == 44:
            i += 1
            continue
        if c == 35:  # comment to the end of the line
            while i < n and buf[i] != 10 and buf[i] != 13:
                i += 1
            continue
        # a number: [+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?
        start = i
        negative = False
        if c == 43 or c == 45:
            negative = c == 45
            i += 1
        mantissa = np.uint64(0)
        significant = 0
        digits = 0
        fraction = 0
        i, mantissa, significant, run = _digits(buf, i, n, mantissa, significant)
        digits += run
        if i < n and buf[i] == 46:
            i, mantissa, significant, run = _digits(buf, i + 1, n, mantissa, significant)
            digits += run
            fraction += run
        if digits == 0:
            return 0, 0, 0
        exponent = 0
        if i < n and (buf[i] == 101 or buf[i] == 69):
            i += 1
            exponent_negative = False
            if i < n and (buf[i] == 43 or buf[i] == 45):
                exponent_negative = buf[i] == 45
                i += 1
            exponent_digits = 0
            while i < n and 48 <= buf[i] <= 57:
                if exponent < 100000:
                    exponent = exponent * 10 + (buf[i] - 48)
                exponent_digits += 1
                i += 1
            if exponent_digits == 0:
                return 0, 0, 0
            if exponent_negative:
                exponent = -exponent
        if i < n:
            c = buf[i]
            if not (c == 32 or c == 9 or c == 10 or c == 11 or c == 12 or c == 13 or c == 44 or c == 35):
                return 0, 0, 0
        e10 = exponent - fraction
        if significant == 0:
            value = 0.0
        elif significant <= 19 and mantissa <= np.uint64(_EXACT) and -22 <= e10 <= 22:
            if e10 >= 0:
                value = float(mantissa) * pow10[e10]
            else:
                value = float(mantissa) / pow10[-e10]
        else:
            value = 0.0
            slow[nslow, 0] = ntok
            slow[nslow, 1] = start
            slow[nslow, 2] = i
            nslow += 1
        values[ntok] = -value if negative else value
        if line != data_line:
            data_line = line
            first[nlines] = ntok
            count[nlines] = 0
            nlines += 1
        count[nlines - 1] += 1
        ntok += 1
    return ntok, nslow, nlines
