"""nanoBragg's flag scanner: the substring quirks, strict validation, ranges."""

import dataclasses
import math
import re

import numpy as np
import pytest

from conftest import GOLDEN, case_args
from nbjax import cflags, experiment
from nbjax.constants import RTD
from nbjax.errors import InputError
from nbjax.io import nanobragg_header, write_smv


def golden_stdout(name):
    return (GOLDEN / "cases" / name / "stdout.txt").read_text().splitlines()


def block_after(lines, title, n=4):
    """``title`` and the n lines after it (the cell-vector tables of the summary)."""
    i = lines.index(title)
    return lines[i:i + n]


# --------------------------------------------------------------------------- substring quirks

def test_twotheta_axis_also_sets_the_twotheta_angle():
    st = cflags.parse("-twotheta 15 -twotheta_axis 0 1 0".split())
    assert st.detector_twotheta == 0.0  # x component of the axis, read as -twotheta
    assert st.twotheta_axis == [0.0, 1.0, 0.0] and st.convention == "custom" and st.pivot == "sample"
    assert any("-twotheta_axis also matches -twotheta" in note for note in st.notes)
    # in the other order the angle survives
    assert cflags.parse("-twotheta_axis 0 1 0 -twotheta 15".split()).detector_twotheta == pytest.approx(15 / RTD)


def test_twotheta_axis_matches_nanobragg_case_p11(in_inputs_dir):
    """p11 asks for -twotheta 15 but nanoBragg's detector is not rotated: the axes are the defaults."""
    exp = experiment.build(case_args("p11_twotheta_axis"), now=0)
    theirs = golden_stdout("p11_twotheta_axis")
    for key in ("custom convention selected.", "pivoting detector around sample"):
        assert key in exp.log and key in theirs
    mine = [line for line in exp.log if "DIRECTION_OF_DETECTOR" in line]
    assert mine == [line for line in theirs if "DIRECTION_OF_DETECTOR" in line]
    assert mine[0].endswith("= 0 0 1")  # unrotated fast axis


def test_misset_seed_also_sets_misset_angles():
    st = cflags.parse("-misset random -misset_seed 99 -lambda 1.2".split())
    assert st.misset_mode == 1  # 'random' replaced by angles
    assert st.misset_rad == pytest.approx([99 / RTD, 0.0, 1.2 / RTD])  # atof("-lambda") is 0
    assert st.misset_seed == -99 and st.lambda0 == pytest.approx(1.2e-10)
    assert any("-misset_seed also matches -misset" in note for note in st.notes)
    # with fewer than three arguments after it, -misset_seed leaves the angles alone
    st = cflags.parse("-misset random -misset_seed 99".split())
    assert st.misset_mode == -1


def test_misset_seed_matches_nanobragg_case_p46(in_inputs_dir):
    exp = experiment.build(case_args("p46_misset_random"), now=0)
    theirs = golden_stdout("p46_misset_random")
    for title in ("real-space cell vectors (Angstrom):", "reciprocal-space cell vectors (Angstrom^-1):"):
        assert block_after(list(exp.log), title) == block_after(theirs, title)
    assert not any(line.startswith("random orientation misset angles") for line in exp.log)


def test_printout_pixel_also_sets_printout():
    st = cflags.parse("-printout_pixel 3 4".split())
    assert st.printout and st.printout_pixel == (3, 4)


def test_pix0_vector_mm_is_pix0_vector_unconverted():
    st = cflags.parse("-pix0_vector_mm -216.3 215.2 -230.2".split())
    assert st.pix0_vector == [-216.3, 215.2, -230.2] and st.convention == "custom"


def test_oversample_thick_takes_no_value():
    st = cflags.parse("-oversample_thick -oversample 3".split())
    assert st.oversample_thick and st.oversample == 3


def test_curved_det_as_last_argument_is_honoured_with_a_note():
    st = cflags.parse(["-curved_det"])
    assert st.curved_detector and any("last argument" in note for note in st.notes)


def test_unknown_argument_read_as_an_option_by_substring():
    st = cflags.parse("-distance_mm 80".split())
    assert st.distance == pytest.approx(0.08)
    assert any("read as -distance" in note for note in st.notes)


# --------------------------------------------------------------------------- values

def test_negative_numbers_are_values_not_options():
    st = cflags.parse("-spindle_axis -1 0 0 -Xbeam -5 -detector_rotx -3".split())
    assert st.spindle_vector == [-1.0, 0.0, 0.0]
    assert st.Xbeam == pytest.approx(-0.005) and st.detector_rotx == pytest.approx(-3 / RTD)


def test_values_given_once_each():
    st = cflags.parse("-N 3 -Na 5 -detpixels_x 20 -detpixels_y 10 -mosflm -pivot sample".split())
    assert (st.Na, st.Nb, st.Nc) == (5.0, 3.0, 3.0)
    assert (st.fpixels, st.spixels) == (20, 10) and st.convention == "mosflm" and st.pivot == "sample"


@pytest.mark.parametrize("args, message", [
    ("-distance", "-distance: needs a value"),
    ("-fdet_vector 1 0", "-fdet_vector: needs 3 values"),
    ("-distance far", "-distance: expected a number, got 'far'"),
    ("-N 2.5", "-N: expected an integer"),
    ("-cell 100 100", "-cell: needs six values"),
    ("-cell 100 100 100 90 90 x", "-cell: expected a number"),
    ("-cell -100 100 100 90 90 90", "a value starting with '-' ends the list"),
    ("-misset 1 2", "-misset: needs three angles"),
    ("-pivot middle", "-pivot: expected 'beam' or 'sample'"),
    ("-frobnicate", "-frobnicate: unknown option"),
    ("-N 3 17", "unexpected argument '17'"),
    ("-mask", "-mask: needs a file name"),
    ("-cell", "-cell: needs six values"),
])
def test_strict_validation(args, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        cflags.parse(args.split())


@pytest.mark.parametrize("args, message", [
    ("-N -5", "-N: must be a whole number from 0"),
    ("-Na 3000000000", "-Na: must be a whole number from 0 to 2147483647"),
    ("-oversample -2", "-oversample: must be a whole number from 0 to 100000"),
    ("-phisteps -1", "-phisteps: must be a whole number"),
    ("-mosaic_domains 100001", "-mosaic_domains: must be a whole number from 0 to 100000"),
    ("-dispsteps -3", "-dispsteps:"),
    ("-hdivsteps -3", "-hdivsteps:"),
    ("-detector_thicksteps -1", "-detector_thicksteps:"),
    ("-detpixels -32", "-detpixels: must be a whole number from 0"),
    ("-pixel 0", "-pixel: must be a positive number, got 0"),
    ("-distance -100", "-distance: must be a positive number"),
    ("-close_distance 0", "-close_distance: must be a positive number"),
    ("-lambda 0", "-lambda: must be a positive number"),
    ("-energy -5", "-energy: must be a positive number"),
    ("-lambda nan", "-lambda: must be a positive number, got nan"),
    ("-Xbeam inf", "-Xbeam: must be a finite number, got inf"),
    ("-twotheta nan", "-twotheta: must be a finite number"),
    ("-mosaic -1", "-mosaic: must be a number >= 0"),
    ("-fluence -1", "-fluence: must be a number >= 0"),
    ("-water -5", "-water:"),
    ("-polar 1.5", "-polar: must be a number from -1 to 1"),
    ("-detector_abs -5", "-detector_abs: the attenuation depth"),
    ("-beam_vector 0 0 0", "-beam_vector: the vector must not be zero"),
    ("-spindle_axis 0 0 nan", "-spindle_axis: the vector must be three finite numbers"),
    ("-cell 100 100 100 90 90 180", "-cell: the angles must be below 180"),
    ("-cell 0 100 100 90 90 90", "-cell: the length a must be positive"),
    ("-misset inf 0 0", "-misset: the misset angles must be finite"),
    ("-seed 2147483648", "-seed: must be a whole number from -2147483648 to 2147483647"),
    ("-osc 10 -phistep 0.00001", "-osc/-phistep: asks for 1e\\+06 phi steps"),
    ("-hdivrange 1 -hdivstep 0.000001", "-hdivrange/-hdivstep: range / step size asks for"),
    ("-hdivsteps 1000 -vdivsteps 1000 -divergence 1", "make more than 100000 sources"),
    ("-detpixels 20000", "-detpixels/-detsize/-pixel: a detector of 20000 x 20000 pixels is too large"),
    ("-detsize 1e300", "is too large"),
    ("-Xbeamx nan", "-Xbeamx: must be a finite number, got nan \\(read as -Xbeam"),
    # a direction whose length overflows or underflows when normalised (found by the fuzzing)
    ("-twotheta_axis 4 0 8.6e155", "-twotheta_axis: the vector 4 0 8.6e\\+155 is too long to give a direction"),
    ("-beam_vector 1e-170 0 0", "-beam_vector: the vector 1e-170 0 0 is too short to give a direction"),
])
def test_ranges(args, message):
    with pytest.raises(InputError, match=message) as info:
        cflags.parse(args.split())
    assert "\n" not in str(info.value)


# Edge values nanoBragg accepts, and the variables they set (nanoBragg's units: m, rad;
# seeds stored negated; -detector_abs inf or 0 turns absorption off).
EDGE_VALUES = {
    "-N 0": dict(Na=0.0, Nb=0.0, Nc=0.0),
    "-oversample 0": dict(oversample=0),
    "-phisteps 0": dict(phisteps=0),
    "-mosaic_domains 0": dict(mosaic_domains=0),
    "-detpixels 0 -detsize 10": dict(fpixels=0, spixels=0, detsize_f=0.01, detsize_s=0.01),
    "-detector_abs inf": dict(detector_mu=0.0, detector_thick=0.0),
    "-detector_abs 0": dict(detector_mu=0.0, detector_thick=0.0),
    "-polar -1": dict(polarization=-1.0, nopolar=False),
    "-mosaic 0": dict(mosaic_spread=0.0),
    "-cell 100 100 100 0 0 0": dict(user_cell=True, cell=[100.0, 100.0, 100.0, 0.0, 0.0, 0.0]),
    "-odet_vector 0 0 0": dict(convention="custom", odet_vector=[0.0, 0.0, 0.0]),
    "-roi -1 -1 -1 -1": dict(roi=[-1, -1, -1, -1]),
    "-seed -2147483648": dict(seed=2147483648),
    "-beamsize -1": dict(beamsize=-0.001),
    "-Xbeam -5": dict(Xbeam=-0.005, pivot="beam"),
    "-mosaic_domains 100000 -mosaic 1": dict(mosaic_domains=100000, mosaic_spread=math.pi / 180),
    "-osc 10 -phistep 0.0001": dict(osc=10 * math.pi / 180, phistep=0.0001 * math.pi / 180),
}


@pytest.mark.parametrize("args", sorted(EDGE_VALUES))
def test_edge_values_nanobragg_accepts_are_accepted(args):
    st = cflags.parse(args.split())
    for field, expected in EDGE_VALUES[args].items():
        got = getattr(st, field)
        if isinstance(expected, float):
            assert got == pytest.approx(expected, rel=1e-15, abs=0), (field, got)
        else:
            assert got == expected, (field, got)
    assert st.given == {a for a in args.split() if a.startswith("-") and not a[1:2].isdigit()}


def test_every_numeric_option_has_a_range():
    for rule in cflags._RULES:
        if set(rule.kinds) & set("fia"):
            assert rule.names[0] in cflags.LIMITS, rule.names


# Every option nanoBragg.c's scanner tests for, as its help and source spell them.
NANOBRAGG_OPTIONS = """
-img -mask -Na -Nb -Nc -N -cell -misset -samplesize -sample_size -sample_thick -sample_x -sample_width
-sample_y -width -sample_height -sample_z -height -xtalsize -xtal_size -xtal_thick -xtal_x -xtal_width
-xtal_y -xtal_height -xtal_z -density -sample_density -MW -molecular_weight -Xbeam -Ybeam -Xclose -Yclose
-ORGX -ORGY -pivot -mosflm -xds -adxv -denzo -dials -fdet_vector -sdet_vector -odet_vector -beam_vector
-polar_vector -spindle_axis -twotheta_axis -pix0_vector -pix0_vector_mm -distance -close_distance
-detector_abs -detector_absorb -detector_thick -detector_thicksteps -thicksteps -twotheta -detector_rotx
-detector_roty -detector_rotz -detsize -detsize_f -detsize_s -detpixels -detpixels_f -detpixels_x
-detpixels_s -detpixels_y -curved_det -pixel -point_pixel -polar -nopolar -oversample_thick
-oversample_polar -oversample_omega -oversample -roi -lambda -wavelength -energy -fluence -flux -exposure
-beamsize -mosaic -mosaicity -mosaic_spread -mosaic_domains -mosaic_dom -dispersion -dispsteps -divergence
-hdivrange -vdivrange -hdivstep -hdivsteps -vdivstep -vdivsteps -divsteps -round_div -square_div -adc -phi
-osc -phistep -phisteps -dmin -mat -hkl -default_F -dump -stolout -stol -4stol -Q -sourcefile -floatfile
-floatimage -intfile -intimage -pgmfile -pgmimage -noisefile -noiseimage -nonoise -nopgm -scale -pgmscale
-coherent -printout -noprogress -progress -interpolate -nointerpolate -round_xtal -square_xtal -gauss_xtal
-binary_spots -tophat_spots -fudge -printout_pixel -seed -mosaic_seed -misset_seed -water
""".split()


def _differs(a, b):
    return not (a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)))


# Options whose given value is nanoBragg's default already, as the test below sets them.
SETS_A_DEFAULT = {"-mosflm", "-pivot", "-progress", "-round_div", "-square_xtal"}


def test_every_nanobragg_option_is_known():
    """Each option, with values of its kind (file names, 'beam', numbers), is recognised
    and changes the variable it names."""
    assert set(NANOBRAGG_OPTIONS) <= set(cflags.OPTION_NAMES) | {"-sample_density", "-molecular_weight"}
    kinds = {name: rule.kinds for rule in cflags._RULES for name in rule.names}
    kinds.update({"-cell": "ffffff", "-misset": "fff", "-mask": "s", "-img": "s", "-sample_density": "f",
                  "-molecular_weight": "f"})
    default = dataclasses.asdict(cflags.CSettings())
    for name in NANOBRAGG_OPTIONS:
        kind = kinds[name]
        if name == "-pivot":
            values = ["beam"]
        elif name in ("-cell",):
            values = ["50", "60", "70", "80", "85", "95"]
        elif kind == "-":
            values = ["-nonoise"]          # -curved_det needs a following argument
        else:
            values = {"f": "0.5", "i": "3", "s": "x.file", "a": "7"}
            values = [values[k] for k in kind]
        st = cflags.parse([name] + values)
        assert name in st.given or name in ("-mask", "-img"), name   # those two are read before the scan
        changed = {k for k, v in dataclasses.asdict(st).items() if k not in ("given", "notes") and _differs(v, default[k])}
        if name in SETS_A_DEFAULT:
            continue
        assert changed, name


# --------------------------------------------------------------------------- header values

def _smv(path, **changes):
    fields = dict(fpixels=16, spixels=16, pixel_size_mm=0.4, distance_mm=80, wavelength_A=1.2,
                  beam_center_x_mm=3.2, beam_center_y_mm=3.2, adxv_center_x_mm=3.2, adxv_center_y_mm=3.2,
                  mosflm_center_x_mm=3.2, mosflm_center_y_mm=3.2, denzo_x_beam_mm=3.2, denzo_y_beam_mm=3.2,
                  dials_origin_mm=(0, 0, -80), xds_orgx=8, xds_orgy=8, close_distance_mm=80, phi_deg=0,
                  osc_start_deg=0, osc_range_deg=0.1, twotheta_deg=0)
    fields.update(changes)
    write_smv(path, np.zeros((fields["spixels"], fields["fpixels"]), np.uint16), nanobragg_header(**fields))


def test_header_values_are_checked_too(tmp_path):
    _smv(tmp_path / "ok.img")
    st, _ = experiment.parse_args(["-img", str(tmp_path / "ok.img")])
    assert (st.fpixels, st.spixels, st.distance) == (16, 16, pytest.approx(0.08))
    # (nanoBragg's DISTANCE lookup finds the last 'DISTANCE' in the header: CLOSE_DISTANCE's)
    for changes, flag in (({"close_distance_mm": 0.0}, "-distance"), ({"pixel_size_mm": 0.0}, "-pixel"),
                          ({"wavelength_A": -1.0}, "-lambda")):
        _smv(tmp_path / "bad.img", **changes)
        with pytest.raises(InputError, match=f"{flag}.*-img/-mask header"):
            experiment.parse_args(["-img", str(tmp_path / "bad.img")])
    # a non-finite header number is named as the file's field, not as the flag it feeds
    _smv(tmp_path / "bad.img", beam_center_x_mm=math.inf)
    with pytest.raises(InputError, match=r"^-img: .*bad.img: header field BEAM_CENTER_X=inf is not a finite number"):
        experiment.parse_args(["-img", str(tmp_path / "bad.img")])
    # the command line overrides a bad header value
    _smv(tmp_path / "bad.img", wavelength_A=-1.0)
    st, _ = experiment.parse_args(["-img", str(tmp_path / "bad.img"), "-lambda", "1.5"])
    assert st.lambda0 == pytest.approx(1.5e-10)


def test_flag_reference_lists_every_option():
    from conftest import ROOT

    text = (ROOT.parent / "docs" / "flags.md").read_text()
    from nbjax.commands import options

    missing = [name for name in cflags.OPTION_NAMES + list(options.NBJAX_OPTIONS) if f"`{name}`" not in text]
    assert not missing


# --------------------------------------------------------------------------- position and count: --c-parity

# (arguments, the default mode's error, --c-parity's warning, what --c-parity reads)
SKIPPED_BY_NANOBRAGG = [
    ("-oversample_thick 0 -N 3",
     "-oversample_thick is a switch and takes no value, got '0': nanoBragg.c ignores '0' and still turns "
     "-oversample_thick on .*; leave -oversample_thick out to keep it off",
     "ignored '0' after -oversample_thick: the switch takes no value",
     lambda st: st.oversample_thick and st.Na == 3),
    ("-nonoise 17", "-nonoise is a switch and takes no value, got '17'", "ignored '17' after -nonoise",
     lambda st: not st.calculate_noise),
    ("-distance 80 -curved_det", None, "ignored -curved_det: it is the last argument",
     lambda st: not st.curved_detector and st.distance == pytest.approx(0.08)),
    ("-hdiv 0 -vdiv 0 -N 3", "-hdiv: unknown option; did you mean -hdivrange",
     "ignored -hdiv 0: no nanoBragg option has this name.*did you mean -hdivrange",
     lambda st: st.hdivrange == -1.0 and st.vdivrange == -1.0 and st.Na == 3),
    ("-hdiv 5", "-hdiv: unknown option", "ignored -hdiv 5", lambda st: st.hdivrange == -1.0),
    ("-N 3 17", "unexpected argument '17' after -N 3 \\(-N takes one value\\)",
     "ignored '17' after -N 3: not a value of -N", lambda st: st.Na == 3),
    ("17 -N 3", "unexpected argument '17' \\(not the value of any option\\)", "ignored '17'",
     lambda st: st.Na == 3),
    ("-N 3 -distance", "-distance: needs a value", "ignored -distance: it needs one value",
     lambda st: st.distance == pytest.approx(0.1)),
    ("-roi 1 2 3", "-roi: needs 4 values", "ignored -roi 1 2 3: it needs 4 values",
     lambda st: st.roi == [-1, -1, -1, -1]),
    ("-fdet_vector 0 1", "-fdet_vector: needs 3 values", "ignored -fdet_vector 0 1",
     lambda st: st.fdet_vector == [0.0, 0.0, 1.0] and st.convention == "mosflm"),
    ("-misset 1 2", "-misset: needs three angles", "ignored -misset 1 2", lambda st: st.misset_mode == 0),
    ("-misset random", None, None, lambda st: st.misset_mode == -1),
    ("-cell", "-cell: needs six values", "ignored -cell", lambda st: not st.user_cell),
    ("-cell 100 -N 3", "-cell: needs six values", "-cell 100: only 1 of the six cell constants given",
     lambda st: st.user_cell and st.cell == [100.0, 0.0, 0.0, 0.0, 0.0, 0.0] and st.Na == 3),
    ("-mask", "-mask: needs a file name", "ignored -mask", lambda st: st.maskfilename is None),
    ("-printout_pixel 5", "-printout_pixel: needs 2 values", "ignored -printout_pixel 5",
     lambda st: st.printout and st.printout_pixel is None),
    ("-distance_mm", "-distance_mm: needs a value \\(read as -distance", "ignored -distance_mm \\(read as -distance",
     lambda st: st.distance == pytest.approx(0.1)),
]


@pytest.mark.parametrize("args, error, warning, reads", SKIPPED_BY_NANOBRAGG)
def test_c_parity_skips_what_nanobragg_skips(args, error, warning, reads):
    st = cflags.parse(args.split(), c_parity=True)
    assert reads(st), (args, st)
    warnings = [note for note in st.notes if note.startswith("WARNING: ")]
    if warning is None:
        assert not warnings
    else:
        assert re.search(warning, warnings[0]), warnings
        assert len(warnings) == 1 + args.count("-vdiv"), warnings
    if error is None:
        cflags.parse(args.split())  # the default mode reads it too
    else:
        with pytest.raises(InputError, match=error):
            cflags.parse(args.split())


@pytest.mark.parametrize("args", ["-detector_thick", "-detector_abs", "-thicksteps", "-detector_thicksteps"])
def test_options_nanobragg_reads_past_the_end_are_refused_in_both_modes(args):
    """nanoBragg.c tests these with argc >= i+1: as the last argument it crashes (segmentation fault)."""
    for c_parity in (False, True):
        with pytest.raises(InputError, match=f"{args}: needs a value .*crashes"):
            cflags.parse(["-N", "3", args], c_parity=c_parity)


def test_values_are_checked_in_both_modes():
    for args, message in (("-distance far", "expected a number"), ("-N -5", "-N: must be"),
                          ("-misset 10 20 -N 5", "-misset: expected a number, got '-N'"),
                          ("-cell -N 3", "-cell: needs six values")):
        with pytest.raises(InputError, match=message):
            cflags.parse(args.split(), c_parity=True)


def test_suggestions_begin_with_names_the_argument_starts():
    assert cflags.suggestions("-hdiv") == ["-hdivrange", "-hdivstep", "-hdivsteps"]
    assert "-detsize_f" in cflags.suggestions("-detsize_x")
    assert cflags.suggestions("-frobnicate") == []


def test_every_option_has_a_help_line():
    from nbjax import flaghelp

    assert sorted(flaghelp.names()) == sorted(cflags.OPTION_NAMES)
    assert all(flaghelp.meaning(name) for name in cflags.OPTION_NAMES)
