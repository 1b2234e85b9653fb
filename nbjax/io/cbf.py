"""Pilatus-style miniCBF images (through fabio), with a header DIALS and XDS read.

A miniCBF holds one int32 image, byte-offset compressed, and a free-text
header of ``# Key value`` lines (the PILATUS_1.2 convention).  The lines
written here and what they mean for the render:

* ``Pixel_size p m x p m`` -- square pixels of side p (metres);
* ``Silicon sensor, thickness t m`` -- only when the render modelled a sensor
  of thickness t > 0 (``-detector_thick``); nanoBragg's default sensor is
  infinitely thin, and then the line is left out (DIALS then applies no
  parallax correction).  The material is an assumption: nanoBragg takes the
  attenuation length from ``-detector_abs``, not from a material;
* ``Exposure_time`` / ``Exposure_period`` -- ``-exposure`` (s, default 1);
* ``Count_cutoff N counts`` -- the largest trusted value: 65535 for the
  16-bit ``-intfile`` pixels (nanoBragg clips there), else the int32 maximum;
* ``Wavelength`` (Å), ``Detector_distance`` (m, sample to the direct-beam
  spot along the beam);
* ``Beam_xy (x, y) pixels`` -- the direct-beam spot in pixels along fast and
  slow, measured from the outer corner of the first pixel (so the centre of
  pixel (i, j) is at (i + 0.5, j + 0.5)), the convention of DIALS and XDS;
* ``Start_angle`` / ``Angle_increment`` (degrees) -- ``-phi`` and ``-osc``;
* ``Detector_2theta`` (degrees) -- ``-twotheta``.

What a miniCBF cannot say: readers assume the detector is perpendicular to
the beam with fast along +x and slow along -y of their frame, and a single
rotation axis along +x; a detector rotated with ``-detector_rotx/y/z`` or a
custom spindle are not described (use the NeXus file of :mod:`nbjax.io.nexus`,
which carries the full geometry).
"""

from __future__ import annotations

import numpy as np

from nbjax.errors import InputError
from nbjax.io.atomic import atomic_path

__all__ = ["write_cbf", "cbf_header", "header_contents", "beam_xy_px", "require_fabio"]

#: nanoBragg's -intfile pixels are 16-bit: values at 65535 are clipped
UINT16_CUTOFF = 65535
INT32_CUTOFF = 2**31 - 1


def require_fabio():
    """fabio's cbfimage module; an InputError when fabio is not installed."""
    try:
        from fabio import cbfimage
    except ImportError:
        raise InputError("CBF output needs fabio: pip install 'nbjax[interop]'") from None
    return cbfimage


def cbf_header(exp) -> dict:
    """The header values of :func:`write_cbf` for an :class:`~nbjax.experiment.Experiment`.

    ``exp.header`` plus the exposure time (s) and the modelled sensor thickness (m).
    """
    from nbjax.io.nexus import sensor_thickness_m

    header = dict(exp.header)
    if exp.settings is not None:
        header["exposure_s"] = float(exp.settings.exposure)
    header["sensor_thickness_m"] = sensor_thickness_m(exp)
    return header


def beam_xy_px(header) -> tuple[float, float]:
    """Direct-beam spot (fast, slow) in pixels from the first pixel's outer corner."""
    px = header["pixel_size_mm"]
    return header["adxv_center_x_mm"] / px, header["spixels"] - header["adxv_center_y_mm"] / px


def header_contents(header, count_cutoff: int) -> str:
    """The ``# Key value`` lines of the Pilatus header (joined with newlines).

    ``header``: :attr:`Experiment.header` (optionally with ``exposure_s`` and
    ``sensor_thickness_m``, see :func:`cbf_header`).
    """
    px_m = header["pixel_size_mm"] / 1000.0
    beam_fast, beam_slow = beam_xy_px(header)
    exposure = float(header.get("exposure_s", 1.0))
    thickness = float(header.get("sensor_thickness_m", 0.0))
    lines = [
        "# Detector: nbjax simulated detector (nanoBragg)",
        f"# Pixel_size {px_m:.6g} m x {px_m:.6g} m",
    ]
    if thickness > 0.0:
        lines.append(f"# Silicon sensor, thickness {thickness:.6f} m")
    lines += [
        f"# Exposure_time {exposure:.7g} s",
        f"# Exposure_period {exposure:.7g} s",
        f"# Count_cutoff {int(count_cutoff)} counts",
        f"# Wavelength {header['wavelength_A']:.8g} A",
        f"# Detector_distance {header['distance_mm'] / 1000.0:.8g} m",
        f"# Beam_xy ({beam_fast:.4f}, {beam_slow:.4f}) pixels",
        f"# Start_angle {header['osc_start_deg']:.6g} deg.",
        f"# Angle_increment {header['osc_range_deg']:.6g} deg.",
        f"# Detector_2theta {header['twotheta_deg']:.6g} deg.",
    ]
    return "\n".join(lines)


def write_cbf(path, int_pixels, header) -> None:
    """Write ``int_pixels`` (slow, fast) as a byte-offset int32 Pilatus-style miniCBF.

    ``header``: :attr:`Experiment.header`, or better :func:`cbf_header` of the
    experiment (adds the exposure time and sensor thickness).  A
    ``count_cutoff`` entry overrides the trusted maximum, which is otherwise
    65535 for uint16 pixels (nanoBragg's -intfile) and the int32 maximum else.
    The file appears all at once (:func:`nbjax.io.atomic.atomic_path`);
    failures raise :class:`InputError` naming ``path``.
    """
    cbfimage = require_fabio()
    pixels = np.asarray(int_pixels)
    if pixels.ndim != 2:
        raise ValueError(f"write_cbf: expected a 2-D image, got shape {pixels.shape}")
    cutoff = header.get("count_cutoff")
    if cutoff is None:
        cutoff = UINT16_CUTOFF if pixels.dtype == np.uint16 else INT32_CUTOFF
    image = cbfimage.CbfImage(
        data=np.ascontiguousarray(pixels, dtype=np.int32),
        header={"_array_data.header_convention": "PILATUS_1.2",
                "_array_data.header_contents": header_contents(header, cutoff)},
    )
    with atomic_path(path) as temporary:
        image.write(temporary)
