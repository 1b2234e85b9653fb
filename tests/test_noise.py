"""Noise images: bit-exact against nanoBragg.c, and statistics of both paths.

Reference numbers not in the golden set come from an instrumented build of the
released nanoBragg.c (gcc 12 -O3, x86-64) calling its own poidev on the inputs
built below; floats were printed with %.9g (exact round trip) and bulk
outputs are summarised by the SHA-256 of their little-endian bytes.
"""

import gzip
import hashlib
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from nbjax.physics.noise import (
    _to_ushort,
    noise_core_jax,
    noise_image_c,
    noise_image_jax,
    poisson_deviates_c,
    poisson_deviates_jax,
    resolve_roi,
)
from nbjax.physics.ran1 import CStatics, Ran1State

GOLDEN = Path(__file__).parent / "golden" / "cases" / "p40_noise_seeded"


def _f32(text):
    return np.array([np.float32(v) for v in text.split()], dtype=np.float32)


def _sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# ---------------------------------------------------------------- bit-exact ---

def test_golden_p40_noise_image_bit_exact():
    args = (GOLDEN / "args.txt").read_text().split()
    seed = -int(args[args.index("-seed") + 1])           # C: seed = -atoi(arg)
    assert seed == -7
    img = np.frombuffer(gzip.open(GOLDEN / "float.bin.gz").read(), dtype="<f4").reshape(160, 160)
    ref = np.frombuffer(gzip.open(GOLDEN / "noise.img.gz").read()[512:], dtype="<u2")
    ref = ref.reshape(160, 160)
    out, photons, overloads = noise_image_c(img, seed)
    assert out.dtype == np.uint16 and out.shape == (160, 160)
    assert np.array_equal(out, ref)
    assert f"{photons:.0f} photons on noise image ({overloads} overloads)" in (
        GOLDEN / "stdout.txt").read_text()
    assert f"{photons:.0f}" == "47917251" and overloads == 0


# poidev(mean) drawn 12 times in a fresh process with seed -7
POIDEV_REF = {
    0.5: "0 0 1 1 2 1 0 1 2 0 0 0",
    5.0: "5 10 4 9 3 2 8 7 3 4 8 6",
    11.9: "13 17 8 18 14 15 6 8 13 16 15 10",
    50.0: "54 35 48 56 47 55 63 43 51 51 45 43",
    1e4: "10057 9789 9971 10098 9958 10080 10191 9902 10024 10026 9908 9920",
    2e6: ("1999729.12 1998571.5 1999318.5 2003051.75 1999534.62 2000196.62 "
          "2000251.12 2000595 2000851.25 2000382.75 1999189.75 1998516.88"),
    1e8: ("99998088 99989896 99995184 100021576 99996712 100001392 100001776 "
          "100004208 100006016 100002704 99994272 99989512"),
}


@pytest.mark.parametrize("mean", sorted(POIDEV_REF))
def test_poidev_sequences_match_c(mean):
    got = poisson_deviates_c(np.full(12, mean, np.float32), -7)
    np.testing.assert_array_equal(got.view(np.uint32), _f32(POIDEV_REF[mean]).view(np.uint32))


def test_poidev_mixed_means_match_c():
    # regime switches, repeated means (C caches per-mean values), the 12 and
    # 1e6 boundaries, zero and negative means, the spare Gaussian deviate
    means = np.array([3, 3, 3, 0.25, 0.25, 40, 40, 40, 7, 3e6, 3e6, 3e6, 12, 11.99, 1e6,
                      1000000.06, 0, -2, 2.5e7, 800, 800], dtype=np.float32)
    ref = _f32("4 1 1 3 0 46 43 40 3 2998397.5 2998267.25 3001600 17 16 1001665 "
               "1000937.44 0 0 24997076 824 830")
    np.testing.assert_array_equal(poisson_deviates_c(means, -3).view(np.uint32), ref.view(np.uint32))


def _fuzz_means(n):
    """Means spanning 1e-4 .. 1e9 in a scrambled order, with repeats and specials."""
    i = np.arange(n, dtype=np.int64)
    frac = ((i * 7919) % n) / n
    m = (10.0 ** (-4.0 + 13.0 * frac)).astype(np.float32)
    m[5::5] = m[4:-1:5][: m[5::5].size]
    m[::97] = 0.0
    m[1::101] = -2.0
    m[2::103] = 12.0
    m[3::107] = 1.0e6
    m[4::109] = 11.999999
    return m


@pytest.mark.parametrize(
    "seed, sha, total, idum",
    [
        (-7, "51bb24b5c7ddb33effce0ca03ce0660786c6d77df993d0ae332a8076eca1aa41",
         628830317631.625, 1488724132),
        (3, "0642671177f7efd72fac6d35501a01249f89237cdc76359134cd9f4e9ca4c689",
         628829263855.4375, 244390931),
    ],
)
def test_poidev_20000_means_all_regimes_match_c(seed, sha, total, idum):
    state = Ran1State(seed)
    dev = poisson_deviates_c(_fuzz_means(20000), seed, state)
    assert _sha(dev.astype("<f4")) == sha
    assert float(dev.astype(np.float64).sum()) == total
    assert state.idum == idum


def _lazy_means(n):
    """Tiny and moderate means in runs of repeats, hopping between regimes."""
    pattern = np.array([1e-3, 1e-3, 1e-3, 0.3, 0.3, 1e-3, 0.9, 0.9, -0.5, 0.0, 1e-3,
                        2e-8, 2e-8, 0.999, 0.999, 1.0, 1.0, 13.0, 1e-3, 2e6, 0.05, 0.05],
                       dtype=np.float32)
    i = np.arange(n)
    return pattern[(i * i + 3 * i) % pattern.size]


def test_repeated_small_means_match_c():
    # exercises C's "same mean as last call" cache, which our lazy exp(-mean) mirrors
    state = Ran1State(-17)
    dev = poisson_deviates_c(_lazy_means(30000), -17, state)
    assert _sha(dev.astype("<f4")) == "12a55277508f9573b01b150e776d91c9c3752828cd0c48adaa42db4d175102a4"
    assert float(dev.astype(np.float64).sum()) == 4635.0
    assert state.idum == 2131164365


@pytest.mark.parametrize("cuts", [(1, 2, 3, 7, 100), (5, 6, 11, 12, 13, 14), (29999,)])
def test_split_calls_equal_one_call(cuts):
    means = _lazy_means(30000)
    whole = poisson_deviates_c(means, -17)
    state = Ran1State(-17)
    bounds = (0,) + cuts + (means.size,)
    parts = [poisson_deviates_c(means[a:b], state.idum, state) for a, b in zip(bounds, bounds[1:])]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_statics_hold_c_values_after_small_mean():
    shared = CStatics()
    poisson_deviates_c(np.array([1e-3], np.float32), -1, shared)
    assert shared.poidev_oldm == np.float32(1e-3)
    assert shared.floats[3] == np.float32(math.exp(-float(np.float32(1e-3))))   # C's static g


def test_noise_image_roi_negative_adc_overloads_match_c():
    # 48x40 image, ROI fast 3..30, slow 5..37, adc -3.5, seed -21 (C's harness
    # ran the same loop as main(): sum in double, clamp, (unsigned short))
    img = _fuzz_means(1920).reshape(48, 40)
    out, photons, overloads = noise_image_c(img, -21, adc_offset=-3.5, roi=(3, 30, 5, 37))
    assert _sha(out.astype("<u2")) == "4734deee495ca1ea4a8ec9e386cddc809a466764e5d7baef0678550cbde2bb60"
    assert photons == 30988085089.6875
    assert overloads == 290
    assert not out[:5].any() and not out[38:].any() and not out[:, :3].any() and not out[:, 31:].any()
    assert (out[5:38, 3:31] == 65533).any()          # deviate 0 - 3.5 wraps like C


def test_roi_draws_only_visited_pixels_in_raster_order():
    img = _fuzz_means(30 * 20).reshape(30, 20)
    roi = (4, 11, 2, 25)
    out, photons, _ = noise_image_c(img, -5, adc_offset=0.0, roi=roi)
    dev = poisson_deviates_c(img[2:26, 4:12], -5)
    expected = np.zeros_like(out)
    expected[2:26, 4:12] = np.minimum(dev.astype(np.float64), 65535).astype(np.uint16)
    np.testing.assert_array_equal(out, expected)
    assert photons == float(dev.astype(np.float64).sum())


def test_resolve_roi_defaults():
    assert resolve_roi(None, 30, 20) == (0, 20, 0, 30)
    assert resolve_roi((-1, -1, -1, -1), 30, 20) == (0, 20, 0, 30)
    assert resolve_roi((2, 5, -1, 7), 30, 20) == (2, 5, 0, 7)
    out, photons, overloads = noise_image_c(np.ones((4, 5), np.float32), -1, roi=(3, 1, 0, 3))
    assert not out.any() and photons == 0.0 and overloads == 0


def test_ushort_conversion_like_c():
    # x86-64 gcc: (unsigned short)(double) goes through a 32-bit signed integer
    cases = {-3.5: 65533, -70000.7: 61072, -3e9: 0, 1e10: 0, float("nan"): 0,
             65535.0: 65535, 40.99: 40, 0.0: 0}
    for value, expected in cases.items():
        assert int(_to_ushort(value)) == expected, value


def test_state_threads_through_split_calls():
    means = _fuzz_means(5000)
    whole = poisson_deviates_c(means, -11)
    state = Ran1State(-11)
    a = poisson_deviates_c(means[:1234], state.idum, state)
    b = poisson_deviates_c(means[1234:], state.idum, state)
    np.testing.assert_array_equal(np.concatenate([a, b]), whole)
    # the poidev/gaussdev statics persisted too
    assert state.shared.poidev_oldm == means[np.abs(means) <= 1e6][-1]


def test_statics_updated_in_place():
    # C (instrumented build, fresh process): poidev(5, &idum) then poidev(3e6, &idum)
    # from idum = -1 return 5 and 2999053.75, leave ran1's iy = 143542612, idum =
    # 1899894091, and gaussdev's spare deviate 0.194145709 (iset = 1).
    state = Ran1State(-1)
    dev = poisson_deviates_c(np.array([5.0, 3e6], np.float32), -1, state)
    np.testing.assert_array_equal(dev, np.array([5.0, 2999053.75], np.float32))
    shared = state.shared
    assert shared.poidev_oldm == np.float32(5.0)
    assert shared.gaussdev_spare == np.float32(0.194145709)
    assert shared.iy == 143542612 and state.idum == 1899894091


def test_float64_input_rounded_to_float_like_c():
    x = np.array([[0.1, 3.3, 17.123456789, 4e6]])
    a = noise_image_c(x, -2)
    b = noise_image_c(x.astype(np.float32), -2)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:] == b[1:]


# --------------------------------------------------------------- statistics ---

STAT_MEANS = [0.5, 5.0, 11.9, 50.0, 1e4, 2e6, 1e8]


def _check_moments(samples, lam):
    x = samples.astype(np.float64)
    n = x.size
    se_mean = math.sqrt(lam / n)
    se_var = math.sqrt((lam + 2.0 * lam * lam) / n)
    assert abs(x.mean() - lam) < 5 * se_mean, (lam, x.mean())
    assert abs(x.var(ddof=1) - lam) < 5 * se_var, (lam, x.var(ddof=1))


def _check_pmf(samples, lam, kmax):
    n = samples.size
    for k in range(kmax + 1):
        p = math.exp(-lam + k * math.log(lam) - math.lgamma(k + 1))
        freq = np.count_nonzero(samples == k) / n
        assert abs(freq - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-6, (lam, k, freq, p)


@pytest.mark.parametrize("lam", STAT_MEANS)
def test_c_path_statistics(lam):
    n = 100_000
    dev = poisson_deviates_c(np.full(n, lam, np.float32), -(1000 + int(lam) % 997))
    _check_moments(dev, lam)
    if lam <= 1e6:
        assert np.all(dev == np.floor(dev)) and dev.min() >= 0
    if lam < 12:
        _check_pmf(dev, lam, int(lam + 4 * math.sqrt(lam)) + 2)


def test_jax_path_statistics():
    n = 60_000
    means = np.repeat(np.array(STAT_MEANS, np.float32), n)
    dev = np.asarray(poisson_deviates_jax(jax.random.key(1234), means)).reshape(len(STAT_MEANS), n)
    for lam, row in zip(STAT_MEANS, dev):
        _check_moments(row, lam)
        if lam <= 1e6:
            assert np.all(row == np.floor(row)) and row.min() >= 0
        if lam < 12:
            _check_pmf(row, lam, int(lam + 4 * math.sqrt(lam)) + 2)


def test_jax_path_under_jit_and_special_means():
    m = np.array([0.0, -1.0, np.nan, 1e-9, 3.0, 30.0, 2e7], np.float32)
    key = jax.random.key(7)
    eager = np.asarray(poisson_deviates_jax(key, m))
    jitted = np.asarray(jax.jit(poisson_deviates_jax)(key, m))
    for d in (eager, jitted):
        assert d[0] == 0 and d[1] == 0 and np.isnan(d[2])
        assert d[5] == np.floor(d[5]) and abs(d[6] - 2e7) < 6 * math.sqrt(2e7)
    # means below the inversion limit take one uniform each, under jit or not: the same
    # draws (the brighter ones are listed differently under jit, so may differ)
    np.testing.assert_array_equal(eager[:5], jitted[:5])
    assert eager[4] == 8.0 and eager[3] == 0.0


def test_jax_noise_image_semantics():
    img = np.zeros((40, 30), np.float32)
    img[10, 10] = 2e6          # Gaussian regime: always overloads
    img[11, 10] = 70000.0      # overload (Poisson regime)
    img[12, 10] = np.nan       # C: NaN -> pixel 0
    img[20:25, 5:8] = 4.0
    out, photons, overloads = noise_image_jax(img, jax.random.key(3), adc_offset=-3.5,
                                              roi=(2, 27, 1, 35))
    assert out.dtype == np.uint16 and out.shape == img.shape
    assert not out[0].any() and not out[36:].any() and not out[:, :2].any() and not out[:, 28:].any()
    assert out[10, 10] == 65535 and out[11, 10] == 65535 and overloads == 2
    assert out[12, 10] == 0
    assert out[2, 2] == 65533                          # deviate 0 + (-3.5) wraps
    assert np.isnan(photons)                            # C's sum is NaN too
    out2, photons2, overloads2 = noise_image_jax(np.nan_to_num(img), jax.random.key(3))
    assert overloads2 == 2 and photons2 > 2e6
    assert out2[0, 0] == 40                            # default adc offset


def test_jax_core_is_jittable_with_fixed_shapes():
    img = np.full((16, 16), 2.0, np.float32)
    img[3, 3] = 500.0
    visited = np.ones(img.shape, bool)
    idx = np.array([3 * 16 + 3, 256], np.int32)         # padded with size
    pixels, total, over = noise_core_jax(jax.random.key(0), img, 40.0, visited, idx)
    assert pixels.shape == (16, 16) and int(over) == 0
    # the same draws as poisson_deviates_jax with the same key, plus the ADC offset
    dev = np.asarray(poisson_deviates_jax(jax.random.key(0), img))
    np.testing.assert_array_equal(np.asarray(pixels), (dev + 40).astype(np.uint16))
    assert float(total) == float(dev.astype(np.float64).sum())
    # and Poisson numbers: within 4 sigma of the means 500 and 1010
    assert abs(int(pixels[3, 3]) - 40 - 500) < 4 * math.sqrt(500)
    assert abs(float(total) - (2.0 * 255 + 500)) < 4 * math.sqrt(1010)
