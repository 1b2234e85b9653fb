"""nbjax.physics.rng against numbers printed by an instrumented build of nanoBragg.c.

The reference values below were obtained by compiling the released nanoBragg.c
(gcc 12, -O3, x86-64) with its own ran1 / mosaic_rotation_umat / umat2misset and
printing their results (floats with %.9g, doubles with %.17g: both round-trip
exactly).
"""

import math

import numpy as np
import pytest

from nbjax.constants import RTD
from nbjax.geometry.rotation import umat2misset
from nbjax.physics.ran1 import CStatics, Ran1State, ran1
from nbjax.physics.rng import mosaic_domains, mosaic_rotation_umat, powf, random_misset

# first ten ran1() values of a fresh process, and the seed variable afterwards
RAN1_REF = {
    -7: ("0.1228365 0.428469986 0.643754244 0.467895657 0.688501418 0.0538873039 "
         "0.937261701 0.684514523 0.683909535 0.90896976", 117853558),
    -1: ("0.415999353 0.091964893 0.75641048 0.52970022 0.930436492 0.383502066 "
         "0.653918982 0.0668422356 0.722660422 0.671149373", 937186357),
    -12345678: ("0.765989304 0.023453664 0.589726627 0.535101593 0.982231438 0.693016112 "
                "0.328146875 0.29564169 0.849917889 0.592261791", 1481110328),
    -99: ("0.872106552 0.26556927 0.457605928 0.165948987 0.456849664 0.582227647 "
          "0.990498543 0.250344187 0.543379664 0.308687657", 439652522),
}
# a fresh process treats seed 0 and any positive seed like -1 (idum := 1)
RAN1_REF[0] = RAN1_REF[-1]
RAN1_REF[5] = RAN1_REF[-1]


def _f32(text):
    return np.array([np.float32(v) for v in text.split()], dtype=np.float32)


@pytest.mark.parametrize("seed", sorted(RAN1_REF))
def test_ran1_first_values_bit_exact(seed):
    values, final_idum = RAN1_REF[seed]
    state = Ran1State(seed)
    got = np.array([ran1(state) for _ in range(10)], dtype=np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), _f32(values).view(np.uint32))
    assert state.idum == final_idum


def test_compiled_ran1_equals_python_draws():
    """noise.ran1_many (ran1_step compiled by numba, the noise stream's generator) against ran1 in Python."""
    from nbjax.physics.noise import ran1_many

    a, b = Ran1State(-4242), Ran1State(-4242)
    box = np.array([a.idum], dtype=np.int64)
    compiled = ran1_many(box, a.shared.ints, 1000)
    single = np.array([ran1(b) for _ in range(1000)], dtype=np.float32)
    np.testing.assert_array_equal(compiled.view(np.uint32), single.view(np.uint32))
    assert int(box[0]) == b.idum
    np.testing.assert_array_equal(a.shared.ints, b.shared.ints)
    assert compiled.min() > 0 and compiled.max() < 1
    np.testing.assert_array_equal(ran1(Ran1State(-4242), 1000), single)


def test_ran1_shared_table_positive_seed_continues():
    # A positive seed does not reload the table: its stream depends on what the
    # previous caller left there; a negative one starts afresh.
    shared = CStatics()
    first = Ran1State(-7, shared)
    ran1(first, 3)
    cont = first.stream(5)
    x = ran1(cont, 5)
    fresh = Ran1State(5)          # fresh process: 5 behaves like -1
    y = ran1(fresh, 5)
    assert not np.array_equal(x, y)
    again = first.stream(-1)
    np.testing.assert_array_equal(ran1(again, 5), y)


def test_state_copy_is_independent():
    s = Ran1State(-3)
    ran1(s, 4)
    snap = s.copy()
    a = ran1(s, 6)
    b = ran1(snap, 6)
    np.testing.assert_array_equal(a, b)
    assert s.shared is not snap.shared


def test_fresh_statics():
    """Fresh statics are a fresh C process's: a *positive* seed still loads the shuffle
    table (iy = 0 forces it), as C does.  C values (instrumented build): ran1 with
    idum = 5 in a fresh process gives 0.415999353, 0.091964893, 0.75641048 and leaves
    idum = 1551901393, iy = 1624379149; with idum = -5 it gives 0.172860548,
    0.680409431, 0.917078257, 0.91751039, 0.766779184 and idum = 553176484,
    iy = 1646645739."""
    st = CStatics()
    assert st.iy == 0 and not st.iv.any()
    assert st.poidev_oldm == np.float32(-1.0)
    assert st.gaussdev_spare is None
    state = Ran1State(5, st)
    got = [ran1(state) for _ in range(3)]
    np.testing.assert_array_equal(np.array(got, np.float32), np.array([0.415999353, 0.091964893, 0.75641048], np.float32))
    assert state.idum == 1551901393 and st.iy == 1624379149 and st.iv.all()
    state = Ran1State(-5)
    np.testing.assert_array_equal(ran1(state, 5), np.array([0.172860548, 0.680409431, 0.917078257, 0.91751039,
                                                            0.766779184], np.float32))
    assert state.idum == 553176484 and state.shared.iy == 1646645739
    with pytest.raises(ValueError):
        CStatics(np.zeros(3, np.int64), np.zeros(5, np.float32))


def test_seed_range():
    with pytest.raises(ValueError):
        ran1(Ran1State(-(2**40)))
    # -seed -2147483648 wraps to -2**31 in C; C's ran1 then starts from 2**31, which the
    # generator's modulus 2**31 - 1 reduces to 1 -- the stream of any positive seed
    # (C, instrumented build: 0.415999353 0.091964893 0.75641048 0.52970022
    # 0.930436492, then idum = 1399125485, iy = 1998097157).
    expected = np.array([0.415999353, 0.091964893, 0.75641048, 0.52970022, 0.930436492], np.float32)
    for seed in (-(2**31), 2**31):
        state = Ran1State(seed)
        np.testing.assert_array_equal(ran1(state, 5), expected)
        assert state.idum == 1399125485 and state.shared.iy == 1998097157


# C's powf(x, 1.0/3.0) (glibc 2.36, x86-64), as bit patterns: x -> result.  The first two
# differ from pow in double rounded to float; the third from x**(1/3) with the exponent
# kept in double.
POWF_ONE_THIRD = {0x3ED50190: 0x3F3F1BD9, 0x3F152B4D: 0x3F55D282, 0x3727C5AC: 0x3CB07DC4,
                  0x3F400000: 0x3F689768}


def test_powf_is_single_precision():
    third = np.float32(1.0 / 3.0)
    for x_bits, r_bits in POWF_ONE_THIRD.items():
        x = np.array([x_bits], np.uint32).view(np.float32)[0]
        r = powf(x, third)
        assert isinstance(r, np.float32)
        assert int(np.array([r], np.float32).view(np.uint32)[0]) == r_bits, hex(x_bits)


# -mosaic 1.0 -mosaic_domains 6 -mosaic_seed 12345: domains 1..3
MOSAIC_1DEG_SEED12345 = [
    [0.99997738057729257, -0.0039554903419944023, -0.0054398924558366219,
     0.0039457433801941867, 0.99999059312805305, -0.0018013230088754619,
     0.0054469663992292947, 0.0017798178443423345, 0.99998358126795595],
    [0.9999140337876008, -0.0025826095128586258, -0.012855160936871623,
     0.0024834986631032726, 0.99996711782836489, -0.0077198119422258382,
     0.012874675491022763, 0.007687222524232048, 0.99988756834999404],
    [0.99989393620809908, -0.01408844708729318, -0.0036921528872026796,
     0.014115609797425991, 0.99987271156925461, 0.0074370840517650758,
     0.0035869059537085878, -0.0074884122358980345, 0.99996552829978325],
]
# -mosaic 0.5 -mosaic_domains 4, default mosaic_seed (-12345678): domains 1..3
MOSAIC_HALFDEG_DEFAULT = [
    [0.99996592089784464, -0.0079751680914580177, 0.0021339486494309119,
     0.0079761872189555976, 0.99996807949662869, -0.0004694946988297568,
     -0.0021301362335746331, 0.00048649947281547405, 0.99999761291609557],
    [0.9999914359922164, 0.0028416441030047652, 0.0030088205358383916,
     -0.0028584857919053165, 0.99998018943075295, 0.0056080125724695118,
     -0.0029928249535347059, -0.0056165652161582636, 0.99997974839192127],
    [0.99997328100466476, -0.00099578238670063046, 0.0072419399475676565,
     0.0010300984016003182, 0.99998825298719207, -0.0047363260979907647,
     -0.0072371385263002878, 0.0047436594588803225, 0.99996256005957007],
]


@pytest.mark.parametrize(
    "spread_deg, n, seed, ref",
    [(1.0, 6, -12345, MOSAIC_1DEG_SEED12345), (0.5, 4, -12345678, MOSAIC_HALFDEG_DEFAULT)],
)
def test_mosaic_domains_match_c(spread_deg, n, seed, ref):
    umats = mosaic_domains(spread_deg / RTD, n, seed).umats
    assert umats.shape == (n, 3, 3) and umats.dtype == np.float64
    np.testing.assert_array_equal(umats[0], np.eye(3))
    got = umats[1:4].reshape(3, 9)
    assert np.max(np.abs(got - np.array(ref))) <= 1e-15
    for u in umats:
        np.testing.assert_allclose(u @ u.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(u) == pytest.approx(1.0, abs=1e-12)


def test_mosaic_domain0_consumes_draws():
    # domain 0 is drawn (then replaced): domain 1 equals the 2nd rotation of the stream
    st = Ran1State(-12345)
    mosaic_rotation_umat(1.0 / RTD, st)
    second = mosaic_rotation_umat(1.0 / RTD, st)
    np.testing.assert_array_equal(second, mosaic_domains(1.0 / RTD, 2, -12345).umats[1])
    assert mosaic_domains(0.0, 1, -12345678).umats.tolist() == [np.eye(3).tolist()]


def test_random_misset_matches_c():
    angles = random_misset(-99)
    ref = [1.5420571530957339, -0.2247709633282127, -1.3031683150299234]
    assert np.max(np.abs(angles - ref)) <= 1e-15
    # what C prints: "random orientation misset angles: %f %f %f deg"
    assert " ".join(f"{a * RTD:f}" for a in angles) == "88.353367 -12.878428 -74.666044"
    umat = mosaic_rotation_umat(90.0, Ran1State(-99))
    ref_umat = [0.25779257832139268, -0.031203630344667721, -0.96569628766798188,
                -0.94014153910890852, 0.22245876105123194, -0.25815883884438928,
                0.22288309268390238, 0.97444262688208794, 0.028012388523558279]
    assert np.max(np.abs(umat.reshape(9) - ref_umat)) <= 1e-15


def test_chain_misset_mosaic_noise_shared_table():
    # C order misset -> mosaic -> noise on one process; positive seeds continue
    # the table the previous stage left (reference: instrumented C, same chain)
    from nbjax.physics.noise import poisson_deviates_c

    shared = CStatics()
    random_misset(-99, shared)
    umats = mosaic_domains(1.0 / RTD, 2, 7, shared).umats       # -mosaic_seed -7
    ref_dom1 = [0.99996978019139426, -0.0074113751949966434, -0.0023473861407260137,
                0.0074210543565348449, 0.99996388580460249, 0.0041418641693239241,
                0.002316604457398654, -0.0041591590831275759, 0.99998866730553959]
    assert np.max(np.abs(umats[1].reshape(9) - ref_dom1)) <= 1e-15
    dev = poisson_deviates_c(np.full(4, 2e6, np.float32), -3, shared)
    np.testing.assert_array_equal(dev, _f32("2000191.12 2001306 2000679 2002034.12"))

    shared = CStatics()
    random_misset(-99, shared)
    umats = mosaic_domains(1.0 / RTD, 3, -12345, shared).umats
    assert np.max(np.abs(umats[1:3].reshape(2, 9) - MOSAIC_1DEG_SEED12345[:2])) <= 1e-15
    dev = poisson_deviates_c(np.full(8, 5.0, np.float32), 5, shared)  # continues the table
    np.testing.assert_array_equal(dev, _f32("3 5 5 4 4 2 5 2"))


def _xyz_rotation(rx, ry, rz):
    cx, sx, cy, sy, cz, sz = (math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry),
                              math.cos(rz), math.sin(rz))
    rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


@pytest.mark.parametrize("angles", [(0.1, -0.4, 1.3), (3.0, 1.2, -2.9), (-0.05, 0.0, 0.7)])
def test_umat2misset_inverts_xyz_rotation(angles):
    got = umat2misset(_xyz_rotation(*angles))
    np.testing.assert_allclose(got, angles, atol=1e-12)


def test_umat2misset_degenerate_inputs():
    np.testing.assert_array_equal(umat2misset(np.zeros(9)), [0.0, 0.0, 0.0])
    # a single non-zero row: the other rows come from the identity / cross products
    only_x = np.zeros((3, 3))
    only_x[0] = [2.0, 0.0, 0.0]
    np.testing.assert_array_equal(umat2misset(only_x), [0.0, 0.0, 0.0])
    # scaled rows are normalised first
    np.testing.assert_allclose(umat2misset(3.0 * _xyz_rotation(0.2, 0.3, 0.4)),
                               [0.2, 0.3, 0.4], atol=1e-12)
    # u_zx = -1: C's special branch (rotx = pi, roty = pi/2)
    gimbal = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    got = umat2misset(gimbal)
    assert got[0] == pytest.approx(math.pi) and got[1] == pytest.approx(math.pi / 2)
    assert got[2] == pytest.approx(math.atan2(0.0, -1.0))
