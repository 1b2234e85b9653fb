"""Number parsing that behaves like the C library, for command-line values.

nanoBragg reads every number on its command line with C's ``atof`` or
``atoi``.  Those functions read the longest prefix of the text that looks like
a number and ignore the rest, and they return zero when no prefix parses:
``atof("1.5e3x")`` is 1500.0, ``atof("abc")`` is 0.0, ``atoi("  42abc")`` is 42.
:func:`c_atof` and :func:`c_atoi` reproduce that, for parity with the C
program.  :func:`parse_float` and :func:`parse_int` are the strict versions
nbjax uses where it refuses what C would silently accept: the whole token must
be a number, otherwise an :class:`~nbjax.errors.InputError` is raised.

The grammar accepted for a floating-point number is that of C's ``strtod`` in
the "C" locale:

* optional leading white space (space, tab, newline, vertical tab, form feed,
  carriage return);
* an optional sign, ``+`` or ``-``;
* then one of
    - decimal digits with an optional decimal point (at least one digit on
      either side of it), optionally followed by an exponent ``e``/``E``,
      optional sign and at least one digit (``1e`` reads as 1.0: an exponent
      without digits is not part of the number);
    - ``0x``/``0X`` and hexadecimal digits with an optional point and an
      optional binary exponent ``p``/``P`` (``0x1p3`` is 8.0);
    - ``inf`` or ``infinity`` (any case);
    - ``nan`` (any case), optionally followed by ``(chars)``.

Only ASCII digits count, as in C.
"""

from __future__ import annotations

import math
import re

from nbjax.errors import InputError

__all__ = ["c_strtod", "c_atof", "c_atoi", "parse_float", "parse_int", "is_number"]

# White space as C's isspace() sees it in the "C" locale.
C_WHITESPACE = " \t\n\v\f\r"

_HEX_DIGITS = "[0-9a-fA-F]"
_FLOAT_PREFIX = re.compile(
    rf"""
    [{C_WHITESPACE}]*
    (?P<sign>[+-]?)
    (?:
        (?P<hex>0[xX](?:{_HEX_DIGITS}+\.?{_HEX_DIGITS}*|\.{_HEX_DIGITS}+)(?:[pP][+-]?[0-9]+)?)
      | (?P<decimal>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
      | (?P<infinity>[iI][nN][fF](?:[iI][nN][iI][tT][yY])?)
      | (?P<nan>[nN][aA][nN](?:\([0-9A-Za-z_]*\))?)
    )
    """,
    re.VERBOSE,
)
_INT_PREFIX = re.compile(rf"[{C_WHITESPACE}]*([+-]?[0-9]+)")


def _hex_to_float(text: str, negative: bool) -> float:
    """Value of a C hexadecimal float literal such as ``0x1.8p3``."""
    try:
        value = float.fromhex(text)
    except OverflowError:
        value = math.inf
    return -value if negative else value


def c_strtod(s: str) -> tuple[float, int]:
    """C ``strtod``: the value of the longest numeric prefix of ``s`` and its length.

    Returns ``(0.0, 0)`` when no prefix parses.  The length counts the leading
    white space too, as ``strtod``'s end pointer does.  Never raises.
    """
    match = _FLOAT_PREFIX.match(s)
    if match is None:
        return 0.0, 0
    negative = match.group("sign") == "-"
    if match.group("hex") is not None:
        value = _hex_to_float(match.group("hex"), negative)
    elif match.group("decimal") is not None:
        # Python's float() rounds decimal text exactly as strtod does, and
        # overflows to inf / underflows to 0 the same way.
        value = float(match.group("sign") + match.group("decimal"))
    elif match.group("infinity") is not None:
        value = -math.inf if negative else math.inf
    else:
        value = math.nan
    return value, match.end()


def c_atof(s: str) -> float:
    """C ``atof``: the numeric prefix of ``s`` as a float, 0.0 if there is none."""
    return c_strtod(s)[0]


# The range of a 64-bit C long, to which strtol (and so glibc's atoi) clamps.
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


def _clamped_int(digits: str) -> int:
    """int(digits) clamped to the C long range (also keeps int() away from huge strings)."""
    if len(digits.lstrip("+-").lstrip("0")) > 19:
        return _LONG_MIN if digits.startswith("-") else _LONG_MAX
    return min(max(int(digits), _LONG_MIN), _LONG_MAX)


def c_atoi(s: str) -> int:
    """C ``atoi``: optional white space, optional sign, decimal digits; else 0.

    Like glibc (which reads with ``strtol``) the value is clamped to the range
    of a 64-bit ``long``; it is not narrowed further to a C ``int``.
    """
    match = _INT_PREFIX.match(s)
    return _clamped_int(match.group(1)) if match else 0


def _strip_c_whitespace(s: str) -> str:
    return s.strip(C_WHITESPACE)


def is_number(s: str) -> bool:
    """True when the whole of ``s`` (apart from surrounding white space) is a C number."""
    token = _strip_c_whitespace(s)
    if not token:
        return False
    _, consumed = c_strtod(token)
    return consumed == len(token)


def parse_float(s: str, what: str) -> float:
    """Strictly parse ``s`` as a float; ``what`` names the value in the error.

    Accepts exactly what :func:`is_number` accepts (so also ``inf``, ``nan``
    and hexadecimal floats, as C does); callers check the range they need.
    """
    if not isinstance(s, str) or not is_number(s):
        raise InputError(f"{what}: expected a number, got {s!r}")
    return c_strtod(_strip_c_whitespace(s))[0]


def parse_int(s: str, what: str) -> int:
    """Strictly parse ``s`` as a decimal integer (optional sign, digits only)."""
    token = _strip_c_whitespace(s) if isinstance(s, str) else ""
    match = _INT_PREFIX.fullmatch(token)
    if match is None:
        raise InputError(f"{what}: expected an integer, got {s!r}")
    value = _clamped_int(match.group(1))
    if value in (_LONG_MIN, _LONG_MAX):
        raise InputError(f"{what}: integer out of range, got {s!r}")
    return value
