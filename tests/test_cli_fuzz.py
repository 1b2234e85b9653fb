"""Property tests: whatever the command line holds, nbjax raises only InputError.

Generated argument lists mix real option names (nanoBragg's and nbjax's own)
with numbers (negative, huge, NaN, infinite), words, empty strings and the
names of small input files -- valid ones, malformed ones and missing ones.
They go to the flag scanner (:func:`nbjax.cflags.parse`), to the nbjax option
splitter, and -- added to a valid tiny experiment -- to the whole set-up
(:func:`nbjax.experiment.build`, which reads the files and computes the
geometry but does not render).  Each may succeed or raise InputError; any
other exception is a bug.  The file readers have their own fuzzing in
test_io_fuzz.py.

Example counts: 600 + 300 + 300 (flag scanner, default and --c-parity), 150 (nbjax options), 100 (compare's
options), 200 + 50 + 100 (set-up, the last under --c-parity), 500 (set-up with extreme values on every
numeric flag: 1e308, 1e-308, denormals, 2^31; numpy RuntimeWarnings count as failures) and 500 (set-up
reading generated -mat, -sourcefile, -mask/-img header and -hkl files of extreme numbers): 2,800
generated inputs.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from conftest import INPUTS
from nbjax import cflags, cli, experiment
from nbjax.commands import compare as compare_command
from nbjax.commands import options
from nbjax.errors import InputError
from nbjax.io import nanobragg_header, write_smv

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow, HealthCheck.data_too_large])

FLAGS = sorted(set(cflags.OPTION_NAMES) | set(options.NBJAX_OPTIONS))
FILES = ["tiny.hkl", "tiny.mat", "tiny.img", "tiny_mask.img", "sources.txt", "zero_source.txt",
         "garbage.bin", "empty.txt", "bad.hkl", "bad.mat", "missing.file", "Fdump.bin", "", "."]
WORDS = ["", " ", "-", "--", "nan", "-nan", "inf", "-inf", "infinity", "1e999", "-1e999", "0x1p3", "1e",
         "random", "rand", "beam", "sample", "abc", "-0", "0", "1", "-1", "2147483648", "-2147483649",
         "100000", "100001", "1e-300", "3.5", "1,2", "=", "--quiet", "--precision=single", "-N=3"]

numbers = st.one_of(
    st.integers(-3, 40).map(str),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=64).map(repr),
    st.floats(-1e3, 1e3).map(lambda x: f"{x:g}"),
)
tokens = st.one_of(
    st.sampled_from(FLAGS),
    numbers,
    st.sampled_from(WORDS),
    st.sampled_from(FILES),
    st.text(max_size=10),
    # an option name with something appended: nanoBragg's substring rules
    st.tuples(st.sampled_from(FLAGS), st.sampled_from(["", "x", "_mm", "s", "_seed", "-"])).map("".join),
)
argument_lists = st.lists(tokens, max_size=14)


def _tiny_smv(path, fast, slow, value=1):
    header = nanobragg_header(
        fpixels=fast, spixels=slow, pixel_size_mm=0.4, distance_mm=50, wavelength_A=1.2, beam_center_x_mm=1.6,
        beam_center_y_mm=1.6, adxv_center_x_mm=1.6, adxv_center_y_mm=1.6, mosflm_center_x_mm=1.6,
        mosflm_center_y_mm=1.6, denzo_x_beam_mm=1.6, denzo_y_beam_mm=1.6, dials_origin_mm=(0, 0, -50),
        xds_orgx=4, xds_orgy=4, close_distance_mm=50, phi_deg=0, osc_start_deg=0, osc_range_deg=0.1,
        twotheta_deg=0)
    write_smv(path, np.full((slow, fast), value, np.uint16), header)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    """Tiny input files, valid and malformed, in one folder."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "tiny.hkl").write_text("0 0 0 10\n1 0 0 5\n0 1 0 5\n0 0 1 5\n-1 -1 -1 2\n")
    shutil.copy(INPUTS / "A.mat", folder / "tiny.mat")
    shutil.copy(INPUTS / "sources.txt", folder / "sources.txt")
    _tiny_smv(folder / "tiny.img", 8, 6)
    _tiny_smv(folder / "tiny_mask.img", 8, 8)
    (folder / "zero_source.txt").write_text("0 0 0 1 1e-10\n")
    (folder / "garbage.bin").write_bytes(bytes(range(256)) * 3)
    (folder / "empty.txt").write_text("")
    (folder / "bad.hkl").write_text("1 2 3\n1 2 x 4\n")
    (folder / "bad.mat").write_text("0.1 0.2 banana\n")
    (folder / "Fdump.bin").write_bytes(b"0 1 0 1 0 1\n\f" + b"\0" * 20)  # truncated
    return folder


# How many values each option takes, and of what kind (f/i number, s text).
KINDS = {name: rule.kinds for rule in cflags._RULES for name in rule.names}
KINDS.update({"-cell": "ffffff", "-misset": "fff", "-mask": "s", "-img": "s"})
FILE_OPTIONS = {"-mat", "-hkl", "-dump", "-img", "-mask", "-sourcefile", "-stol", "-4stol", "-Q"}

plausible = st.one_of(st.integers(0, 12).map(str), st.floats(0, 200).map(lambda x: f"{x:.4g}"),
                      st.floats(0, 2).map(lambda x: f"{x:.3g}"))
odd = st.one_of(numbers, st.sampled_from(WORDS))


@st.composite
def option_with_values(draw):
    """A real option with values that mostly fit it (number and kind), sometimes not."""
    flag = draw(st.sampled_from(sorted(KINDS)))
    kinds = KINDS[flag].replace("-", "").replace("a", "f")
    count = len(kinds) + draw(st.sampled_from([0, 0, 0, 0, -1, 1]))
    values = []
    for k in range(max(count, 0)):
        kind = kinds[k] if k < len(kinds) else "f"
        if flag in FILE_OPTIONS:
            values.append(draw(st.sampled_from(FILES)))
        elif flag == "-pivot":
            values.append(draw(st.sampled_from(["beam", "sample", "neither"])))
        elif flag == "-misset" and k == 0 and draw(st.booleans()):
            values.append("random")
        elif kind == "s":
            values.append(draw(st.sampled_from(["out.bin", "", "sub/dir/out.img"])))
        else:
            values.append(draw(st.one_of(plausible, plausible, plausible, odd)))
    return [flag, *values]


options_lists = st.lists(option_with_values(), max_size=4).map(lambda parts: [t for part in parts for t in part])

# a valid experiment that build() sets up in a fraction of a second
GROUPS = [["-hkl", "tiny.hkl"], ["-cell", "50", "50", "50", "90", "90", "90"], ["-lambda", "1.2"], ["-N", "2"],
          ["-detpixels", "8"], ["-pixel", "0.4"], ["-distance", "50"], ["-nonoise"]]
BASE = [word for group in GROUPS for word in group]


def _outcome(call, *args):
    """"accepted", or "refused" for a one-line InputError (anything else propagates)."""
    try:
        call(*args)
    except InputError as error:
        message = str(error)
        assert message and "\n" not in message
        return "refused"
    return "accepted"


def _only_input_errors(call, *args, expect=None):
    """Run ``call``: it may succeed or raise a one-line InputError (anything else fails).
    ``expect`` ("accepted" or "refused") pins the outcome where it is known."""
    outcome = _outcome(call, *args)
    event(outcome)
    assert expect is None or outcome == expect, (expect, args)


def test_base_renders_on_its_own(fuzz_dir, monkeypatch):
    """The valid experiment the set-up fuzzing starts from builds and renders spots,
    and each of its groups matters: leaving out -hkl or -cell is refused."""
    from nbjax.renderer import engine

    monkeypatch.chdir(fuzz_dir)
    exp = experiment.build(BASE, now=0.0)
    image = np.asarray(engine.render(exp.scene, exp.config).image)
    assert image.shape == (8, 8) and image.max() > 0 and np.all(np.isfinite(image))
    for left_out in (0, 1):   # no structure factors; no cell
        argv = [word for k, group in enumerate(GROUPS) if k != left_out for word in group]
        assert _outcome(lambda a: experiment.build(a, now=0.0), argv) == "refused", left_out


@settings(FAST, max_examples=600)
@given(argv=argument_lists)
def test_flag_scanner_raises_only_input_errors(argv):
    _only_input_errors(cflags.parse, argv)


@settings(FAST, max_examples=300)
@given(argv=argument_lists)
def test_c_parity_scanner_raises_only_input_errors(argv):
    """--c-parity skips what nanoBragg.c skips; whatever it reads, it still fails only with InputError."""
    _only_input_errors(lambda a: cflags.parse(a, c_parity=True), argv)


@settings(FAST, max_examples=300)
@given(flag=st.sampled_from(cflags.OPTION_NAMES), values=st.lists(st.one_of(numbers, st.sampled_from(WORDS)),
                                                                   max_size=7))
def test_every_flag_with_any_values(flag, values):
    """Each real option followed by 0-7 generated values (missing, extra, non-numeric, out of range)."""
    _only_input_errors(cflags.parse, [flag, *values])


@settings(FAST, max_examples=150)
@given(argv=argument_lists)
def test_nbjax_option_splitter_raises_only_input_errors(argv):
    def split_and_check(argv):
        found, _ = options.split_options(argv)
        options.positive_int_option(found, "--block-rows")
        options.positive_int_option(found, "--devices", 1)

    _only_input_errors(split_and_check, argv)


@settings(FAST, max_examples=100)
@given(argv=argument_lists)
def test_compare_options_raise_only_input_errors(argv):
    def parse(argv):
        shape, rest = compare_command._shape_option(list(argv))
        options.split_options(rest, {"--json": 0, "--png": 1})

    _only_input_errors(parse, argv)


@settings(FAST, max_examples=200)
@given(extra=options_lists, drop=st.integers(0, 3 * len(GROUPS)))
@example(extra=[], drop=len(GROUPS))              # BASE itself: accepted
@example(extra=["-lambda", "0"], drop=len(GROUPS))   # refused
def test_setup_raises_only_input_errors(extra, drop, fuzz_dir, monkeypatch):
    """A valid tiny experiment with generated options added (and sometimes one of its own left out).

    Cases asking for a big detector still only set up (no pixel arrays are made
    before the render), so they stay fast.
    """
    monkeypatch.chdir(fuzz_dir)
    argv = [word for k, group in enumerate(GROUPS) if k != drop for word in group] + extra
    # nothing added and nothing left out: BASE itself, which must build
    expect = "accepted" if not extra and drop >= len(GROUPS) else None
    _only_input_errors(lambda a: experiment.build(a, now=0.0), argv, expect=expect)


@settings(FAST, max_examples=50)
@given(extra=argument_lists)
def test_setup_with_free_form_arguments(extra, fuzz_dir, monkeypatch):
    """The same with free-form generated words added."""
    monkeypatch.chdir(fuzz_dir)
    _only_input_errors(lambda a: experiment.build(a, now=0.0), BASE + extra)


@settings(FAST, max_examples=100)
@given(extra=options_lists, free=argument_lists)
def test_c_parity_setup_raises_only_input_errors(extra, free, fuzz_dir, monkeypatch):
    """What --c-parity lets through (partial -cell, skipped options) still sets up or fails cleanly."""
    monkeypatch.chdir(fuzz_dir)
    _only_input_errors(lambda a: experiment.build(a, now=0.0, argument_scan="c-parity"), BASE + extra + free)


# ---- extreme values and generated input files (issue 14: overflow, underflow, huge work)

EXTREME = ["1e308", "-1e308", "1e-308", "-1e-308", "4.9e-324", "1e-300", "1e300", "1e200", "1e38", "3.5e38",
           "1e-45", "2147483647", "2147483648", "46341", "100000", "1e15", "0", "-0", "1e-3", "1e3"]
extreme = st.one_of(st.sampled_from(EXTREME), st.floats(allow_nan=False, allow_infinity=False).map(repr),
                    plausible)
NUMERIC_FLAGS = sorted(f for f in KINDS if f not in FILE_OPTIONS and set(KINDS[f].replace("-", "")) <= set("fia")
                       and KINDS[f].replace("-", ""))


@st.composite
def extreme_option(draw):
    flag = draw(st.sampled_from(NUMERIC_FLAGS))
    return [flag] + [draw(extreme) for _ in KINDS[flag].replace("-", "")]


def _set_up_quietly(argv):
    """The set-up with numpy's RuntimeWarnings turned into errors: it must refuse, not warn."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        experiment.build(argv, now=0.0)


@settings(FAST, max_examples=500)
@given(extra=st.lists(extreme_option(), min_size=1, max_size=3))
def test_setup_with_extreme_values_refuses_without_warnings(extra, fuzz_dir, monkeypatch):
    """Values at the edges of float64 and C int (1e308, 1e-308, denormals, 2^31) on every numeric flag:
    the set-up succeeds or raises InputError -- never OverflowError, ZeroDivisionError, a math domain
    error or a numpy RuntimeWarning -- and an accepted render is bounded in work."""
    monkeypatch.chdir(fuzz_dir)
    _set_up_accepted_or_one_line(BASE + [t for part in extra for t in part])


def _set_up_accepted_or_one_line(argv):
    """The quiet set-up of ``argv`` succeeds or refuses with one line (counted as a Hypothesis event)."""
    try:
        _set_up_quietly(argv)
    except InputError as error:
        assert str(error) and "\n" not in str(error)
        event("refused")
    else:
        event("accepted")


def _write_numbers(path, rows):
    path.write_text("".join(" ".join(row) + "\n" for row in rows))


@settings(FAST, max_examples=500)
@given(kind=st.sampled_from(["mat", "sourcefile", "mask", "img", "hkl"]),
       values=st.lists(extreme, min_size=1, max_size=15), extra=st.lists(extreme_option(), max_size=1))
def test_setup_with_generated_input_files(kind, values, extra, fuzz_dir, monkeypatch):
    """A -mat, -sourcefile, -mask/-img header or -hkl file made of extreme numbers, read by the set-up."""
    monkeypatch.chdir(fuzz_dir)
    argv = list(BASE)
    if kind == "mat":
        numbers = (values * 9)[:9]
        _write_numbers(fuzz_dir / "gen.mat", [numbers[0:3], numbers[3:6], numbers[6:9], ["0", "0", "0"]])
        argv = [word for group in GROUPS if group[0] != "-cell" for word in group] + ["-mat", "gen.mat"]
    elif kind == "sourcefile":
        rows = [values[k:k + 5] for k in range(0, len(values), 5)]
        _write_numbers(fuzz_dir / "gen_sources.txt", rows)
        argv += ["-sourcefile", "gen_sources.txt"]
    elif kind in ("mask", "img"):
        keys = ["PIXEL_SIZE", "DISTANCE", "CLOSE_DISTANCE", "WAVELENGTH", "BEAM_CENTER_X", "BEAM_CENTER_Y",
                "ORGX", "ORGY", "PHI", "OSC_RANGE"]
        header = nanobragg_header(
            fpixels=8, spixels=8, pixel_size_mm=0.4, distance_mm=50, wavelength_A=1.2, beam_center_x_mm=1.6,
            beam_center_y_mm=1.6, adxv_center_x_mm=1.6, adxv_center_y_mm=1.6, mosflm_center_x_mm=1.6,
            mosflm_center_y_mm=1.6, denzo_x_beam_mm=1.6, denzo_y_beam_mm=1.6, dials_origin_mm=(0, 0, -50),
            xds_orgx=4, xds_orgy=4, close_distance_mm=50, phi_deg=0, osc_start_deg=0, osc_range_deg=0.1,
            twotheta_deg=0).decode()
        fields = "".join(f"{key}={value};\n" for key, value in zip(keys, values))
        header = header.replace("}", fields + "}", 1)
        write_smv(fuzz_dir / "gen.img", np.ones((8, 8), np.uint16), header.encode())
        argv += ["-mask" if kind == "mask" else "-img", "gen.img"]
    else:
        rows = [["0", "0", "0", v] for v in values[:4]] + [["1", "0", "0", values[-1]]]
        _write_numbers(fuzz_dir / "gen.hkl", rows)
        argv = [a if a != "tiny.hkl" else "gen.hkl" for a in argv]
    _set_up_accepted_or_one_line(argv + [t for part in extra for t in part])
