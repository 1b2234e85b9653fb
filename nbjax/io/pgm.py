"""PGM previews (``-pgmfile``): binary 8-bit greyscale, Netpbm "P5".

Layout as nanoBragg.c writes it::

    P5\\n
    <fpixels> <spixels>\\n
    # pixels scaled by <pgm_scale as C %g>\\n
    255\\n
    fpixels*spixels bytes, one per pixel, fast index varying fastest

Each byte is ``min(255, float_pixel * pgm_scale)`` truncated toward zero (the
conversion itself is the engine's job; this module only writes and reads the
file).  ``pgm_scale`` is dimensionless (grey levels per photon).

:func:`read_pgm` accepts any 8-bit P5 file: width, height and maximum grey
value separated by white space, ``#`` comments (to end of line) allowed
between them, then exactly one white-space character before the pixels.
Bytes after the pixels are ignored.  Values are returned as stored, not
rescaled when the maximum is below 255.
"""

from __future__ import annotations

import os
import re

import numpy as np

from nbjax.errors import InputError
from nbjax.io.atomic import array_bytes, atomic_write, read_file_bytes

__all__ = ["write_pgm", "read_pgm", "pgm_header"]

# One header number, preceded by white space and/or comment lines.
_FIELD = re.compile(rb"(?:\s|#[^\n\r]*[\n\r])+([0-9]{1,18})")


def pgm_header(fpixels: int, spixels: int, pgm_scale: float) -> bytes:
    """The header text nanoBragg.c writes before the pixel bytes."""
    scale_text = "%g" % float(pgm_scale)  # C's %lg
    return f"P5\n{int(fpixels)} {int(spixels)}\n# pixels scaled by {scale_text}\n255\n".encode("ascii")


def write_pgm(path, data: np.ndarray, pgm_scale: float) -> None:
    """Write ``data`` (uint8, shape (spixels, fpixels)) as nanoBragg.c's P5 file, atomically."""
    pixels = np.asarray(data)
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"write_pgm: expected a 2-D uint8 array, got {pixels.dtype} with shape {pixels.shape}")
    spixels, fpixels = pixels.shape
    atomic_write(path, pgm_header(fpixels, spixels, pgm_scale), array_bytes(pixels, np.uint8))


def read_pgm(path) -> np.ndarray:
    """Pixels of an 8-bit binary PGM (P5) file: uint8 array of shape (height, width).

    Raises :class:`InputError` naming the file when it is not an 8-bit P5 PGM
    or is shorter than its header promises.
    """
    source = os.fspath(path)
    raw = read_file_bytes(path)
    if not raw.startswith(b"P5"):
        raise InputError(f"{source}: not a binary PGM file (it should start with 'P5')")
    position = 2
    numbers = []
    for name in ("width", "height", "maximum grey value"):
        match = _FIELD.match(raw, position)
        if match is None:
            raise InputError(f"{source}: PGM header: expected the {name}")
        numbers.append(int(match.group(1)))
        position = match.end()
    width, height, maxval = numbers
    if position >= len(raw) or raw[position : position + 1] not in (b" ", b"\t", b"\n", b"\r", b"\v", b"\f"):
        raise InputError(f"{source}: PGM header: expected one white-space character after the maximum grey value")
    position += 1
    if width < 1 or height < 1:
        raise InputError(f"{source}: PGM size {width}x{height} is empty")
    if not 1 <= maxval <= 255:
        raise InputError(f"{source}: PGM maximum grey value {maxval} is not 1..255 (only 8-bit PGM is supported)")
    needed = width * height
    if len(raw) - position < needed:
        raise InputError(
            f"{source}: PGM of {width}x{height} pixels needs {needed} bytes of data, the file has {len(raw) - position}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=needed, offset=position).reshape(height, width).copy()
