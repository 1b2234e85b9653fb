"""Every golden case rendered in-process and compared with nanoBragg.c's image.

Spec mode against ``cases_spec`` (nanoBragg.c with the upstream fixes), c-parity
mode against ``cases`` (released nanoBragg.c).  The ``c*`` cases exist only in
``cases``: command lines that nanoBragg.c reads differently from nbjax's default
(a stray value, a last -curved_det, unknown flags), checked under --c-parity
(argument scan included).  The bar is the parity scoreboard's STRICT level; in practice nearly every pixel is bit-identical,
which is asserted too (≥ 99.99 % of the pixels equal as float32).
"""

import numpy as np
import pytest

from conftest import all_case_names, case_args, case_dir, reference_image
from nbjax import experiment
from nbjax.renderer import engine
from nbjax.compare import metrics

MODES = {"spec": dict(), "c": dict(accumulation="c-parity", phi_carryover="c-parity", argument_scan="c-parity")}
#: cases with a spec-mode reference (the c* cases have none: the default mode refuses or reads them otherwise)
SPEC_CASES = [n for n in all_case_names() if n != "supervisor" and case_dir(n, "spec").exists()]


def render_case(name, mode):
    exp = experiment.build(case_args(name), **MODES[mode])
    mask = None if exp.mask is None else np.asarray(exp.mask)
    result = engine.render(exp.scene, exp.config, mask)
    return np.asarray(result.image, dtype=np.float32)


def check(name, mode):
    image = render_case(name, mode)
    ref = reference_image(name, mode).reshape(image.shape)
    m = metrics(ref, image)
    assert m.strict, (name, mode, m)
    assert np.mean(image == ref) >= 0.9999, (name, mode, np.mean(image == ref))


@pytest.mark.parametrize("mode", ["spec", "c"])
@pytest.mark.parametrize("name", [n for n in all_case_names() if n != "supervisor"])
def test_golden_case(name, mode, in_inputs_dir):
    if mode == "spec" and name not in SPEC_CASES:
        pytest.skip("nanoBragg.c-only case: no spec-mode reference")
    check(name, mode)


@pytest.mark.parametrize("mode", ["spec", "c"])
def test_supervisor(mode, in_inputs_dir):
    if not (case_dir("supervisor", mode) / "float.bin.gz").exists():
        pytest.skip("the supervisor image lives in ../shared/golden, absent here")
    check("supervisor", mode)


def test_modes_differ_where_the_quirks_are(in_inputs_dir):
    """p16 (phi sweep starting at 0) renders differently in the two modes, as the oracles do."""
    spec, c = render_case("p16_phi_carryover", "spec"), render_case("p16_phi_carryover", "c")
    assert not np.array_equal(spec, c)
    assert np.array_equal(reference_image("p16_phi_carryover", "c").reshape(c.shape) != 0, c != 0)


def test_default_mode_reads_the_c_only_cases_otherwise(in_inputs_dir):
    """The default mode refuses c01 (a value after a switch) and c03 (unknown flags, with a
    suggestion) and honours c02's last -curved_det; the c-parity scan reads them as nanoBragg.c."""
    from nbjax.errors import InputError

    assert sorted(set(all_case_names()) - set(SPEC_CASES) - {"supervisor"}) == [
        "c01_oversample_thick_stray_value", "c02_curved_det_last", "c03_unknown_flags_readme_saxs"]
    with pytest.raises(InputError, match="-oversample_thick is a switch and takes no value, got '0'.*turns "
                                         "-oversample_thick on.*leave -oversample_thick out to keep it off"):
        experiment.parse_args(case_args("c01_oversample_thick_stray_value"))
    with pytest.raises(InputError, match="-hdiv: unknown option; did you mean -hdivrange"):
        experiment.parse_args(case_args("c03_unknown_flags_readme_saxs"))
    default, _ = experiment.parse_args(case_args("c02_curved_det_last"))
    c, _ = experiment.parse_args(case_args("c02_curved_det_last"), argument_scan="c-parity")
    assert default.curved_detector and not c.curved_detector
    assert any("ignored -curved_det" in note for note in c.notes)
    c, _ = experiment.parse_args(case_args("c01_oversample_thick_stray_value"), argument_scan="c-parity")
    assert c.oversample_thick and any("ignored '0' after -oversample_thick" in note for note in c.notes)


def test_c01_match_needs_the_switch_on(in_inputs_dir):
    """Without -oversample_thick the image is far from nanoBragg.c's (so c01's match is no accident)."""
    args = [a for a in case_args("c01_oversample_thick_stray_value") if a not in ("-oversample_thick", "0")]
    exp = experiment.build(args, **MODES["c"])
    image = np.asarray(engine.render(exp.scene, exp.config, None).image, dtype=np.float32)
    ref = reference_image("c01_oversample_thick_stray_value", "c").reshape(image.shape)
    assert not metrics(ref, image).strict
    assert image.sum() > 5 * ref.sum()  # nanoBragg.c's -oversample_thick factors shrink the image ~10x
