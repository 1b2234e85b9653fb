"""The nbjax command: files, printed numbers and bad input, in-process."""

import gzip
import os

import numpy as np
import pytest

from conftest import GOLDEN, case_args, run_nbjax as run, files_written as outputs
from nbjax import cli
from nbjax.errors import InputError


def golden_bytes(name, filename):
    return gzip.open(GOLDEN / "cases" / name / (filename + ".gz")).read()


def test_intfile_scale_adc_bytes_match_nanobragg(in_inputs_dir, capsys):
    code, out, _ = run(case_args("p41_intfile_scale_adc"), capsys)
    assert code == 0
    assert (in_inputs_dir / "int.img").read_bytes() == golden_bytes("p41_intfile_scale_adc", "int.img")
    theirs = (GOLDEN / "cases" / "p41_intfile_scale_adc" / "stdout.txt").read_text()
    for key in ("max_I = ", "mean= ", "intfile_scale = ", "solid angle subtended"):
        mine = [l for l in out.splitlines() if l.startswith(key)]
        ref = [l for l in theirs.splitlines() if l.startswith(key)]
        assert mine == ref, key


def test_pgm_bytes_match_nanobragg(in_inputs_dir, capsys):
    code, _, _ = run(case_args("p48_pgm"), capsys)
    assert code == 0
    assert (in_inputs_dir / "image.pgm").read_bytes() == golden_bytes("p48_pgm", "image.pgm")


def test_noise_image_matches_nanobragg(in_inputs_dir, capsys):
    code, out, _ = run(case_args("p40_noise_seeded"), capsys)
    assert code == 0
    assert (in_inputs_dir / "noise.img").read_bytes() == golden_bytes("p40_noise_seeded", "noise.img")
    assert (in_inputs_dir / "int.img").read_bytes() == golden_bytes("p40_noise_seeded", "int.img")
    assert "47917251 photons on noise image (0 overloads)" in out


def test_default_file_names_and_fdump(in_inputs_dir, capsys):
    """Without file flags nbjax writes nanoBragg's default names; -hkl leaves Fdump.bin,
    and a second run without -hkl reads it back to the same image."""
    args = "-hkl small.hkl -cell 100 100 100 90 90 90 -lambda 1.2 -N 5 -detpixels 32 -pixel 0.4 -distance 100 -seed 3".split()
    code, _, _ = run(args, capsys)
    assert code == 0
    assert outputs(in_inputs_dir) == ["Fdump.bin", "floatimage.bin", "image.pgm", "intimage.img", "noiseimage.img"]
    first = np.fromfile(in_inputs_dir / "floatimage.bin", np.float32)
    code, out, _ = run([a for a in args if a not in ("-hkl", "small.hkl")], capsys)
    assert code == 0 and "reading Fs from Fdump.bin" in out
    np.testing.assert_array_equal(np.fromfile(in_inputs_dir / "floatimage.bin", np.float32), first)


GOOD = "-hkl small.hkl -cell 100 100 100 90 90 90 -lambda 1.2 -N 5 -detpixels 32 -pixel 0.4 -distance 100 -nonoise".split()


def replace(args, flag, *values):
    i = args.index(flag)
    n = 1 if flag != "-cell" else 6
    return args[:i] + [flag, *values] + args[i + 1 + n:]


ISSUE_CASES = ("missing hkl file", "malformed hkl file", "missing mat file", "malformed mat file", "missing img",
               "missing mask", "malformed mask", "missing sourcefile", "malformed sourcefile", "flag without value",
               "non-numeric value", "negative pixel count", "zero wavelength", "roi xmin > xmax", "incomplete cell")


def test_good_runs_and_each_issue_case_breaks_it(in_inputs_dir, capsys):
    """The bad-input cases are GOOD with one thing broken: GOOD itself renders (so each
    case below fails because of what it changes), and every case of the issue's
    acceptance list is one of them (run by the next test)."""
    code, out, err = run(GOOD, capsys)
    assert code == 0 and "writing floatimage.bin" in out, err
    image = np.fromfile(in_inputs_dir / "floatimage.bin", np.float32)
    assert image.size == 32 * 32 and image.max() > 0
    for case in ISSUE_CASES:
        args, named = BAD_INPUTS[case]
        assert args != GOOD and named, case


BAD_INPUTS = {
    "missing hkl file": (replace(GOOD, "-hkl", "nothere.hkl"), "nothere.hkl"),
    "malformed hkl file": (replace(GOOD, "-hkl", "bad.hkl"), "bad.hkl"),
    "missing mat file": (["-mat", "nothere.mat"] + GOOD[:2] + GOOD[9:], "nothere.mat"),
    "malformed mat file": (["-mat", "bad.mat"] + GOOD[:2] + GOOD[9:], "bad.mat"),
    "missing img": (GOOD + ["-img", "nothere.img"], "nothere.img"),
    "missing mask": (GOOD + ["-mask", "nothere.img"], "nothere.img"),
    "malformed mask": (GOOD + ["-mask", "bad.hkl"], "bad.hkl"),
    "missing sourcefile": (GOOD + ["-sourcefile", "nothere.txt"], "nothere.txt"),
    "malformed sourcefile": (GOOD + ["-sourcefile", "bad.mat"], "bad.mat"),
    "flag without value": (GOOD + ["-distance"], "-distance"),
    "non-numeric value": (replace(GOOD, "-distance", "far"), "-distance"),
    "negative pixel count": (replace(GOOD, "-detpixels", "-32"), "-detpixels"),
    "zero wavelength": (replace(GOOD, "-lambda", "0"), "-lambda"),
    "roi xmin > xmax": (GOOD + ["-roi", "20", "10", "0", "5"], "-roi"),
    "incomplete cell": (GOOD[:2] + ["-cell", "100", "100"] + GOOD[9:], "-cell"),
    "unknown flag": (GOOD + ["-frobnicate"], "-frobnicate"),
    "stray value": (GOOD + ["17"], "17"),
    "unknown nbjax option": (GOOD + ["--frobnicate"], "--frobnicate"),
    "bad nbjax choice": (GOOD + ["--precision", "quad"], "--precision"),
    # beyond the issue's list
    "negative N": (replace(GOOD, "-N", "-5"), "-N"),
    "negative oversample": (GOOD + ["-oversample", "-2"], "-oversample"),
    "negative phisteps": (GOOD + ["-phisteps", "-4"], "-phisteps"),
    "negative mosaic_domains": (GOOD + ["-mosaic", "1", "-mosaic_domains", "-3"], "-mosaic_domains"),
    "negative dispsteps": (GOOD + ["-dispersion", "10", "-dispsteps", "-2"], "-dispsteps"),
    "zero pixel size": (replace(GOOD, "-pixel", "0"), "-pixel"),
    "zero distance": (replace(GOOD, "-distance", "0"), "-distance"),
    "negative distance": (replace(GOOD, "-distance", "-50"), "-distance"),
    "NaN value": (replace(GOOD, "-lambda", "nan"), "-lambda"),
    "infinite value": (GOOD + ["-Xbeam", "inf"], "-Xbeam"),
    "roi outside the detector": (GOOD + ["-roi", "40", "50", "0", "10"], "-roi"),
    "zero beam vector": (GOOD + ["-beam_vector", "0", "0", "0"], "-beam_vector"),
    "beam along the detector plane": (GOOD + ["-beam_vector", "0", "0", "1"], "-beam_vector"),  # found by fuzzing
    "cell angle 180": (replace(GOOD, "-cell", "100", "100", "100", "180", "90", "90"), "-cell"),
    "negative cell length": (replace(GOOD, "-cell", "-100", "100", "100", "90", "90", "90"), "-cell"),
    "huge detector": (replace(GOOD, "-detpixels", "100000"), "-detpixels"),
    "too many phi steps": (GOOD + ["-osc", "10", "-phistep", "1e-6"], "-osc"),
    "seed out of range": (GOOD + ["-seed", "99999999999"], "-seed"),
    "bad pivot": (GOOD + ["-pivot", "middle"], "-pivot"),
    "-printout": (GOOD + ["-printout"], "-printout"),
    "-stolout": (GOOD + ["-stolout", "x.txt"], "-stolout"),
    "mask of another size": (GOOD + ["-mask", "mask.img"], "mask.img"),
    "img not an SMV file": (GOOD + ["-img", "bad.hkl"], "bad.hkl"),
    "SMV HEADER_BYTES nonsense": (GOOD + ["-img", "badheader.img"], "badheader.img"),
    "SMV of 32-bit pixels": (GOOD + ["-img", "long.img"], "long.img"),
    "truncated Fdump.bin": (GOOD[2:], "Fdump.bin"),
    "sourcefile at the sample": (GOOD + ["-sourcefile", "zero.txt"], "zero.txt"),
    "sourcefile with inf": (GOOD + ["-sourcefile", "inf.txt"], "inf.txt"),
    "missing output folder": (GOOD + ["-floatfile", "nodir/float.bin"], "-floatfile"),
    "output is a folder": (GOOD + ["-intfile", "."], "-intfile"),
    "empty output name": (GOOD + ["-pgmfile", ""], "-pgmfile"),
    "preview into a missing folder": (GOOD + ["--preview", "nodir/p.png"], "--preview"),
    "zero --devices": (GOOD + ["--devices", "0"], "--devices"),
    "non-numeric --block-rows": (GOOD + ["--block-rows", "many"], "--block-rows"),
    "nbjax option without value": (GOOD + ["--npy"], "--npy"),
    "value after a switch": (GOOD + ["-oversample_thick", "0"], "leave -oversample_thick out to keep it off"),
    "misspelt flag": (GOOD + ["-hdiv", "0"], "did you mean -hdivrange"),
    "c-parity: option nanoBragg.c reads past the end": (GOOD + ["--c-parity", "-detector_thick"], "crashes"),
}


def make_bad_files(folder):
    (folder / "bad.hkl").write_text("1 2 3 4\n1 2 x 4\n")
    (folder / "bad.mat").write_text("0.1 0.2 banana\n")
    (folder / "badheader.img").write_bytes(b"{\nHEADER_BYTES=banana;\nSIZE1=4;\nSIZE2=4;\n}\f".ljust(600, b" "))
    (folder / "long.img").write_bytes(b"{\nHEADER_BYTES=512;\nTYPE=unsigned_long;\nSIZE1=4;\nSIZE2=4;\n}\f"
                                      .ljust(512, b" ") + bytes(64))
    (folder / "Fdump.bin").write_bytes(b"0 1 0 1 0 1\n\f" + bytes(20))
    (folder / "zero.txt").write_text("-10 0 0 1 1e-10\n0 0 0 1 1e-10\n")
    (folder / "inf.txt").write_text("-inf 0 0\n")


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_files(case, in_inputs_dir, capsys):
    make_bad_files(in_inputs_dir)
    before = outputs(in_inputs_dir)
    args, named = BAD_INPUTS[case]
    code, out, err = run(args, capsys)
    assert code == 2, (case, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nbjax: error:"), err
    assert named in lines[0], (named, lines[0])
    assert "Traceback" not in err + out
    assert outputs(in_inputs_dir) == before
    assert not [p for p in in_inputs_dir.iterdir() if p.name.startswith(".")]  # no temporary files either


# --------------------------------------------------------------------------- runs that fail half-way

TINY = GOOD + ["-seed", "3", "-noisefile", "noise.img"]


def _break(monkeypatch, module, name, error):
    def broken(*args, **kwargs):
        raise error
    monkeypatch.setattr(module, name, broken)


@pytest.mark.parametrize("error, code", [(KeyboardInterrupt(), 130), (RuntimeError("boom"), 1),
                                         (MemoryError(), 1)])
def test_failure_while_writing_leaves_no_file(error, code, in_inputs_dir, capsys, monkeypatch):
    """The float image, Fdump.bin and the SMV image are written when the PGM writer fails:
    none of them, and no temporary file, is left."""
    from nbjax.io import pgm

    _break(monkeypatch, pgm, "write_pgm", error)
    before = outputs(in_inputs_dir)
    code_, out, err = run(TINY, capsys)
    assert code_ == code
    assert err.strip().splitlines()[-1].startswith("nbjax: ") and "Traceback" not in err
    assert "writing floatimage.bin" in out  # it got that far
    assert outputs(in_inputs_dir) == before
    assert not [p for p in in_inputs_dir.iterdir() if p.name.startswith(".")]


def test_failure_of_the_last_rename_undoes_the_others(in_inputs_dir, capsys, monkeypatch):
    real = os.replace

    def failing(src, dst):
        if str(dst).endswith("noise.img"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    (in_inputs_dir / "intimage.img").write_bytes(b"an older image")
    monkeypatch.setattr(os, "replace", failing)
    before = outputs(in_inputs_dir)
    code, _, err = run(TINY, capsys)
    assert code == 2 and "No space left on device" in err
    # the files renamed before the failing one are taken back; the older file is as it was
    assert outputs(in_inputs_dir) == before
    assert (in_inputs_dir / "intimage.img").read_bytes() == b"an older image"
    assert not [p for p in in_inputs_dir.iterdir() if p.name.startswith(".")]


def test_debug_shows_the_traceback(in_inputs_dir, capsys):
    with pytest.raises(InputError):
        cli.main(replace(GOOD, "-distance", "far") + ["--debug", "--no-compile-cache"])


def test_internal_error_is_one_line_and_debug_raises_it(in_inputs_dir, capsys, monkeypatch):
    from nbjax import products

    _break(monkeypatch, products, "statistics", ZeroDivisionError("oops"))
    code, _, err = run(GOOD, capsys)
    assert code == 1 and "internal error: ZeroDivisionError: oops" in err and "--debug" in err
    with pytest.raises(ZeroDivisionError):
        cli.main(GOOD + ["--debug", "--no-compile-cache"])


# --------------------------------------------------------------------------- output, quiet, progress

def test_successful_run_files_and_no_temporaries(in_inputs_dir, capsys):
    code, out, err = run(TINY + ["--npy", "f.npy"], capsys)
    assert code == 0
    written = set(outputs(in_inputs_dir)) - {p.name for p in in_inputs_dir.iterdir() if p.is_symlink()}
    assert written == {"Fdump.bin", "f.npy", "floatimage.bin", "image.pgm", "intimage.img", "noise.img"}
    assert not [p for p in in_inputs_dir.iterdir() if p.name.startswith(".")]
    np.testing.assert_array_equal(np.load(in_inputs_dir / "f.npy"),
                                  np.fromfile(in_inputs_dir / "floatimage.bin", np.float32).reshape(32, 32))
    # nanoBragg's summary lines, in nanoBragg's order
    for first, second in (("mosflm convention selected.", "pixel oversample steps"),
                          ("writing floatimage.bin", "max_I = "), ("intfile_scale = ", "writing intimage.img"),
                          ("pgm_scale = ", "writing image.pgm")):
        assert out.index(first) < out.index(second), (first, second)
    assert "photons on noise image" in out


def test_unwritable_fdump_is_a_warning_as_in_nanobragg(in_inputs_dir, capsys):
    code, out, _ = run(GOOD + ["-dump", "nodir/Fdump.bin"], capsys)
    assert code == 0 and "WARNING: unable to open dump file: nodir/Fdump.bin" in out
    assert (in_inputs_dir / "floatimage.bin").exists() and not (in_inputs_dir / "Fdump.bin").exists()


def test_render_through_the_cache_gives_the_same_image(in_inputs_dir, capsys, monkeypatch, tmp_path):
    """With the compilation cache on, the render goes through nbjax.renderer.aot's exported renderer."""
    from nbjax.renderer import engine

    code, _, _ = run(GOOD, capsys)
    assert code == 0
    plain = np.fromfile(in_inputs_dir / "floatimage.bin", np.float32)
    assert plain.max() > 0
    cache = tmp_path / "cache"
    monkeypatch.setenv("NBJAX_CACHE_DIR", str(cache))
    # the first run stores the exported renderer ...
    assert cli.main(GOOD) == 0
    np.testing.assert_array_equal(np.fromfile(in_inputs_dir / "floatimage.bin", np.float32), plain)
    assert len(list(cache.glob("nbjax-render-*.jaxexport"))) == 1
    (in_inputs_dir / "floatimage.bin").unlink()
    # ... the second reads it: without the traced renderer it still renders the same image

    def no_tracing(*args, **kwargs):
        raise AssertionError("the cached renderer was not used")

    monkeypatch.setattr(engine, "render", no_tracing)
    assert cli.main(GOOD) == 0
    np.testing.assert_array_equal(np.fromfile(in_inputs_dir / "floatimage.bin", np.float32), plain)
    capsys.readouterr()


def test_quiet_prints_nothing(in_inputs_dir, capsys):
    code, out, err = run(GOOD + ["--quiet"], capsys)
    assert code == 0 and out == "" and err == ""
    code, out, err = run(replace(GOOD, "-lambda", "0") + ["--quiet"], capsys)
    assert code == 2 and out == "" and err.startswith("nbjax: error: -lambda")


def test_help(capsys):
    from nbjax import cflags

    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--preview" in out and "docs/flags.md" in out
    listed = {word.rstrip(",") for line in out.splitlines() for word in line.split() if word.startswith("-")}
    assert set(cflags.OPTION_NAMES) <= listed, set(cflags.OPTION_NAMES) - listed
    assert "  -oversample_thick" in out and "recompute sensor absorption for every sub-pixel" in out
    assert cli.main([]) == 2
    capsys.readouterr()
    for sub in ("compare", "example"):
        assert cli.main([sub, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: nbjax {sub}")


class FakeTerminal:
    """A stderr stand-in that says it is a terminal and keeps what is written."""

    def __init__(self):
        self.text = []

    def isatty(self):
        return True

    def write(self, text):
        self.text.append(text)

    def flush(self):
        pass


def test_progress_is_wanted_only_on_a_terminal():
    from nbjax import progress

    assert progress.wanted(stream=FakeTerminal())
    assert not progress.wanted(stream=FakeTerminal(), quiet=True)
    assert not progress.wanted(stream=FakeTerminal(), meter=False)
    import io

    assert not progress.wanted(stream=io.StringIO())


def test_progress_bar_counts_blocks():
    from nbjax import progress

    terminal = FakeTerminal()
    with progress.Bar(4, "rendering", delay=0, stream=terminal) as bar:
        for done in range(1, 5):
            bar.update_to(done, 4)
    text = "".join(terminal.text)
    assert "rendering" in text and "4/4" in text
    silent = FakeTerminal()
    with progress.Bar(4, "rendering", enabled=False, stream=silent) as bar:
        bar.update_to(4, 4)
    assert silent.text == [] and not bar.active


def test_render_with_progress_bar_gives_the_same_image(in_inputs_dir, capsys, monkeypatch):
    """With a terminal the render goes block by block (engine.render_blocks), to the same pixels;
    -noprogress turns the bar off."""
    from nbjax import progress
    from nbjax.renderer import engine

    code, _, _ = run(GOOD, capsys)
    plain = np.fromfile(in_inputs_dir / "floatimage.bin", np.float32)
    calls = []
    monkeypatch.setattr(progress, "wanted", lambda quiet=False, meter=True, stream=None: meter and not quiet)
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    real_blocks = engine.render_blocks

    def counting(*args, **kwargs):
        calls.append(kwargs["on_block"])
        return real_blocks(*args, **kwargs)

    monkeypatch.setattr(engine, "render_blocks", counting)
    from nbjax.commands import render

    monkeypatch.setattr(render, "setup_jax", lambda options, synchronous_cpu=False: __import__("jax"))
    code, _, _ = run(GOOD + ["--block-rows", "8"], capsys)
    assert code == 0 and len(calls) == 1
    np.testing.assert_array_equal(np.fromfile(in_inputs_dir / "floatimage.bin", np.float32), plain)
    code, _, _ = run(GOOD + ["--block-rows", "8", "-noprogress"], capsys)
    assert code == 0 and len(calls) == 1


def test_version(capsys):
    from importlib import metadata

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"nbjax {metadata.version('nbjax')}\n"


def test_c_parity_reads_the_command_line_as_nanobragg(in_inputs_dir, capsys):
    """c01 (-oversample_thick 0): refused by default, rendered by --c-parity with a warning, as
    nanoBragg.c renders it (strict); the summary's first line names the mode."""
    from nbjax.compare import metrics

    from conftest import reference_image

    args = case_args("c01_oversample_thick_stray_value")
    code, out, err = run(args, capsys)
    assert code == 2 and "-oversample_thick is a switch and takes no value, got '0'" in err and out == ""
    code, out, err = run(args + ["--c-parity"], capsys)
    assert code == 0
    assert out.splitlines()[0] == ("nanoBragg nanocrystal diffraction simulator - James Holton and Ken Frankel "
                                   "5-17-17 (nbjax engine, --c-parity: released nanoBragg.c)")
    assert "nbjax: WARNING: ignored '0' after -oversample_thick" in err
    image = np.fromfile(in_inputs_dir / "float.bin", np.float32).reshape(64, 64)
    assert metrics(reference_image("c01_oversample_thick_stray_value", "c").reshape(64, 64), image).strict
    code, out, _ = run(GOOD, capsys)
    assert code == 0 and out.splitlines()[0].endswith("(nbjax engine, default mode: nanoBragg.c with its upstream fixes)")
    code, out, _ = run(GOOD + ["--accumulation", "c-parity"], capsys)
    assert code == 0 and out.splitlines()[0].endswith(
        "(nbjax engine, mixed mode: accumulation c-parity, phi carry-over spec, argument scan spec)")


def test_xla_cpu_vector_width_only_on_avx512_and_never_over_the_users(tmp_path):
    from nbjax.commands.options import tune_xla_cpu

    avx512 = tmp_path / "avx512"
    avx512.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512dq\n")
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    tune_xla_cpu(env, cpuinfo=str(avx512))
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2 --xla_cpu_prefer_vector_width=512"
    env = {}
    tune_xla_cpu(env, cpuinfo=str(avx2))
    assert env == {}
    env = {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256"}
    tune_xla_cpu(env, cpuinfo=str(avx512))
    assert env["XLA_FLAGS"] == "--xla_cpu_prefer_vector_width=256"
    env = {}
    tune_xla_cpu(env, cpuinfo=str(tmp_path / "missing"))
    assert env == {}


def test_jax_plugin_scan_skips_only_distributions_that_cannot_be_plugins():
    """While JAX is imported its ROCm-plugin scan sees the jax* distributions only; every other caller, all of them."""
    import importlib.metadata as metadata

    from nbjax.commands import options

    every = sorted(d._path.name for d in metadata.distributions())
    scan = "names = sorted(d._path.name for d in distributions())"
    with options._plugin_scan_by_folder_name():
        as_scanner = {"__name__": options._PLUGIN_SCANNER, "distributions": metadata.distributions}
        exec(scan, as_scanner)
        as_other = {"__name__": "somewhere.else", "distributions": metadata.distributions}
        exec(scan, as_other)
    assert as_other["names"] == every
    assert as_scanner["names"] == [n for n in every if n.lower().startswith("jax")]
    assert any(n.startswith("jax-") for n in as_scanner["names"]) and len(as_scanner["names"]) < len(every)
