"""Raw float images (``-floatfile``): the simulated intensities, no header.

Layout: ``spixels * fpixels`` float32 values, little-endian, fast index
varying fastest (row-major with shape (slow, fast)).  nanoBragg.c writes this
with a single ``fwrite`` of its float array.  Values are photons per pixel.
The file carries no size; the reader must be told the shape, or gets a flat
array.
"""

from __future__ import annotations

import math
import os

import numpy as np

from nbjax.errors import InputError
from nbjax.io.atomic import array_bytes, atomic_write, read_file_bytes

__all__ = ["write_float_image", "read_float_image"]

FLOAT_BYTES = 4


def write_float_image(path, image) -> None:
    """Write ``image`` (any array-like, shape (slow, fast)) as little-endian float32, atomically."""
    atomic_write(path, array_bytes(np.asarray(image), "<f4"))


def read_float_image(path, shape=None) -> np.ndarray:
    """Read a raw float32 image: shape ``shape`` = (slow, fast) if given, else 1-D.

    Raises :class:`InputError` naming the file when its size is not a whole
    number of float32 values or does not match ``shape``.
    """
    source = os.fspath(path)
    raw = read_file_bytes(path)
    if len(raw) % FLOAT_BYTES:
        raise InputError(f"{source}: size {len(raw)} bytes is not a whole number of 4-byte floats")
    values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if shape is None:
        return values
    shape = tuple(int(n) for n in shape)
    if math.prod(shape) != values.size:
        raise InputError(
            f"{source}: holds {values.size} floats, expected {'x'.join(map(str, shape))} = {math.prod(shape)}"
        )
    return values.reshape(shape)
