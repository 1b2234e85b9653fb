"""Refine crystal and detector parameters against an observed image: ``nbjax fit``.

The model is :func:`nbjax.params.simulate` -- nanoBragg's image as a function of
a :class:`~nbjax.params.Params` pytree -- started from any nanoBragg command
line.  The parameters named by ``--refine`` (groups: ``cell``, ``misset``,
``N``, ``distance``, ``beam_center``, ``detector_rot``, ``twotheta``,
``wavelength``, ``scale``, ``mosaic``) are adjusted to minimise

* ``poisson`` (default): the Poisson deviance ``Σ [μ − o + o log(o/μ)]`` of the
  observed counts ``o`` given the model ``μ = image + pedestal`` (the negative
  log-likelihood up to a constant; 0 for a perfect fit), or
* ``lsq``: ``½ Σ (image − o)²``,

over the pixels inside ``-roi`` and not masked by ``-mask``.

Why a schedule.  Bragg spots of a crystal of ~10 cells are about one pixel wide
and sit on a near-periodic lattice a few pixels apart, so the loss of the raw
image is flat except within about half a pixel of the right geometry, and
rugged between.  Errors of the starting model move spots by a pixel or two.
The fit therefore runs stages (:data:`DEFAULT_SCHEDULE`), each minimising its
objective with L-BFGS (``optax.scale_by_lbfgs`` + zoom line search):

1. **coarse** -- least squares of variance-stabilised (Anscombe, ``2√(I + 3/8)``)
   images blurred with a Gaussian of σ = 1.5 pixels: spots a pixel or two off
   still overlap their observed partners, so the objective slopes towards them;
2. **medium** -- the same with σ = 0.75 pixel;
3. **polish** -- the requested loss on the raw counts.

Whitened coordinates.  Every stage works in ``θ = θ₀ + C u`` with ``C = V Λ^(−1/2)``
from the eigen-decomposition of the stage objective's Gauss-Newton matrix
``JᵀWJ`` at ``θ₀`` (J by ``jax.linearize``; W = 1/μ for the Poisson deviance,
1 for least squares, blurred Anscombe Jacobian for the smoothed stages), so
one unit of ``u`` is about one standard error and the objective is nearly
isotropic near its minimum.  Cell constants and distance are strongly
correlated on a still image (spot positions depend on their ratio; only the
Ewald-sphere curvature separates them): the whitened problem has a condition
number near 1, the raw one about 10⁶.  ``C`` is recomputed every
``rewhiten_every`` iterations.

Trust region.  Far from the minimum the Gauss-Newton matrix says little about
how far to go: a direction the blurred image hardly constrains (N, the
cell/distance ratio) can be thousands of standard errors long.  Each L-BFGS
direction is therefore cut so that no refined value moves by more than
``Stage.max_step`` *physical units* -- the change that moves a spot at the
detector edge by one pixel (:func:`physical_units`) -- and the line search
may lengthen it at most ``_MAX_STEP_GROWTH`` times.  A step pair with
non-positive curvature (the smoothed objectives are not convex far from the
minimum) restarts the L-BFGS memory instead of entering it.

Stopping rule (each stage): at most ``max_iter`` iterations; a stage ends
early when the whitened gradient norm (≈ distance to the stage's minimum in
standard errors) is below ``Stage.gtol`` (0.5 for the smoothed stages, 1e-3
for the polish), when three consecutive iterations lower the loss by less
than a fraction ``ftol`` (1e-10), or when two consecutive line searches find
no lower loss (nanoBragg's nearest-neighbour structure factors make the
image piecewise smooth: the loss has tiny steps, invisible to the gradient,
and a fit ends when the improvement left is below them).

Gradients come from the adjoint render (:class:`nbjax.params.Adjoint`, the
default strategy of :func:`nbjax.params.simulate_core` wherever it applies),
several times cheaper than autodiff through the engine's scans; the
Gauss-Newton matrices from forward mode (:class:`nbjax.params.Autodiff`).  Stages with
``optimizer="adam"`` (Adam with steps of ``learning_rate`` physical units, in
no default schedule) remain available for custom schedules.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
from typing import NamedTuple

import numpy as np

from nbjax.errors import InputError

__all__ = ["Stage", "DEFAULT_SCHEDULE", "FitResult", "fit", "fit_args", "load_observed", "physical_units",
           "equivalent_args", "result_dict", "refine_groups"]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the coarse-to-fine schedule.

    ``objective``: ``"smoothed"`` (least squares of Anscombe-transformed images
    blurred with a Gaussian of σ = ``blur_px`` pixels) or ``"final"`` (the
    requested loss on raw counts); ``optimizer``: ``"lbfgs"`` (whitened
    coordinates) or ``"adam"`` (steps of ``learning_rate`` physical units);
    ``max_iter``: iteration cap; ``gtol``: an L-BFGS stage ends when the
    gradient norm in whitened coordinates (≈ standard errors) drops below it;
    ``max_step``: the trust region of an L-BFGS direction, in physical units
    (:func:`physical_units`); ``only``: refine only these groups (of those
    being refined), None = all.
    """

    name: str
    blur_px: float
    optimizer: str
    max_iter: int
    learning_rate: float = 0.05
    only: tuple | None = None
    objective: str = "smoothed"
    gtol: float = 0.0
    max_step: float = 1.0


DEFAULT_SCHEDULE = (
    Stage("coarse", blur_px=1.5, optimizer="lbfgs", max_iter=40, gtol=0.5),
    Stage("medium", blur_px=0.75, optimizer="lbfgs", max_iter=40, gtol=0.5),
    Stage("polish", blur_px=0.0, optimizer="lbfgs", max_iter=60, objective="final", gtol=1e-3),
)
#: Only the final stage (for a starting model already within a fraction of a pixel).
POLISH_ONLY = (DEFAULT_SCHEDULE[-1],)

_MAX_BLUR_RADIUS = 5  # pixels; kernels of every blurred stage share one compiled shape


class FitResult(NamedTuple):
    params: object          # refined nbjax.params.Params
    config: object          # nbjax.params.SimConfig
    groups: tuple
    loss: float             # final objective (Poisson deviance or ½ Σ r²)
    loss_kind: str
    iterations: int         # all stages
    history: tuple          # (stage name, iteration, loss) per iteration
    image: np.ndarray       # model image at the refined parameters
    stops: tuple = ()       # (stage name, why it stopped) per stage that ran; see STOP_REASONS

    @property
    def stop_reason(self) -> str:
        """Why the last stage stopped (one of :data:`STOP_REASONS`' keys)."""
        return self.stops[-1][1] if self.stops else "no stage ran"

    @property
    def converged(self) -> bool:
        """The last stage stopped on a convergence test, not on its iteration cap or a failure."""
        return STOP_REASONS.get(self.stop_reason, False)


#: Why a stage stops, and whether that counts as converged.
STOP_REASONS = {
    "gradient below gtol": True,
    "loss change below ftol for 3 iterations": True,
    "no lower loss in two line searches": True,
    "no improvement in 25 iterations": True,
    "iteration limit (max_iter)": False,
    "non-finite loss": False,
}


# --------------------------------------------------------------------------
# observed images


def load_observed(path, shape, adc_offset=0.0) -> np.ndarray:
    """An observed image as float64 (slow, fast), read by :func:`nbjax.io.images.read_image`.

    SMV images (recognised by their header) have ``adc_offset`` subtracted
    (nanoBragg adds ``-adc``, default 40, to its integer images) and are
    clipped at 0; PGM and ``.npy`` files are taken as they are; anything else
    is a raw float32 image of the given shape (nanoBragg's ``-floatfile``).
    """
    from nbjax.io.images import image_kind, read_image

    source = os.fspath(path)
    try:
        kind = image_kind(source)
        data = read_image(source, tuple(shape))
    except InputError as error:
        raise InputError(f"--observed {error}") from None
    if data.shape != tuple(shape):
        raise InputError(f"--observed {source}: the image is {data.shape[-1]}x{data.shape[0] if data.ndim == 2 else 1} "
                         f"pixels (fast x slow), the model has {shape[1]}x{shape[0]}")
    if kind == "smv":
        return np.maximum(data - float(adc_offset), 0.0)
    return data


# --------------------------------------------------------------------------
# parameter vectors


def refine_groups(refine) -> tuple:
    """The groups named by ``--refine`` (a comma-separated string or a list), in reporting order."""
    from nbjax.groups import GROUPS, lookup

    if isinstance(refine, str):
        refine = [g for g in refine.replace(" ", ",").split(",") if g]
    for g in refine:
        lookup(g)
    if not refine:
        raise InputError("--refine: name at least one group (" + ", ".join(GROUPS) + ")")
    return tuple(g for g in GROUPS if g in refine)


def _edge_radius_mm(params, config) -> float:
    """Largest distance (mm) in the detector plane from the beam spot to a corner of the roi."""
    from nbjax import params as P

    d = params.detector
    pixel = float(d.pixel_size_mm)
    x0, x1, y0, y1 = config.render.roi_bounds
    frame = P.place(params, config)
    fbeam, sbeam = float(frame.beam_fast_m) * 1000.0, float(frame.beam_slow_m) * 1000.0
    corners = [(x * pixel, y * pixel) for x in (x0, x1 + 1) for y in (y0, y1 + 1)]
    radius = max(math.hypot(f - fbeam, s - sbeam) for f, s in corners)
    return max(radius, 10.0 * pixel)


def physical_units(params, config, groups) -> np.ndarray:
    """Per refined value: the change that moves a spot at the detector edge by about one pixel.

    ``φ = pixel / R`` (R: beam spot to the farthest roi corner); each group's
    rule is in :mod:`nbjax.groups`.
    """
    from nbjax import groups as G

    pixel = float(params.detector.pixel_size_mm)
    return G.physical_units(params, config, groups, pixel / _edge_radius_mm(params, config), pixel)


# --------------------------------------------------------------------------
# images: blur, transforms, losses


def _blur(image, sigma):
    """Separable Gaussian blur (σ in pixels; σ = 0 leaves the image unchanged)."""
    import jax
    import jax.numpy as jnp

    offsets = jnp.arange(-_MAX_BLUR_RADIUS, _MAX_BLUR_RADIUS + 1, dtype=image.dtype)
    safe = jnp.where(sigma > 0, sigma, 1.0)
    kernel = jnp.where(sigma > 0, jnp.exp(-0.5 * (offsets / safe) ** 2), (offsets == 0).astype(image.dtype))
    kernel = kernel / jnp.sum(kernel)
    rows = jax.vmap(lambda row: jnp.convolve(row, kernel, mode="same"))(image)
    return jax.vmap(lambda col: jnp.convolve(col, kernel, mode="same"), in_axes=1, out_axes=1)(rows)


def _smoothed(image, weights, sigma):
    """The variance-stabilised, blurred image the smoothed stages compare: ``blur(A(image) w)``."""
    return _blur(_anscombe(image) * weights, sigma)


def _anscombe(image):
    import jax.numpy as jnp

    return 2.0 * jnp.sqrt(jnp.maximum(image, 0.0) + 0.375)


def _poisson_deviance(mu, observed, weights):
    import jax.numpy as jnp

    positive = observed > 0
    ratio = jnp.where(positive, observed / mu, 1.0)
    log_term = jnp.where(positive, observed * jnp.log(ratio), 0.0)
    return jnp.sum(weights * (mu - observed + log_term))


# --------------------------------------------------------------------------
# compiled pieces (module level: compiled once per configuration and group list,
# shared by every fit that uses them)


def _image(theta, params0, mask, config, groups, gradient=None):
    from nbjax import groups as G
    from nbjax import params as P

    return P.simulate_core(G.set_groups(params0, groups, config, theta), config, mask, gradient=gradient)


def _objective(image, data, stage_data):
    """The stage objective of a model image: ``smooth`` = 1 selects the blurred
    Anscombe least squares ``½ Σ w (blur(A(image)) − blur(A(o)))²``, 0 the
    requested loss on raw counts (Poisson deviance or ``½ Σ w (image − o)²``).
    All three are evaluated (they are cheap next to the render) and ``data["lsq"]``
    picks the final one, so that one compiled step serves every stage and loss."""
    weights = data["weights"]
    r = _smoothed(image, weights, stage_data["sigma"]) - stage_data["target"]
    smoothed = 0.5 * (weights * r * r).sum()
    d = image - data["observed"]
    lsq = data["lsq"]
    final = lsq * 0.5 * (weights * d * d).sum() + \
        (1.0 - lsq) * _poisson_deviance(image + data["pedestal"], data["observed"], weights)
    s = stage_data["smooth"]
    return s * smoothed + (1.0 - s) * final


def _stage_loss(theta, data, stage_data, config, groups):
    image = _image(theta, data["params"], data["mask"], config, groups)
    return _objective(image, data, stage_data)


def _trust_region():
    """Shorten an L-BFGS direction ``d`` (whitened) so that the parameter move
    ``C d`` changes no refined value by more than ``max_step`` physical units:
    ``extra arg trust = (diag(1/units) C, max_step)``."""
    import jax.numpy as jnp
    import optax

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, trust, **extra_args):
        del params, extra_args
        scaled, max_step = trust
        size = jnp.max(jnp.abs(scaled @ updates))
        return updates * jnp.minimum(1.0, max_step / jnp.maximum(size, 1e-300)), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _optimizers():
    """Adam, and L-BFGS whose direction is cut to the trust region before a zoom
    line search that starts at the full (cut) step and never lengthens it."""
    import optax

    lbfgs = optax.chain(
        optax.scale_by_lbfgs(memory_size=20),
        _trust_region(),
        optax.scale(-1.0),
        optax.scale_by_zoom_linesearch(max_linesearch_steps=_MAX_LINESEARCH_STEPS,
                                       max_learning_rate=_MAX_STEP_GROWTH, initial_guess_strategy="one"),
    )
    return optax.scale_by_adam(), lbfgs


_MAX_LINESEARCH_STEPS = 12
_MAX_STEP_GROWTH = 4.0


def _strong(tree):
    """Drop weak types (optax's initial states have some), so a jitted step is
    not compiled a second time on its second call."""
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


def _compiled():
    """The jitted steps, built on first use (importing nbjax.fit stays cheap)."""
    global _COMPILED
    if _COMPILED is not None:
        return _COMPILED
    import functools

    import jax
    import jax.numpy as jnp
    import optax

    from nbjax import params as P

    adam, lbfgs = _optimizers()

    @functools.partial(jax.jit, static_argnames=("config", "groups"))
    def adam_step(u, state, base, units, rate, data, stage_data, *, config, groups):
        fn = lambda u: _stage_loss(base + units * u, data, stage_data, config, groups)
        v, g = jax.value_and_grad(fn)(u)
        updates, state = adam.update(g, state, u)
        return u - rate * updates, state, v, jnp.linalg.norm(g)

    @functools.partial(jax.jit, static_argnames=("config", "groups"))
    def lbfgs_step(u, state, base, C, trust, data, stage_data, *, config, groups):
        # value and gradient at u are in the state (the line search computed them;
        # after init they are set from the Jacobian), so the loss is compiled once,
        # inside the line search
        fn = lambda u, trust=None: _stage_loss(base + C @ u, data, stage_data, config, groups)
        v = optax.tree_utils.tree_get(state, "value")
        g = optax.tree_utils.tree_get(state, "grad")
        updates, state = lbfgs.update(g, state, u, value=v, grad=g, value_fn=fn, trust=trust)
        new_u = u + updates
        return new_u, state, optax.tree_utils.tree_get(state, "value"), \
            jnp.linalg.norm(optax.tree_utils.tree_get(state, "grad"))

    @functools.partial(jax.jit, static_argnames=("config", "groups"))
    def gauss_newton(theta, data, stage_data, *, config, groups):
        """Value, gradient and Gauss-Newton matrix of the stage objective at theta
        (Jacobian of the image by forward mode: one pass per refined value)."""
        fn = lambda th: _image(th, data["params"], data["mask"], config, groups, P.Autodiff())
        image, pushforward = jax.linearize(fn, theta)
        J = jax.vmap(pushforward, out_axes=-1)(jnp.eye(theta.shape[0], dtype=theta.dtype))  # (S, F, n)
        w = data["weights"]
        value = _objective(image, data, stage_data)
        # smoothed: residual r = blur(A(image) w) − target, Jacobian blur(A'(image) w J)
        sigma = stage_data["sigma"]
        dA = jnp.where(image > 0, 1.0 / jnp.sqrt(jnp.maximum(image, 0.0) + 0.375), 0.0) * w
        Jr = jax.vmap(lambda Jk: _blur(dA * Jk, sigma), in_axes=-1, out_axes=-1)(J)
        r = _smoothed(image, w, sigma) - stage_data["target"]
        Jr2 = Jr.reshape(-1, theta.shape[0])
        wf = w.ravel()
        H_s = Jr2.T @ (Jr2 * wf[:, None])
        g_s = Jr2.T @ (wf * r.ravel())
        # final: Fisher (Poisson, 1/μ) or unit (lsq) weights
        J2 = J.reshape(-1, theta.shape[0])
        obs = data["observed"].ravel()
        mu = image.ravel() + data["pedestal"]
        lsq = data["lsq"]
        fisher = lsq * wf + (1.0 - lsq) * wf / mu
        dloss = lsq * wf * (image.ravel() - obs) + (1.0 - lsq) * wf * (1.0 - obs / mu)
        H_f = J2.T @ (J2 * fisher[:, None])
        g_f = J2.T @ dloss
        s = stage_data["smooth"]
        return value, s * g_s + (1.0 - s) * g_f, s * H_s + (1.0 - s) * H_f

    @jax.jit
    def final_value(image, data):
        stage_data = dict(sigma=jnp.zeros(()), target=jnp.zeros_like(data["observed"]), smooth=jnp.zeros(()))
        return _objective(image, data, stage_data)

    _COMPILED = dict(adam=adam, lbfgs=lbfgs, adam_step=adam_step, lbfgs_step=lbfgs_step, gauss_newton=gauss_newton,
                     final_value=final_value, smoothed_target=jax.jit(_smoothed))
    return _COMPILED


_COMPILED = None


# --------------------------------------------------------------------------
# the fit


def fit(observed, params, config, refine, *, mask=None, loss: str = "poisson", schedule=DEFAULT_SCHEDULE,
        pedestal: float | None = None, ftol: float = 1e-10, rewhiten_every: int = 10,
        progress=None, observed_name: str = "--observed") -> FitResult:
    """Refine the groups ``refine`` of ``params`` so that the model matches ``observed``.

    ``observed``: (spixels, fpixels) photons per pixel; ``mask``: nanoBragg's
    mask (0 = ignore the pixel); ``loss``: ``"poisson"`` or ``"lsq"``;
    ``schedule``: a tuple of :class:`Stage` (see the module docstring);
    ``pedestal``: photons added to the model in the Poisson loss (default
    1e-6 × the mean observed count, at least 1e-12) so that pixels the model
    leaves dark still have a finite likelihood; ``ftol``: an L-BFGS stage
    stops after 3 consecutive iterations that lower the loss by less than
    this fraction; ``rewhiten_every``: L-BFGS iterations between two
    Gauss-Newton whitenings; ``progress``: called with one line per
    iteration; ``observed_name``: how error messages name the observed image.
    Needs float64 (``jax_enable_x64``).  The compiled steps are
    shared by fits with the same configuration, groups and loss.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from nbjax import groups as G
    from nbjax import params as P

    if not jax.config.jax_enable_x64:
        raise InputError("fit: enable float64 first (jax.config.update('jax_enable_x64', True))")
    if loss not in ("poisson", "lsq"):
        raise InputError(f"--loss: expected poisson or lsq, got {loss!r}")
    groups = refine_groups(refine)
    if "cell" in groups and config.crystal_from == "matrix":
        params, config = P.as_cell_crystal(params, config)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params)
    observed = np.asarray(observed, np.float64)
    if observed.shape != config.shape:
        raise InputError(f"{observed_name}: image shape {observed.shape} does not match the model's {config.shape}")
    if not np.all(np.isfinite(observed)):
        raise InputError(f"{observed_name}: the image holds NaN or infinite values")
    say = progress or (lambda line: None)
    steps = _compiled()

    x0, x1, y0, y1 = config.render.roi_bounds
    active = np.zeros(config.shape, bool)
    active[y0:y1 + 1, x0:x1 + 1] = True
    if mask is not None:
        active &= np.asarray(mask) != 0
    if not active.any():
        raise InputError("fit: no pixel left to fit (check -roi and -mask)")
    if loss == "poisson" and np.any(observed[active] < 0):
        raise InputError(f"{observed_name}: the image has negative values; the Poisson loss needs counts "
                         "(subtract less background, or use --loss lsq)")
    if pedestal is None:
        pedestal = max(1e-6 * float(np.mean(observed[active])), 1e-12)
    data = dict(
        params=params,
        mask=None if mask is None else jnp.asarray(mask),
        weights=jnp.asarray(active, jnp.float64),
        observed=jnp.asarray(np.where(active, observed, 0.0)),
        pedestal=jnp.asarray(float(pedestal)),
        lsq=jnp.asarray(1.0 if loss == "lsq" else 0.0),
    )
    static = dict(config=config, groups=groups)

    history = []
    stops = []  # (stage name, why it stopped)
    theta = G.get_groups(params, groups, config)
    total_iterations = 0

    def line(stage_index, stage, it, v, gnorm):
        say(f"stage {stage_index + 1}/{len(schedule)} {stage.name:<7s} iter {it:4d}  loss {v:.10e}  |g| {gnorm:.3e}")

    for stage_index, stage in enumerate(schedule):
        if stage.objective not in ("smoothed", "final"):
            raise ValueError(f"unknown objective {stage.objective!r}")
        smooth = stage.objective == "smoothed"
        sigma = jnp.asarray(float(stage.blur_px) if smooth else 0.0)
        stage_data = dict(
            sigma=sigma,
            target=steps["smoothed_target"](data["observed"], data["weights"], sigma) if smooth
            else jnp.zeros_like(data["observed"]),
            smooth=jnp.asarray(1.0 if smooth else 0.0),
        )
        keep = np.ones(theta.shape[0], bool)
        if stage.only is not None:
            keep = np.concatenate([np.full(G.group_size(g), g in stage.only) for g in groups])
            if not keep.any():
                continue

        if stage.optimizer == "adam":
            units = jnp.asarray(np.where(keep, physical_units(G.set_groups(params, groups, config, theta), config, groups),
                                         0.0))
            rate = jnp.asarray(float(stage.learning_rate))
            base = theta
            u = jnp.zeros_like(theta)
            state = _strong(steps["adam"].init(u))
            best_u, best_v, best_it = u, math.inf, 0
            reason = "iteration limit (max_iter)"
            for it in range(1, stage.max_iter + 1):
                new_u, state, v, gnorm = steps["adam_step"](u, state, base, units, rate, data, stage_data, **static)
                v = float(v)
                if not math.isfinite(v):
                    say(f"stage {stage.name}: non-finite loss, keeping the best point")
                    reason = "non-finite loss"
                    break
                if v < best_v * (1.0 - 1e-4):
                    best_it = it
                if v < best_v:
                    best_u, best_v = u, v
                line(stage_index, stage, it, v, float(gnorm))
                history.append((stage.name, it, v))
                total_iterations += 1
                u = new_u
                if it - best_it >= 25:
                    reason = "no improvement in 25 iterations"
                    break
            theta = base + units * best_u
            stops.append((stage.name, reason))
            continue

        if stage.optimizer != "lbfgs":
            raise ValueError(f"unknown optimizer {stage.optimizer!r}")

        # ---- L-BFGS in whitened coordinates ---------------------------------
        def whitening(th):
            """C = V Λ^(-1/2) of the Gauss-Newton matrix at th (refined values outside
            the stage held), and the loss and whitened gradient there."""
            v, g, H = steps["gauss_newton"](th, data, stage_data, **static)
            H = np.asarray(H)
            H = 0.5 * (H + H.T)
            idx = np.flatnonzero(keep)
            evals, evecs = np.linalg.eigh(H[np.ix_(idx, idx)])
            floor = max(float(evals.max()), 1e-300) * 1e-14
            C = np.zeros((th.shape[0], idx.size))
            C[idx] = evecs / np.sqrt(np.maximum(evals, floor))
            return jnp.asarray(C), float(v), jnp.asarray(C.T @ np.asarray(g))

        it = 0
        small = 0       # consecutive iterations that lowered the loss by less than ftol (relative)
        failed = 0      # consecutive line searches that found no lower loss
        done = False
        reason = "iteration limit (max_iter)"
        while it < stage.max_iter and not done:
            base = theta
            C, v0, g0 = whitening(base)
            units = physical_units(G.set_groups(params, groups, config, base), config, groups)
            trust = (jnp.asarray(np.asarray(C) / units[:, None]), jnp.asarray(float(stage.max_step)))
            if it == 0:
                line(stage_index, stage, 0, v0, float(jnp.linalg.norm(g0)))
                history.append((stage.name, 0, v0))
            if float(jnp.linalg.norm(g0)) < stage.gtol:
                reason = "gradient below gtol"
                break
            u = jnp.zeros((C.shape[1],), theta.dtype)
            state = steps["lbfgs"].init(u)
            state = optax.tree_utils.tree_set(state, value=jnp.asarray(v0), grad=g0)
            state = _strong(state)
            previous, g_old = v0, g0
            for _ in range(rewhiten_every):
                if it >= stage.max_iter:
                    break
                new_u, state, v, gnorm = steps["lbfgs_step"](u, state, base, C, trust, data, stage_data, **static)
                v, gnorm = float(v), float(gnorm)
                it += 1
                total_iterations += 1
                if not (v <= previous):
                    # the line search found no lower loss (the model's nearest-neighbour
                    # structure factors make the loss piecewise smooth at fine scales):
                    # keep the last point, whiten afresh there, give up after two in a row
                    failed += 1
                    say(f"stage {stage_index + 1}/{len(schedule)} {stage.name:<7s} iter {it:4d}  "
                        f"no decrease (loss {v:.10e}), {'stopping' if failed >= 2 else 'rewhitening'}")
                    history.append((stage.name, it, previous))
                    done = failed >= 2
                    if done:
                        reason = "no lower loss in two line searches"
                    break
                failed = 0
                line(stage_index, stage, it, v, gnorm)
                history.append((stage.name, it, v))
                g_new = optax.tree_utils.tree_get(state, "grad")
                s, y = new_u - u, g_new - g_old
                if not float(s @ y) > 1e-12 * float(jnp.linalg.norm(s) * jnp.linalg.norm(y)):
                    # negative curvature along the step (far from the minimum the
                    # objective is not convex): optax would use the pair anyway and
                    # could turn the next direction uphill, so start the memory afresh
                    state = _strong(optax.tree_utils.tree_set(steps["lbfgs"].init(new_u), value=jnp.asarray(v),
                                                              grad=g_new))
                g_old = g_new
                u = new_u
                small = small + 1 if previous - v <= ftol * max(abs(v), 1e-300) else 0
                previous = v
                if small >= 3 or gnorm < stage.gtol:
                    reason = "gradient below gtol" if gnorm < stage.gtol else "loss change below ftol for 3 iterations"
                    done = True
                    break
            theta = base + C @ u
        stops.append((stage.name, reason))

    refined = G.set_groups(params, groups, config, theta)
    image = P.simulate(refined, config, data["mask"])
    value = float(steps["final_value"](image, data))
    image = np.asarray(image)
    last = stops[-1][1] if stops else "no stage ran"
    verdict = "converged" if STOP_REASONS.get(last, False) else "not converged"
    say(f"done: loss {value:.10e} after {total_iterations} iterations ({int(active.sum())} pixels); "
        f"{verdict}: {last}")
    return FitResult(params=refined, config=config, groups=groups, loss=value, loss_kind=loss,
                     iterations=total_iterations, history=tuple(history), image=image, stops=tuple(stops))


# --------------------------------------------------------------------------
# results


def result_dict(result: FitResult, argv=None) -> dict:
    """``fit_result.json``: refined values under their keys, loss, iterations, command line."""
    from nbjax import groups as G

    p, cfg = result.params, result.config
    out = {G.lookup(g).result_key: G.result_value(p, cfg, g) for g in result.groups}
    if "beam_center" in result.groups and cfg.sample_pivot_near_point:
        out["near_point_mm"] = [float(v) for v in np.asarray(p.detector.near_point_mm)]
    if "distance" in result.groups and cfg.close_distance_given:
        out["close_distance_mm"] = float(p.detector.close_distance_mm)
    out["loss"] = float(result.loss)
    out["loss_kind"] = result.loss_kind
    out["iterations"] = int(result.iterations)
    out["converged"] = bool(result.converged)
    out["stop_reason"] = result.stop_reason
    out["stage_stops"] = [[name, why] for name, why in result.stops]
    if argv is not None:
        args = equivalent_args(argv, p, cfg, result.groups)
        out["nanobragg_args"] = args
        out["command_line"] = "nanoBragg " + " ".join(shlex.quote(a) for a in args)
    return out


def equivalent_args(argv, params, config, groups) -> list:
    """nanoBragg arguments that render the refined model: ``argv`` with the refined
    options replaced (N is rounded: nanoBragg's -N takes whole numbers)."""
    from nbjax import cflags
    from nbjax import groups as G

    drop, add = G.command_flags(params, config, groups)
    kept = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg in drop:
            i += 1 + cflags.value_count(arg, argv[i + 1:])
            continue
        kept.append(arg)
        i += 1
    return kept + add


# --------------------------------------------------------------------------
# from nanoBragg's arguments


def fit_args(argv, observed_path, refine, *, loss="poisson", schedule=DEFAULT_SCHEDULE, progress=None,
             pedestal=None, structure_factors=None):
    """The Python twin of ``nbjax fit``: a :class:`FitResult` for nanoBragg arguments ``argv``.

    ``structure_factors``: keyword arguments ``hkl_column``, ``model``,
    ``model_dmin`` of :func:`nbjax.params.from_args` (nbjax's ``--hkl-column``,
    ``--model``, ``--model-dmin``), or None.
    """
    from nbjax import params as P

    model = P.from_args(argv, **(structure_factors or {}))
    observed = load_observed(observed_path, model.config.shape, adc_offset=model.experiment.outputs.adc_offset)
    return fit(observed, model.params, model.config, refine, mask=model.mask, loss=loss, schedule=schedule,
               progress=progress, pedestal=pedestal, observed_name=f"--observed {observed_path}")
