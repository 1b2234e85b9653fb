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

import functools
import hashlib
import os

import jax

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


def _key(scene, cfg, mask) -> str:
    leaves = jax.tree_util.tree_leaves(scene)
    shapes = [(tuple(x.shape), str(x.dtype)) for x in leaves]
    mask_shape = None if mask is None else (tuple(mask.shape), str(mask.dtype))
    text = repr((cfg, shapes, mask_shape, jax.__version__, jax.default_backend(), _source_hash()))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _flat_renderer(treedef, cfg, has_mask):
    def run(leaves, mask):
        scene = jax.tree_util.tree_unflatten(treedef, leaves)
        result = engine.render_core(scene, cfg, mask if has_mask else None)
        return tuple(result)

    return run


def render(scene, cfg, mask=None, *, cache_dir: str | None):
    """``engine.render(scene, cfg, mask)``, through the export cache in ``cache_dir``."""
    if cache_dir is None:
        return engine.render(scene, cfg, mask)
    try:
        from jax import export
    except ImportError:  # pragma: no cover - old jax
        return engine.render(scene, cfg, mask)
    leaves, treedef = jax.tree_util.tree_flatten(scene)
    mask_arg = jax.numpy.zeros((1, 1), bool) if mask is None else jax.numpy.asarray(mask)
    path = os.path.join(cache_dir, f"nbjax-render-{_key(scene, cfg, mask)}.jaxexport")
    exported = None
    try:
        with open(path, "rb") as handle:
            exported = export.deserialize(bytearray(handle.read()))
    except (OSError, ValueError, TypeError, RuntimeError):
        exported = None
    if exported is None:
        fun = jax.jit(_flat_renderer(treedef, cfg, mask is not None))
        try:
            exported = export.export(fun)(leaves, mask_arg)
            _write(path, exported.serialize())
        except Exception:  # export is an optimisation only
            return engine.render(scene, cfg, mask)
    try:
        outputs = exported.call(leaves, mask_arg)
    except Exception:  # stale or incompatible entry: trace as usual
        return engine.render(scene, cfg, mask)
    return engine.RenderResult(*outputs)


def _write(path, data):
    """Keep ``data`` at ``path`` if the cache folder can take it (a cache: failure costs nothing)."""
    from nbjax.errors import InputError
    from nbjax.io.atomic import atomic_write

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, data)
    except (OSError, InputError):
        pass
