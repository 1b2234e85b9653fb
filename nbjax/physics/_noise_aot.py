"""The C-exact noise kernels compiled ahead of time, kept in the nbjax cache folder.

:mod:`nbjax.physics._noise_c` runs nanoBragg's noise stream in numba kernels.
Loading them, even from numba's own cache, costs a process about 0.6 s
(importing numba, its typing registries, SciPy's BLAS wrappers that numba
pulls in) before the first pixel is drawn -- a third of a small render's
start.  This module compiles the *same* Python functions (``_noise_c``'s
``_noise_kernel`` and ``_deviates_kernel``, their callees inlined) with
numba's ahead-of-time compiler (``numba.pycc``) into an ordinary extension
module, which imports in well under a millisecond without numba.

* :func:`load` imports the module from the cache folder when it is there
  (None otherwise, or when it cannot be imported: the caller then runs the
  numba kernels, with the same results).
* :func:`build_in_background` starts a detached, low-priority process
  (``python -m nbjax.physics._noise_aot FOLDER KEY``) that builds it; a run
  that found no module starts one after its own noise image is drawn, so it
  waits for nothing.  The build takes about 15 s of one core.
* :func:`build` compiles, then checks the new module against the numba
  kernels on means of every regime (direct, rejection, Gaussian, overloads,
  NaN, negative) before it is moved into place under its final name (an
  atomic rename).  A module that fails the check, or a build that cannot run
  (no ``numba.pycc``, no C compiler), leaves a ``.failed`` note with the reason
  instead, so no later run tries again for that key.

The file name carries a key: a hash of the kernel sources (``_noise_c``,
``ran1``, ``_noise_constants`` and this module), the numba, llvmlite and NumPy
versions and the interpreter's extension suffix (Python version, ABI,
platform).  An edited kernel or an upgraded numba therefore never loads a
stale module.  The module is built for a generic CPU of the platform (no
host-specific instructions), so a cache folder shared between machines is safe.
Nothing here is needed for correct results; deleting the cache folder only
makes the next noise image start slower.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.util
import os
import sys
import time

__all__ = ["key", "module_path", "load", "build", "build_in_background"]

#: the name the compiled module is built and imported under
MODULE_NAME = "_nbjax_noise_kernels"
#: exported function name -> (numba signature, kernel in _noise_c)
EXPORTS = {
    "noise_kernel": ("Tuple((f8, i8))(f4[::1], f8, i8[::1], i8[::1], f4[::1], u2[::1])", "_noise_kernel"),
    "deviates_kernel": ("f4[::1](f4[::1], i8[::1], i8[::1], f4[::1])", "_deviates_kernel"),
}
_SOURCES = ("_noise_c.py", "ran1.py", "_noise_constants.py", "_noise_aot.py")
#: a build lock older than this is taken to be left by a build that died
_LOCK_STALE_S = 1800.0


def _version(package: str) -> str:
    try:
        from importlib import metadata

        return metadata.version(package)
    except Exception:  # noqa: BLE001 -- not installed or no metadata: part of the key all the same
        return "none"


@functools.lru_cache(maxsize=1)
def key() -> str:
    """The key of the compiled module for this nbjax, numba, NumPy and interpreter."""
    import numpy as np

    digest = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for name in _SOURCES:
        with open(os.path.join(here, name), "rb") as handle:
            digest.update(name.encode() + b"\0" + handle.read())
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    digest.update(repr((_version("numba"), _version("llvmlite"), np.__version__, suffix, sys.version)).encode())
    return digest.hexdigest()[:20]


def module_path(folder: str, module_key: str | None = None) -> str:
    """Where the compiled module for ``module_key`` (default: :func:`key`) lives in ``folder``."""
    return os.path.join(folder, f"nbjax-noise-{module_key or key()}{importlib.machinery.EXTENSION_SUFFIXES[0]}")


_LOADED: dict[str, object] = {}


def load(folder: str):
    """The compiled module from ``folder`` (its ``noise_kernel`` and ``deviates_kernel``), or None."""
    path = module_path(folder)
    if path in _LOADED:
        return _LOADED[path]
    module = None
    if os.path.isfile(path):
        try:
            spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if not all(callable(getattr(module, name, None)) for name in EXPORTS):
                raise ImportError("a kernel is missing")
        except Exception as error:  # noqa: BLE001 -- damaged or foreign: note it, use numba instead
            module = None
            _note_failure(path, f"cannot import: {type(error).__name__}: {error}")
    _LOADED[path] = module
    return module


#: process ids of the builds this process started (not waited for; reaped at the next call)
_BUILDS: list = []


def build_in_background(folder: str) -> bool:
    """Start building the module for ``folder`` in a detached process; True if one was started.

    Nothing is started when the module or its ``.failed`` note is there, or
    while another build holds the lock; any problem starting it is ignored.
    """
    _reap()
    try:
        path = module_path(folder)
        if os.path.exists(path) or os.path.exists(path + ".failed") or not _take_lock(path):
            return False
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            _spawn([sys.executable, "-m", "nbjax.physics._noise_aot", folder, key()], env)
        except Exception:
            _remove(path + ".lock")
            raise
        return True
    except Exception:  # noqa: BLE001 -- an optimisation only
        return False


def _spawn(argv, env):
    """Start ``argv`` in its own session, standard streams on the null device, without waiting."""
    if hasattr(os, "posix_spawn"):
        null = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
        _BUILDS.append(os.posix_spawn(argv[0], argv, env, file_actions=null, setsid=True))
        return
    import subprocess  # pragma: no cover - not POSIX

    subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,  # noqa: S603
                     stderr=subprocess.DEVNULL, close_fds=True)


def _reap():
    """Collect the exit status of finished builds (no zombie processes in a long-lived process)."""
    for pid in list(_BUILDS):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _BUILDS.remove(pid)


def _take_lock(path: str) -> bool:
    lock = path + ".lock"
    try:
        if time.time() - os.path.getmtime(lock) > _LOCK_STALE_S:  # its build was killed: clear up after it
            _remove(lock)
            _remove_stale_build_folders(os.path.dirname(path))
    except OSError:
        pass
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except OSError:
        return False
    return True


def _remove_stale_build_folders(folder: str) -> None:
    import shutil

    for entry in os.scandir(folder):
        if entry.name.startswith(".nbjax-noise-build-") and time.time() - entry.stat().st_mtime > _LOCK_STALE_S:
            shutil.rmtree(entry.path, ignore_errors=True)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _note_failure(path: str, reason: str) -> None:
    try:
        from nbjax.io.atomic import atomic_write

        atomic_write(path + ".failed", (reason.strip() + "\n").encode())
    except Exception:  # noqa: BLE001
        pass


def build(folder: str) -> str | None:
    """Compile, check and store the module in the existing ``folder``; its path, or None.

    A failed build leaves a ``.failed`` note next to where the module would be.
    """
    import shutil
    import tempfile
    import warnings

    path = module_path(folder)
    try:
        work = tempfile.mkdtemp(prefix=".nbjax-noise-build-", dir=folder)  # the folder must exist
    except OSError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba marks pycc as pending deprecation
            from numba.pycc import CC

            from nbjax.physics import _noise_c

            cc = CC(MODULE_NAME)
            cc.output_dir = work
            cc.verbose = False
            for name, (signature, kernel) in EXPORTS.items():
                cc.export(name, signature)(getattr(_noise_c, kernel).py_func)
            cc.compile()
        built = [f for f in os.listdir(work) if f.startswith(MODULE_NAME) and f.endswith((".so", ".pyd"))]
        if len(built) != 1:
            raise RuntimeError(f"pycc left {sorted(os.listdir(work))}")
        staged = os.path.join(work, built[0])
        spec = importlib.util.spec_from_file_location(MODULE_NAME, staged)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        mismatch = self_check(module)
        if mismatch:
            raise RuntimeError(f"the compiled module differs from the numba kernels: {mismatch}")
        os.replace(staged, path)
        return path
    except Exception as error:  # noqa: BLE001 -- no pycc, no compiler, failed check: numba stays in use
        _note_failure(path, f"build failed: {type(error).__name__}: {error}")
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_means():
    """float32 means covering every regime of nanoBragg's ``poidev`` and the pixel conversion."""
    import numpy as np

    rng = np.random.default_rng(20261129)
    parts = [
        rng.exponential(0.05, 400), rng.uniform(0.0, 1.0, 200), rng.uniform(1.0, 12.0, 300),  # direct
        rng.uniform(12.0, 200.0, 200), rng.uniform(200.0, 1e6, 200),                        # rejection
        rng.uniform(1e6, 1e9, 100), 10.0 ** rng.uniform(6.0, 12.0, 50),                     # Gaussian
        rng.uniform(6.0e4, 7.0e4, 50),                                                       # overloads
        np.array([0.0, -1.0, 11.999999, 12.0, 1e6, 1.0000001e6, np.nan, 3e9, 5e12]),
    ]
    means = np.concatenate(parts)
    rng.shuffle(means)
    means = np.concatenate([means, np.repeat([0.3, 40.0, 2e6], 5)])  # repeated means: the statics' fast path
    return means.astype(np.float32)


def self_check(module) -> str:
    """'' when ``module``'s kernels give the numba kernels' numbers bit for bit, else what differs."""
    import numpy as np

    from nbjax.physics import _noise_c
    from nbjax.physics.ran1 import CStatics

    means = check_means()
    for seed in (-1, -7, -123456789):
        for adc in (40.0, 0.0, -3.5):
            runs = []
            for kernel in (module.noise_kernel, _noise_c._noise_kernel):
                st, box, out = CStatics(), np.array([seed], np.int64), np.empty(means.size, np.uint16)
                total, overloads = kernel(means, adc, box, st.ints, st.floats, out)
                runs.append((out.tobytes(), np.float64(total).tobytes(), int(overloads), int(box[0]),
                             st.ints.tobytes(), st.floats.tobytes()))
            if runs[0] != runs[1]:
                return f"noise_kernel, seed {seed}, adc {adc}"
        runs = []
        for kernel in (module.deviates_kernel, _noise_c._deviates_kernel):
            st, box = CStatics(), np.array([seed], np.int64)
            runs.append((kernel(means, box, st.ints, st.floats).tobytes(), int(box[0]),
                         st.ints.tobytes(), st.floats.tobytes()))
        if runs[0] != runs[1]:
            return f"deviates_kernel, seed {seed}"
    return ""


def _main(argv) -> int:
    folder, expected = argv
    path = module_path(folder, expected)
    try:
        try:
            os.nice(10)  # a background job: the user's own work goes first
        except (AttributeError, OSError):
            pass
        if key() != expected:  # another nbjax answered the import: build nothing
            return 1
        if os.path.exists(path):
            return 0
        return 0 if build(folder) else 1
    finally:
        _remove(path + ".lock")


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
