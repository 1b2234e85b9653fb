"""nbjax: nanoBragg as pure, jit-compiled JAX functions.

The public API (imported lazily, so ``import nbjax`` stays cheap):

* :func:`build` -- an :class:`Experiment` from nanoBragg command-line arguments;
* :func:`render` / :func:`render_blocks` -- the image of a :class:`Scene` under a
  static :class:`RenderConfig`;
* :func:`metrics` -- agreement between two images;
* :class:`Params` (with :class:`CrystalParams`, :class:`DetectorParams`,
  :class:`BeamParams`), :class:`SimConfig`, :func:`from_args`,
  :func:`simulate`, :func:`simulate_batch` -- the differentiable model
  (docs/api.md);
* :mod:`nbjax.fit` (``fit``, :func:`fit_args`, :class:`FitResult`) --
  refinement against an observed image (docs/fitting.md);
* :func:`render_batch` / :func:`render_series` / :func:`render_stills` -- many
  images from one set of common flags, compiled once and rendered in batches
  (:mod:`nbjax.batch`, docs/batch.md);
* :class:`InputError` -- every problem with user input.

nbjax never changes JAX's precision at import: call
``jax.config.update("jax_enable_x64", True)`` for float64 renders.
"""

__version__ = "0.1.0"

_EXPORTS = {
    "build": ("nbjax.experiment", "build"),
    "Experiment": ("nbjax.experiment", "Experiment"),
    "render": ("nbjax.renderer.engine", "render"),
    "render_blocks": ("nbjax.renderer.engine", "render_blocks"),
    "Scene": ("nbjax.renderer.engine", "Scene"),
    "RenderConfig": ("nbjax.renderer.engine", "RenderConfig"),
    "RenderResult": ("nbjax.renderer.engine", "RenderResult"),
    "metrics": ("nbjax.compare", "metrics"),
    "Params": ("nbjax.params", "Params"),
    "CrystalParams": ("nbjax.params", "CrystalParams"),
    "DetectorParams": ("nbjax.params", "DetectorParams"),
    "BeamParams": ("nbjax.params", "BeamParams"),
    "SimConfig": ("nbjax.params", "SimConfig"),
    "Model": ("nbjax.params", "Model"),
    "from_args": ("nbjax.params", "from_args"),
    "simulate": ("nbjax.params", "simulate"),
    "simulate_batch": ("nbjax.params", "simulate_batch"),
    "fit_args": ("nbjax.fit", "fit_args"),
    "FitResult": ("nbjax.fit", "FitResult"),
    "Stage": ("nbjax.fit", "Stage"),
    "InputError": ("nbjax.errors", "InputError"),
    "render_batch": ("nbjax.batch", "render_batch"),
    "render_series": ("nbjax.batch", "render_series"),
    "render_stills": ("nbjax.batch", "render_stills"),
}

__all__ = sorted(_EXPORTS)


#: submodules reachable as attributes (``nbjax.renderer.sharding.render_sharded``) without importing them first
_SUBMODULES = {name: f"nbjax.{name}" for name in ("batch", "compare", "experiment", "fit", "geometry", "groups",
                                                  "io", "params", "physics", "products", "renderer")}
_SUBMODULES.update(engine="nbjax.renderer.engine", sharding="nbjax.renderer.sharding")


def __getattr__(name):
    if name in _EXPORTS or name in _SUBMODULES:
        import importlib

        if name in _SUBMODULES:
            value = importlib.import_module(_SUBMODULES[name])
        else:
            module, attr = _EXPORTS[name]
            value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nbjax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
