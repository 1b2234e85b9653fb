"""The defects a hostile tester found (project issue 14), one test each.

Every reproduction starts from BASE (64x64 pixels, the golden A.mat and
sparse.hkl) and must end in exit status 2 with one line naming the flag or
file, and no file written -- or, where nanoBragg.c renders, in an image.
Interrupts are tested on a real process (signals need one).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import run_nbjax as run, files_written as written
from nbjax import experiment
from nbjax.renderer import engine
from nbjax.errors import InputError
from nbjax.io import nanobragg_header, outputs, write_smv

BASE = "-mat A.mat -hkl sparse.hkl -lambda 1 -distance 100 -detpixels 64 -pixel 0.1 -N 5".split()


def refused(args, directory, capsys, *words):
    """Exit 2, one line naming ``words``, nothing written, no warning printed."""
    before = written(directory)
    code, out, err = run(BASE + list(args), capsys)
    lines = err.strip().splitlines()
    assert code == 2, (args, code, err)
    assert len(lines) == 1 and lines[0].startswith("nbjax: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert written(directory) == before
    return lines[0]


# ---- 1. overflowing set-ups: refused naming the flag, or rendered as nanoBragg.c renders


@pytest.mark.parametrize("args, words", [
    (["-pixel", "1e308"], ["-pixel", "overflow"]),
    (["-xtal_thick", "1e308"], ["-xtal_thick", "infinite number of unit cells"]),
    (["-beam_vector", "1e-300", "0", "0"], ["-beam_vector", "too short"]),
    (["-spindle_axis", "1e200", "0", "0"], ["-spindle_axis", "too long"]),
    (["-mosaic", "1e308"], ["-mosaic", "single precision"]),
])
def test_overflowing_values_are_refused_naming_the_flag(args, words, in_inputs_dir, capsys):
    refused(args, in_inputs_dir, capsys, *words)


@pytest.mark.parametrize("flag", ["-distance", "-close_distance"])
def test_tiny_distance_renders_as_nanobragg(flag, in_inputs_dir, capsys):
    """nanoBragg.c renders -distance 1e-308: its int conversion of the infinite recommended
    oversampling gives INT_MIN, raised to 1; the image is all zeros (C: max_I = 0)."""
    code, out, err = run(BASE + [flag, "1e-308", "-nonoise", "-nopgm"], capsys)
    assert code == 0, err
    assert "auto-selected 1-fold oversampling" in out
    image = np.fromfile(in_inputs_dir / "floatimage.bin", np.float32)
    assert image.size == 64 * 64 and np.all(image == 0.0)


def test_recommended_oversample_follows_c_int_conversion():
    assert experiment.recommended_oversample(2.0**-20, 2.0**-24) == 48  # ceil(3 · 16), exact in binary
    assert experiment.recommended_oversample(2.0**-20, 3 * 2.0**-24 * 0.9) == 18  # ceil(17.78)
    assert experiment.recommended_oversample(1e-6, 0.0) == 1
    assert experiment.recommended_oversample(1e-6, 1e-320) == 1  # inf -> INT_MIN -> 1
    assert experiment.recommended_oversample(5.0, 1e-15) == 1  # 1.5e16 > INT_MAX -> INT_MIN -> 1
    assert experiment.recommended_oversample(715827882.0, 1.0) == 2147483646
    assert experiment.recommended_oversample(715827883.0, 1.0) == 1  # 2147483649 > INT_MAX
    assert experiment.recommended_oversample(math.nan, 1.0) == 1


# ---- 2. unbounded work: the automatic choice is capped, absurd work refused with its count


def test_automatic_oversampling_is_capped(in_inputs_dir):
    exp = experiment.build(BASE + ["-xtal_thick", "5"], now=0.0)  # 5 mm: nanoBragg.c picks 150001 (checked)
    assert exp.config.oversample == experiment.AUTO_OVERSAMPLE_MAX
    assert any("would auto-select 150001-fold" in w for w in exp.warnings), exp.warnings
    assert any("recommend -oversample 150001" in w for w in exp.warnings)
    # a singular-ish crystal size gives a count beyond a C int: 1, as nanoBragg.c
    exp = experiment.build(BASE + ["-samplesize", "2147483647"], now=0.0)
    assert exp.config.oversample == 1
    # a near-singular matrix: c* = 1e-12 makes a 500 m crystal; nanoBragg.c also picks 1 (checked)
    (in_inputs_dir / "singular.mat").write_text("0.01 0 0\n0 0.01 0\n0 0 1e-12\n0 0 0\n0 0 0\n")
    exp = experiment.build([a if a != "A.mat" else "singular.mat" for a in BASE], now=0.0)
    assert exp.config.oversample == 1
    assert any("crystal is 0.05 x 0.05 x 5e+08 microns" in line for line in exp.log)


@pytest.mark.parametrize("args, count", [
    (["-oversample", "46341"], "2.15e+09 evaluations per pixel"),  # 46341² > 2³¹ - 1
    (["-oversample", "100000"], "1e+10 evaluations per pixel"),
    (["-oversample", "40000", "-detpixels", "1024"], "1.68e+15 evaluations"),
])
def test_absurd_work_is_refused_with_its_count(args, count, in_inputs_dir, capsys):
    refused(args, in_inputs_dir, capsys, "-oversample", count)


def test_allow_huge_lifts_the_total_limit_only(in_inputs_dir):
    args = BASE + ["-oversample", "40000", "-detpixels", "1024"]
    with pytest.raises(InputError):
        experiment.build(args, now=0.0)
    exp = experiment.build(args, now=0.0, work_limit=math.inf)
    assert exp.config.oversample == 40000
    with pytest.raises(InputError, match="per pixel"):
        experiment.build(BASE + ["-oversample", "46341"], now=0.0, work_limit=math.inf)


def test_subpixel_loop_does_not_grow_with_oversample(in_inputs_dir):
    """The compiled program is the same size for -oversample 2 and 3000 (no table of o² runs)."""
    sizes = []
    for o in (2, 3000):
        exp = experiment.build(BASE + ["-oversample", str(o), "-detpixels", "4"], now=0.0, work_limit=math.inf)
        text = engine.render.lower(exp.scene, exp.config, None).as_text()
        sizes.append(len(text))
    assert abs(sizes[1] - sizes[0]) < 200, sizes


def test_run_indices_follow_the_loop_order():
    cfg = engine.RenderConfig(fpixels=1, spixels=1, oversample=3, thicksteps=2)
    got = [tuple(int(x) for x in engine._run_indices(cfg, np.int32(r))) for r in range(engine._n_runs(cfg))]
    assert got == [(t, s, f) for t in range(2) for s in range(3) for f in range(3)]


# ---- 3. no numpy warnings, the right flag named


def test_huge_wavelength_names_lambda_without_warnings(in_inputs_dir, capsys):
    line = refused(["-lambda", "1e308"], in_inputs_dir, capsys, "-lambda", "-mat")
    assert "degenerate" in line


def test_degenerate_matrix_names_mat_without_warnings(in_inputs_dir, capsys):
    (in_inputs_dir / "flat.mat").write_text("1 0 0\n0 1 0\n0 0 0\n0 0 0\n0 0 0\n")
    args = [a if a != "A.mat" else "flat.mat" for a in BASE]
    code, out, err = run(args, capsys)
    assert code == 2 and err.count("\n") == 1 and "-mat flat.mat" in err, err


def test_cell_axis_of_zero_length_in_metres_names_mat(in_inputs_dir, capsys):
    """A -mat matrix whose real-space axis underflows to 0 m (found by the fuzz: a ZeroDivisionError sizing the
    crystal from -xtal_z) is a degenerate cell, refused naming the file."""
    (in_inputs_dir / "tiny.mat").write_text("1e-308 0.0 1e308\n0.0 1e-308 1e308\n1e-308 1e-308 0.0\n0 0 0\n")
    args = [a if a != "A.mat" else "tiny.mat" for a in BASE] + ["-xtal_z", "1e308"]
    code, out, err = run(args, capsys)
    assert code == 2 and err.count("\n") == 1 and "degenerate" in err and "-mat tiny.mat" in err, err


def test_far_source_is_a_direction_not_a_warning(in_inputs_dir):
    """A source at -1e200 0 0: x² overflows, but it is the default beam direction."""
    (in_inputs_dir / "far.txt").write_text("-1e200 0 0\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        exp = experiment.build(BASE + ["-sourcefile", "far.txt"], now=0.0)
    np.testing.assert_array_equal(np.asarray(exp.scene.incident), [[1.0, 0.0, 0.0]])


# ---- 4. non-finite images are refused, nothing written


@pytest.mark.parametrize("args, cause", [
    (["-fluence", "1e308"], "-fluence"),
    (["-default_F", "1e308"], "-default_F"),
    (["-water", "1e308"], "-water"),
    (["-sourcefile", "tiny_wavelength.txt"], "-sourcefile tiny_wavelength.txt"),
])
def test_non_finite_image_is_refused_naming_the_cause(args, cause, in_inputs_dir, capsys):
    (in_inputs_dir / "tiny_wavelength.txt").write_text("-10 0 0 1 4.9e-324\n")
    line = refused(args, in_inputs_dir, capsys, "non-finite pixels", "nothing written", cause)
    assert "likely cause" in line


def test_require_finite_counts_the_bad_pixels():
    from nbjax import products

    products.require_finite(np.ones((2, 2), np.float32))
    with pytest.raises(InputError, match=r"3 non-finite pixels \(1 NaN, 2 infinite\) of 4"):
        products.require_finite(np.array([[np.nan, np.inf], [-np.inf, 1.0]], np.float32), ["-x 1"])


# ---- 5. two outputs with one name


@pytest.mark.parametrize("args, words", [
    (["-floatfile", "f.bin", "-intfile", "f.bin"], ["-intfile", "-floatfile"]),
    (["-pgmfile", "f.img", "-intfile", "f.img"], ["-pgmfile", "-intfile"]),
    (["-noisefile", "f.img", "-intfile", "./f.img"], ["-noisefile", "-intfile"]),
    (["-floatfile", "Fdump.bin"], ["-floatfile", "Fdump.bin"]),
])
def test_two_outputs_with_one_name_are_refused(args, words, in_inputs_dir, capsys):
    refused(args, in_inputs_dir, capsys, *words)


def test_output_set_refuses_a_second_reservation_of_one_file(tmp_path):
    files = outputs.OutputSet()
    files.reserve(str(tmp_path / "a.bin"), "-floatfile")
    os.symlink(tmp_path / "a.bin", tmp_path / "link.bin")
    with pytest.raises(InputError, match="-intfile: .*link.bin is also the -floatfile output"):
        files.reserve(str(tmp_path / "link.bin"), "-intfile")
    files.discard()


# ---- 7. the source limit of docs/flags.md


def test_more_than_100000_sources_are_refused(in_inputs_dir, capsys):
    (in_inputs_dir / "many.txt").write_text("-10 0 0 1 1e-10\n" * 100_001)
    refused(["-sourcefile", "many.txt"], in_inputs_dir, capsys, "-sourcefile", "100001 sources", "100000")


# ---- 9. messages name the right thing


def _mask_with_pixel_size(path, text):
    header = nanobragg_header(
        fpixels=64, spixels=64, pixel_size_mm=0.1, distance_mm=100, wavelength_A=1, beam_center_x_mm=3.2,
        beam_center_y_mm=3.2, adxv_center_x_mm=3.2, adxv_center_y_mm=3.2, mosflm_center_x_mm=3.2,
        mosflm_center_y_mm=3.2, denzo_x_beam_mm=3.2, denzo_y_beam_mm=3.2, dials_origin_mm=(0, 0, -100),
        xds_orgx=32, xds_orgy=32, close_distance_mm=100, phi_deg=0, osc_start_deg=0, osc_range_deg=0.1,
        twotheta_deg=0)
    write_smv(path, np.ones((64, 64), np.uint16), header.replace(b"PIXEL_SIZE=0.1;", f"PIXEL_SIZE={text};".encode()))


def test_mask_header_with_infinite_pixel_size_names_mask_and_field(in_inputs_dir, capsys):
    _mask_with_pixel_size(in_inputs_dir / "m.img", "inf")
    code, out, err = run(BASE + ["-mask", "m.img"], capsys)
    assert code == 2 and "-mask" in err and "PIXEL_SIZE" in err and "-Ybeam" not in err, err


def test_out_of_memory_says_host_and_names_the_sizes(in_inputs_dir, capsys, monkeypatch):
    def exhausted(*args, **kwargs):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 bytes")

    monkeypatch.setattr(engine, "render", exhausted)
    code, out, err = run(BASE, capsys)
    line = err.strip().splitlines()[-1]
    assert code == 1 and line.startswith("nbjax: error: out of host memory while rendering"), err
    assert "-hkl grid" in line and "--block-rows" in line and "device" not in line.split(":")[1]
    assert [n for n in written(in_inputs_dir) if n.startswith(".")] == []


def test_setup_does_not_warn_about_float64_without_x64(in_inputs_dir):
    """Without x64 the scene is float32, silently (the dtype is canonicalised first)."""
    code = ("import warnings, numpy as np; warnings.simplefilter('error'); from nbjax import experiment; "
            "exp = experiment.build(%r, now=0.0); assert exp.scene.pix0_m.dtype == np.float32" % BASE)
    env = dict(os.environ, JAX_ENABLE_X64="0", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(Path(engine.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], cwd=in_inputs_dir, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


# ---- 8. interrupts and closed pipes (real processes)

# ~1.7 G evaluations: a render of several seconds after ~1 s of compiling, so that a signal sent a
# second after the set-up lands while it runs on a fast machine too (1024² at oversample 2 now
# compiles and renders in about a second)
LONG = BASE + ["-detpixels", "1024", "-oversample", "4", "-phisteps", "10", "-osc", "1", "-mosaic", "1",
               "-mosaic_domains", "10", "--no-compile-cache"]


def _start(directory, args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(engine.__file__).parents[1]),
                                         env.get("PYTHONPATH", "")])
    env.setdefault("JAX_PLATFORMS", "cpu")
    # a suite started in the background of a non-interactive shell ignores SIGINT, one started
    # under nohup ignores SIGHUP, and so would the child (nbjax leaves an ignored signal ignored):
    # the child restores the default dispositions a user's terminal gives it, then runs
    # ``python -m nbjax ARGS`` (a preexec_fn would run Python between fork and exec of this
    # multithreaded process)
    return subprocess.Popen([sys.executable, "-c", _AS_FROM_A_TERMINAL, *args], cwd=directory, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


_AS_FROM_A_TERMINAL = (
    "import runpy, signal\n"
    "for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):\n"
    "    signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)\n"
    "runpy.run_module('nbjax', run_name='__main__', alter_sys=True)\n"
)


def _wait_for_render(process):
    for line in process.stdout:
        if "pixel oversample steps" in line:  # the last set-up line: the render starts next
            return
    raise AssertionError("the set-up did not finish")


@pytest.mark.parametrize("signum, code, delay", [
    (signal.SIGINT, 130, 1.0), (signal.SIGTERM, 143, 1.0), (signal.SIGHUP, 129, 1.0),
    (signal.SIGINT, 130, 0.0),  # while tracing on a cold cache
])
def test_signal_ends_the_render_at_once_leaving_nothing(signum, code, delay, in_inputs_dir):
    process = _start(in_inputs_dir, LONG)
    try:
        _wait_for_render(process)
        time.sleep(delay)
        sent = time.monotonic()
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("nbjax: "), err[-2000:]
    assert "no output files written" in err
    assert took < 5.0, took  # "within a second" on an idle machine; a loaded one gets slack
    assert written(in_inputs_dir) == []


def test_sigkill_leftovers_are_swept_by_a_later_run(tmp_path):
    stale = tmp_path / ".f.bin.0123abcd.part"
    fresh = tmp_path / ".f.bin.4567cdef.part"
    other = tmp_path / ".g.bin.0123abcd.part"
    for p in (stale, fresh, other):
        p.write_bytes(b"x")
    old = time.time() - 2 * outputs.STALE_AFTER_S
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    files = outputs.OutputSet()
    files.reserve(str(tmp_path / "f.bin"), "-floatfile")
    files.discard()
    assert not stale.exists() and fresh.exists() and other.exists()


def test_batch_sweep_reads_each_directory_once_and_removes_only_old_leftovers_of_its_names(tmp_path):
    (tmp_path / "b").mkdir()
    old = time.time() - 2 * outputs.STALE_AFTER_S
    paths = {n: tmp_path / n for n in (".f_1.bin.0123abcd.part", ".f_2.bin.89abcdef.old", "b/.f_1.bin.0123abcd.part",
                                        ".f_1.bin.4567cdef.part", ".g.bin.0123abcd.part", ".f_1.bin.0123abcd.partx")}
    for n, p in paths.items():
        p.write_bytes(b"x")
        if n != ".f_1.bin.4567cdef.part":
            os.utime(p, (old, old))
    removed = outputs.sweep_stale_all([str(tmp_path / "f_1.bin"), str(tmp_path / "f_2.bin"), str(tmp_path / "b/f_1.bin")])
    gone = {".f_1.bin.0123abcd.part", ".f_2.bin.89abcdef.old", "b/.f_1.bin.0123abcd.part"}
    assert sorted(removed) == sorted(str(paths[n]) for n in gone)
    assert all(paths[n].exists() == (n not in gone) for n in paths)


def test_closed_stdout_keeps_the_images(in_inputs_dir):
    process = _start(in_inputs_dir, BASE + ["--no-compile-cache"])
    process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    err = process.stderr.read()
    process.wait(timeout=120)
    assert process.returncode == 0, err
    assert "BrokenPipe" not in err and "internal error" not in err
    names = written(in_inputs_dir)
    assert {"floatimage.bin", "intimage.img", "image.pgm", "noiseimage.img", "Fdump.bin"} <= set(names)
    assert not [n for n in names if n.startswith(".")]
    assert np.fromfile(in_inputs_dir / "floatimage.bin", np.float32).max() > 0


# ---- documentation items with code behind them


def test_progress_rate_starts_after_the_first_block():
    """The first block holds the compilation: the time-left estimate must not count it."""
    import io

    from nbjax import progress

    pytest.importorskip("tqdm")
    bar = progress.Bar(10, "rendering", delay=0.0, stream=io.StringIO())
    time.sleep(0.5)             # "compilation" inside the first block
    bar.update_to(1)
    time.sleep(0.05)
    bar.update_to(2)
    meter = bar._bar.format_dict
    bar.close()
    rate = (meter["n"] - meter["initial"]) / meter["elapsed"]
    assert meter["initial"] == 1 and meter["n"] == 2
    assert rate > 5.0, meter      # one block in ~0.05 s, not two in 0.55 s (3.6 per second)


def test_fit_result_says_why_it_stopped():
    from nbjax import fit

    result = fit.FitResult(params=None, config=None, groups=(), loss=1.0, loss_kind="lsq", iterations=3,
                           history=(), image=None, stops=(("coarse", "gradient below gtol"),
                                                          ("polish", "iteration limit (max_iter)")))
    assert result.stop_reason == "iteration limit (max_iter)" and not result.converged
    assert fit.FitResult(*result[:8], stops=(("polish", "no lower loss in two line searches"),)).converged


def test_a_deferred_or_swallowed_signal_still_stops_the_run():
    """Within deferred() a signal is only recorded; leaving the block acts on it (SIGTERM -> 143)."""
    from nbjax.commands import signals

    with signals.installed():
        with pytest.raises(signals.Terminated) as caught:
            with signals.deferred():
                signals._handler(signal.SIGTERM, None)  # what Python calls when SIGTERM arrives
                reached = True                          # no exception at an arbitrary point
        assert reached and caught.value.exit_code == 143 and caught.value.name == "SIGTERM"
        signals._pending.clear()  # (the process would have ended with 143 here)
        # a KeyboardInterrupt that some library swallowed is raised again before the commit
        try:
            signals._handler(signal.SIGINT, None)
        except KeyboardInterrupt:
            pass  # swallowed
        with pytest.raises(KeyboardInterrupt):
            signals.raise_if_pending()
    assert signals.pending() is None  # cleared for the next run in this process
