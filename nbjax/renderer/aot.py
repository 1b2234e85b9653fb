"""Ahead-of-time cache of the traced renderer, for a fast ``nbjax`` start.

JAX's persistent compilation cache keeps compiled XLA executables, but every
new process still traces and lowers the renderer (about a second for the
supervisor command) before it can look the executable up.  This module keeps
the *lowered* renderer too: the first run exports ``render_core`` for the given
configuration and argument shapes with :mod:`jax.export` and stores the
serialized module next to the compilation cache; later runs deserialize it and
call it, skipping tracing and lowering (compilation then comes from the
persistent cache).

The key covers everything the program depends on: the static
:class:`~nbjax.renderer.engine.RenderConfig`, the shapes and dtypes of the scene and
mask, the JAX version, the backend, and a hash of nbjax's own source files (so
an edited nbjax never runs a stale program).  Any problem with the cache --
unreadable, incompatible, or a JAX without :mod:`jax.export` -- falls back to
the ordinary traced call; results are the same either way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os

import jax
import numpy as np

from nbjax.renderer import engine


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
    digest = hashlib.sha256()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the whole nbjax package
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as handle:
                    digest.update(name.encode())
                    digest.update(handle.read())
    return digest.hexdigest()[:16]


def _key(parts) -> str:
    text = repr((parts, jax.__version__, jax.default_backend(), _source_hash()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return str(treedef), tuple((tuple(np.shape(x)), str(getattr(x, "dtype", None) or np.result_type(x))) for x in leaves)


def _flat_renderer(treedef, cfg, has_mask, axes=None):
    """``render_core`` on flat scene leaves; with ``axes`` (one 0/None per leaf) mapped over a batch axis."""
    from nbjax.renderer import sharding

    def run(leaves, mask):
        scene = jax.tree_util.tree_unflatten(treedef, leaves)
        if axes is None:
            return tuple(engine.render_core(scene, cfg, mask if has_mask else None))
        return tuple(sharding.mapped_render(scene, cfg, mask if has_mask else None, axes))

    return run


#: programs loaded (or exported) in this process, by key: a batch deserializes each once
_LOADED = {}


def _program(cache_dir, key, fun, args):
    """The exported ``fun`` for ``args`` (from ``cache_dir`` if there, else exported and stored), jitted; or None."""
    if key in _LOADED:
        return _LOADED[key]
    try:
        from jax import export
    except ImportError:  # pragma: no cover - old jax
        return None
    path = os.path.join(cache_dir, f"nbjax-render-{key}.jaxexport")
    exported = None
    try:
        with open(path, "rb") as handle:
            exported = export.deserialize(bytearray(handle.read()))
    except (OSError, ValueError, TypeError, RuntimeError):
        exported = None
    if exported is None:
        try:
            exported = export.export(jax.jit(fun))(*args)
            _write(path, exported.serialize())
        except Exception:  # export is an optimisation only (and not tried again for this key)
            _LOADED[key] = None
            return None
    jitted = jax.jit(exported.call)

    def program(*args):
        with _without_lapack_setup(exported):
            return jitted(*args)

    _LOADED[key] = program
    return program


@contextlib.contextmanager
def _without_lapack_setup(exported):
    """Lower a call of ``exported`` without preparing JAX's CPU LAPACK handlers when it has no custom calls.

    Before lowering any exported call, ``jax.export`` initialises the CPU
    LAPACK kernels, which imports SciPy's LAPACK wrappers: about 0.4 s, a
    third of a warm batch's start, for a renderer that calls no LAPACK
    routine (it has no custom calls at all).  A JAX without that private
    step, or a program with a custom call, is left as it is.
    """
    try:
        from jax._src.export import _export as internals
    except ImportError:  # pragma: no cover - another jax layout
        internals = None
    original = getattr(internals, "_ensure_backends_initialized", None)
    if original is None or b"custom_call" in bytes(exported.mlir_module_serialized):
        yield
        return
    internals._ensure_backends_initialized = lambda platforms: None
    try:
        yield
    finally:
        internals._ensure_backends_initialized = original


def render(scene, cfg, mask=None, *, cache_dir: str | None):
    """``engine.render(scene, cfg, mask)``, through the export cache in ``cache_dir``."""
    if cache_dir is None:
        return engine.render(scene, cfg, mask)
    leaves, treedef = jax.tree_util.tree_flatten(scene)
    # host arrays, not jax.numpy ones: each jax.numpy constructor is a little program of its own to load
    mask_arg = np.zeros((1, 1), bool) if mask is None else jax.numpy.asarray(mask)
    key = _key((cfg, _signature(scene), None if mask is None else _signature(mask_arg)))
    program = _program(cache_dir, key, _flat_renderer(treedef, cfg, mask is not None), (leaves, mask_arg))
    if program is not None:
        try:
            return engine.RenderResult(*program(leaves, mask_arg))
        except Exception:  # stale or incompatible entry: trace as usual
            _LOADED[key] = None
    return engine.render(scene, cfg, mask)


def render_mapped(scenes, axes, cfg, mask, *, cache_dir: str | None):
    """``render_core`` mapped over the leading axis of the scene leaves whose ``axes`` entry is 0.

    ``scenes``: a Scene whose batched leaves have the batch axis in front
    (``axes``: one 0 or None per leaf, in tree order); ``mask``: one array
    for every image ((1, 1) when there is none, with ``has_mask`` false in the key).
    Returns a RenderResult with the batch axis in front, or None when
    ``cache_dir`` is None or the export is not available (the caller traces).
    """
    if cache_dir is None:
        return None
    leaves, treedef = jax.tree_util.tree_flatten(scenes)
    has_mask = mask is not None
    mask_arg = np.zeros((1, 1), bool) if mask is None else mask
    key = _key(("mapped", cfg, tuple(axes), _signature(scenes), has_mask, _signature(mask_arg)))
    program = _program(cache_dir, key, _flat_renderer(treedef, cfg, has_mask, tuple(axes)), (leaves, mask_arg))
    if program is None:
        return None
    try:
        return engine.RenderResult(*program(leaves, mask_arg))
    except Exception:  # stale or incompatible entry: the caller traces
        _LOADED[key] = None
        return None


def _write(path, data):
    """Keep ``data`` at ``path`` if the cache folder can take it (a cache: failure costs nothing)."""
    from nbjax.errors import InputError
    from nbjax.io.atomic import atomic_write

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, data)
    except (OSError, InputError):
        pass
