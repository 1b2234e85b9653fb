"""Many images in one process: nbjax.batch and the batch/series/stills commands.

The references are nanoBragg.c images (tests/golden/batch, one C process per
job); the command tests compare the batch's files byte for byte with those
of one ``nbjax`` run per job.
"""

import dataclasses
import gzip
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nbjax import batch, compare
from nbjax.commands.main import main
from nbjax.geometry.rotation import rotate_xyz

from conftest import GOLDEN, INPUTS, run_nbjax

BATCH = GOLDEN / "batch"
ROOT = Path(__file__).resolve().parent.parent
COMMON = shlex.split((BATCH / "common.txt").read_text())
SERIES = shlex.split((BATCH / "series.txt").read_text())
# a cheap experiment for the command tests (no structure-factor file)
TINY = ("-default_F 100 -cell 50 60 70 90 90 90 -lambda 1 -N 5 -detpixels 32 -pixel 0.4 -distance 100 "
        "-oversample 1 -nopgm").split()


def reference(oracle, name, i, shape):
    raw = gzip.open(BATCH / oracle / name / f"{i:03d}.bin.gz").read()
    return np.frombuffer(raw, dtype=np.float32).reshape(shape)


# --------------------------------------------------------------------------
# lines, names, seeds, orientations


def test_template_names():
    assert batch.template_name("shot_#####.cbf", 7) == "shot_00007.cbf"
    assert batch.template_name("out/a##b.img", 123) == os.path.join("out", "a123b.img")
    assert batch.template_name("floatimage.bin", 12) == "floatimage_00012.bin"
    assert batch.template_name("noext", 3) == "noext_00003"


def test_seeds_follow_the_rules():
    jobs = batch.parse_lines(["-N 3", "# comment", "", "-N 4 -seed 99", "-N 5"])
    assert [j.line_no for j in jobs] == [1, 4, 5]
    argv = batch.job_arguments(["-seed", "10"], jobs)
    seeds = [batch._last_value(a, "-seed") for a in argv]
    assert seeds == ["10", "99", "12"]  # S + i - 1, a line's own seed as given
    draws = iter([111, 222, 333])
    argv = batch.job_arguments([], jobs, seed_draw=lambda: next(draws))
    assert [batch._last_value(a, "-seed") for a in argv] == ["111", "99", "222"]
    names = [batch._last_value(a, "-floatfile") for a in argv]
    assert names == ["floatimage_00001.bin", "floatimage_00002.bin", "floatimage_00003.bin"]


def test_stills_misset_reproduces_the_rotation_and_is_uniform():
    rotations = batch.random_rotations(20000, 5)
    # Haar measure: the mean rotation matrix is 0, and E[R_ij^2] = 1/3
    assert np.abs(rotations.mean(axis=0)).max() < 0.02
    assert np.abs((rotations ** 2).mean(axis=0) - 1 / 3).max() < 0.01
    for line, matrix in zip(batch.stills_lines(5, 5), rotations[:5]):
        angles = np.array([float(x) for x in line.tokens[1:]]) / batch.RTD
        # -misset rotates each cell vector about x, then y, then z
        rebuilt = np.stack([rotate_xyz(e, *angles) for e in np.eye(3)], axis=1)
        np.testing.assert_allclose(rebuilt, matrix, atol=1e-12)
    # the stored jobs file is the one nbjax stills writes for --shots 4 --seed 2026
    stored = [j.tokens for j in batch.read_jobs(BATCH / "stills_jobs.txt")]
    assert stored == [j.tokens for j in batch.stills_lines(4, 2026)]


def test_series_lines():
    jobs = batch.series_lines(["-phi", "1.5", "-osc", "0.25"], 3)
    assert [j.tokens for j in jobs] == [("-phi", "1.5"), ("-phi", "1.75"), ("-phi", "2.0")]
    with pytest.raises(batch.InputError, match="-osc"):
        batch.series_lines(["-osc", "0"], 3)


# --------------------------------------------------------------------------
# parity with nanoBragg.c, one C process per job


@pytest.mark.parametrize("oracle", ["c", "spec"])
def test_batch_series_and_stills_match_nanobragg(oracle, monkeypatch):
    monkeypatch.chdir(INPUTS)
    c_parity = oracle == "c"
    jobs = batch.read_jobs(BATCH / "jobs.txt") + batch.read_jobs(BATCH / "stills_jobs.txt")
    images = batch.render_batch(jobs, COMMON, c_parity=c_parity)
    series = batch.render_series(COMMON + SERIES, 12, c_parity=c_parity)
    assert images.shape == (16, 64, 64) and series.shape == (12, 64, 64)
    checks = [("jobs", i + 1, images[i]) for i in range(12)]
    checks += [("stills", i + 1, images[12 + i]) for i in range(4)]
    checks += [("series", i + 1, series[i]) for i in range(12)]
    for name, i, image in checks:
        m = compare.metrics(reference(oracle, name, i, image.shape), image)
        assert m.strict, (name, i, m)
    # frame 1 of the series starts at phi = 0: there the carry-over makes the two oracles differ
    assert not np.array_equal(reference("c", "series", 1, (64, 64)), reference("spec", "series", 1, (64, 64)))


def test_stream_yields_in_order():
    # two groups: whether phi is exactly 0 is static in --c-parity (the carry-over)
    lines = ["-phi 0.3 -osc 0.1", "-misset 1 2 3", "-phi 0.6 -osc 0.1"]
    experiments = batch.build_jobs(batch.job_arguments(TINY, batch.parse_lines(lines)),
                                   lambda argv: batch.experiment_build(argv, c_parity=True))
    assert [len(g) for g in batch.group_jobs(experiments)] == [2, 1]
    items = list(batch.render_batch(lines, TINY, stream=True, batch_size=2, c_parity=True))
    assert [item.index for item in items] == [1, 2, 3]
    whole = batch.render_batch(lines, TINY, batch_size=1, c_parity=True)
    for item in items:
        assert np.array_equal(item.image, whole[item.index - 1])


def test_interpolation_switch_off_is_per_image(monkeypatch):
    # nanoBragg switches interpolation off for the rest of an image at the first
    # evaluation outside the table: in a batch each image starts with it on
    monkeypatch.chdir(INPUTS)
    common = ("-hkl sparse.hkl -cell 50 60 70 90 90 90 -lambda 1 -N 2 -interpolate -detpixels 32 -pixel 0.4 "
              "-oversample 1 -nonoise").split()
    lines = ["-distance 40", "-distance 400", "-distance 60 -misset 10 20 30"]
    together = list(batch.render_batch(lines, common, stream=True, batch_size=3))
    alone = list(batch.render_batch(lines, common, stream=True, batch_size=1))
    assert [bool(item.result.interpolation_off_at[0]) for item in together] == [True, False, True]
    for a, b in zip(together, alone):
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.result.interpolation_off_at, b.result.interpolation_off_at)


def test_only_the_leaves_that_differ_are_batched():
    # a series turns phi, stills the cell: every other leaf (detector, beam, table) is passed once, unbatched,
    # so the per-pixel geometry is computed once per chunk; a batch whose lines differ in nothing still maps
    def batched(lines, common=TINY):
        experiments = batch.build_jobs(batch.job_arguments(common, batch.parse_lines(lines)),
                                       lambda argv: batch.experiment_build(argv, c_parity=True))
        flags = batch._batched_leaves(experiments)
        names = [f.name for f in dataclasses.fields(experiments[0].scene)]
        return {n for n, v in zip(names, flags) if v}

    assert batched(["-phi 0.3 -osc 0.1", "-phi 0.6 -osc 0.1"]) == {"phi_rad"}
    assert batched(["-misset 1 2 3", "-misset 4 5 6"]) == {"cell_m", "reciprocal_A"}
    assert batched(["-misset 1 2 3", "-misset 1 2 3 -distance 90"]) == {"pix0_m", "close_distance_m", "distance_m"}
    same = ["-misset 1 2 3", "-misset 1 2 3"]
    assert len(batched(same)) == 1  # nothing differs: one leaf carries the batch axis (vmap needs one)
    together = batch.render_batch(same + ["-misset 4 5 6"], TINY, batch_size=3, c_parity=True)
    alone = batch.render_batch(["-misset 1 2 3", "-misset 4 5 6"], TINY, batch_size=1, c_parity=True)
    assert np.array_equal(together[0], alone[0]) and np.array_equal(together[1], alone[0])
    assert np.array_equal(together[2], alone[1]) and together[0].max() > 0
    assert not np.array_equal(together[0], together[2])


# --------------------------------------------------------------------------
# the commands


def _run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_batch_files_are_those_of_single_runs(in_inputs_dir, capsys):
    lines = ["-misset 10 20 30", "-N 7 -distance 90", "-lambda 1.1 --npy extra_#.npy"]
    (in_inputs_dir / "jobs.txt").write_text("# three jobs\n" + "\n".join(lines) + "\n")
    common = TINY + ["-seed", "40", "-floatfile", "f_###.bin", "-noisefile", "noise.img"]
    code, out, _ = _run(["batch", "jobs.txt", *common, "--batch-size", "2"], capsys)
    assert code == 0
    assert "3 images in 1 group" in out
    for i, line in enumerate(lines, start=1):
        single = TINY + ["-seed", str(40 + i - 1)] + shlex.split(line.replace("extra_#.npy", "single.npy"))
        single += ["-floatfile", "s.bin", "-intfile", "s.img", "-noisefile", "sn.img"]
        assert _run(single + ["--quiet"], capsys)[0] == 0
        assert (in_inputs_dir / f"f_{i:03d}.bin").read_bytes() == (in_inputs_dir / "s.bin").read_bytes()
        assert (in_inputs_dir / f"intimage_{i:05d}.img").read_bytes() == (in_inputs_dir / "s.img").read_bytes()
        assert (in_inputs_dir / f"noise_{i:05d}.img").read_bytes() == (in_inputs_dir / "sn.img").read_bytes()
    assert (in_inputs_dir / "extra_3.npy").read_bytes() == (in_inputs_dir / "single.npy").read_bytes()
    assert not list(in_inputs_dir.glob(".*.part"))


def test_series_from_the_export_cache_is_the_traced_single_runs(in_inputs_dir, tmp_path, capsys):
    # c-parity: frame 1 (phi 0) is its own group (nanoBragg's phi carry-over), frames 2-3 one batch of 2;
    # the first process exports both renderers, the second loads them from the files
    env = dict(_environment(), NBJAX_CACHE_DIR=str(tmp_path / "cache"))
    series = [sys.executable, "-m", "nbjax", "series", "--frames", "3", *TINY, "-nonoise", "-phi", "0", "-osc", "1",
              "-phisteps", "2", "--c-parity", "--batch-size", "2", "--quiet"]
    for prefix in ("a", "b"):
        result = subprocess.run(series + ["-floatfile", f"{prefix}_#.bin", "-intfile", f"{prefix}_#.img"],
                                cwd=in_inputs_dir, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "cache").glob("nbjax-render-*.jaxexport"))) == 2
    for i in (1, 2, 3):
        single = TINY + ["-nonoise", "-phi", repr(float(i - 1)), "-osc", "1", "-phisteps", "2", "--c-parity",
                         "-floatfile", "s.bin", "-intfile", "s.img", "--quiet"]
        assert run_nbjax(single, capsys)[0] == 0  # traced, no cache
        for prefix in ("a", "b"):
            assert (in_inputs_dir / f"{prefix}_{i}.bin").read_bytes() == (in_inputs_dir / "s.bin").read_bytes()
            assert (in_inputs_dir / f"{prefix}_{i}.img").read_bytes() == (in_inputs_dir / "s.img").read_bytes()


def test_stills_are_their_single_runs_bit_for_bit(in_inputs_dir, tmp_path):
    # 256x256 with a structure-factor table, as the benchmark: while every small scene leaf had the batch
    # axis, XLA computed the per-pixel geometry per image inside the batch and a few pixels of shot 1
    # differed from its single run in the last bit; unbatched, the geometry is the single run's
    common = ("-mat A.mat -hkl scaled.hkl -lambda 0.9768 -distance 150 -pixel 0.172 -N 10 -oversample 1 "
              "-detpixels 256 -nonoise -nopgm --c-parity --quiet").split()
    env = dict(_environment(), NBJAX_CACHE_DIR=str(tmp_path / "cache"))
    nbjax = [sys.executable, "-m", "nbjax"]
    runs = [nbjax + ["stills", "--shots", "2", "--seed", "1", "--batch-size", "2", *common, "-floatfile", "b_#.bin"]]
    runs += [nbjax + [*common, *job.tokens, "-floatfile", f"s_{job.line_no}.bin"] for job in batch.stills_lines(2, 1)]
    for args in runs:
        result = subprocess.run(args, cwd=in_inputs_dir, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    for i in (1, 2):
        image = np.fromfile(in_inputs_dir / f"b_{i}.bin", np.float32)
        assert image.max() > 1000.0  # Bragg spots, not an empty image
        assert (in_inputs_dir / f"b_{i}.bin").read_bytes() == (in_inputs_dir / f"s_{i}.bin").read_bytes()


def test_bad_lines_are_all_reported_before_rendering(in_inputs_dir, capsys):
    (in_inputs_dir / "jobs.txt").write_text("-N 3\n-bogus 1\n\n-N abc\n-mat missing.mat\n")
    code, _, err = _run(["batch", "jobs.txt", *TINY, "-floatfile", "f.bin"], capsys)
    assert code == 2
    errors = err.strip().splitlines()
    assert len(errors) == 3
    assert errors[0].startswith("nbjax: error: jobs.txt:2: -bogus")
    assert errors[1].startswith("nbjax: error: jobs.txt:4: -N")
    assert errors[2].startswith("nbjax: error: jobs.txt:5: ") and "missing.mat" in errors[2]
    assert not list(in_inputs_dir.glob("f_*")) and not list(in_inputs_dir.glob("intimage*"))


def test_nexus_refused_when_the_detector_moves(in_inputs_dir, capsys):
    (in_inputs_dir / "jobs.txt").write_text("-N 3\n-distance 90\n")
    code, _, err = _run(["batch", "jobs.txt", *TINY, "-nonoise", "--nexus", "all.h5"], capsys)
    assert code == 2 and "--nexus: job 2 changes the detector geometry" in err


def _environment():
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    env.pop("SLURM_NTASKS", None)
    env.pop("OMPI_COMM_WORLD_SIZE", None)
    return env


def test_interrupted_batch_keeps_complete_images_and_resumes(in_inputs_dir):
    shots = 300
    (in_inputs_dir / "jobs.txt").write_text("".join(f"-misset {k} {2 * k} 0\n" for k in range(shots)))
    args = [sys.executable, "-m", "nbjax", "batch", "jobs.txt", *TINY, "-nonoise", "-floatfile", "f_#####.bin",
            "--batch-size", "1", "--no-compile-cache"]
    expected = 32 * 32 * 4
    for sig in (signal.SIGTERM,):  # SIGINT takes the same path (KeyboardInterrupt)
        process = subprocess.Popen(args + ["--resume", "--quiet"], cwd=in_inputs_dir, env=_environment(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        before = len(list(in_inputs_dir.glob("f_*.bin")))
        deadline = time.time() + 120
        while len(list(in_inputs_dir.glob("f_*.bin"))) <= before and time.time() < deadline and process.poll() is None:
            time.sleep(0.005)
        process.send_signal(sig)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 143, err  # 128 + SIGTERM, as a single render
        assert "run again with --resume" in err
        floats = sorted(in_inputs_dir.glob("f_*.bin"))
        assert before < len(floats) < shots
        assert all(f.stat().st_size == expected for f in floats)
        ints = {p.name[9:14] for p in in_inputs_dir.glob("intimage_*.img")}
        assert ints == {p.name[2:7] for p in floats}  # an image's files appear together
        assert not list(in_inputs_dir.glob(".*.part"))
    done = len(list(in_inputs_dir.glob("f_*.bin")))
    result = subprocess.run(args + ["--resume"], cwd=in_inputs_dir, env=_environment(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{done} already complete" in result.stdout
    floats = sorted(in_inputs_dir.glob("f_*.bin"))
    assert len(floats) == shots and all(f.stat().st_size == expected for f in floats)
    # a resumed image is the image an uninterrupted batch renders
    again = batch.render_batch([f"-misset {k} {2 * k} 0" for k in (0, shots - 1)], TINY + ["-nonoise"])
    assert np.array_equal(np.fromfile(floats[0], np.float32).reshape(32, 32), again[0])
    assert np.array_equal(np.fromfile(floats[-1], np.float32).reshape(32, 32), again[1])


def _free_port():
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    except OSError:
        return None


def test_two_processes_write_the_files_of_one(tmp_path):
    port = _free_port()
    if port is None:
        pytest.skip("cannot bind a port on 127.0.0.1")
    pytest.importorskip("h5py")
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("-misset 1 2 3\n-misset 4 5 6\n-N 4\n-lambda 1.2\n-misset 7 8 9 -N 6\n")
    common = [*TINY, "-seed", "7", "-noisefile", "n_##.img", "--nexus", "all.h5", "--quiet", "--no-compile-cache"]
    single, split = tmp_path / "single", tmp_path / "split"
    single.mkdir()
    split.mkdir()
    command = [sys.executable, "-m", "nbjax", "batch", str(jobs), *common]
    workers = [subprocess.Popen(command + ["--num-processes", "2", "--process-id", str(k),
                                           "--coordinator", f"127.0.0.1:{port}"],
                                cwd=split, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for k in (0, 1)]
    one = subprocess.run(command, cwd=single, env=_environment(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    names = sorted(p.name for p in single.iterdir())
    assert len(names) == 5 * 3 + 1  # float, int and noise images, and the NeXus file
    assert sorted(p.name for p in split.iterdir()) == names
    for name in names:
        if name.endswith(".h5"):
            continue
        assert (single / name).read_bytes() == (split / name).read_bytes(), name
    import h5py

    with h5py.File(single / "all.h5") as a, h5py.File(split / "all.h5") as b:
        frames = a["entry/data/data"][()]
        assert frames.shape == (5, 32, 32)
        assert np.array_equal(frames, b["entry/data/data"][()])
        assert np.array_equal(frames[2], np.fromfile(single / "floatimage_00003.bin", np.float32).reshape(32, 32))


def test_input_files_are_read_once_per_batch(tmp_path, monkeypatch):
    from nbjax.io import hkl, matrix, memo

    path = tmp_path / "t.hkl"
    path.write_text("0 0 1 10\n1 2 3 40.5\n")
    mat = tmp_path / "A.mat"
    mat.write_text("1 2 3\n4 5 6\n7 8 9.5\n")
    reads = []
    real_read = matrix._read_mosflm_matrix
    monkeypatch.setattr(matrix, "_read_mosflm_matrix", lambda p: reads.append(p) or real_read(p))
    with memo.memoized_files():
        m1 = matrix.read_mosflm_matrix(str(mat))
        m1[0, 0] = -1.0  # the caller's copy: the memo keeps the file's numbers
        m2 = matrix.read_mosflm_matrix(str(mat))
        assert len(reads) == 1 and m2[0, 0] == 1.0 and m2[2, 2] == 9.5
        first = hkl.read_hkl(str(path))
        assert hkl.read_hkl(str(path)) is first
        assert hkl.read_hkl(str(path), default_F=2.0) is not first  # default_F fills the grid
        path.write_text("0 0 1 10\n1 2 3 41.5\n")
        os.utime(path, ns=(1, 1))  # a changed file is read again
        again = hkl.read_hkl(str(path))
        assert again is not first and float(again.values[1, 2, 2]) == 41.5
    assert hkl.read_hkl(str(path)) is not again  # no memo outside the context
    matrix.read_mosflm_matrix(str(mat))
    assert len(reads) == 2
