"""Reading a detector image whatever its file format: float32, SMV, PGM or NumPy.

The format is recognised by the first bytes of the file (an SMV header opens
with ``{\nHEADER_BYTES=``, a PGM with ``P5``, a ``.npy`` file with
``\x93NUMPY``); anything else is nanoBragg's raw float32 image, which needs a
shape.  Used by ``nbjax compare`` and by the fit's observed images.
"""

from __future__ import annotations

import numpy as np

from nbjax.errors import InputError


def image_kind(path) -> str:
    """"smv", "pgm", "npy" or "float" from the first bytes of ``path``."""
    head = _head(path)
    if head.startswith(b"{\nHEADER_BYTES="):
        return "smv"
    if head.startswith(b"P5"):
        return "pgm"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    return "float"


def _head(path, size=16) -> bytes:
    from nbjax.io.atomic import read_file_bytes

    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except (OSError, ValueError, TypeError):
        return read_file_bytes(path)[:size]  # raises the usual InputError naming the file


def read_image(path, shape=None):
    """A float64 image from a float32 file, an SMV image, a PGM file or a NumPy .npy file.

    SMV, PGM and .npy files carry their shape; a float32 file is reshaped to
    ``shape`` (slow, fast) when given and returned 1-D otherwise.
    """
    from nbjax.io.floatimage import read_float_image
    from nbjax.io.pgm import read_pgm
    from nbjax.io.smv import read_smv

    kind = image_kind(path)
    if kind == "smv":
        return read_smv(path).data.astype(np.float64)
    if kind == "pgm":
        return read_pgm(path).astype(np.float64)
    if kind == "npy":
        return _read_npy(path, shape)
    return read_float_image(path, shape).astype(np.float64)


def _read_npy(path, shape):
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise InputError(f"{path}: not a readable .npy file ({' '.join(str(error).split())})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise InputError(f"{path}: .npy file does not hold a real-valued array")
    if array.ndim == 1 and shape is not None:
        if array.size != shape[0] * shape[1]:
            raise InputError(f"{path}: holds {array.size} values, expected {shape[0]}x{shape[1]}")
        array = array.reshape(shape)
    if array.ndim not in (1, 2) or array.size == 0:
        raise InputError(f"{path}: expected a non-empty 2-D image, the .npy array has shape {array.shape}")
    return array.astype(np.float64)
