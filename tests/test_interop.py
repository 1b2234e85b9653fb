"""Other programs' view of nbjax's files, and nbjax's view of theirs (fabio), plus .npy and CBF output."""

import gzip
import sys

import numpy as np
import pytest

from conftest import GOLDEN, run_nbjax as run
from nbjax.io import read_smv

fabio = pytest.importorskip("fabio")
from fabio.dtrekimage import DtrekImage  # noqa: E402

ARGS = ("-hkl small.hkl -cell 100 100 100 90 90 90 -lambda 1.2 -N 5 -detpixels_x 40 -detpixels_y 24 -pixel 0.4 "
        "-distance 100 -Xbeam 7.3 -Ybeam 5.1 -nonoise -nopgm").split()


def test_nbjax_smv_opens_in_fabio_with_the_right_header(in_inputs_dir, capsys):
    code, _, err = run(ARGS, capsys)
    assert code == 0, err
    image = fabio.open(str(in_inputs_dir / "intimage.img"))
    header = image.header
    assert int(header["SIZE1"]) == 40 and int(header["SIZE2"]) == 24
    assert float(header["PIXEL_SIZE"]) == pytest.approx(0.4)
    assert float(header["DISTANCE"]) == pytest.approx(100)
    assert float(header["WAVELENGTH"]) == pytest.approx(1.2)
    # mosflm convention: the header's beam centre is -Xbeam/-Ybeam in mm
    assert float(header["BEAM_CENTER_X"]) == pytest.approx(7.3)
    assert float(header["BEAM_CENTER_Y"]) == pytest.approx(5.1)
    assert image.data.shape == (24, 40)
    np.testing.assert_array_equal(image.data, read_smv(in_inputs_dir / "intimage.img").data)
    assert image.data.max() > 40  # not just the ADC offset


def test_nanobragg_golden_smv_opens_in_fabio(tmp_path):
    path = tmp_path / "int.img"
    path.write_bytes(gzip.open(GOLDEN / "cases" / "p41_intfile_scale_adc" / "int.img.gz").read())
    np.testing.assert_array_equal(fabio.open(str(path)).data, read_smv(path).data)


@pytest.mark.parametrize("byte_order", ["little_endian", "big_endian"])
def test_nbjax_reads_an_smv_written_by_fabio(byte_order, in_inputs_dir, capsys):
    """Another program's header (d*TREK keys, spaces after '=', either byte order) sets up the detector."""
    data = (np.arange(30 * 20) % 700).astype(np.uint16).reshape(20, 30)
    header = {"BYTE_ORDER": byte_order, "PIXEL_SIZE": "0.25", "DISTANCE": "85", "WAVELENGTH": "1.1",
              "BEAM_CENTER_X": "3.0", "BEAM_CENTER_Y": "2.5"}
    DtrekImage(data=data, header=header).write(str(in_inputs_dir / "other.img"))
    np.testing.assert_array_equal(read_smv(in_inputs_dir / "other.img").data, data)

    code, out, err = run("-hkl small.hkl -cell 100 100 100 90 90 90 -N 5 -img other.img -nonoise -nopgm".split(),
                         capsys)
    assert code == 0, err
    assert "distance=0.085 detsize=0.0075x0.005  pixel=0.00025 meters (30x20 pixels)" in out
    assert "wave=1.1e-10 meters" in out
    assert "Xbeam=0.003 Ybeam=0.0025" in out
    written = fabio.open(str(in_inputs_dir / "intimage.img"))
    assert written.data.shape == (20, 30) and float(written.header["DISTANCE"]) == pytest.approx(85)


def test_npy_output(in_inputs_dir, capsys):
    code, _, _ = run(ARGS + ["--npy", "image.npy"], capsys)
    assert code == 0
    array = np.load(in_inputs_dir / "image.npy")
    assert array.dtype == np.float32 and array.shape == (24, 40)
    np.testing.assert_array_equal(array, np.fromfile(in_inputs_dir / "floatimage.bin", np.float32).reshape(24, 40))
    assert fabio.open(str(in_inputs_dir / "image.npy")).data.shape == (24, 40)


def test_cbf_output(in_inputs_dir, capsys):
    code, _, err = run(ARGS + ["--cbffile", "image.cbf"], capsys)
    assert code == 0, err
    cbf = fabio.open(str(in_inputs_dir / "image.cbf"))
    np.testing.assert_array_equal(cbf.data, read_smv(in_inputs_dir / "intimage.img").data.astype(np.int32))
    contents = cbf.header["_array_data.header_contents"]
    assert "Pixel_size 0.0004 m x 0.0004 m" in contents
    assert "Wavelength 1.2 A" in contents and "Detector_distance 0.1 m" in contents
    # mosflm: the beam hits Ybeam + half a pixel along fast, Xbeam + half a pixel along slow
    assert "Beam_xy (13.2500, 18.7500) pixels" in contents


def test_cbf_without_fabio_is_refused_before_rendering(in_inputs_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "fabio", None)
    before = sorted(p.name for p in in_inputs_dir.iterdir())
    code, out, err = run(ARGS + ["--cbffile", "image.cbf"], capsys)
    assert code == 2 and out == ""
    assert err.strip() == "nbjax: error: --cbffile: CBF output needs fabio: pip install 'nbjax[interop]'"
    assert sorted(p.name for p in in_inputs_dir.iterdir()) == before


def _pilatus_fields(contents):
    """The header lines as DIALS' miniCBF reader splits them: key = second token."""
    fields = {}
    for record in contents.splitlines():
        if record.startswith("#"):
            tokens = record.replace("=", "").replace(":", "").split()
            fields[tokens[1]] = " ".join(tokens[2:])
    return fields


CBF_ARGS = ("-default_F 100 -cell 100 100 100 90 90 90 -lambda 1.2 -N 5 -detpixels_x 40 -detpixels_y 24 -pixel 0.4 "
            "-distance 100 -Xbeam 7.3 -Ybeam 5.1 -phi 3 -osc 0.5").split()


def test_write_cbf_header_is_the_render_geometry(tmp_path):
    from nbjax import experiment
    from nbjax.io import cbf, nexus

    exp = experiment.build(CBF_ARGS + "-detector_thick 320 -exposure 2.5".split())
    pixels = (np.arange(24 * 40) * 37 % 65536).astype(np.uint16).reshape(24, 40)
    path = tmp_path / "shot_00001.cbf"
    cbf.write_cbf(path, pixels, cbf.cbf_header(exp))
    assert [p.name for p in tmp_path.iterdir()] == ["shot_00001.cbf"]
    image = fabio.open(str(path))
    np.testing.assert_array_equal(image.data, pixels.astype(np.int32))
    fields = _pilatus_fields(image.header["_array_data.header_contents"])
    geometry = nexus.geometry_from_experiment(exp)
    px = geometry.pixel_size_m
    assert [float(v) for v in fields["Pixel_size"].replace("m", "").replace("x", "").split()] == [px, px]
    assert float(fields["Wavelength"].split()[0]) == pytest.approx(1.2)
    assert float(fields["Detector_distance"].split()[0]) == pytest.approx(geometry.distance_m, rel=1e-8)
    beam_xy = [float(v) for v in fields["Beam_xy"].strip("()pixels ").replace(",", " ").split()]
    # the same spot as the NeXus file's beam centre, and nanoBragg's MOSFLM rule: Ybeam, Xbeam + half a pixel
    assert beam_xy == pytest.approx(list(geometry.beam_center_px), abs=5e-5)
    assert beam_xy == pytest.approx([(5.1 + 0.2) / 0.4, (7.3 + 0.2) / 0.4], abs=5e-5)
    assert float(fields["Start_angle"].split()[0]) == 3.0
    assert float(fields["Angle_increment"].split()[0]) == 0.5
    assert float(fields["Detector_2theta"].split()[0]) == 0.0
    assert float(fields["Silicon"].split()[2]) == pytest.approx(320e-6)  # "sensor, thickness 0.000320 m"
    assert float(fields["Exposure_time"].split()[0]) == 2.5
    assert float(fields["Exposure_period"].split()[0]) == 2.5
    assert int(fields["Count_cutoff"].split()[0]) == 65535
    assert int(image.header["X-Binary-Size-Fastest-Dimension"]) == 40
    assert int(image.header["X-Binary-Size-Second-Dimension"]) == 24


def test_write_cbf_thin_sensor_and_int32(tmp_path):
    from nbjax import experiment
    from nbjax.io import cbf

    exp = experiment.build(CBF_ARGS)
    pixels = np.full((24, 40), 70000, np.int32)
    cbf.write_cbf(tmp_path / "a.cbf", pixels, cbf.cbf_header(exp))
    image = fabio.open(str(tmp_path / "a.cbf"))
    fields = _pilatus_fields(image.header["_array_data.header_contents"])
    assert "Silicon" not in fields  # nanoBragg's default sensor has no depth
    assert int(fields["Count_cutoff"].split()[0]) == 2**31 - 1
    assert float(fields["Exposure_time"].split()[0]) == 1.0  # nanoBragg's default -exposure
    np.testing.assert_array_equal(image.data, pixels)


def test_write_cbf_failure_names_the_file(tmp_path):
    from nbjax import experiment
    from nbjax.errors import InputError
    from nbjax.io import cbf

    exp = experiment.build(CBF_ARGS)
    target = tmp_path / "missing" / "a.cbf"
    with pytest.raises(InputError, match="missing/a.cbf: cannot write"):
        cbf.write_cbf(target, np.zeros((24, 40), np.uint16), cbf.cbf_header(exp))
    assert list(tmp_path.iterdir()) == []
