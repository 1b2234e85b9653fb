"""The renderer: the image of a :class:`Scene` under a static :class:`RenderConfig`.

:mod:`~nbjax.renderer.engine` holds the forward render (single-element pixel
kernels batched with ``vmap``, row blocks, the scans that carry nanoBragg's
pixel-to-pixel state), :mod:`~nbjax.renderer.sharding` spreads row blocks or a
batch of scenes over devices, and :mod:`~nbjax.renderer.aot` keeps the lowered
renderer between processes.  Modules outside this package use only the public
names (a test enforces it); the engine's private kernels are shared inside it.
"""

_MODULES = ("adjoint", "aot", "engine", "sharding")


def __getattr__(name):
    """The submodules on first use (``nbjax.renderer.sharding.render_sharded`` without an import)."""
    if name in _MODULES:
        import importlib

        return importlib.import_module(f"nbjax.renderer.{name}")
    raise AttributeError(f"module 'nbjax.renderer' has no attribute {name!r}")
