"""Test set-up: float64 JAX (the tests, not the library, choose precision), the
Hypothesis profiles, and helpers to run golden cases in a scratch directory.

Hypothesis profiles: ``ci`` (selected when the environment variable CI is set, as
CI services set it to "true") is derandomized -- the same examples on every run,
so a CI failure reproduces -- with no example database; ``dev`` (the default
otherwise) draws new examples on every run and keeps failing ones in the local
database.  Example counts are set per test (the fuzz modules' docstrings list
them); HYPOTHESIS_PROFILE=NAME picks a profile explicitly.
"""

import gzip
import os
import shlex
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

# The suite's caches (compiled programs, parsed HKL tables, the compiled noise kernels that a
# noise image builds in the background) go to a folder of the suite's own, kept between runs,
# not into the user's nbjax cache; an NBJAX_CACHE_DIR set by the caller is kept.
os.environ.setdefault("NBJAX_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"nbjax-test-cache-{os.getuid()}"))

try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    _hypothesis_settings = None
if _hypothesis_settings is not None:
    _hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    _hypothesis_settings.register_profile("dev", derandomize=False)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

ROOT = Path(__file__).resolve().parent
GOLDEN = ROOT / "golden"
INPUTS = GOLDEN / "inputs"
SHARED_GOLDEN = ROOT.parent.parent / "shared" / "golden"


def case_dir(name: str, oracle: str) -> Path:
    """Folder of a golden case; the supervisor image lives only in ../shared."""
    folder = "cases" if oracle == "c" else "cases_spec"
    if name == "supervisor":
        return SHARED_GOLDEN / folder / name
    return GOLDEN / folder / name


def case_args(name: str):
    return shlex.split((GOLDEN / "cases" / name / "args.txt").read_text())


def reference_image(name: str, oracle: str) -> np.ndarray:
    return np.frombuffer(gzip.open(case_dir(name, oracle) / "float.bin.gz").read(), dtype=np.float32)


def all_case_names():
    return sorted(p.name for p in (GOLDEN / "cases").iterdir() if p.is_dir())


def run_nbjax(args, capsys):
    """``nbjax ARGS`` in this process (no compilation cache): (exit status, stdout, stderr)."""
    from nbjax import cli

    code = cli.main(list(args) + ["--no-compile-cache"])
    out, err = capsys.readouterr()
    return code, out, err


def files_written(directory):
    """Names of the files a run left in ``directory`` (the inputs are symbolic links), temporaries included."""
    return sorted(p.name for p in Path(directory).iterdir() if not p.is_symlink())


@pytest.fixture
def in_inputs_dir(tmp_path, monkeypatch):
    """A scratch working directory with the golden input files linked in."""
    for f in INPUTS.iterdir():
        os.symlink(f, tmp_path / f.name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# Compile time dominates the gradient tests: XLA CPU's legacy elemental emitters at LLVM
# optimisation level 0 compile gradients 2-4x faster than the defaults (for code that runs
# for milliseconds here); the arithmetic is the same IEEE arithmetic up to contraction order
# (~1e-13 relative).
FAST_COMPILE = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}


def compile_fast(fun, *args):
    """``jax.jit(fun)`` compiled for ``args`` with :data:`FAST_COMPILE`."""
    return jax.jit(fun).lower(*args).compile(compiler_options=FAST_COMPILE)


def model_from_args(argv, **kwargs):
    """``params.from_args(argv, **kwargs)`` run in the golden inputs folder (relative file names)."""
    from nbjax import params

    cwd = os.getcwd()
    os.chdir(INPUTS)
    try:
        return params.from_args(argv, **kwargs)
    finally:
        os.chdir(cwd)


def central_differences(evaluate, theta0, units, steps):
    """Central differences of ``evaluate`` (numpy in, numpy out) along each axis of ``theta0``.

    Step ``steps[j] * units[i]`` along axis i; returns slopes of shape
    (len(theta0), len(steps)) + the shape of ``evaluate``'s value.
    """
    theta0 = np.asarray(theta0)
    n = theta0.size
    slopes = []
    for i in range(n):
        row = []
        for step in steps:
            h = step * units[i]
            e = np.zeros(n)
            e[i] = h
            row.append((np.asarray(evaluate(theta0 + e)) - np.asarray(evaluate(theta0 - e))) / (2.0 * h))
        slopes.append(row)
    return np.asarray(slopes)


def richardson_best(slopes):
    """Per parameter: the Richardson extrapolation (4 d(h/2) − d(h))/3 of scalar slopes (n, steps)
    where consecutive extrapolations agree best (the step between truncation and rounding error)."""
    rich = (4.0 * slopes[:, 1:] - slopes[:, :-1]) / 3.0
    best = np.argmin(np.abs(np.diff(rich, axis=1)), axis=1)
    return rich[np.arange(slopes.shape[0]), best]


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs(request):
    """After each test file: drop JAX's compiled programs and traces, the
    file's own memoised helpers (``functools.lru_cache`` functions at module
    level, which hold compiled gradients), and give the freed heap back.

    A pytest-xdist worker runs many files; without this it keeps every
    executable it ever compiled (the largest process of the suite reached
    3.4 GB; with the JAX caches dropped 2.3-3.1 GB; with the file caches and
    the heap too, 1.8 GB).
    A program a later file needs again is compiled again (or read from JAX's
    persistent cache when one is set).
    """
    yield
    for value in list(vars(request.module).values()):
        if callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info"):
            value.cache_clear()
    jax.clear_caches()
    import gc

    gc.collect()
    _return_freed_memory()


def _return_freed_memory():
    """glibc's ``malloc_trim(0)``: hand the heap's free pages back to the system.

    Freed executables and buffers otherwise stay in the process's heap (its
    resident size only ever grew from file to file); elsewhere a no-op.
    """
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)  # the process's own symbols: glibc's where it is glibc
    except (OSError, AttributeError):
        pass
