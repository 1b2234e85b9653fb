"""Physics kernels against independent calculations (closed forms, direct formulas)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nbjax.constants import RTD

from nbjax import experiment
from nbjax.renderer import engine
from nbjax.physics import absorption, lattice, polarization, sources


def test_sincg_matches_the_direct_formula():
    """Argument-reduced sin(pi N h)/sin(pi h) equals the unreduced formula (computed in
    extended precision) in magnitude, far from and near Bragg nodes, up to h ~ 60."""
    rng = np.random.default_rng(1)
    h = np.concatenate([rng.uniform(-60, 60, 4000), rng.integers(-60, 60, 200) + rng.normal(0, 1e-4, 200)])
    for n in (2.0, 5.0, 36.0, 47.0):
        ours = np.abs(np.asarray(lattice.sincg(jnp.asarray(h), jnp.asarray(n))))
        hl = h.astype(np.longdouble)
        pi = np.longdouble("3.14159265358979323846264338327950288")
        direct = np.abs(np.sin(pi * n * hl) / np.sin(pi * hl)).astype(float)
        big = direct > 1e-6 * n
        np.testing.assert_allclose(ours[big], direct[big], rtol=1e-9)


def test_sincg_at_nodes_and_for_single_cells():
    h = jnp.asarray([0.0, 3.0, -7.0, 2.5, 0.3])
    np.testing.assert_array_equal(np.asarray(lattice.sincg(h, jnp.asarray(10.0)))[:3], [10.0, 10.0, 10.0])
    np.testing.assert_array_equal(np.abs(np.asarray(lattice.sincg(h, jnp.asarray(1.0)))), np.ones(5))
    # the gradient at a node (integer h, the maximum |sincg| = N) is exactly 0, not NaN
    # (double-where guard) ...
    grad_sq = jax.grad(lambda x: lattice.sincg(x, jnp.asarray(10.0)) ** 2)
    for node in (0.0, 3.0, -7.0):
        assert float(grad_sq(jnp.asarray(node))) == 0.0, node
    # ... and elsewhere the derivative of (sin(pi N h) / sin(pi h))^2, in extended precision
    pi = np.longdouble("3.14159265358979323846264338327950288")
    for h in (3.001, -7.02, 0.37, 1.234):
        x = np.longdouble(h)
        f = np.sin(pi * 10 * x) / np.sin(pi * x)
        df = pi * (10 * np.cos(pi * 10 * x) * np.sin(pi * x) - np.sin(pi * 10 * x) * np.cos(pi * x)) / np.sin(pi * x) ** 2
        assert float(grad_sq(jnp.asarray(h))) == pytest.approx(float(2 * f * df), rel=1e-9), h


def test_sin_pi_polynomial():
    x = np.linspace(-0.5, 0.5, 10001)
    np.testing.assert_allclose(np.asarray(lattice.sin_pi(jnp.asarray(x))), np.sin(np.pi * x), rtol=5e-16, atol=1e-300)
    # float32: a four-term fit, 1.1e-6 relative (F_latt² then within ~1.3e-5, far inside single
    # precision's 1e-3 budget against nanoBragg.c); near zero the relative error holds too
    x32 = np.concatenate([x, [1e-3, -2e-5, 3e-9]]).astype(np.float32)
    exact = np.sin(np.pi * x32.astype(float))
    got = np.asarray(lattice.sin_pi(jnp.asarray(x32))).astype(float)
    nonzero = exact != 0
    assert np.max(np.abs(got[nonzero] - exact[nonzero]) / np.abs(exact[nonzero])) <= 1.2e-6
    assert np.all(got[~nonzero] == 0)


def test_round_gauss_tophat_closed_forms():
    n = jnp.asarray([4.0, 5.0, 6.0])
    recip = jnp.eye(3) * 0.01
    h, k, l = (jnp.asarray(v) for v in (1.02, -2.01, 3.0))
    round_value = lattice.lattice_factor("round", h, k, l, n, recip, 1.0)
    r2 = 0.02 ** 2 * 16 + 0.01 ** 2 * 25
    x = math.pi * math.sqrt(r2)
    expected = 120 * 0.723601254558268 * 3 * (math.sin(x) / x - math.cos(x)) / x ** 2
    assert float(round_value) == pytest.approx(expected, rel=1e-12)
    rho2 = ((0.02 * 0.01) ** 2 + (0.01 * 0.01) ** 2) * 120 ** 2
    assert float(lattice.lattice_factor("gauss", h, k, l, n, recip, 1.0)) == pytest.approx(
        120 * math.exp(-rho2 / 0.63), rel=1e-12)
    assert float(lattice.lattice_factor("tophat", h, k, l, n, recip, 1.0)) == 120.0   # rho2 < 0.3969
    assert float(lattice.lattice_factor("tophat", h, k, l, n, recip, 1e5)) == 0.0


def test_capture_fractions_sum_to_the_total_absorption():
    """Layers t = 0..n-1 of thickness d capture exp(-t d mu/rho) - exp(-(t+1) d mu/rho):
    together 1 - exp(-n d mu / rho)."""
    d, mu = 100e-6, 1 / 80e-6
    direction = jnp.asarray([0.3, 0.2, 0.9327379])
    normal = jnp.asarray([0.0, 0.0, 1.0])
    fractions = [float(absorption.capture_fraction(t, d, mu, direction, normal)) for t in range(3)]
    rho = float(direction[2])
    assert sum(fractions) == pytest.approx(1 - math.exp(-3 * d * mu / rho), rel=1e-12)
    assert fractions[0] > fractions[1] > fractions[2] > 0


def test_kahn_polarization_special_cases():
    incident = jnp.asarray([1.0, 0.0, 0.0])
    axis = jnp.asarray([0.0, 0.0, 1.0])
    for angle in (0.1, 0.7, 1.3):
        in_plane = jnp.asarray([math.cos(angle), 0.0, math.sin(angle)])     # in the E-vector plane
        normal = jnp.asarray([math.cos(angle), math.sin(angle), 0.0])       # perpendicular to it
        c2 = math.cos(angle) ** 2
        unpolarized = 0.5 * (1 + c2)
        assert float(polarization.polarization_factor(0.0, incident, in_plane, axis)) == pytest.approx(unpolarized)
        # K = 1, E along z: scattering in the x-z plane scales with cos^2, perpendicular not at all
        assert float(polarization.polarization_factor(1.0, incident, in_plane, axis)) == pytest.approx(c2)
        assert float(polarization.polarization_factor(1.0, incident, normal, axis)) == pytest.approx(1.0)
    # along the beam: no azimuth, factor 1 whatever K
    assert float(polarization.polarization_factor(0.7, incident, incident, axis)) == pytest.approx(1.0)


def test_kahn_polarization_derivative_matches_central_differences():
    """The hand-written derivative of the polarization factor (its custom JVP) against central
    differences of the factor itself, w.r.t. K, the incident vector, the diffracted vector (given
    as a tuple, as the renderer does) and the polarization axis; and both directions of autodiff."""
    rng = np.random.default_rng(7)
    h = 1e-6

    def factor(x):   # all inputs as one vector: K, incident, diffracted, axis
        return polarization.polarization_factor(x[0], x[1:4], (x[4], x[5], x[6]), x[7:10])

    values, reverse, forward = (jax.jit(jax.vmap(f)) for f in (factor, jax.grad(factor), jax.jacfwd(factor)))
    x0 = jnp.asarray(np.concatenate([rng.random((20, 1)), rng.normal(size=(20, 9))], axis=1))
    step = h * jnp.eye(10)
    central = (values((x0[:, None] + step).reshape(-1, 10)) - values((x0[:, None] - step).reshape(-1, 10)))
    central = np.asarray(central).reshape(20, 10) / (2 * h)
    np.testing.assert_allclose(np.asarray(reverse(x0)), central, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.asarray(forward(x0)), np.asarray(reverse(x0)), rtol=1e-13, atol=1e-15)
    # along the beam the azimuth is held (cos 2psi = 1): finite derivatives, and none w.r.t. K there
    on_axis = np.asarray(jax.grad(factor)(jnp.asarray([0.7, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0])))
    assert np.all(np.isfinite(on_axis)) and on_axis[0] == 0.0


def test_solid_angle_derivative_matches_central_differences():
    """The hand-written derivative of the pixel solid angle (its custom JVP) against central
    differences, for a pixel of side p at path length a and close distance c, and a point pixel."""
    from nbjax.geometry import pixels
    h = 1e-9
    for point_pixel in (False, True):
        def omega(x):
            return pixels.solid_angle(x[0], x[1], x[2], point_pixel)

        x0 = jnp.asarray([172e-6, 0.131, 0.1])      # metres
        reverse = np.asarray(jax.grad(omega)(x0))
        forward = np.asarray(jax.jacfwd(omega)(x0))
        central = np.array([(float(omega(x0.at[j].add(h))) - float(omega(x0.at[j].add(-h)))) / (2 * h)
                            for j in range(3)])
        np.testing.assert_allclose(reverse, central, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(forward, reverse, rtol=1e-14)
        if not point_pixel:   # the closed form, independently
            p, a, c = 172e-6, 0.131, 0.1
            value = p * p * c / a ** 3
            np.testing.assert_allclose(reverse, [2 * value / p, -3 * value / a, value / c], rtol=1e-12)


def test_step_rules():
    # nothing given / only a step / only a range / range and step / count and range
    assert sources.resolve_steps(-1, -1.0, -1.0, default_span=1.0) == (1, 0.0, 0.0)
    assert sources.resolve_steps(-1, -1.0, 0.2, default_span=1.0) == (2, 0.2, 0.2)
    assert sources.resolve_steps(-1, 2.0, -1.0, default_span=1.0) == (2, 2.0, 2.0)
    assert sources.resolve_steps(-1, 2.0, 0.5, default_span=1.0) == (4, 2.0, 0.5)
    assert sources.resolve_steps(3, 2.0, -1.0, default_span=1.0) == (3, 2.0, 1.0)
    assert sources.resolve_steps(4, -1.0, -1.0, default_span=1.0) == (4, 1.0, 0.25)
    # phi (nanoBragg's -phisteps/-osc/-phistep): a lone osc is split in two halves, a count
    # divides the sweep (no fence post), -phisteps 0 is one step, the default sweep is 1 degree
    assert sources.phi_steps(-1, 0.2, -1.0) == (2, 0.2, 0.1)
    assert sources.phi_steps(4, 0.2, -1.0) == (4, 0.2, 0.05)
    assert sources.phi_steps(0, -1.0, -1.0) == (1, 1.0 / RTD, 1.0 / RTD)
    assert sources.phi_steps(-1, 0.3, 0.1) == (3, 0.3, 0.1)
    # sensor layers: a lone thickness gives two layers half as thick, a count gets fence posts,
    # a lone count covers the 0.5 um default
    assert sources.thickness_steps(-1, 1e-4, -1.0) == (2, 1e-4, 5e-5)
    assert sources.thickness_steps(5, 1e-4, -1.0) == (5, 1e-4, 2.5e-5)
    assert sources.thickness_steps(1, 1e-4, -1.0) == (2, 1e-4, 1e-4)
    assert sources.thickness_steps(4, -1.0, -1.0) == (4, 0.5e-6, 0.125e-6)
    # round divergence drops the corners of a 3x3 grid but keeps a 2x2 one whole
    grid = sources.divergence_grid(3, 2e-3, 1e-3, 3, 2e-3, 1e-3, True)
    assert len(grid) == 5 and (0.0, 0.0) in grid
    assert len(sources.divergence_grid(3, 2e-3, 1e-3, 3, 2e-3, 1e-3, False)) == 9


BASE = "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -detpixels 48 -pixel 0.25 -distance 100 -oversample 1 -nonoise".split()


def render(args, **kw):
    exp = experiment.build(args, **kw)
    return np.asarray(engine.render(exp.scene, exp.config, exp.mask).image), exp


def test_steps_normalization(in_inputs_dir):
    """Identical sub-steps average: a 3-step phi sweep with zero range, 4 mosaic domains
    of zero spread, or 2x2 sources at the same place give the single-step image."""
    single, _ = render(BASE)
    np.testing.assert_allclose(render(BASE + "-phi 10 -osc 0 -phistep 0 -phisteps 3".split())[0],
                               render(BASE + "-phi 10".split())[0], rtol=1e-13)
    with_sources, exp = render(BASE + "-dispersion 0 -dispsteps 3".split())
    assert exp.header["steps"] == 1
    np.testing.assert_array_equal(with_sources, single)
    # oversample: O^2 sub-pixels, each 1/O^2 of the weight; with a flat pattern
    # (N = 1, default_F) every evaluation adds F^2, and the solid angle is that of
    # the first sub-pixel (nanoBragg's rule): pixel = r_e^2 fluence F^2 / R_first^2
    flat = "-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 1 -detpixels 16 -pixel 0.1 -distance 100 -nonoise -nopolar -point_pixel".split()
    for o in (1, 2, 3):
        image, exp = render(flat + ["-oversample", str(o)])
        assert exp.header["steps"] == o * o
        sub = 0.1e-3 / o
        slow, fast = np.indices(image.shape)
        f_coord = sub * (fast * o) + sub / 2
        s_coord = sub * (slow * o) + sub / 2
        pos = (np.asarray(exp.scene.pix0_m)[None, None, :] + f_coord[..., None] * np.asarray(exp.scene.fdet)
               + s_coord[..., None] * np.asarray(exp.scene.sdet))
        expected = 7.94079248018965e-30 * float(exp.scene.fluence) * 100.0 ** 2 / (pos ** 2).sum(-1)
        np.testing.assert_allclose(image, expected, rtol=1e-12)


def test_water_background_formula(in_inputs_dir):
    """With default_F 0 only the water term remains: pixel = F_bg^2 r_e^2 fluence
    size^3 1e6 N_A/18 * r_e^2 fluence / steps * polar * omega (nanoBragg's formula,
    r_e^2 fluence applied twice, as it does)."""
    args = "-default_F 0 -hkl sparse.hkl -cell 100 100 100 90 90 90 -lambda 1 -N 5 -detpixels 8 -pixel 0.1 -distance 100 -oversample 1 -nonoise -nopolar -point_pixel -water 100 -fluence 1e20 -dmin 1000".split()
    image, exp = render(args)
    i_bg = 2.57 ** 2 * 7.94079248018965e-30 * 1e20 * (100e-6) ** 3 * 1e6 * 6.02214179e23 / 18.0
    scene = exp.scene
    pos = np.asarray(scene.pix0_m) + 0.05e-3 * np.asarray(scene.fdet) + 0.05e-3 * np.asarray(scene.sdet)
    omega = 1 / np.dot(pos, pos)
    assert image[0, 0] == pytest.approx(7.94079248018965e-30 * 1e20 * i_bg * omega, rel=1e-12)


def test_dmin_cuts_high_resolution(in_inputs_dir):
    """-dmin 90 drops exactly the pixels whose resolution d = lambda / (2 sin theta) at the
    pixel centre (one sub-pixel, one source) is finer than 90 A; the rest are untouched."""
    image, exp = render(BASE + ["-dmin", "90"])
    full, _ = render(BASE)
    scene = exp.scene
    slow, fast = np.indices(image.shape)
    pixel = 0.25e-3
    pos = (np.asarray(scene.pix0_m)[None, None, :] + ((fast + 0.5) * pixel)[..., None] * np.asarray(scene.fdet)
           + ((slow + 0.5) * pixel)[..., None] * np.asarray(scene.sdet))
    cos_2theta = pos @ np.asarray(scene.beam) / np.linalg.norm(pos, axis=-1)   # beam: direction of travel
    sin_theta = np.sqrt((1 - cos_2theta) / 2)
    with np.errstate(divide="ignore"):
        resolution = 6.2 / (2 * sin_theta)   # A
    expected_cut = resolution < 90.0
    assert expected_cut.sum() > 100 and (~expected_cut).sum() > 100   # both kinds present (corner ~73 A)
    assert np.all(full > 0)
    np.testing.assert_array_equal(image == 0, expected_cut)
    np.testing.assert_array_equal(image[~expected_cut], full[~expected_cut])


def test_each_pixel_gets_the_F_of_its_nearest_reflection(in_inputs_dir):
    """With one (sub-pixel, source, phi, domain) step per pixel, the image with an HKL
    table over the image with F = 1 everywhere is F(h0, k0, l0)^2, the reflection
    nearest the pixel's fractional h, k, l -- computed here from the geometry alone
    (pixel centre, unit diffracted ray, q = (d - i) / lambda, h = a . q)."""
    hkl = np.array([(h, k, l) for h in range(-12, 13) for k in range(-12, 13) for l in range(-12, 13)])
    F = 1.0 + (hkl[:, 0] + 12) + 25.0 * (hkl[:, 1] + 12) + 625.0 * (hkl[:, 2] + 12)   # every F different
    with open("distinct.hkl", "w") as handle:
        for (h, k, l), f in zip(hkl, F):
            handle.write(f"{h} {k} {l} {f:g}\n")
    common = ("-cell 30 30 30 90 90 90 -misset 3 7 11 -lambda 1 -N 3 -detpixels 48 -pixel 0.5 -distance 60 "
              "-oversample 1 -nonoise -nointerpolate").split()
    image, exp = render(common + ["-hkl", "distinct.hkl"])
    ones, _ = render(common + ["-default_F", "1"])
    scene = exp.scene
    slow, fast = np.indices(image.shape)
    pixel = 0.5e-3
    pos = (np.asarray(scene.pix0_m)[None, None, :] + ((fast + 0.5) * pixel)[..., None] * np.asarray(scene.fdet)
           + ((slow + 0.5) * pixel)[..., None] * np.asarray(scene.sdet))
    d = pos / np.linalg.norm(pos, axis=-1, keepdims=True)
    q = (d - np.asarray(scene.incident)[0]) / float(np.asarray(scene.wavelength_m)[0])
    frac = q @ np.asarray(scene.cell_m).T                      # h, k, l per pixel
    nearest = np.floor(frac + 0.5).astype(int)
    assert np.abs(nearest).max() <= 12
    expected = (1.0 + (nearest[..., 0] + 12) + 25.0 * (nearest[..., 1] + 12) + 625.0 * (nearest[..., 2] + 12)) ** 2
    lit = ones > 1e-12 * ones.max()
    assert lit.mean() > 0.5
    assert len(np.unique(nearest[lit], axis=0)) > 20                      # many reflections, h != k among them
    np.testing.assert_allclose(image[lit] / ones[lit], expected[lit], rtol=1e-9)


def test_pixel_solid_angle_over_the_point_pixel_one(in_inputs_dir):
    """A pixel's solid angle is pixel^2 * close_distance / r^3; -point_pixel uses 1/r^2.
    All else equal, the two images differ by pixel^2 * close_distance / r per pixel."""
    common = ("-default_F 100 -cell 100 100 100 90 90 90 -lambda 6.2 -N 5 -detpixels 32 -pixel 0.25 "
              "-distance 40 -detector_roty 20 -oversample 1 -nonoise").split()
    image, exp = render(common)
    point, _ = render(common + ["-point_pixel"])
    scene = exp.scene
    slow, fast = np.indices(image.shape)
    pixel = 0.25e-3
    pos = (np.asarray(scene.pix0_m)[None, None, :] + ((fast + 0.5) * pixel)[..., None] * np.asarray(scene.fdet)
           + ((slow + 0.5) * pixel)[..., None] * np.asarray(scene.sdet))
    r = np.linalg.norm(pos, axis=-1)
    close = float(np.dot(np.asarray(scene.pix0_m), np.asarray(scene.odet)))   # sample to detector plane
    assert close == pytest.approx(float(scene.close_distance_m), rel=1e-12) and abs(close - 0.040) > 1e-4  # tilted
    np.testing.assert_allclose(image / point, pixel * pixel * close / r, rtol=1e-12)
