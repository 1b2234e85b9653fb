"""The noise kernels compiled ahead of time (nbjax.physics._noise_aot) give the numba kernels' numbers.

One module is built for the whole file, through the same detached background
process a render starts (about 15-25 s of one core); every test then compares
the two paths byte for byte, or the compiled one with nanoBragg.c's golden
noise image.
"""

import gzip
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nbjax.physics import _noise_aot
from nbjax.physics.noise import noise_image_c, poisson_deviates_c
from nbjax.physics.ran1 import CStatics, Ran1State

GOLDEN = Path(__file__).parent / "golden" / "cases" / "p40_noise_seeded"
CAN_BUILD = importlib.util.find_spec("numba.pycc") is not None and shutil.which("cc") is not None


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A cache folder holding the compiled module, built in the background as a render does.

    Under pytest-xdist the workers share one folder of this session: one builds, the others wait.
    """
    if not CAN_BUILD:
        pytest.skip("numba.pycc or a C compiler is missing: the numba kernels stay in use")
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "noise-aot-cache"
    folder.mkdir(exist_ok=True)
    folder = str(folder)
    path = _noise_aot.module_path(folder)
    if _noise_aot.build_in_background(folder):
        assert not _noise_aot.build_in_background(folder)  # the lock: one build at a time
    deadline = time.time() + 600
    while os.path.exists(path + ".lock") and time.time() < deadline:
        time.sleep(0.5)
    failed = path + ".failed"
    assert not os.path.exists(failed), Path(failed).read_text()
    assert os.path.isfile(path) and not os.path.exists(path + ".lock")
    assert [f for f in os.listdir(folder) if f.startswith(".nbjax-noise-build-")] == []  # none left behind
    return folder


def _regime_means(rng, n=300):
    """float32 means: direct (< 12), rejection (12 .. 1e6), Gaussian (> 1e6), overloads, odd values."""
    parts = [rng.exponential(0.2, n), rng.uniform(1.0, 12.0, n), rng.uniform(12.0, 5e3, n),
             rng.uniform(5e3, 1e6, n // 3), rng.uniform(1e6, 1e10, n // 3), rng.uniform(6.4e4, 7e4, n // 3),
             np.array([0.0, -2.0, 11.99999, 12.0, 1e6, 1.000001e6, 1e14, np.nan, 1e-30, 0.5, 3.0, 40.0, 2e6,
                       65495.0, 65496.0])]
    means = np.concatenate(parts)
    rng.shuffle(means)
    return means.astype(np.float32)  # 1215 = 45 x 27 values


def test_compiled_module_imports_without_numba(folder):
    code = ("import sys, numpy as np; from nbjax.physics import _noise_aot as a, noise; m = a.load(sys.argv[1]); "
            "img = np.linspace(0, 40, 600, dtype=np.float32).reshape(20, 30); "
            "i, p, o = noise.noise_image_c(img, -3, cache_dir=sys.argv[1]); "
            "d = noise.poisson_deviates_c(img, -3, cache_dir=sys.argv[1]); "
            "print(m is not None, any(k == 'numba' or k.startswith('numba.') for k in sys.modules), "
            "int(i.astype(np.int64).sum() - 40 * 600 == p == d.sum()))")
    out = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "1"]


@pytest.mark.parametrize("seed", [-1, -7, -99991])
def test_noise_image_equals_numba_path_in_every_regime(folder, seed):
    assert _noise_aot.load(folder) is not None
    image = _regime_means(np.random.default_rng(-seed)).reshape(-1, 27)
    a = noise_image_c(image, seed, cache_dir=folder)
    b = noise_image_c(image, seed)
    assert a[0].tobytes() == b[0].tobytes()
    assert np.float64(a[1]).tobytes() == np.float64(b[1]).tobytes() and a[2] == b[2]
    assert a[2] > 0 and (a[0] == 65535).sum() >= a[2]  # the overload regime was reached
    # a region of interest, a negative ADC offset (wrapping) and statics carried over from a first call
    sa, sb = Ran1State(seed), Ran1State(seed)
    for state in (sa, sb):
        poisson_deviates_c(image[:3], state.idum, state, cache_dir=folder if state is sa else None)
    a = noise_image_c(image, sa.idum, adc_offset=-3.5, roi=(2, 20, 1, 30), state=sa, cache_dir=folder)
    b = noise_image_c(image, sb.idum, adc_offset=-3.5, roi=(2, 20, 1, 30), state=sb)
    assert a[0].tobytes() == b[0].tobytes() and a[1:] == b[1:]
    assert sa.idum == sb.idum
    assert sa.shared.ints.tobytes() == sb.shared.ints.tobytes()
    assert sa.shared.floats.tobytes() == sb.shared.floats.tobytes()


def test_deviates_equal_numba_path(folder):
    means = _regime_means(np.random.default_rng(3))
    sa, sb = CStatics(), CStatics()
    a = poisson_deviates_c(means, -13, sa, cache_dir=folder)
    b = poisson_deviates_c(means, -13, sb)
    assert a.dtype == np.float32 and a.tobytes() == b.tobytes()
    assert sa.ints.tobytes() == sb.ints.tobytes() and sa.floats.tobytes() == sb.floats.tobytes()
    assert (a[means > 1e6] != np.round(a[means > 1e6])).any()  # Gaussian regime: not rounded, as C
    assert _noise_aot.self_check(_noise_aot.load(folder)) == ""


def test_golden_p40_through_the_compiled_module(folder, monkeypatch):
    from nbjax.physics import _noise_c

    def not_this(*args):
        raise AssertionError("the numba kernel ran")

    monkeypatch.setattr(_noise_c, "_noise_kernel", not_this)
    img = np.frombuffer(gzip.open(GOLDEN / "float.bin.gz").read(), dtype="<f4").reshape(160, 160)
    ref = np.frombuffer(gzip.open(GOLDEN / "noise.img.gz").read()[512:], dtype="<u2").reshape(160, 160)
    out, photons, overloads = noise_image_c(img, -7, cache_dir=folder)
    assert np.array_equal(out, ref)
    assert f"{photons:.0f}" == "47917251" and overloads == 0


def test_self_check_sees_one_changed_pixel(folder):
    module = _noise_aot.load(folder)

    class OnePixelOff:
        deviates_kernel = staticmethod(module.deviates_kernel)

        @staticmethod
        def noise_kernel(means, adc, box, ints, floats, out):
            result = module.noise_kernel(means, adc, box, ints, floats, out)
            out[17] ^= 1
            return result

    assert "noise_kernel" in _noise_aot.self_check(OnePixelOff)


def test_damaged_module_is_not_loaded_nor_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(_noise_aot, "_LOADED", {})
    path = Path(_noise_aot.module_path(str(tmp_path)))
    path.write_bytes(b"not a shared library")
    assert _noise_aot.load(str(tmp_path)) is None
    assert "cannot import" in Path(str(path) + ".failed").read_text()
    path.unlink()
    assert not _noise_aot.build_in_background(str(tmp_path))  # the note stops further tries for this key
    # the numba kernels run instead, same image
    img = np.full((4, 6), 3.5, np.float32)
    a = noise_image_c(img, -5, cache_dir=str(tmp_path))
    assert a[0].tobytes() == noise_image_c(img, -5)[0].tobytes()


def test_key_follows_sources_and_versions(monkeypatch):
    base = _noise_aot.key()
    assert len(base) == 20 and _noise_aot.module_path("/c").startswith(f"/c/nbjax-noise-{base}")
    _noise_aot.key.cache_clear()
    monkeypatch.setattr(_noise_aot, "_version", lambda package: "9.9.9")
    try:
        assert _noise_aot.key() != base
        _noise_aot.key.cache_clear()
        monkeypatch.undo()
        assert _noise_aot.key() == base
        _noise_aot.key.cache_clear()
        monkeypatch.setattr(_noise_aot, "_SOURCES", _noise_aot._SOURCES[:-1])
        assert _noise_aot.key() != base
    finally:
        monkeypatch.undo()
        _noise_aot.key.cache_clear()
    assert _noise_aot.key() == base


def test_command_writes_golden_noise_through_the_compiled_module(folder, in_inputs_dir, capsys, monkeypatch):
    """``nbjax`` with the cache folder: nanoBragg's noise.img from the compiled kernels, numba untouched."""
    from conftest import case_args
    from nbjax import cli
    from nbjax.physics import _noise_c

    golden = gzip.open(GOLDEN / "noise.img.gz").read()
    monkeypatch.setenv("NBJAX_CACHE_DIR", folder)
    ran = []
    numba_kernel = _noise_c._noise_kernel
    monkeypatch.setattr(_noise_c, "_noise_kernel", lambda *a: ran.append(1) or numba_kernel(*a))
    assert cli.main(case_args("p40_noise_seeded")) == 0
    assert (in_inputs_dir / "noise.img").read_bytes() == golden and ran == []
    assert "47917251 photons on noise image (0 overloads)" in capsys.readouterr().out
    # --no-compile-cache: the numba kernels, the same file
    (in_inputs_dir / "noise.img").unlink()
    assert cli.main(case_args("p40_noise_seeded") + ["--no-compile-cache"]) == 0
    assert (in_inputs_dir / "noise.img").read_bytes() == golden and ran == [1]
    capsys.readouterr()


def test_a_stale_lock_is_taken_over_and_its_build_folder_removed(tmp_path, monkeypatch):
    path = _noise_aot.module_path(str(tmp_path))
    lock, leftover = Path(path + ".lock"), tmp_path / ".nbjax-noise-build-abc123"
    lock.touch()
    leftover.mkdir()
    assert not _noise_aot._take_lock(path)  # a build is running
    old = time.time() - _noise_aot._LOCK_STALE_S - 60
    os.utime(lock, (old, old))
    os.utime(leftover, (old, old))
    assert _noise_aot._take_lock(path)  # its process died long ago
    assert lock.exists() and not leftover.exists()
