"""nbjax's own ``--options`` and what they set up: JAX precision, the compilation cache, the modes.

nanoBragg's single-dash flags are read by :mod:`nbjax.cflags`; the double-dash
options here are nbjax's additions.  :func:`split_options` separates the two.
The command layer -- not the library -- decides precision (``jax_enable_x64``)
and the persistent compilation cache (:func:`setup_jax`).
"""

from __future__ import annotations

import contextlib
import os
import sys

from nbjax.errors import InputError
from nbjax.renderer import modes

# nbjax's own options: name -> number of values
NBJAX_OPTIONS = {
    "--c-parity": 0,
    "--phi-carryover-mode": 1,
    "--accumulation": 1,
    "--interpolation-fallback": 1,
    "--precision": 1,
    "--rng": 1,
    "--block-rows": 1,
    "--devices": 1,
    "--no-compile-cache": 0,
    "--preview": 1,
    "--npy": 1,
    "--cbffile": 1,
    "--quiet": 0,
    "--debug": 0,
    "--hkl-column": 1,
    "--model": 1,
    "--model-dmin": 1,
    "--allow-huge": 0,
}
CHOICES = {
    "--phi-carryover-mode": modes.PHI_CARRYOVERS,
    "--accumulation": modes.ACCUMULATIONS,
    "--interpolation-fallback": modes.INTERPOLATION_FALLBACKS,
    "--precision": ("double", "single"),
    "--rng": ("c", "jax"),
}


def split_options(argv, known=NBJAX_OPTIONS):
    """Separate nbjax's ``--options`` from nanoBragg's flags.

    Returns ``(options dict, remaining argv)``; ``--opt=value`` is accepted.
    """
    options, rest = {}, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name not in known:
                raise InputError(f"{name}: unknown option (see 'nbjax --help')")
            if known[name] == 0:
                if eq:
                    raise InputError(f"{name}: takes no value")
                options[name] = True
                i += 1
                continue
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].partition("=")[0] in known:
                    raise InputError(f"{name}: needs a value")
                value = argv[i + 1]
                i += 1
            if name in CHOICES and value not in CHOICES[name]:
                raise InputError(f"{name}: expected one of {', '.join(CHOICES[name])}, got {value!r}")
            options[name] = value
            i += 1
            continue
        rest.append(arg)
        i += 1
    return options, rest


def positive_int_option(options, name, default=None):
    if name not in options:
        return default
    from nbjax.io.numbers import parse_int

    value = parse_int(options[name], name)
    if value <= 0:
        raise InputError(f"{name}: must be a positive integer, got {value}")
    return value


def setup_jax(options, *, synchronous_cpu: bool = False):
    """Precision and compilation cache (the CLI, not the library, decides these).

    ``synchronous_cpu`` turns off JAX's asynchronous dispatch on CPU, so that a
    progress bar advances when a row block is done rather than when it is
    queued (it has to be set before the first computation; the render takes
    the same time).
    """
    tune_xla_cpu()
    with _plugin_scan_by_folder_name():
        import jax

    jax.config.update("jax_enable_x64", True)
    if synchronous_cpu:
        try:
            jax.config.update("jax_cpu_enable_async_dispatch", False)
        except (AttributeError, KeyError, ValueError):
            pass  # an older jax: the bar runs ahead of the work, nothing worse
    cache = compile_cache_dir(options, existing=False)
    if cache is not None:
        try:
            os.makedirs(cache, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        except OSError:
            pass  # no cache: slower start, same results
    return jax


# the module of JAX that, as it is imported, reads the metadata of every installed distribution
_PLUGIN_SCANNER = "jax._src.numpy.array_constructors"


@contextlib.contextmanager
def _plugin_scan_by_folder_name():
    """While JAX is imported, its scan for a ROCm plugin skips distributions that cannot be one.

    JAX looks for ``jax-rocm*-plugin`` by parsing the METADATA file of every
    installed distribution (0.1-0.2 s with 140 of them, in every process).
    Inside this block, ``importlib.metadata.distributions()`` called from that
    one module lists only the distributions whose folder name starts with
    ``jax`` (where such a plugin's is: ``jax_rocm7_plugin-...dist-info``), and
    those whose folder is unknown; every other caller sees them all.
    """
    import importlib.metadata as metadata

    original = metadata.distributions

    def distributions(**kwargs):
        found = original(**kwargs)
        if sys._getframe(1).f_globals.get("__name__") != _PLUGIN_SCANNER:
            return found
        return (d for d in found
                if getattr(getattr(d, "_path", None), "name", "jax").lower().startswith("jax"))

    metadata.distributions = distributions
    try:
        yield
    finally:
        metadata.distributions = original


def tune_xla_cpu(environ=None, cpuinfo="/proc/cpuinfo"):
    """Ask XLA:CPU for 512-bit vectors on a CPU with AVX-512 (appended to ``XLA_FLAGS``).

    XLA reads ``XLA_FLAGS`` when its first backend starts, so this has to run
    before the first computation; a width the user set is kept.  On such CPUs
    the render's fused step loop runs 8 float64 (16 float32) lanes wide
    instead of 4 (8): docs/performance.md has the measurements.
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if "xla_cpu_prefer_vector_width" in flags:
        return
    try:
        with open(cpuinfo) as handle:
            avx512 = any(line.startswith("flags") and " avx512f" in line for line in handle)
    except OSError:
        return
    if avx512:
        environ["XLA_FLAGS"] = (flags + " --xla_cpu_prefer_vector_width=512").strip()


def compile_cache_dir(options, *, existing=True):
    """The persistent cache folder ($NBJAX_CACHE_DIR, $XDG_CACHE_HOME/nbjax or ~/.cache/nbjax).

    None with ``--no-compile-cache`` (or, with ``existing``, when the folder is not there).
    """
    if options.get("--no-compile-cache"):
        return None
    cache = os.environ.get("NBJAX_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "nbjax"
    )
    return cache if not existing or os.path.isdir(cache) else None


def modes(options):
    """(accumulation, phi_carryover) from --c-parity and the per-part switches."""
    base = "c-parity" if options.get("--c-parity") else "spec"
    return options.get("--accumulation", base), options.get("--phi-carryover-mode", base)


def device_kind() -> str:
    """'host' on CPU, else 'device (<platform>)' (asks jax only if it is already imported)."""
    jax = sys.modules.get("jax")
    try:
        platform = jax.default_backend() if jax is not None else "cpu"
    except Exception:  # noqa: BLE001 -- a broken backend: say host
        platform = "cpu"
    return "host" if platform == "cpu" else f"device ({platform})"


class Printer:
    """The summary lines on stdout and nbjax's notes on stderr, both silenced by ``--quiet``."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def __call__(self, line=""):
        if not self.quiet:
            from nbjax.commands.signals import safe_print

            safe_print(line)  # a closed stdout (| head) stops the lines, not the run

    def note(self, line):
        if not self.quiet:
            from nbjax.commands.signals import safe_print

            safe_print(f"nbjax: {line}", file=sys.stderr)


