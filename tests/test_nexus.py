"""NeXus/NXmx data sets (nbjax.io.nexus): the file alone, read with h5py, must
give back nbjax's own detector geometry.

The reader here is written from the NeXus rules, not from nbjax's writer: a
transformation is the 4x4 matrix ``[R | t·v + o]`` (R the right-handed rotation
by the value about ``vector`` for a rotation, the identity for a translation;
t the value in its ``units``, o the ``offset`` in ``offset_units``), and a
chain T1 -> T2 -> T3 (``depends_on``) composes as T3 T2 T1.  Pixel (0, 0)'s
outer corner is the module's chain applied to the origin; the direct beam runs
from the sample along +z (McStas).  The expected McStas vectors come from
hard-coded frame maps: MOSFLM (beam +x, E-vector +z) gives
(x, y, z)_NeXus = (-z, y, x)_nanoBragg; XDS (beam +z, E-vector +x) gives
(-x, -y, z).
"""

import math

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from nbjax import experiment  # noqa: E402
from nbjax.io import nexus  # noqa: E402

BASE = "-default_F 100 -cell 100 100 100 90 90 90 -lambda 1.2 -N 5 -detpixels_x 40 -detpixels_y 32 -pixel 0.4"
CASES = {
    # a plain detector (MOSFLM, beam pivot)
    "plain": (BASE + " -distance 100 -Xbeam 7.3 -Ybeam 5.1 -osc 0.5 -phi 3",
              np.array([[0, 0, -1], [0, 1, 0], [1, 0, 0]], float)),
    # rotated about x, y and swung out by two-theta (sample pivot)
    "rotated": (BASE + " -distance 120 -Xbeam 6 -Ybeam 4 -detector_rotx 5 -detector_roty -3 -detector_rotz 2"
                " -twotheta 20 -osc 0.25 -phi -1",
                np.array([[0, 0, -1], [0, 1, 0], [1, 0, 0]], float)),
    # XDS convention (beam along +z), tilted
    "xds": (BASE + " -xds -distance 90 -ORGX 12.5 -ORGY 20.25 -detector_rotx -4 -osc 1",
            np.array([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], float)),
}

UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "deg": math.pi / 180, "degree": math.pi / 180, "rad": 1.0}


def _text(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return _text(value[()])
    return str(value)


def _rotation(axis, angle):
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _matrix(dataset, index=0):
    """4x4 matrix of one NXtransformations axis (lengths in metres, angles in radians)."""
    attrs = dataset.attrs
    scale = UNITS[_text(attrs["units"])]
    value = np.atleast_1d(dataset[()])[index] * scale
    vector = np.asarray(attrs["vector"], float)
    offset = np.asarray(attrs.get("offset", np.zeros(3)), float) * UNITS[_text(attrs.get("offset_units", attrs["units"]))]
    A = np.eye(4)
    if _text(attrs["transformation_type"]) == "rotation":
        A[:3, :3] = _rotation(vector, value)
        A[:3, 3] = offset
    else:
        A[:3, 3] = value * vector + offset
    return A


def _chain(f, path):
    """Composed matrix of the chain that starts at the axis ``path`` (absolute)."""
    A = np.eye(4)
    while path != ".":
        dataset = f[path]
        A = _matrix(dataset) @ A  # later links act after earlier ones
        target = _text(dataset.attrs["depends_on"])
        path = target if target.startswith("/") or target == "." else dataset.parent.name + "/" + target
    return A


def read_detector(f):
    """(corner of pixel (0, 0), fast unit vector, slow unit vector, pixel sizes) from the file, metres."""
    module = f["/entry/instrument/detector/module"]
    fast, slow = module["fast_pixel_direction"], module["slow_pixel_direction"]
    base = _chain(f, _text(fast.attrs["depends_on"]))
    assert np.allclose(base, _chain(f, _text(slow.attrs["depends_on"])))
    corner = (base @ np.array([0.0, 0.0, 0.0, 1.0]))[:3]
    # the pixel step: the axis' own matrix (value = pixel size) on the chain
    f_step = (base @ _matrix(fast) @ np.array([0, 0, 0, 1.0]))[:3] - corner
    s_step = (base @ _matrix(slow) @ np.array([0, 0, 0, 1.0]))[:3] - corner
    return corner, f_step / np.linalg.norm(f_step), s_step / np.linalg.norm(s_step), \
        (np.linalg.norm(f_step), np.linalg.norm(s_step))


def beam_spot_from_file(f):
    """Where the beam (from the sample along +z) crosses the detector plane."""
    corner, fast, slow, _ = read_detector(f)
    normal = np.cross(fast, slow)
    z = np.array([0.0, 0.0, 1.0])
    return (corner @ normal) / (z @ normal) * z


def beam_spot_from_scene(scene):
    """nbjax's beam / detector-plane intersection, from the Scene alone (nanoBragg frame)."""
    pix0, fdet, sdet, beam = (np.asarray(v, float) for v in (scene.pix0_m, scene.fdet, scene.sdet, scene.beam))
    normal = np.cross(fdet, sdet)
    return (pix0 @ normal) / (beam @ normal) * beam


@pytest.fixture(scope="module")
def experiments():
    return {name: experiment.build(args.split()) for name, (args, _) in CASES.items()}


def synthetic_frames(n, shape, dtype=np.uint16):
    rng = np.random.default_rng(7)
    return rng.integers(0, 5000, size=(n,) + shape).astype(dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_file_alone_gives_nbjax_pixel_and_beam_positions(name, experiments, tmp_path):
    exp = experiments[name]
    R = CASES[name][1]
    geometry = nexus.geometry_from_experiment(exp)
    np.testing.assert_allclose(geometry.lab_to_mcstas(), R, atol=1e-15)
    path = tmp_path / "series.h5"
    frames = synthetic_frames(3, (32, 40))
    nexus.write_nxmx(path, frames, geometry)

    scene = exp.scene
    pix0, fdet, sdet = (np.asarray(v, float) for v in (scene.pix0_m, scene.fdet, scene.sdet))
    px = float(scene.pixel_size_m)
    with h5py.File(path, "r") as f:
        corner, fast, slow, steps = read_detector(f)
        spot = beam_spot_from_file(f)
        det = f["/entry/instrument/detector"]
        beam_x, beam_y = float(det["beam_center_x"][()]), float(det["beam_center_y"][()])
        distance_m = float(det["distance"][()]) * UNITS[_text(det["distance"].attrs["units"])]
        data = f["/entry/data/data"][()]
        assert f["/entry/instrument/detector/data"].id == f["/entry/data/data"].id  # the same dataset
        wavelength_A = float(f["/entry/instrument/beam/incident_wavelength"][()])
        assert _text(f["/entry/definition"][()]) == "NXmx"

    # pixel (0, 0): nbjax's pix0 (outer corner), to 1e-6 m (it agrees to rounding)
    np.testing.assert_allclose(corner, R @ pix0, rtol=0, atol=1e-6)
    assert np.linalg.norm(corner - R @ pix0) < 1e-12
    np.testing.assert_allclose(fast, R @ fdet, atol=1e-12)
    np.testing.assert_allclose(slow, R @ sdet, atol=1e-12)
    np.testing.assert_allclose(steps, (px, px), rtol=1e-12)
    # a pixel centre far from the origin, as the renderer places it (pixels.subpixel_coordinates)
    i, j = 37, 29
    centre_nbjax = pix0 + (i + 0.5) * px * fdet + (j + 0.5) * px * sdet
    np.testing.assert_allclose(corner + (i + 0.5) * px * fast + (j + 0.5) * px * slow, R @ centre_nbjax,
                               rtol=0, atol=1e-12)
    # the direct-beam spot
    spot_nbjax = beam_spot_from_scene(scene)
    np.testing.assert_allclose(spot, R @ spot_nbjax, rtol=0, atol=1e-6)
    assert np.linalg.norm(spot - R @ spot_nbjax) < 1e-12
    np.testing.assert_allclose(spot[:2], 0.0, atol=1e-15)
    beam_distance = float(spot_nbjax @ np.asarray(scene.beam, float))
    assert distance_m == pytest.approx(beam_distance, rel=1e-12)
    assert spot[2] == pytest.approx(beam_distance, rel=1e-12)
    if "twotheta" not in CASES[name][0]:
        # without a two-theta swing nanoBragg's own distance is the same
        assert beam_distance == pytest.approx(float(scene.distance_m), rel=1e-12)
    # the beam centre (pixels) is the spot's fast/slow coordinates from the corner
    assert beam_x * px == pytest.approx((spot - corner) @ fast, abs=1e-12)
    assert beam_y * px == pytest.approx((spot - corner) @ slow, abs=1e-12)
    assert wavelength_A == pytest.approx(1.2, rel=1e-12)
    np.testing.assert_array_equal(data, frames)


def test_nbjax_headers_agree_with_the_file(experiments, tmp_path):
    """The SMV/CBF beam centre nbjax prints (mosflm and adxv) describes the same spot."""
    exp = experiments["plain"]
    geometry = nexus.geometry_from_experiment(exp)
    h = exp.header
    px_mm = h["pixel_size_mm"]
    # MOSFLM: -Xbeam/-Ybeam are the slow/fast beam centre less half a pixel
    assert geometry.beam_center_px[0] == pytest.approx((5.1 + 0.5 * px_mm) / px_mm, rel=1e-12)
    assert geometry.beam_center_px[1] == pytest.approx((7.3 + 0.5 * px_mm) / px_mm, rel=1e-12)
    assert geometry.beam_center_px[0] == pytest.approx(h["adxv_center_x_mm"] / px_mm, rel=1e-12)
    # nanoBragg's "dials origin" (mm) is the corner in dxtbx's imgCIF frame = diag(-1, 1, -1) McStas
    path = tmp_path / "one.h5"
    nexus.write_nxmx(path, synthetic_frames(1, (32, 40)), geometry)
    with h5py.File(path, "r") as f:
        corner = read_detector(f)[0]
    np.testing.assert_allclose(np.diag([-1, 1, -1]) @ corner * 1000, h["dials_origin_mm"], atol=1e-9)


def test_rotation_series_scan_axis(experiments, tmp_path):
    exp = experiments["rotated"]
    geometry = nexus.geometry_from_experiment(exp)
    assert (geometry.phi_start_deg, geometry.osc_deg) == pytest.approx((-1.0, 0.25))
    path = tmp_path / "series.h5"
    nexus.write_nxmx(path, synthetic_frames(4, (32, 40)), geometry, scan="rotation")
    with h5py.File(path, "r") as f:
        sample = f["/entry/sample"]
        omega_path = _text(sample["depends_on"][()])
        omega = f[omega_path]
        assert _text(omega.attrs["transformation_type"]) == "rotation"
        assert _text(omega.attrs["depends_on"]) == "."
        np.testing.assert_allclose(omega[()], [-1.0, -0.75, -0.5, -0.25], atol=1e-12)
        np.testing.assert_allclose(f[omega_path + "_end"][()], [-0.75, -0.5, -0.25, 0.0], atol=1e-12)
        assert float(f[omega_path + "_increment_set"][()]) == pytest.approx(0.25)
        # the spindle: nanoBragg's MOSFLM +z is McStas -x (imgCIF +x, dxtbx's usual axis)
        np.testing.assert_allclose(omega.attrs["vector"], [-1.0, 0.0, 0.0], atol=1e-15)
        # the axis turns the crystal as nbjax does: phi about +spindle, right-handed
        a0 = np.array([0.3, -0.5, 0.8])
        angle = math.radians(float(omega[2]))
        nbjax_rotated = _rotation(np.asarray(exp.scene.spindle, float), angle) @ a0
        R = geometry.lab_to_mcstas()
        np.testing.assert_allclose((_matrix(omega, 2) @ np.append(R @ a0, 1.0))[:3], R @ nbjax_rotated, atol=1e-14)


def test_stills_have_no_varying_axis(experiments, tmp_path):
    geometry = nexus.geometry_from_experiment(experiments["plain"])
    path = tmp_path / "stills.h5"
    nexus.write_nxmx(path, synthetic_frames(3, (32, 40)).astype(np.float32), geometry, scan="stills")
    with h5py.File(path, "r") as f:
        omega = f["/entry/sample/transformations/omega"]
        np.testing.assert_array_equal(omega[()], [3.0, 3.0, 3.0])
        assert "omega_end" not in f["/entry/sample/transformations"]
        assert "omega_increment_set" not in f["/entry/sample/transformations"]
        assert f["/entry/data/data"].dtype == np.float32
        assert "saturation_value" not in f["/entry/instrument/detector"]


def test_default_scan_and_saturation(experiments, tmp_path):
    geometry = nexus.geometry_from_experiment(experiments["xds"])
    path = tmp_path / "d.h5"
    nexus.write_nxmx(path, synthetic_frames(2, (32, 40)), geometry)  # osc 1 deg: a rotation series
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(f["/entry/sample/transformations/omega"][()], [0.0, 1.0])
        assert float(f["/entry/instrument/detector/saturation_value"][()]) == 65535
        assert _text(f["/entry/instrument/detector/sensor_material"][()]) == "Si"
        assert float(f["/entry/instrument/detector/sensor_thickness"][()]) == 0.0


def test_sensor_thickness_and_exposure():
    exp = experiment.build((CASES["plain"][0] + " -detector_thick 320 -exposure 2.5").split())
    geometry = nexus.geometry_from_experiment(exp)
    assert geometry.sensor_thickness_m == pytest.approx(320e-6, rel=1e-12)
    assert geometry.exposure_s == 2.5


@pytest.mark.parametrize("compression", ["gzip", "bslz4"])
def test_compressed_frames_read_back(compression, experiments, tmp_path):
    if compression == "bslz4":
        pytest.importorskip("hdf5plugin")
    geometry = nexus.geometry_from_experiment(experiments["plain"])
    frames = synthetic_frames(3, (32, 40))
    path = tmp_path / "c.h5"
    nexus.write_nxmx(path, frames, geometry, compression=compression)
    with h5py.File(path, "r") as f:
        dataset = f["/entry/data/data"]
        assert dataset.chunks == (1, 32, 40)
        assert (dataset.compression == "gzip") == (compression == "gzip")
        if compression == "bslz4":
            assert 32008 in dataset.id.get_create_plist().get_filter(0)[:1]  # the bitshuffle filter id
        np.testing.assert_array_equal(dataset[()], frames)


def test_bad_frames_leave_no_file(experiments, tmp_path):
    geometry = nexus.geometry_from_experiment(experiments["plain"])
    frames = [np.zeros((32, 40), np.uint16), np.zeros((40, 32), np.uint16)]
    with pytest.raises(ValueError, match="frame 1"):
        nexus.write_nxmx(tmp_path / "bad.h5", frames, geometry)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="rotation series needs"):
        nexus.write_nxmx(tmp_path / "bad.h5", frames[:1], nexus.geometry_from_experiment(
            experiment.build((BASE + " -distance 100").split())), scan="rotation")
    assert list(tmp_path.iterdir()) == []


def test_rendered_frames(tmp_path):
    """A real (tiny) render goes into the file unchanged, one frame per phi wedge."""
    from nbjax.renderer import engine

    frames = []
    for k in range(3):
        exp = experiment.build((BASE + f" -distance 100 -phi {k * 0.5} -osc 0.5 -phisteps 1").split())
        frames.append(np.asarray(engine.render(exp.scene, exp.config, None).image, np.float32))
    geometry = nexus.geometry_from_experiment(experiment.build((BASE + " -distance 100 -osc 0.5 -phisteps 1").split()))
    path = tmp_path / "render.h5"
    nexus.write_nxmx(path, frames, geometry)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["/entry/data/data"][()], np.stack(frames))
        np.testing.assert_allclose(f["/entry/sample/transformations/omega"][()], [0.0, 0.5, 1.0])
    assert frames[0].max() > 0


def test_nxmx_reader_sees_the_same_geometry(experiments, tmp_path):
    """The `nxmx` package (the reader dxtbx's FormatNXmx uses), when installed, finds dxtbx's
    panel origin (imgCIF, mm) at nanoBragg's printed "dials origin"."""
    nxmx = pytest.importorskip("nxmx")
    exp = experiments["rotated"]
    path = tmp_path / "r.h5"
    nexus.write_nxmx(path, synthetic_frames(3, (32, 40)), nexus.geometry_from_experiment(exp))
    with h5py.File(path, "r") as f:
        entry = nxmx.NXmx(f).entries[0]
        module = entry.instruments[0].detectors[0].modules[0]
        A = nxmx.get_cumulative_transformation(nxmx.get_dependency_chain(module.fast_pixel_direction.depends_on))
        np.testing.assert_allclose(np.diag([-1, 1, -1]) @ A[0, :3, 3], exp.header["dials_origin_mm"], atol=1e-9)
        omega = nxmx.get_dependency_chain(entry.samples[0].depends_on)[0]
        np.testing.assert_allclose(omega.end[()].to("degree").magnitude, [-0.75, -0.5, -0.25])


def test_custom_non_orthogonal_axes(tmp_path):
    """Custom fast/slow vectors 80 degrees apart: corner and beam centre still come back exactly."""
    s = math.radians(80)
    args = (BASE + " -distance 100 -fdet_vector 0 0 1 -sdet_vector 0 %r %r -odet_vector 1 0 0 -osc 0.1"
            % (-math.sin(s), math.cos(s))).split()
    exp = experiment.build(args)
    geometry = nexus.geometry_from_experiment(exp)
    path = tmp_path / "custom.h5"
    nexus.write_nxmx(path, synthetic_frames(1, (32, 40)), geometry)
    R = geometry.lab_to_mcstas()
    with h5py.File(path, "r") as f:
        corner, fast, slow, _ = read_detector(f)
        spot = beam_spot_from_file(f)
        det = f["/entry/instrument/detector"]
        bx, by = float(det["beam_center_x"][()]), float(det["beam_center_y"][()])
    assert abs(float(fast @ slow)) > 0.1  # really not orthogonal
    np.testing.assert_allclose(corner, R @ np.asarray(exp.scene.pix0_m, float), atol=1e-12)
    np.testing.assert_allclose(spot, R @ beam_spot_from_scene(exp.scene), atol=1e-12)
    px = float(exp.scene.pixel_size_m)
    np.testing.assert_allclose(corner + bx * px * fast + by * px * slow, spot, atol=1e-12)
