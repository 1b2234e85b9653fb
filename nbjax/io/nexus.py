"""NeXus/NXmx data sets: many frames and the full geometry in one HDF5 file.

:func:`write_nxmx` writes frames of one detector geometry -- a rotation
series or a set of stills -- as a ``(frames, slow, fast)`` dataset with the
NXmx description of beam, detector and goniometer that DIALS (dxtbx's NXmx
reader) and other NXmx readers use.  The geometry comes from an
:class:`~nbjax.experiment.Experiment` through :func:`geometry_from_experiment`.

Frames
------
nanoBragg's laboratory frame is fixed by the chosen convention (MOSFLM: beam
along +x).  NeXus uses the McStas frame: z along the beam, y up, x = y × z
(to the left, looking downstream).  nbjax maps one onto the other with the
proper rotation ``R`` whose rows are the McStas axes written in nanoBragg's
frame (:meth:`DatasetGeometry.lab_to_mcstas`):

* ``ez = b`` (the beam direction),
* ``ey = unit(P × b)`` with ``P`` the polarization (E-vector) axis, so the
  E-vector lies in the horizontal x-z plane, the usual synchrotron case and
  dxtbx's default polarization plane,
* ``ex = ey × ez``.

For the MOSFLM convention (b = +x, P = +z) this is ``(x, y, z)_NeXus =
(−z, y, x)_nanoBragg``, the same map as nanoBragg's "dials origin" line
(dxtbx's imgCIF frame is McStas turned 180° about y).  Every vector below
is ``R v`` of nbjax's vector ``v``; lengths are metres in nbjax and mm or m,
as the ``units`` attributes say, in the file.

Geometry in the file
--------------------
* ``/entry/instrument/beam/incident_wavelength`` -- the nominal wavelength
  (Å, ``-lambda``); the beam direction is +z by definition.
* ``/entry/instrument/detector/transformations/det_z`` -- a translation along
  +z by ``distance`` (mm): from the sample to the direct-beam spot.
* ``.../detector/module/module_offset`` -- a translation (depends on
  ``det_z``) from the beam spot to the outer corner of pixel (0, 0), i.e.
  nbjax's ``pix0 − distance·b``; it lies in the detector plane.
* ``.../module/fast_pixel_direction`` and ``slow_pixel_direction`` -- the
  rotated fast and slow unit vectors (value: the pixel size, mm), depending
  on ``module_offset``.  So the corner of pixel (0, 0) is at
  ``det_z + module_offset = R pix0`` and the centre of pixel (i, j) at
  ``R (pix0 + (i + ½) p f + (j + ½) p s)`` (p the pixel size), exactly the
  positions nbjax renders.  Detector rotations (``-detector_rotx/y/z``,
  ``-twotheta``) are already inside these vectors: the chain has no rotation.
* ``beam_center_x/y`` (pixels from the outer corner of pixel 0, along fast and
  slow), ``distance``, pixel sizes, ``sensor_material`` ("Si", an assumption:
  nanoBragg takes an attenuation length, not a material) and
  ``sensor_thickness`` (m; 0 when the render modelled no sensor depth),
  ``saturation_value`` when given or implied by integer frames.
* ``/entry/sample/transformations/omega`` -- a rotation about ``R`` spindle,
  in degrees, one value per frame: the frame's start angle.  nbjax rotates
  the crystal right-handedly about the spindle by phi, as NeXus rotations do.
  A rotation series has frame k at ``phi_start + k·osc`` with ``omega_end``
  (start + osc) and ``omega_increment_set`` (osc), as DIALS writes them;
  stills repeat ``phi_start`` for every frame (no varying axis).

Not carried: mosaic spread and domains, crystal size, misset and unit cell,
beam divergence, dispersion and source lists (only the nominal wavelength),
polarization factor, fluence, curved-detector mode (``-curved_det``), ROI and
mask, the water background.  Readers see a flat detector of real pixels.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from nbjax.io.atomic import atomic_path

__all__ = ["DatasetGeometry", "geometry_from_experiment", "write_nxmx", "sensor_thickness_m",
           "lab_to_mcstas"]

RTD = 180.0 / math.pi


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def lab_to_mcstas(beam, polar) -> np.ndarray:
    """The rotation R (3x3, rows = McStas x, y, z in nanoBragg's frame); see the module docstring.

    If the polarization axis is parallel to the beam (no horizontal plane to
    speak of), nanoBragg's +y, or failing that +z, stands in for it.
    """
    ez = _unit(beam)
    for reference in (polar, (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)):
        ey = np.cross(np.asarray(reference, dtype=np.float64), ez)
        if np.linalg.norm(ey) > 1e-6:
            break
    ey = _unit(ey)
    ex = np.cross(ey, ez)
    return np.stack([ex, ey, ez])


@dataclasses.dataclass(frozen=True)
class DatasetGeometry:
    """One render's geometry, as a data-set writer needs it (nanoBragg's lab frame, SI units).

    ``pix0_m`` is the vector from the sample to the outer corner of pixel
    (0, 0); ``beam_fast_m/beam_slow_m`` the direct-beam spot in the detector
    plane from that corner (along the fast and slow axes); ``distance_m`` the
    sample-to-spot distance along the beam.  Spot and distance are computed
    from the placed detector -- where the beam line meets the plane of pix0,
    f and s -- whereas nanoBragg's printed distance and beam centre leave out
    a ``-twotheta`` swing.  ``phi_start_deg``/``osc_deg`` the spindle angle at the start
    of a frame and the rotation during one frame.
    """

    wavelength_m: float
    pixel_size_m: float
    fpixels: int
    spixels: int
    fdet: tuple
    sdet: tuple
    odet: tuple
    pix0_m: tuple
    beam: tuple
    polar: tuple
    distance_m: float
    close_distance_m: float
    beam_fast_m: float
    beam_slow_m: float
    spindle: tuple
    phi_start_deg: float = 0.0
    osc_deg: float = 0.0
    twotheta_deg: float = 0.0
    sensor_thickness_m: float = 0.0
    sensor_material: str = "Si"
    exposure_s: float = 1.0
    curved_detector: bool = False

    def lab_to_mcstas(self) -> np.ndarray:
        return lab_to_mcstas(self.beam, self.polar)

    @property
    def beam_center_px(self) -> tuple[float, float]:
        """Direct-beam spot (fast, slow) in pixels from the outer corner of pixel (0, 0)."""
        return self.beam_fast_m / self.pixel_size_m, self.beam_slow_m / self.pixel_size_m

    def beam_spot_m(self) -> np.ndarray:
        """Where the direct beam meets the detector plane (nanoBragg lab frame, m)."""
        return self.distance_m * np.asarray(self.beam, dtype=np.float64)


def sensor_thickness_m(exp) -> float:
    """The sensor thickness the render modelled (m): ``-detector_thick``
    after nanoBragg's step rules, 0 when there is no sensor depth."""
    if not exp.config.has_thickness:
        return 0.0
    return float(exp.header["sensor_thickness_m"])


def geometry_from_experiment(exp) -> DatasetGeometry:
    """The :class:`DatasetGeometry` of an :class:`~nbjax.experiment.Experiment` (its scene and header)."""
    scene, header = exp.scene, exp.header
    vec = lambda a: tuple(float(x) for x in np.asarray(a, dtype=np.float64).reshape(3))
    num = lambda a: float(np.asarray(a, dtype=np.float64))
    pix0, fdet, sdet = (np.asarray(v, dtype=np.float64) for v in (scene.pix0_m, scene.fdet, scene.sdet))
    beam = np.asarray(scene.beam, dtype=np.float64)
    # where the beam meets the detector plane, from the placed detector itself:
    # nanoBragg's own "distance" and beam centre leave out a -twotheta swing
    normal = np.cross(fdet, sdet)
    along = float(np.dot(beam, normal))
    distance = float(np.dot(pix0, normal)) / along if along != 0.0 else math.inf
    spot_from_corner = distance * beam - pix0
    # in-plane coordinates along f and s (they need not be orthogonal with custom vectors)
    gram = np.array([[fdet @ fdet, fdet @ sdet], [sdet @ fdet, sdet @ sdet]])
    beam_fast, beam_slow = np.linalg.solve(gram, [fdet @ spot_from_corner, sdet @ spot_from_corner])
    return DatasetGeometry(
        wavelength_m=float(header["wavelength_A"]) * 1e-10,
        pixel_size_m=num(scene.pixel_size_m),
        fpixels=int(exp.config.fpixels),
        spixels=int(exp.config.spixels),
        fdet=vec(fdet), sdet=vec(sdet), odet=vec(scene.odet), pix0_m=vec(pix0),
        beam=vec(beam), polar=vec(scene.polar_axis),
        distance_m=distance, close_distance_m=num(scene.close_distance_m),
        beam_fast_m=float(beam_fast), beam_slow_m=float(beam_slow),
        spindle=vec(scene.spindle),
        phi_start_deg=float(header["osc_start_deg"]), osc_deg=float(header["osc_range_deg"]),
        twotheta_deg=float(header["twotheta_deg"]),
        sensor_thickness_m=sensor_thickness_m(exp),
        exposure_s=float(exp.settings.exposure) if exp.settings is not None else 1.0,
        curved_detector=bool(exp.config.curved_detector),
    )


# --------------------------------------------------------------------------
# writing


def _compression(name):
    """h5py dataset keywords for a compression name (None, "gzip", "bslz4", "auto")."""
    if name is None or name == "none":
        return {}
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    if name in ("bslz4", "auto"):
        try:
            import hdf5plugin
        except ImportError:
            if name == "auto":
                return _compression("gzip")
            from nbjax.errors import InputError

            raise InputError("bitshuffle/LZ4 compression needs hdf5plugin: pip install 'nbjax[nexus]'") from None
        return dict(hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
    raise ValueError(f"write_nxmx: unknown compression {name!r} (None, 'gzip', 'bslz4' or 'auto')")


def _text(value: str):
    return np.bytes_(value.encode("utf-8"))


def _group(parent, name, nx_class, **attrs):
    group = parent.create_group(name)
    group.attrs["NX_class"] = _text(nx_class)
    for key, value in attrs.items():
        group.attrs[key] = _text(value) if isinstance(value, str) else value
    return group


def _field(group, name, value, units=None, **attrs):
    if isinstance(value, str):
        dataset = group.create_dataset(name, data=_text(value))
    else:
        dataset = group.create_dataset(name, data=value)
    if units is not None:
        dataset.attrs["units"] = _text(units)
    for key, item in attrs.items():
        dataset.attrs[key] = _text(item) if isinstance(item, str) else item
    return dataset


def _axis(group, name, values, *, kind, vector, units, depends_on, offset=(0.0, 0.0, 0.0), offset_units="mm"):
    """An NXtransformations axis: a translation or rotation along ``vector``."""
    return _field(group, name, values, units=units, transformation_type=kind,
                  vector=np.asarray(vector, dtype=np.float64), offset=np.asarray(offset, dtype=np.float64),
                  offset_units=offset_units, depends_on=depends_on)


def scan_angles(geometry: DatasetGeometry, n_frames: int, scan: str | None):
    """Per-frame omega start angles and, for a rotation series, the increment (degrees).

    ``scan``: "rotation" (frame k starts at ``phi_start + k·osc``), "stills"
    (every frame at ``phi_start``, no increment) or None (rotation when
    ``osc_deg`` > 0, else stills).
    """
    if scan is None:
        scan = "rotation" if geometry.osc_deg > 0 else "stills"
    if scan == "rotation":
        if not geometry.osc_deg > 0:
            raise ValueError("write_nxmx: a rotation series needs osc_deg > 0")
        starts = geometry.phi_start_deg + geometry.osc_deg * np.arange(n_frames, dtype=np.float64)
        return starts, float(geometry.osc_deg)
    if scan == "stills":
        return np.full(n_frames, geometry.phi_start_deg, dtype=np.float64), None
    raise ValueError(f"write_nxmx: scan must be 'rotation', 'stills' or None, not {scan!r}")


def write_nxmx(path, frames, geometry: DatasetGeometry, *, scan: str | None = None,
               compression: str | None = None, saturation_value: float | None = None) -> None:
    """Write ``frames`` (n, slow, fast) and ``geometry`` as one NeXus/NXmx HDF5 file.

    ``frames``: an array of shape (n, spixels, fpixels), or a sequence of n
    (spixels, fpixels) images (written one at a time); integers or floats.
    ``scan``: see :func:`scan_angles`.  ``compression``: None (none),
    "gzip" (any HDF5 reader), "bslz4" (bitshuffle + LZ4 through hdf5plugin,
    what Eiger detectors write; DIALS reads it) or "auto" (bslz4 when
    hdf5plugin is installed, else gzip).  ``saturation_value``: the largest
    trusted pixel value; by default the maximum of an integer dtype (65535 for
    uint16), none for float frames.  The file appears all at once
    (:func:`nbjax.io.atomic.atomic_path`).
    """
    try:
        import h5py
    except ImportError:
        from nbjax.errors import InputError

        raise InputError("NeXus output needs h5py (a dependency of nbjax): pip install h5py") from None
    if geometry.curved_detector:
        raise ValueError("write_nxmx: a curved detector (-curved_det) has no NXmx description")
    if not math.isfinite(geometry.distance_m):
        raise ValueError("write_nxmx: the detector plane is parallel to the beam (no beam centre)")
    n_frames = len(frames)
    if n_frames == 0:
        raise ValueError("write_nxmx: no frames")
    first = np.asarray(frames[0])
    shape = (geometry.spixels, geometry.fpixels)
    if first.shape != shape:
        raise ValueError(f"write_nxmx: frames are {first.shape} but the detector is {shape} (slow, fast)")
    dtype = first.dtype
    if saturation_value is None and np.issubdtype(dtype, np.integer):
        saturation_value = float(np.iinfo(dtype).max)
    filters = _compression(compression)
    starts, increment = scan_angles(geometry, n_frames, scan)

    R = geometry.lab_to_mcstas()
    to_nx = lambda v: R @ np.asarray(v, dtype=np.float64)
    px_mm = geometry.pixel_size_m * 1000.0
    distance_mm = geometry.distance_m * 1000.0
    corner_from_spot_mm = to_nx(np.asarray(geometry.pix0_m) - geometry.beam_spot_m()) * 1000.0
    offset_length = float(np.linalg.norm(corner_from_spot_mm))
    offset_vector = corner_from_spot_mm / offset_length if offset_length > 0 else np.array([1.0, 0.0, 0.0])
    beam_x, beam_y = geometry.beam_center_px

    with atomic_path(path) as temporary:
        with h5py.File(temporary, "w") as f:
            f.attrs["default"] = _text("entry")
            f.attrs["creator"] = _text("nbjax")
            entry = _group(f, "entry", "NXentry", default="data")
            _field(entry, "definition", "NXmx")

            data = _group(entry, "data", "NXdata", signal="data")
            dataset = data.create_dataset("data", shape=(n_frames,) + shape, dtype=dtype,
                                          chunks=(1,) + shape, **filters)
            for k in range(n_frames):
                frame = np.asarray(frames[k])
                if frame.shape != shape:
                    raise ValueError(f"write_nxmx: frame {k} is {frame.shape}, expected {shape}")
                dataset[k] = frame

            instrument = _group(entry, "instrument", "NXinstrument")
            _field(instrument, "name", "nbjax simulated instrument (nanoBragg)")
            beam = _group(instrument, "beam", "NXbeam")
            _field(beam, "incident_wavelength", geometry.wavelength_m * 1e10, units="angstrom")

            detector = _group(instrument, "detector", "NXdetector")
            detector["data"] = dataset  # hard link: the detector's data are the NXdata frames
            _field(detector, "description", "nbjax simulated detector (nanoBragg)")
            _field(detector, "type", "pixel")
            _field(detector, "depends_on", "/entry/instrument/detector/transformations/det_z")
            _field(detector, "distance", distance_mm, units="mm")
            _field(detector, "beam_center_x", beam_x, units="pixel")
            _field(detector, "beam_center_y", beam_y, units="pixel")
            _field(detector, "x_pixel_size", geometry.pixel_size_m, units="m")
            _field(detector, "y_pixel_size", geometry.pixel_size_m, units="m")
            _field(detector, "sensor_material", geometry.sensor_material)
            _field(detector, "sensor_thickness", geometry.sensor_thickness_m, units="m")
            _field(detector, "count_time", geometry.exposure_s, units="s")
            _field(detector, "frame_time", geometry.exposure_s, units="s")
            if saturation_value is not None:
                _field(detector, "saturation_value", saturation_value)

            transformations = _group(detector, "transformations", "NXtransformations")
            _axis(transformations, "det_z", distance_mm, kind="translation", vector=(0.0, 0.0, 1.0),
                  units="mm", depends_on=".")
            module = _group(detector, "module", "NXdetector_module")
            _field(module, "data_origin", np.array([0, 0], dtype=np.int64))
            _field(module, "data_size", np.array(shape, dtype=np.int64))
            _field(module, "data_stride", np.array([1, 1], dtype=np.int64))
            _axis(module, "module_offset", offset_length, kind="translation", vector=offset_vector, units="mm",
                  depends_on="/entry/instrument/detector/transformations/det_z")
            for name, axis in (("fast_pixel_direction", geometry.fdet), ("slow_pixel_direction", geometry.sdet)):
                _axis(module, name, px_mm, kind="translation", vector=_unit(to_nx(axis)), units="mm",
                      depends_on="/entry/instrument/detector/module/module_offset")

            sample = _group(entry, "sample", "NXsample")
            _field(sample, "name", "nbjax simulated crystal")
            _field(sample, "depends_on", "/entry/sample/transformations/omega")
            gonio = _group(sample, "transformations", "NXtransformations")
            _axis(gonio, "omega", starts, kind="rotation", vector=_unit(to_nx(geometry.spindle)), units="deg",
                  depends_on=".")
            if increment is not None:
                _field(gonio, "omega_increment_set", increment, units="deg")
                _field(gonio, "omega_end", starts + increment, units="deg")

            source = _group(entry, "source", "NXsource")
            _field(source, "name", "nbjax simulation")
