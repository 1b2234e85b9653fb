"""Gradients of ``simulate`` against central finite differences, in float64.

For every refinable group (:data:`nbjax.params.GROUPS`) and the structure-factor
table, ``jax.grad`` of a scalar functional of the image is compared with
central finite differences, through both reverse-mode paths: the adjoint
render (``gradient=Adjoint()``) and plain autodiff through the engine's scans
(``gradient=Autodiff()``, row blocks checkpointed).  The functionals are
``Σ w·image`` for

* ``weighted``: fixed random weights divided by ``image + mean``, so that every
  pixel counts about the same (the direct beam does not drown the spots);
* ``peak``: the brightest pixel away from the direct beam (on a Bragg peak);
* ``direct``: the pixel whose centre the direct beam hits exactly.  There the
  diffracted ray equals the incident one bit for bit, so q = 0 and
  h = k = l = 0 exactly: every ``sincg`` sits on its 0/0 point, polarization
  on its on-axis branch, the round shape on sinc3(0), tricubic interpolation
  on a grid node.  :func:`test_direct_beam_pixel_has_integer_hkl` checks that
  it really is so.

Configurations (24×24 pixels, compiled once per path, module-level cache):
square crystal with two mosaic domains and every group; three sensor layers
with absorption + Kahn polarization + ten sources (five divergence directions
× two wavelengths) + a rotated, swung detector, every group; tricubic
interpolation with a round crystal; gaussian and top-hat spots.  The F table is differentiated by plain autodiff (square, nearest) and
by the adjoint (gauss with nearest lookups, tricubic); plain autodiff of the
square case is taken w.r.t. *every* leaf of :class:`~nbjax.params.Params` and
must be finite everywhere.

Finite differences.  Steps are fractions of each parameter's "physical unit"
(:func:`nbjax.fit.physical_units`: the change that moves an edge spot by about
a pixel), ``h = 1e-4 · 2^-k`` units for k = 0…16; Richardson extrapolation of
successive central differences removes the O(h²) error, and the most
self-consistent pair of estimates is used.  The scan matters: with
nearest-neighbour structure factors the image jumps where an evaluation's h
crosses a half-integer, and a step straddling a jump gives a wild difference.
Those points are dense -- with 30 source × layer evaluations per pixel a few
components meet one within 1e-6 units -- while in float64 the difference stays
clean down to ~1e-9 units; a jump makes the estimates of neighbouring steps
disagree, so self-consistency picks the clean ones.

Agreement: ``|grad − fd| ≤ 1e-4 · max(|fd|, 1e-6 |f| / unit)`` per component --
relative to the finite difference, unless moving the parameter by a whole
unit changes the functional by less than a millionth of itself (components
that vanish: orientation derivatives of the direct-beam pixel, which stays at
h = 0 however the crystal turns, or the mosaic spread of a single domain).
Observed agreement: 2e-7 or better everywhere (1e-8 typical).

Beside the renders: forward mode (``jax.jacfwd``) against reverse mode, the two
reverse paths against each other (1e-8), the single-evaluation kernels at and
near integer h (plain autodiff), and the scratch memory of a gradient as the
detector grows (checkpointed row blocks).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import central_differences, compile_fast, model_from_args, richardson_best
from nbjax.renderer import adjoint, engine
from nbjax import groups as G
from nbjax import params as P
from nbjax.physics import lattice, structure_factors

fitmod = importlib.import_module("nbjax.fit")

# 24×24 pixels of 0.5 mm at 40 mm.  MOSFLM puts the direct beam at detector
# coordinates (Ybeam, Xbeam) + pixel/2, which for 6 mm is pixel (12, 12)'s
# centre to the last bit (0.0005 · 12 and 6 / 1000 are the same double).
BASE = ("-hkl small.hkl -cell 78 84 92 88 93 91 -misset 4 -7 11 -lambda 1.2 -N 5 -detpixels 24 -pixel 0.5 "
        "-distance 40 -Xbeam 6 -Ybeam 6 -phi 0 -osc 0.5 -phisteps 2 -oversample 1 -nonoise").split()
DIRECT = (12, 12)


class Spec:
    def __init__(self, extra, groups, *, fallback="c", exact=True, table=(), plain_all=False):
        self.extra = extra.split()
        self.groups = groups
        self.fallback = fallback    # tricubic switch-off rule ("c" is tested in test_adjoint_coverage.py)
        self.exact = exact          # the direct beam hits DIRECT's centre exactly
        self.table = table          # paths that also differentiate w.r.t. the F table
        self.plain_all = plain_all  # plain autodiff w.r.t. every Params leaf


CASES = {
    "square+mosaic": Spec("-mosaic 0.3 -mosaic_domains 2", G.GROUPS, table=("plain",), plain_all=True),
    "thick+polar+divergence": Spec(
        "-detector_thick 100 -detector_abs 400 -detector_thicksteps 3 -polar 0.7 -divergence 0.3 -divsteps 3 "
        "-dispersion 0.1 -dispsteps 2 -twotheta 3 -detector_rotx 1 -detector_roty -2 -detector_rotz 0.5 -phisteps 1",
        G.GROUPS, exact=False),
    "tricubic+round": Spec("-interpolate -round_xtal -phisteps 1", ("misset", "N", "wavelength"),
                           fallback="point", table=("adjoint",)),
    "gauss": Spec("-gauss_xtal -phisteps 1", ("cell", "misset", "N"), table=("adjoint",)),
    "tophat": Spec("-tophat_spots -phisteps 1", ("N", "distance", "scale")),
}

TOLERANCE = 1e-4
FLOOR = 1e-6
STEPS = 1e-4 * 2.0 ** -np.arange(17)
_compile = compile_fast       # fast compiler options: see conftest.FAST_COMPILE
_from_args = model_from_args


class Case:
    """One configuration: model, packed group values, functionals, compiled functions."""

    def __init__(self, name):
        spec = self.spec = CASES[name]
        model = _from_args(BASE + spec.extra, interpolation_fallback=spec.fallback)
        self.name, self.groups = name, spec.groups
        self.params, self.config = model.params, model.config
        self.names = [f"{g}[{i}]" for g in self.groups for i in range(G.group_size(g))]
        self.theta0 = self.pack(self.params)
        self.table0 = self.params.crystal.F_table
        self.units = fitmod.physical_units(self.params, self.config, self.groups)
        self.render = _compile(self.image, self.theta0, self.table0)
        image = np.asarray(self.render(self.theta0, self.table0))
        assert np.all(np.isfinite(image)) and image.max() > 0
        self.image0 = image
        weighted = np.random.default_rng(7).uniform(0.5, 1.5, image.shape) / (image + image.mean())
        away = image.copy()
        away[DIRECT[0] - 1:DIRECT[0] + 2, DIRECT[1] - 1:DIRECT[1] + 2] = -1.0
        peak = np.zeros(image.shape)
        peak[np.unravel_index(np.argmax(away), image.shape)] = 1.0
        self.functionals = {"weighted": weighted, "peak": peak}
        if spec.exact:
            direct = np.zeros(image.shape)
            direct[DIRECT] = 1.0
            self.functionals["direct"] = direct
        self._grads, self._results, self._fd = {}, {}, None

    def pack(self, tree):
        return G.get_groups(tree, self.groups, self.config)

    def unpack(self, theta, table):
        params = G.set_groups(self.params, self.groups, self.config, theta)
        return params.replace(**{"crystal.F_table": table})

    def image(self, theta, table, *, adjoint=False):
        return P.simulate_core(self.unpack(theta, table), self.config,
                               gradient=P.Adjoint() if adjoint else P.Autodiff())

    def gradients(self, path, label):
        """(d/dtheta, d/dtable or None, d/dParams or None) of ``Σ w·image`` for functional ``label``."""
        key = (path, label)
        if key not in self._results:
            fun = self._compiled(path)
            w = jnp.asarray(self.functionals[label])
            if path == "plain" and self.spec.plain_all:
                g_all = fun(self.unpack(self.theta0, self.table0), w)
                result = (self.pack(g_all), g_all.crystal.F_table, g_all)
            elif path in self.spec.table:
                g_theta, g_table = fun(self.theta0, self.table0, w)
                result = (g_theta, g_table, None)
            else:
                result = (fun(self.theta0, self.table0, w), None, None)
            self._results[key] = jax.tree_util.tree_map(np.asarray, result)
        return self._results[key]

    def _compiled(self, path):
        if path not in self._grads:
            adjoint = path == "adjoint"
            w = jnp.asarray(self.functionals["weighted"])
            if path == "plain" and self.spec.plain_all:
                def functional(params, w):
                    return jnp.sum(w * P.simulate_core(params, self.config, gradient=P.Autodiff()))

                fun = _compile(jax.grad(functional), self.unpack(self.theta0, self.table0), w)
            else:
                def functional(theta, table, w):
                    return jnp.sum(w * self.image(theta, table, adjoint=adjoint))

                argnums = (0, 1) if path in self.spec.table else 0
                fun = _compile(jax.grad(functional, argnums=argnums), self.theta0, self.table0, w)
            self._grads[path] = fun
        return self._grads[path]

    def finite_differences(self):
        """Per functional: (Richardson-extrapolated central differences, functional value)."""
        if self._fd is None:
            slopes = central_differences(lambda theta: np.asarray(self.render(theta, self.table0)),
                                         self.theta0, self.units, STEPS)
            self._fd = {}
            for label, w in self.functionals.items():
                d = np.einsum("ijab,ab->ij", slopes, w)
                self._fd[label] = (richardson_best(d), float(np.sum(w * self.image0)))
        return self._fd


@functools.lru_cache(maxsize=None)
def case(name) -> Case:
    return Case(name)


def _report(names, grad, fd, err):
    return "\n".join(f"  {n:16s} grad {g: .10e}  fd {d: .10e}  err {e:.1e}" for n, g, d, e in zip(names, grad, fd, err))


def _check_groups(c, grad, fd, f0, label):
    assert np.all(np.isfinite(grad)), f"{label}: non-finite gradient {grad}"
    scale = np.maximum(np.abs(fd), FLOOR * abs(f0) / c.units)
    err = np.abs(grad - fd) / scale
    worst = int(np.argmax(err))
    assert err[worst] <= TOLERANCE, f"{label}: {c.names[worst]} off by {err[worst]:.2e}\n" + _report(
        c.names, grad, fd, err)


def _check_table(c, g_table, w, label):
    """d/dF_table on the entries that matter most and on a few random ones.

    ``Σ w·image`` is quadratic in each entry (F enters squared; the tricubic
    value is linear in the table), so a central difference is exact up to
    rounding.
    """
    assert np.all(np.isfinite(g_table)), f"{label}: non-finite F-table gradient"
    flat = g_table.ravel()
    picks = list(np.argsort(-np.abs(flat))[:4]) + list(np.random.default_rng(3).choice(flat.size, 3, replace=False))
    table = np.asarray(c.table0)
    assert np.count_nonzero(flat) >= 1
    for j in picks:
        h = 1e-3 * max(abs(table.ravel()[j]), 1.0)
        e = jnp.asarray(np.eye(1, table.size, j).reshape(table.shape) * h)
        plus = float(jnp.sum(w * c.render(c.theta0, c.table0 + e)))
        minus = float(jnp.sum(w * c.render(c.theta0, c.table0 - e)))
        fd = (plus - minus) / (2 * h)
        assert abs(flat[j] - fd) <= TOLERANCE * max(abs(fd), 1e-9 * np.abs(flat).max()), (label, j, flat[j], fd)


# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n, s in CASES.items() if s.exact])
def test_direct_beam_pixel_has_integer_hkl(name):
    """The DIRECT pixel's ray is the incident direction bit for bit: q = 0, h = k = l = 0."""
    c = case(name)
    scene = P.scene_from_params(c.params, c.config)
    slow, fast = (jnp.asarray(float(x)) for x in DIRECT)
    dx, dy, dz, _ = engine._ray(fast, slow, jnp.asarray(0.0), 0, 0, scene, c.config.render)
    q = engine._scattering(dx, dy, dz, scene.incident[0], scene.wavelength_m[0])
    assert [float(x) for x in q] == [0.0, 0.0, 0.0]
    assert c.image0[DIRECT] == c.image0.max()  # F(000) at the lattice peak: N³ exactly


@pytest.mark.parametrize("path", ["adjoint", "plain"])
@pytest.mark.parametrize("name", list(CASES))
def test_gradient_matches_finite_differences(name, path):
    c = case(name)
    assert P.adjoint_supported(c.config.render)  # else gradient=Adjoint() would refuse
    fds = c.finite_differences()
    for label, w in c.functionals.items():
        g_theta, g_table, g_all = c.gradients(path, label)
        fd, f0 = fds[label]
        _check_groups(c, g_theta, fd, f0, f"{name}/{path}/{label}")
        if g_table is not None:
            _check_table(c, g_table, jnp.asarray(w), f"{name}/{path}/{label}")
        if g_all is not None:
            for where, leaf in jax.tree_util.tree_leaves_with_path(g_all):
                assert np.all(np.isfinite(leaf)), f"{name}/{path}/{label}: non-finite d/d{jax.tree_util.keystr(where)}"


@pytest.mark.parametrize("name", list(CASES))
def test_adjoint_equals_plain_autodiff(name):
    """The two reverse-mode paths agree far beyond what finite differences can show."""
    c = case(name)
    for label in c.functionals:
        a_theta, a_table, _ = c.gradients("adjoint", label)
        p_theta, p_table, _ = c.gradients("plain", label)
        scale = np.maximum(np.abs(p_theta), 1e-9 * np.abs(p_theta).max())
        np.testing.assert_array_less(np.abs(a_theta - p_theta) / scale, 1e-8, err_msg=f"{name}/{label}")
        if a_table is not None and p_table is not None:
            np.testing.assert_allclose(a_table, p_table, rtol=1e-8, atol=1e-10 * np.abs(p_table).max())


def test_adjoint_with_roi_and_mask_equals_plain_autodiff():
    """The adjoint reads the image, its cotangent and the mask as row blocks of the roi: with a roi
    whose rows the blocks do not divide (padded rows) and a random mask, its gradient w.r.t. every
    group equals plain autodiff's, and masked or out-of-roi pixels contribute nothing."""
    model = _from_args(BASE + ["-roi", "3", "19", "2", "20"])
    config = dataclasses.replace(model.config, render=dataclasses.replace(model.config.render, block_rows=5))
    assert config.render.roi_shape[0] % config.render.block_rows != 0
    theta0 = G.get_groups(model.params, G.GROUPS, config)
    mask = jnp.asarray(np.random.default_rng(3).uniform(size=(24, 24)) > 0.25)
    weights = jnp.asarray(np.random.default_rng(4).uniform(0.5, 1.5, size=(24, 24)))

    def loss(theta, weights, gradient):
        image = P.simulate_core(G.set_groups(model.params, G.GROUPS, config, theta), config, mask, gradient=gradient)
        return jnp.sum(weights * image)

    grads = {}
    for name, gradient in (("adjoint", P.Adjoint()), ("plain", P.Autodiff())):
        fun = jax.grad(functools.partial(loss, gradient=gradient))
        grads[name] = np.asarray(_compile(fun, theta0, weights)(theta0, weights))
    scale = np.maximum(np.abs(grads["plain"]), 1e-9 * np.abs(grads["plain"]).max())
    np.testing.assert_array_less(np.abs(grads["adjoint"] - grads["plain"]) / scale, 1e-8)
    # weights only where nothing renders: a zero gradient
    in_roi = np.zeros((24, 24), bool)
    in_roi[2:21, 3:20] = True  # -roi xmin xmax ymin ymax: columns 3..19, rows 2..20
    dead = jnp.where(jnp.asarray(in_roi) & mask, 0.0, weights)
    fun = jax.grad(functools.partial(loss, gradient=P.Adjoint()))
    assert float(np.abs(np.asarray(_compile(fun, theta0, dead)(theta0, dead))).max()) == 0.0


def test_jacfwd_agrees_with_grad():
    """Forward mode (plain autodiff, jax.jacfwd of the image) against reverse mode, on several groups."""
    c = case("square+mosaic")
    lo = c.names.index("N[0]")
    hi = c.names.index("wavelength[0]") + 1   # N, distance, beam_center, detector_rot, twotheta, wavelength
    select = slice(lo, hi)

    def image(part):
        return c.image(c.theta0.at[select].set(part), c.table0)

    jac = np.asarray(_compile(jax.jacfwd(image), c.theta0[select])(c.theta0[select]))
    assert jac.shape == c.image0.shape + (hi - lo,) and np.all(np.isfinite(jac))
    for label, w in c.functionals.items():
        forward = np.einsum("ab,abi->i", w, jac)
        reverse = c.gradients("adjoint", label)[0][select]
        np.testing.assert_allclose(forward, reverse, rtol=1e-9, atol=1e-9 * np.abs(reverse).max(), err_msg=label)


# --------------------------------------------------------------------------
# the single-evaluation kernels at their singular points (plain autodiff)


def _derivative(f, h0=1e-3):
    """f'(0) by Richardson-extrapolated central differences (the most self-consistent of a step scan)."""
    d = np.array([(f(h) - f(-h)) / (2 * h) for h in h0 * 2.0 ** -np.arange(6)])
    rich = (4.0 * d[1:] - d[:-1]) / 3.0
    return rich[np.argmin(np.abs(np.diff(rich)))]


@pytest.mark.parametrize("shape", ["square", "round", "gauss"])
def test_lattice_factor_gradient_at_and_near_integer_h(shape):
    """d F_latt² / d(h, N) at exact nodes (the 0/0 of sincg, sinc3(0)) and nearby: finite, and the FD value.

    At a node the guards give the exact derivative (0 in h, the analytic one
    in N).  A hair off a node (δ = 1e-9) ``sin πNδ / sin πδ`` differentiates
    with cancellation: an absolute error of about ε·N/δ times F², i.e. ~1e-8
    of the peak's slope scale -- harmless, but not 1e-4 of the (tiny) slope
    there, hence the absolute slack.
    """
    recip = jnp.asarray([[0.013, 0.001, 0.0], [0.0, 0.012, 0.002], [0.001, 0.0, 0.011]])
    fudge = jnp.asarray(1.0)

    def f_sqr(hkl, n):
        value = lattice.lattice_factor(shape, hkl[0], hkl[1], hkl[2], n, recip, fudge)
        return value * value

    n0 = jnp.asarray([5.0, 7.0, 4.0])
    grad = _compile(jax.grad(f_sqr, argnums=(0, 1)), jnp.zeros(3), n0)
    f_sqr = _compile(f_sqr, jnp.zeros(3), n0)
    for point in ([0.0, 0.0, 0.0], [2.0, -3.0, 1.0], [2.0, -3.1, 1.0], [1.0 + 1e-9, 0.2, -0.3], [0.31, -2.0, 4.4]):
        hkl = jnp.asarray(point)
        g_hkl, g_n = (np.asarray(x) for x in grad(hkl, n0))
        assert np.all(np.isfinite(g_hkl)) and np.all(np.isfinite(g_n)), (shape, point)
        for i in range(3):
            e = jnp.zeros(3).at[i].set(1.0)
            fd_h = _derivative(lambda t: float(f_sqr(hkl + t * e, n0)))
            fd_n = _derivative(lambda t: float(f_sqr(hkl, n0 + t * e)))
            # absolute slack: 1e-7 of the peak's slope scale F² N (rounding near a node, see above)
            slack = 1e-7 * float(f_sqr(hkl, n0)) * float(jnp.max(n0))
            assert abs(g_hkl[i] - fd_h) <= 1e-4 * abs(fd_h) + slack, (shape, point, i, g_hkl[i], fd_h)
            assert abs(g_n[i] - fd_n) <= 1e-4 * abs(fd_n) + slack, (shape, point, i, g_n[i], fd_n)


def test_adjoint_sincg_derivatives_match_autodiff():
    """The adjoint's closed-form ∂sincg/∂x, ∂sincg/∂n equal jax.grad of the engine's sincg, nodes included."""
    x = jnp.asarray([0.0, 3.0, -2.0, 0.25, 1.5, -0.4999, 2.0 + 1e-7, 7.3])
    n = jnp.asarray([5.0, 9.0, 4.5, 5.0, 6.0, 7.0, 5.0, 1.0])
    s, ds_dx, ds_dn = adjoint._sincg_and_derivatives(x, n)
    dx = jax.vmap(jax.grad(lattice.sincg, argnums=0))(x, n)
    dn = jax.vmap(jax.grad(lattice.sincg, argnums=1))(x, n)
    np.testing.assert_allclose(np.asarray(s), np.asarray(lattice.sincg(x, n)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(ds_dx), np.asarray(dx), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(np.asarray(ds_dn), np.asarray(dn), rtol=1e-10, atol=1e-12)


def test_tricubic_gradient_matches_finite_differences():
    """jax.grad of tricubic F w.r.t. (h, k, l) and the table, on and between grid nodes."""
    rs = np.random.default_rng(5)
    table = jnp.asarray(rs.uniform(10, 100, (9, 9, 9)))
    hkl_min = (-4, -4, -4)

    def f_sqr(hkl, table):
        flat, shape = structure_factors.padded_table(table, jnp.asarray(0.0))
        value = structure_factors.tricubic_F(hkl[0], hkl[1], hkl[2], flat, shape, hkl_min)
        return value * value

    grad = _compile(jax.grad(f_sqr, argnums=(0, 1)), jnp.zeros(3), table)
    f_sqr = _compile(f_sqr, jnp.zeros(3), table)
    for point in ([0.0, 0.0, 0.0], [1.0, -2.0, 0.0], [0.3, -1.2, 0.77], [-0.5, 0.5, 1.25]):
        hkl = jnp.asarray(point)
        g_hkl, g_table = (np.asarray(x) for x in grad(hkl, table))
        assert np.all(np.isfinite(g_hkl)) and np.all(np.isfinite(g_table))
        for i in range(3):
            e = jnp.zeros(3).at[i].set(1.0)
            # at a grid node the piecewise cubic has a kink: compare one-sided (floor picks the right piece)
            h = 1e-6
            if float(point[i]) == round(float(point[i])):
                fd = (float(f_sqr(hkl + h * e, table)) - float(f_sqr(hkl, table))) / h
                tol = 1e-4 * abs(fd) + 1e-3 * h * abs(float(f_sqr(hkl, table)))
            else:
                fd = _derivative(lambda t: float(f_sqr(hkl + t * e, table)))
                tol = 1e-4 * abs(fd)
            assert abs(g_hkl[i] - fd) <= tol, (point, i, g_hkl[i], fd)
        j = np.unravel_index(np.argmax(np.abs(g_table)), g_table.shape)
        e = jnp.zeros(table.shape).at[j].set(1e-3)
        fd = (float(f_sqr(hkl, table + e)) - float(f_sqr(hkl, table - e))) / 2e-3
        assert abs(g_table[j] - fd) <= 1e-6 * abs(fd)


# --------------------------------------------------------------------------
# memory


def test_gradient_memory_does_not_grow_with_the_detector():
    """Checkpointed row blocks: the plain gradient's scratch memory is one block's, whatever the image size.

    XLA's buffer assignment (``memory_analysis``) of the gradient for 1 and 8
    blocks of 8 rows.  Checkpointed, the scratch stays that of one block (only
    image-sized arrays may grow); without the checkpoint the residuals of every
    block stay alive (they grow by ~36 kB a row here, 30x what image-sized
    arrays would add).  The adjoint needs less than either.
    """
    def temp_bytes(rows, *, checkpoint=True, adjoint=False):
        argv = ("-default_F 100 -cell 78 84 92 88 93 91 -misset 4 -7 11 -lambda 1.2 -N 5 -detpixels_f 32 "
                f"-detpixels_s {rows} -pixel 0.5 -distance 40 -phisteps 2 -osc 0.5 -oversample 1 -nonoise").split()
        model = _from_args(argv, block_rows=8)
        params, config = model.params, model.config

        def loss(wavelength):
            p = params.replace(**{"beam.wavelength_A": wavelength})
            gradient = P.Adjoint() if adjoint else P.Autodiff(checkpoint=checkpoint)
            return jnp.sum(P.simulate_core(p, config, gradient=gradient))

        return _compile(jax.grad(loss), params.beam.wavelength_A).memory_analysis().temp_size_in_bytes

    one, eight = temp_bytes(8), temp_bytes(64)
    image_arrays = 4 * 64 * 32 * 8   # four float64 arrays of the whole image
    assert eight <= one + image_arrays, (one, eight)
    # the measure sees residuals when they are kept: far more growth than image-sized arrays explain
    assert temp_bytes(64, checkpoint=False) - temp_bytes(8, checkpoint=False) > 8 * image_arrays
    assert temp_bytes(64, adjoint=True) <= one
