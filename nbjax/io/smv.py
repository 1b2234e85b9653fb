"""SMV ("ADSC") detector images: ``-intfile``, ``-noisefile``, ``-mask``, ``-img``.

Layout
------
An ASCII header, then the pixels::

    {
    HEADER_BYTES=512;
    DIM=2;
    BYTE_ORDER=little_endian;
    TYPE=unsigned_short;
    SIZE1=160;            <- pixels along the fast axis (width)
    SIZE2=120;            <- pixels along the slow axis (height)
    PIXEL_SIZE=0.1;       <- mm
    DISTANCE=100;         <- mm
    ...
    }<form feed><padding up to HEADER_BYTES>
    SIZE1*SIZE2 unsigned 16-bit integers, fast index varying fastest

Header values are read the way nanoBragg.c's ``ValueOf`` does (see
:func:`smv_value`): the *last* occurrence of the key as a plain substring, so
``"DISTANCE"`` also matches ``CLOSE_DISTANCE=`` and ``"ORGX"`` matches
``XDS_ORGX=``.

Reading (:func:`read_smv`)
--------------------------
Like C's ``GetFrame``: the file must start with ``{\\nHEADER_BYTES=``; the
header length is the HEADER_BYTES value (looked up in the first 512 bytes);
width and height are SIZE1 and SIZE2; the pixels start right after the
header.  Unlike C, nbjax honours ``BYTE_ORDER=big_endian`` (C notes the byte
order and then ignores it), so images written on big-endian machines by other
programs read correctly; and it refuses images whose ``TYPE`` (or d*TREK's
``Data_type``) line names anything but unsigned 16-bit pixels, which C would
misread.  For these two keys spaces around ``=`` are allowed (fabio writes
``BYTE_ORDER= big_endian;``).  Bytes after the pixel data are ignored.  C's
string functions stop at the first NUL byte, so ``SMVImage.header`` is the
header text up to its first NUL (headers padded with NULs lose only the
padding).

Writing (:func:`nanobragg_header`, :func:`write_smv`)
-----------------------------------------------------
nanoBragg.c writes a fixed list of keys with C ``%g`` formatting (six
significant digits), ends the text with ``}`` and a form feed and pads with
spaces to 512 bytes.  Every length, distance and beam centre in that header is
in mm, the wavelength in Å, angles in degrees, XDS_ORGX/ORGY in pixels.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import numpy as np

from nbjax.errors import InputError
from nbjax.io.atomic import array_bytes, atomic_write, read_file_bytes
from nbjax.io.numbers import c_atof

__all__ = ["SMVImage", "read_smv", "smv_value", "nanobragg_header", "write_smv"]

SMV_MAGIC = b"{\nHEADER_BYTES="
HEADER_BLOCK = 512


@dataclasses.dataclass(frozen=True, eq=False)
class SMVImage:
    """An SMV image as read from disk.

    ``header``: header text (latin-1 decoded, up to the first NUL);
    ``header_bytes``: HEADER_BYTES, the offset of the pixel data;
    ``width``/``height``: SIZE1 (fast) / SIZE2 (slow) in pixels;
    ``data``: uint16 array of shape (height, width), native byte order.
    """

    header: str
    header_bytes: int
    width: int
    height: int
    data: np.ndarray


def smv_value(header: str, key: str) -> float:
    """A number from an SMV header, found the way nanoBragg.c's ``ValueOf`` does.

    Finds the LAST occurrence of ``key`` as a substring anywhere in ``header``
    (no word boundaries: ``"DISTANCE"`` matches inside ``CLOSE_DISTANCE``),
    skips to the next ``=`` after it and reads a number there with C ``atof``
    semantics (0.0 if none parses).  Returns NaN when ``key`` does not occur
    (or is empty) and 0.0 when no ``=`` follows it.
    """
    position = header.rfind(key) if key else -1
    if position < 0:
        return math.nan
    equals = header.find("=", position + len(key))
    if equals < 0:
        return 0.0
    return c_atof(header[equals + 1 :])


def _header_text(raw: bytes) -> str:
    """Header bytes as text, cut at the first NUL as C string functions would."""
    return raw.split(b"\0", 1)[0].decode("latin-1")


def _positive_integer(header: str, key: str, source: str) -> int:
    value = smv_value(header, key)
    if not math.isfinite(value) or value < 1:
        shown = "missing" if math.isnan(value) else f"{value:g}"
        raise InputError(f"{source}: SMV header {key} is {shown}, expected a positive integer")
    return int(value)  # C truncates with an (int) cast


_UNSIGNED_SHORT = ("unsigned short", "unsigned short int", "uint16", "unsigned 16")


def _keyword(header: str, key: str):
    """The text value of the last ``KEY=value;`` line for exactly ``key`` (spaces allowed), or None."""
    matches = re.findall(rf"(?m)^[ \t]*{re.escape(key)}[ \t]*=[ \t]*([^;\n]*)", header)
    return matches[-1].strip() if matches else None


def read_smv(path) -> SMVImage:
    """Read an SMV image (unsigned 16-bit pixels).

    Raises :class:`InputError` naming the file when it is not an SMV image,
    when SIZE1/SIZE2/HEADER_BYTES are missing or not positive, or when the
    file is too short for the pixels the header promises.
    """
    source = os.fspath(path)
    raw = read_file_bytes(path)
    if not raw.startswith(SMV_MAGIC):
        raise InputError(f"{source}: not an SMV image (it should start with '{{' and 'HEADER_BYTES=')")
    header_bytes = _positive_integer(_header_text(raw[:HEADER_BLOCK]), "HEADER_BYTES", source)
    if header_bytes > len(raw):
        raise InputError(f"{source}: SMV header claims {header_bytes} bytes but the file has {len(raw)}")
    header = _header_text(raw[:header_bytes])
    width = _positive_integer(header, "SIZE1", source)
    height = _positive_integer(header, "SIZE2", source)
    pixel_bytes = 2 * width * height
    available = len(raw) - header_bytes
    if available < pixel_bytes:
        raise InputError(
            f"{source}: SMV image of {width}x{height} pixels needs {pixel_bytes} bytes of data "
            f"after the {header_bytes}-byte header, the file has {available} (truncated?)"
        )
    pixel_type = _keyword(header, "TYPE") or _keyword(header, "Data_type")
    if pixel_type is not None and pixel_type.lower().replace("_", " ") not in _UNSIGNED_SHORT:
        raise InputError(f"{source}: SMV pixels of type {pixel_type!r}: only unsigned 16-bit images are supported")
    big_endian = (_keyword(header, "BYTE_ORDER") or "").lower().startswith("big_endian")
    pixels = np.frombuffer(raw, dtype=">u2" if big_endian else "<u2", count=width * height, offset=header_bytes)
    data = pixels.astype(np.uint16).reshape(height, width)
    return SMVImage(header=header, header_bytes=header_bytes, width=width, height=height, data=data)


def _c_g(value: float) -> str:
    """C printf ``%g`` of a double (Python's ``%g`` matches it for finite values)."""
    value = float(value)
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    return "%g" % value


def nanobragg_header(
    *,
    fpixels: int,
    spixels: int,
    pixel_size_mm: float,
    distance_mm: float,
    wavelength_A: float,
    beam_center_x_mm: float,
    beam_center_y_mm: float,
    adxv_center_x_mm: float,
    adxv_center_y_mm: float,
    mosflm_center_x_mm: float,
    mosflm_center_y_mm: float,
    denzo_x_beam_mm: float,
    denzo_y_beam_mm: float,
    dials_origin_mm: tuple,
    xds_orgx: float,
    xds_orgy: float,
    close_distance_mm: float,
    phi_deg: float,
    osc_start_deg: float,
    osc_range_deg: float,
    twotheta_deg: float,
    byte_order: str = "little_endian",
) -> bytes:
    """The SMV header nanoBragg.c writes, byte for byte: 512 bytes of ASCII.

    Every argument is the number C prints in that slot (already converted to
    mm, Å, degrees or pixels).  If the text does not fit in 512 bytes (long
    ``%g`` numbers can push it past), C would write a longer header that still
    claims HEADER_BYTES=512, corrupting the image; nbjax instead grows the
    header to the next multiple of 512 and says so in HEADER_BYTES.
    """
    g = _c_g
    dx, dy, dz = dials_origin_mm
    body = (
        f"DIM=2;\nBYTE_ORDER={byte_order};\nTYPE=unsigned_short;\n"
        f"SIZE1={int(fpixels)};\nSIZE2={int(spixels)};\n"
        f"PIXEL_SIZE={g(pixel_size_mm)};\nDISTANCE={g(distance_mm)};\n"
        f"WAVELENGTH={g(wavelength_A)};\n"
        f"BEAM_CENTER_X={g(beam_center_x_mm)};\nBEAM_CENTER_Y={g(beam_center_y_mm)};\n"
        f"ADXV_CENTER_X={g(adxv_center_x_mm)};\nADXV_CENTER_Y={g(adxv_center_y_mm)};\n"
        f"MOSFLM_CENTER_X={g(mosflm_center_x_mm)};\nMOSFLM_CENTER_Y={g(mosflm_center_y_mm)};\n"
        f"DENZO_X_BEAM={g(denzo_x_beam_mm)};\nDENZO_Y_BEAM={g(denzo_y_beam_mm)};\n"
        f"DIALS_ORIGIN={g(dx)},{g(dy)},{g(dz)}\n"
        f"XDS_ORGX={g(xds_orgx)};\nXDS_ORGY={g(xds_orgy)};\n"
        f"CLOSE_DISTANCE={g(close_distance_mm)};\n"
        f"PHI={g(phi_deg)};\nOSC_START={g(osc_start_deg)};\nOSC_RANGE={g(osc_range_deg)};\n"
        f"TWOTHETA={g(twotheta_deg)};\n"
        "DETECTOR_SN=000;\nBEAMLINE=fake;\n}\f"
    )
    size = HEADER_BLOCK
    while True:
        text = f"{{\nHEADER_BYTES={size};\n{body}".encode("ascii")
        if len(text) <= size:
            return text.ljust(size, b" ")
        size += HEADER_BLOCK


def write_smv(path, data: np.ndarray, header: bytes) -> None:
    """Write ``header`` then ``data`` (uint16, shape (spixels, fpixels)) little-endian, atomically.

    ``header`` should come from :func:`nanobragg_header`; its SIZE1/SIZE2, if
    present, must match the shape of ``data`` (a ValueError otherwise: that is
    a programming error, not bad user input).
    """
    pixels = np.asarray(data)
    if pixels.dtype != np.uint16 or pixels.ndim != 2:
        raise ValueError(f"write_smv: expected a 2-D uint16 array, got {pixels.dtype} with shape {pixels.shape}")
    text = _header_text(bytes(header))
    for key, expected in (("SIZE1", pixels.shape[1]), ("SIZE2", pixels.shape[0])):
        value = smv_value(text, key)
        if not math.isnan(value) and value != expected:
            raise ValueError(f"write_smv: header {key}={value:g} but the image has {expected} pixels on that axis")
    atomic_write(path, bytes(header), array_bytes(pixels, "<u2"))
