"""nanoBragg's command line, read exactly as nanoBragg.c reads it.

nanoBragg.c walks its argument list once and tests every argument that starts
with ``-`` against each option in turn with ``strstr`` -- a *substring* match --
so an argument can trigger more than one option when one option's name
starts another's.  Those accidents change the image and are part of what "the
same flags, the same numbers" means:

* ``-twotheta_axis x y z`` also sets the two-theta *angle* to ``x`` degrees
  (and the SAMPLE pivot) -- usually 0, which undoes an earlier ``-twotheta``;
* ``-misset_seed S`` also sets the misset angles to ``(S, next, next-but-one)``
  degrees (``atof`` of whatever follows, 0 for a word) whenever three more
  arguments follow -- which replaces an earlier ``-misset random``;
* ``-printout_pixel`` also turns on ``-printout``;
* ``-pix0_vector_mm`` is ``-pix0_vector`` (values not converted from mm).

:func:`parse` reproduces this scan rule by rule (same order, same
``strstr``/``strlen`` tests, the same early ``continue`` after ``-Na``, ``-N``,
``-oversample_thick`` ...) and returns the values of nanoBragg's variables in a
:class:`CSettings`.  Where nanoBragg would silently accept a mistake, nbjax
refuses it: an argument that is exactly the name of an option must have all its
values, and they must be numbers where numbers are expected; ``-cell`` needs all
six constants; an argument that matches no option (the error names the nearest
option names), or a stray value (a value after a switch: the error says the
switch takes none), is an error.

nanoBragg.c itself skips such arguments, and it reads an option only when
enough arguments follow it (``-curved_det`` only when any argument follows).
With ``c_parity=True`` (``--c-parity``) the scan does the same: an unknown
option, a stray value, and an option at the end of the list without all its
values are skipped, each with a warning in :attr:`CSettings.notes`, and an
incomplete ``-cell`` is read as far as it goes.  The options nanoBragg.c reads
past the end of its list (:data:`READS_PAST_END`; it crashes) are refused in
both modes, and so are values that are not numbers.

Every value is also checked for its range (:data:`LIMITS`): lengths,
wavelengths and pixel sizes positive, counts whole and not negative, no NaN or
infinity, direction vectors not zero (nor so long or short that their squared
length over- or underflows), seeds within a C ``int``; and the
settings as a whole (:func:`check_settings`, also after the ``-img``/``-mask``
headers): at most :data:`MAX_PIXELS` detector pixels, and no set of step counts
that would make the set-up itself run for minutes (at most :data:`MAX_COUNT`
steps of any kind, :data:`MAX_SOURCES` sources).  Values of accidental
(substring) matches are read with C's ``atof``/``atoi`` leniency, as nanoBragg
reads them (and range-checked too).  Every problem raises
:class:`~nbjax.errors.InputError`.

Options nbjax adds use a double dash (``--c-parity``); they are separated out
by the command-line front end before this scan.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

from nbjax.constants import DEFAULT_FLUENCE, HC_EV_A, RTD
from nbjax.errors import InputError
from nbjax.io.numbers import c_atof, c_atoi, is_number, parse_float, parse_int

NAN = float("nan")


@dataclasses.dataclass
class CSettings:
    """nanoBragg.c's variables after its command-line scan (its units: m, rad).

    Defaults are nanoBragg's.  NaN means "not given".
    """

    imginfilename: str | None = None
    maskfilename: str | None = None
    Na: float = 1.0
    Nb: float = 1.0
    Nc: float = 1.0
    user_cell: bool = False
    cell: list = dataclasses.field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # Å, rad
    misset_mode: int = 0          # 0 none, -1 random, 1 angles
    misset_rad: list = dataclasses.field(default_factory=lambda: [0.0, 0.0, 0.0])
    sample_x: float = 0.0
    sample_y: float = 0.0
    sample_z: float = 0.0
    density: float = 1.0e6
    molecular_weight: float = 18.0
    Xbeam: float = NAN
    Ybeam: float = NAN
    Xclose: float = NAN
    Yclose: float = NAN
    ORGX: float = NAN
    ORGY: float = NAN
    pivot: str = "beam"
    convention: str = "mosflm"
    fdet_vector: list = dataclasses.field(default_factory=lambda: [0.0, 0.0, 1.0])
    sdet_vector: list = dataclasses.field(default_factory=lambda: [0.0, -1.0, 0.0])
    odet_vector: list = dataclasses.field(default_factory=lambda: [1.0, 0.0, 0.0])
    beam_vector: list = dataclasses.field(default_factory=lambda: [1.0, 0.0, 0.0])
    polar_vector: list = dataclasses.field(default_factory=lambda: [0.0, 0.0, 1.0])
    spindle_vector: list = dataclasses.field(default_factory=lambda: [0.0, 0.0, 1.0])
    twotheta_axis: list = dataclasses.field(default_factory=lambda: [0.0, 0.0, -1.0])
    pix0_vector: list | None = None
    distance: float = 100.0e-3
    close_distance: float = NAN
    detector_thick: float = 0.0
    detector_mu: float = -1.0
    detector_thicksteps: int = -1
    detector_thickstep: float = -1.0
    detector_twotheta: float = 0.0
    detector_rotx: float = 0.0
    detector_roty: float = 0.0
    detector_rotz: float = 0.0
    detsize_f: float = 102.4e-3
    detsize_s: float = 102.4e-3
    fpixels: int = 0
    spixels: int = 0
    curved_detector: bool = False
    pixel_size: float = 0.1e-3
    point_pixel: bool = False
    polarization: float = 0.0
    nopolar: bool = False
    oversample_thick: bool = False
    oversample_polar: bool = False
    oversample_omega: bool = False
    oversample: int = -1
    roi: list = dataclasses.field(default_factory=lambda: [-1, -1, -1, -1])
    lambda0: float = 1.0e-10
    fluence: float = DEFAULT_FLUENCE
    flux: float = 0.0
    exposure: float = 1.0
    beamsize: float = 1e-4
    mosaic_spread: float = -1.0
    mosaic_domains: int = -1
    dispersion: float = 0.0
    dispsteps: int = -1
    dispstep: float = -1.0
    hdivrange: float = -1.0
    vdivrange: float = -1.0
    hdivstep: float = -1.0
    vdivstep: float = -1.0
    hdivsteps: int = -1
    vdivsteps: int = -1
    round_div: bool = True
    adc_offset: float = 40.0
    phi0: float = 0.0
    osc: float = -1.0
    phistep: float = -1.0
    phisteps: int = -1
    dmin: float = 0.0
    matfilename: str | None = None
    hklfilename: str | None = None
    default_F: float = 0.0
    dumpfilename: str = "Fdump.bin"
    stolfilename: str | None = None
    stoloutfilename: str | None = None
    sourcefilename: str | None = None
    floatfilename: str = "floatimage.bin"
    intfilename: str = "intimage.img"
    pgmfilename: str = "image.pgm"
    noisefilename: str = "noiseimage.img"
    calculate_noise: bool = True
    write_pgm: bool = True
    intfile_scale: float = 0.0
    pgm_scale: float = 0.0
    coherent: bool = False
    printout: bool = False
    printout_pixel: tuple | None = None
    progress_meter: bool = True
    interpolate: int = 2          # 2 = automatic
    xtal_shape: str = "square"
    fudge: float = 1.0
    seed: int | None = None       # None = nanoBragg's time-based default
    mosaic_seed: int = -12345678
    misset_seed: int | None = None
    water_size: float = 0.0
    # bookkeeping: which options the user named, and notes to show
    given: set = dataclasses.field(default_factory=set)
    notes: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class _Rule:
    names: tuple            # exact option names this rule is documented under
    match: Callable         # argument -> bool (nanoBragg's strstr/strlen test)
    kinds: str              # one letter per value: f float, i int, s string
    apply: Callable         # (settings, values) -> None
    stop: bool = False      # nanoBragg 'continue's after this option


def _has(*needles):
    return lambda arg: any(n in arg for n in needles)


def _has_len(needle, length):
    return lambda arg: needle in arg and len(arg) == length


def _exact(*names):
    return lambda arg: arg in names


def _set(field, convert=lambda v: v):
    def apply(st, values):
        setattr(st, field, convert(values[0]))
    return apply


def _vector(field):
    def apply(st, values):
        st.convention = "custom"
        setattr(st, field, [values[0], values[1], values[2]])
    return apply


def _pivot_value(st, values):
    if "sample" in values[0]:
        st.pivot = "sample"
    if "beam" in values[0]:
        st.pivot = "beam"


def _detector_abs(st, values):
    text, number = values[0], values[1]
    if "inf" in text or number == 0.0:
        st.detector_thick = 0.0
        st.detector_mu = 0.0
    elif number * 1e-6 == 0.0:  # a denormal depth in micrometres underflows in metres
        raise InputError(f"-detector_abs: an attenuation depth of {text} um is too small to be a length")
    else:
        st.detector_mu = 1.0 / (number * 1e-6)


def _convention(name, pivot):
    def apply(st, values):
        st.convention = name
        st.pivot = pivot
    return apply


def _rule(names, match, kinds, apply, stop=False):
    return _Rule(tuple(names), match, kinds, apply, stop)


def _sets(**fields):
    def apply(st, values):
        for k, v in fields.items():
            setattr(st, k, v(values) if callable(v) else v)
    return apply


_RULES = [
    _rule(["-Na"], _has("-Na"), "i", _set("Na", float), stop=True),
    _rule(["-Nb"], _has("-Nb"), "i", _set("Nb", float), stop=True),
    _rule(["-Nc"], _has("-Nc"), "i", _set("Nc", float), stop=True),
    _rule(["-N"], _exact("-N"), "i", _sets(Na=lambda v: float(v[0]), Nb=lambda v: float(v[0]), Nc=lambda v: float(v[0])), stop=True),
    # -cell and -misset are special-cased in parse()
    _rule(["-samplesize", "-sample_size"], _has("-samplesize", "-sample_size"), "f",
          _sets(sample_x=lambda v: v[0] / 1000, sample_y=lambda v: v[0] / 1000, sample_z=lambda v: v[0] / 1000)),
    _rule(["-sample_thick", "-sample_x"], _has("-sample_thick", "-sample_x"), "f", _set("sample_x", lambda v: v / 1000)),
    _rule(["-sample_width", "-sample_y", "-width"], _has("-sample_width", "-sample_y", "-width"), "f", _set("sample_y", lambda v: v / 1000)),
    _rule(["-sample_height", "-sample_z", "-height"], _has("-sample_heigh", "-sample_z", "-heigh"), "f", _set("sample_z", lambda v: v / 1000)),
    _rule(["-xtalsize", "-xtal_size"], _has("-xtalsize", "-xtal_size"), "f",
          _sets(sample_x=lambda v: v[0] / 1000, sample_y=lambda v: v[0] / 1000, sample_z=lambda v: v[0] / 1000)),
    _rule(["-xtal_thick", "-xtal_x"], _has("-xtal_thick", "-xtal_x"), "f", _set("sample_x", lambda v: v / 1000)),
    _rule(["-xtal_width", "-xtal_y", "-width"], _has("-xtal_width", "-xtal_y", "-width"), "f", _set("sample_y", lambda v: v / 1000)),
    _rule(["-xtal_height", "-xtal_z", "-height"], _has("-xtal_heigh", "-xtal_z", "-heigh"), "f", _set("sample_z", lambda v: v / 1000)),
    _rule(["-density", "-sample_density"], _has("-density", "-sample_den"), "f", _set("density", lambda v: v * 1e6)),
    _rule(["-MW", "-molecular_weight"], lambda a: a == "-MW" or "-molec" in a, "f", _set("molecular_weight")),
    _rule(["-Xbeam"], _has("-Xbeam"), "f", _sets(Xbeam=lambda v: v[0] / 1000.0, pivot="beam")),
    _rule(["-Ybeam"], _has("-Ybeam"), "f", _sets(Ybeam=lambda v: v[0] / 1000.0, pivot="beam")),
    _rule(["-Xclose"], _has("-Xclose"), "f", _sets(Xclose=lambda v: v[0] / 1000.0, pivot="sample")),
    _rule(["-Yclose"], _has("-Yclose"), "f", _sets(Yclose=lambda v: v[0] / 1000.0, pivot="sample")),
    _rule(["-ORGX"], _has("-ORGX"), "f", _sets(ORGX=lambda v: v[0], pivot="sample")),
    _rule(["-ORGY"], _has("-ORGY"), "f", _sets(ORGY=lambda v: v[0], pivot="sample")),
    _rule(["-pivot"], _has("-pivot"), "s", _pivot_value),
    _rule(["-mosflm"], _has("-mosflm"), "", _convention("mosflm", "beam")),
    _rule(["-xds"], _has("-xds"), "", _convention("xds", "sample")),
    _rule(["-adxv"], _has("-adxv"), "", _convention("adxv", "beam")),
    _rule(["-denzo"], _has("-denzo"), "", _convention("denzo", "beam")),
    _rule(["-dials"], _has("-dials"), "", _convention("dials", "beam")),
    _rule(["-fdet_vector"], _has("-fdet_vector"), "fff", _vector("fdet_vector")),
    _rule(["-sdet_vector"], _has("-sdet_vector"), "fff", _vector("sdet_vector")),
    _rule(["-odet_vector"], _has("-odet_vector"), "fff", _vector("odet_vector")),
    _rule(["-beam_vector"], _has("-beam_vector"), "fff", _vector("beam_vector")),
    _rule(["-polar_vector"], _has("-polar_vector"), "fff", _vector("polar_vector")),
    _rule(["-spindle_axis"], _has("-spindle_axis"), "fff", _vector("spindle_vector")),
    _rule(["-twotheta_axis"], _has("-twotheta_axis"), "fff", _vector("twotheta_axis")),
    _rule(["-pix0_vector", "-pix0_vector_mm"], _has("-pix0_vector"), "fff", _vector("pix0_vector")),
    _rule(["-distance"], _has("-distance"), "f", _sets(distance=lambda v: v[0] / 1000.0, pivot="beam")),
    _rule(["-close_distance"], _has("-close_distance"), "f", _sets(close_distance=lambda v: v[0] / 1000.0, pivot="sample")),
    _rule(["-detector_abs", "-detector_absorb"], _has("-detector_abs"), "a", _detector_abs),
    _rule(["-detector_thick"], _has_len("-detector_thick", 15), "f", _set("detector_thick", lambda v: v * 1e-6)),
    _rule(["-detector_thicksteps"], _has("-detector_thicksteps"), "i", _set("detector_thicksteps")),
    _rule(["-thicksteps"], _has("-thicksteps"), "i", _set("detector_thicksteps")),
    _rule(["-twotheta"], _has("-twotheta"), "f", _sets(detector_twotheta=lambda v: v[0] / RTD, pivot="sample")),
    _rule(["-detector_rotx"], _has("-detector_rotx"), "f", _set("detector_rotx", lambda v: v / RTD)),
    _rule(["-detector_roty"], _has("-detector_roty"), "f", _set("detector_roty", lambda v: v / RTD)),
    _rule(["-detector_rotz"], _has("-detector_rotz"), "f", _set("detector_rotz", lambda v: v / RTD)),
    _rule(["-detsize"], _has_len("-detsize", 8), "f", _sets(detsize_f=lambda v: v[0] / 1000.0, detsize_s=lambda v: v[0] / 1000.0)),
    _rule(["-detsize_f"], _has("-detsize_f"), "f", _set("detsize_f", lambda v: v / 1000.0)),
    _rule(["-detsize_s"], _has("-detsize_s"), "f", _set("detsize_s", lambda v: v / 1000.0)),
    _rule(["-detpixels"], _has_len("-detpixels", 10), "i", _sets(fpixels=lambda v: v[0], spixels=lambda v: v[0])),
    _rule(["-detpixels_f", "-detpixels_x"], _has("-detpixels_f", "-detpixels_x"), "i", _set("fpixels")),
    _rule(["-detpixels_s", "-detpixels_y"], _has("-detpixels_s", "-detpixels_y"), "i", _set("spixels")),
    # nanoBragg only honours -curved_det when another argument follows it
    _rule(["-curved_det"], _has("-curved_det"), "-", _sets(curved_detector=True)),
    _rule(["-pixel"], _has("-pixel"), "f", _set("pixel_size", lambda v: v / 1000.0)),
    _rule(["-point_pixel"], _has("-point_pixel"), "", _sets(point_pixel=True)),
    _rule(["-polar"], _has_len("-polar", 6), "f", _sets(polarization=lambda v: v[0], nopolar=False)),
    _rule(["-nopolar"], _has("-nopolar"), "", _sets(nopolar=True)),
    _rule(["-oversample_thick"], _has("-oversample_thick"), "", _sets(oversample_thick=True), stop=True),
    _rule(["-oversample_polar"], _has("-oversample_polar"), "", _sets(oversample_polar=True), stop=True),
    _rule(["-oversample_omega"], _has("-oversample_omega"), "", _sets(oversample_omega=True), stop=True),
    _rule(["-oversample"], _has("-oversample"), "i", _set("oversample")),
    _rule(["-roi"], _has("-roi"), "iiii", lambda st, v: setattr(st, "roi", list(v))),
    _rule(["-lambda", "-wavelength"], _has("-lambda", "-wave"), "f", _set("lambda0", lambda v: v / 1.0e10)),
    _rule(["-energy"], _has("-energy"), "f", _set("lambda0", lambda v: (HC_EV_A / v) / 1.0e10 if v != 0 else math.inf)),
    _rule(["-fluence"], _has("-fluence"), "f", _set("fluence")),
    _rule(["-flux"], _has("-flux"), "f", _set("flux")),
    _rule(["-exposure"], _has("-exposure"), "f", _set("exposure")),
    _rule(["-beamsize"], _has("-beamsize"), "f", _set("beamsize", lambda v: v / 1000)),
    _rule(["-mosaic", "-mosaicity", "-mosaic_spread"],
          lambda a: ("-mosaic" in a and len(a) == 7) or "-mosaici" in a or "-mosaic_spr" in a,
          "f", _set("mosaic_spread", lambda v: v / RTD)),
    _rule(["-mosaic_domains", "-mosaic_dom"], _has("-mosaic_dom"), "i", _set("mosaic_domains")),
    _rule(["-dispersion"], _has("-dispersion"), "f", _set("dispersion", lambda v: v / 100.0)),
    _rule(["-dispsteps"], _has("-dispsteps"), "i", _set("dispsteps")),
    _rule(["-divergence"], _has("-divergence"), "f", _sets(hdivrange=lambda v: v[0] / 1000.0, vdivrange=lambda v: v[0] / 1000.0)),
    _rule(["-hdivrange"], _has("-hdivrange"), "f", _set("hdivrange", lambda v: v / 1000.0)),
    _rule(["-vdivrange"], _has("-vdivrange"), "f", _set("vdivrange", lambda v: v / 1000.0)),
    _rule(["-hdivstep"], _has_len("-hdivstep", 9), "f", _set("hdivstep", lambda v: v / 1000.0)),
    _rule(["-hdivsteps"], _has("-hdivsteps"), "i", _set("hdivsteps")),
    _rule(["-vdivstep"], _has_len("-vdivstep", 9), "f", _set("vdivstep", lambda v: v / 1000.0)),
    _rule(["-vdivsteps"], _has("-vdivsteps"), "i", _set("vdivsteps")),
    _rule(["-divsteps"], _has("-divsteps"), "i", _sets(hdivsteps=lambda v: v[0], vdivsteps=lambda v: v[0])),
    _rule(["-round_div"], _has("-round_div"), "", _sets(round_div=True)),
    _rule(["-square_div"], _has("-square_div"), "", _sets(round_div=False)),
    _rule(["-adc"], _has("-adc"), "f", _set("adc_offset")),
    _rule(["-phi"], _has_len("-phi", 4), "f", _set("phi0", lambda v: v / RTD)),
    _rule(["-osc"], _has("-osc"), "f", _set("osc", lambda v: v / RTD)),
    _rule(["-phistep"], _has_len("-phistep", 8), "f", _set("phistep", lambda v: v / RTD)),
    _rule(["-phisteps"], _has("-phisteps"), "i", _set("phisteps")),
    _rule(["-dmin"], _has("-dmin"), "f", _set("dmin", lambda v: v * 1e-10)),
    _rule(["-mat"], _has("-mat"), "s", _set("matfilename")),
    _rule(["-hkl"], _has("-hkl"), "s", _set("hklfilename")),
    _rule(["-default_F"], _has("-default_F"), "f", _set("default_F")),
    _rule(["-dump"], _has("-dump"), "s", _set("dumpfilename")),
    _rule(["-img"], _has("-img"), "s", _set("imginfilename")),
    _rule(["-stolout"], lambda a: "-stolout" in a and len(a) > 7, "s", _set("stoloutfilename")),
    _rule(["-stol"], _has_len("-stol", 5), "s", _set("stolfilename")),
    _rule(["-4stol"], _has_len("-4stol", 6), "s", _set("stolfilename")),
    _rule(["-Q"], _has_len("-Q", 2), "s", _set("stolfilename")),
    _rule(["-sourcefile"], _has("-sourcefile"), "s", _set("sourcefilename")),
    _rule(["-floatfile", "-floatimage"], _has("-floatfile", "-floatimage"), "s", _set("floatfilename")),
    _rule(["-intfile", "-intimage"], _has("-intfile", "-intimage"), "s", _set("intfilename")),
    _rule(["-pgmfile", "-pgmimage"], _has("-pgmfile", "-pgmimage"), "s", _sets(pgmfilename=lambda v: v[0], write_pgm=True)),
    _rule(["-noisefile", "-noiseimage"], _has("-noisefile", "-noiseimage"), "s", _sets(noisefilename=lambda v: v[0], calculate_noise=True)),
    _rule(["-nonoise"], _has("-nonoise"), "", _sets(calculate_noise=False)),
    _rule(["-nopgm"], _has("-nopgm"), "", _sets(write_pgm=False)),
    _rule(["-scale"], _has("-scale"), "f", _set("intfile_scale")),
    _rule(["-pgmscale"], _has("-pgmscale"), "f", _sets(pgm_scale=lambda v: v[0], write_pgm=True)),
    _rule(["-coherent"], _has("-coherent"), "", _sets(coherent=True)),
    _rule(["-printout"], _has("-printout"), "", _sets(printout=True)),
    _rule(["-noprogress"], _has("-noprogress"), "", _sets(progress_meter=False)),
    _rule(["-progress"], _has("-progress"), "", _sets(progress_meter=True)),
    _rule(["-interpolate"], _has("-interpolate"), "", _sets(interpolate=1)),
    _rule(["-nointerpolate"], _has("-nointerpolate"), "", _sets(interpolate=0)),
    _rule(["-round_xtal"], _has("-round_xtal"), "", _sets(xtal_shape="round")),
    _rule(["-square_xtal"], _has("-square_xtal"), "", _sets(xtal_shape="square")),
    _rule(["-gauss_xtal"], _has("-gauss_xtal"), "", _sets(xtal_shape="gauss")),
    _rule(["-tophat_spots", "-binary_spots"], _has("-binary_spots", "-tophat_spots"), "", _sets(xtal_shape="tophat")),
    _rule(["-fudge"], _has("-fudge"), "f", _set("fudge")),
    _rule(["-printout_pixel"], _has("-printout_pixel"), "ii", lambda st, v: setattr(st, "printout_pixel", (v[0], v[1]))),
    _rule(["-seed"], _has("-seed"), "i", _set("seed", lambda v: -v)),
    _rule(["-mosaic_seed"], _has("-mosaic_seed"), "i", _set("mosaic_seed", lambda v: -v)),
    _rule(["-misset_seed"], _has("-misset_seed"), "i", _set("misset_seed", lambda v: -v)),
    _rule(["-water"], _has("-water"), "f", _set("water_size", lambda v: v / 1e6)),
]

#: Every option name nbjax knows (for messages and the flag table).
OPTION_NAMES = sorted({n for r in _RULES for n in r.names} | {"-cell", "-misset", "-mask", "-img"})


# --------------------------------------------------------------------------
# value ranges

#: Most steps of one kind (phi steps, mosaic domains, divergence or dispersion
#: steps, sensor layers, oversampling) nbjax accepts, given or implied.
MAX_COUNT = 100_000
#: Most X-ray sources (divergence grid points times dispersion steps).
MAX_SOURCES = 100_000
#: Most detector pixels (16384 x 16384).
MAX_PIXELS = 2**28
_C_INT = (-(2**31), 2**31 - 1)


def _finite(x):
    return math.isfinite(x)


_ANY = ("must be a finite number", _finite)
_POSITIVE = ("must be a positive number", lambda x: _finite(x) and x > 0)
_NONNEGATIVE = ("must be a number >= 0", lambda x: _finite(x) and x >= 0)
_COUNT = (f"must be a whole number from 0 to {MAX_COUNT}", lambda x: 0 <= x <= MAX_COUNT)
_NONNEGATIVE_INT = (f"must be a whole number from 0 to {_C_INT[1]}", lambda x: 0 <= x <= _C_INT[1])
_INT = (f"must be a whole number from {_C_INT[0]} to {_C_INT[1]}", lambda x: _C_INT[0] <= x <= _C_INT[1])
_KAHN = ("must be a number from -1 to 1", lambda x: _finite(x) and -1.0 <= x <= 1.0)
_DIRECTION = "nonzero"  # three finite numbers, not all zero, whose squared length is a nonzero double

#: The range each option's values must lie in, by the option's first name.
#: Values are checked as read (in the option's own units, before conversion).
LIMITS = {
    "-Na": _NONNEGATIVE_INT, "-Nb": _NONNEGATIVE_INT, "-Nc": _NONNEGATIVE_INT, "-N": _NONNEGATIVE_INT,
    "-samplesize": _NONNEGATIVE, "-sample_thick": _NONNEGATIVE, "-sample_width": _NONNEGATIVE,
    "-sample_height": _NONNEGATIVE, "-xtalsize": _NONNEGATIVE, "-xtal_thick": _NONNEGATIVE,
    "-xtal_width": _NONNEGATIVE, "-xtal_height": _NONNEGATIVE, "-density": _ANY, "-MW": _ANY,
    "-Xbeam": _ANY, "-Ybeam": _ANY, "-Xclose": _ANY, "-Yclose": _ANY, "-ORGX": _ANY, "-ORGY": _ANY,
    "-fdet_vector": _DIRECTION, "-sdet_vector": _DIRECTION, "-odet_vector": _ANY,
    "-beam_vector": _DIRECTION, "-polar_vector": _DIRECTION, "-spindle_axis": _DIRECTION,
    "-twotheta_axis": _DIRECTION, "-pix0_vector": _ANY,
    "-distance": _POSITIVE, "-close_distance": _POSITIVE, "-detector_abs": _NONNEGATIVE,
    "-detector_thick": _NONNEGATIVE, "-detector_thicksteps": _COUNT, "-thicksteps": _COUNT,
    "-twotheta": _ANY, "-detector_rotx": _ANY, "-detector_roty": _ANY, "-detector_rotz": _ANY,
    "-detsize": _POSITIVE, "-detsize_f": _POSITIVE, "-detsize_s": _POSITIVE,
    "-detpixels": _NONNEGATIVE_INT, "-detpixels_f": _NONNEGATIVE_INT, "-detpixels_s": _NONNEGATIVE_INT,
    "-pixel": _POSITIVE, "-polar": _KAHN, "-oversample": _COUNT, "-roi": _INT,
    "-lambda": _POSITIVE, "-energy": _POSITIVE, "-fluence": _NONNEGATIVE, "-flux": _NONNEGATIVE,
    "-exposure": _NONNEGATIVE, "-beamsize": _ANY, "-mosaic": _NONNEGATIVE, "-mosaic_domains": _COUNT,
    "-dispersion": _NONNEGATIVE, "-dispsteps": _COUNT, "-divergence": _NONNEGATIVE,
    "-hdivrange": _NONNEGATIVE, "-vdivrange": _NONNEGATIVE, "-hdivstep": _NONNEGATIVE,
    "-hdivsteps": _COUNT, "-vdivstep": _NONNEGATIVE, "-vdivsteps": _COUNT, "-divsteps": _COUNT,
    "-adc": _ANY, "-phi": _ANY, "-osc": _NONNEGATIVE, "-phistep": _NONNEGATIVE, "-phisteps": _COUNT,
    "-dmin": _NONNEGATIVE, "-default_F": _ANY, "-scale": _NONNEGATIVE, "-pgmscale": _NONNEGATIVE,
    "-fudge": _ANY, "-printout_pixel": _INT, "-seed": _INT, "-mosaic_seed": _INT, "-misset_seed": _INT,
    "-water": _NONNEGATIVE,
}


def _shown(x):
    return str(x) if isinstance(x, int) else f"{x:g}"


def _check_values(rule, flag, values, strict):
    """Refuse values outside the option's range (:data:`LIMITS`)."""
    limit = LIMITS.get(rule.names[0])
    if limit is None or not values:
        return
    as_read = "" if strict else f" (read as {rule.names[0]} by nanoBragg's substring rule)"
    if rule.kinds == "a":  # -detector_abs: 'inf' or an attenuation depth >= 0
        text, number = values
        if "inf" not in text and not (_finite(number) and number >= 0):
            raise InputError(f"{flag}: the attenuation depth must be 'inf' or a number >= 0 (um), got {text!r}{as_read}")
        return
    numbers = [v for v in values if not isinstance(v, str)]
    if limit is _DIRECTION:
        if not all(_finite(v) for v in numbers):
            raise InputError(f"{flag}: the vector must be three finite numbers, got "
                             f"{' '.join(map(_shown, numbers))}{as_read}")
        if not any(numbers):
            raise InputError(f"{flag}: the vector must not be zero (it gives a direction){as_read}")
        length2 = sum(float(v) * float(v) for v in numbers)
        if not (0.0 < length2 < math.inf):
            # nanoBragg unitizes with sqrt(x²+y²+z²): that must neither underflow to 0 nor overflow
            raise InputError(f"{flag}: the vector {' '.join(map(_shown, numbers))} is too "
                             f"{'short' if length2 == 0.0 else 'long'} to give a direction "
                             f"(its squared length is not a positive finite number){as_read}")
        return
    what, ok = limit
    for v in numbers:
        if not ok(v):
            raise InputError(f"{flag}: {what}, got {_shown(v)}{as_read}")


def _header_hint(st):
    return " (on the command line or in the -img/-mask header)" if (st.imginfilename or st.maskfilename) else ""


def _resolved_count(count, span, step, flag):
    """How many steps nanoBragg's (count, range, step) rule makes; refuses too many."""
    if count <= 0 and span >= 0.0 and step > 0.0:
        if not span / step <= MAX_COUNT:
            raise InputError(f"{flag}: range / step size asks for {span / step:.3g} steps; "
                             f"nbjax allows at most {MAX_COUNT}")
    from nbjax.physics.sources import resolve_steps, sanitize

    return sanitize(*resolve_steps(count, span, step, default_span=1.0))[0]


def check_settings(st: CSettings) -> None:
    """Checks of the settings as a whole, after the scan (and after the SMV headers).

    Values that can come from an ``-img``/``-mask`` header are checked here
    again, and the numbers of steps nanoBragg would derive are bounded.
    """
    hint = _header_hint(st)
    if not (_finite(st.pixel_size) and st.pixel_size > 0):
        raise InputError(f"-pixel: the pixel size must be positive, got {st.pixel_size * 1000:g} mm{hint}")
    for count, size in ((st.fpixels, st.detsize_f), (st.spixels, st.detsize_s)):
        extent = st.pixel_size * count if count else size
        if not (_finite(extent) and _finite(st.pixel_size * st.pixel_size * 1e6)):
            raise InputError(f"-pixel: a pixel of {st.pixel_size * 1000:g} mm makes the detector size "
                             f"or the pixel area overflow{hint}")
    if not (_finite(st.distance) and st.distance > 0):
        raise InputError(f"-distance: the distance must be positive, got {st.distance * 1000:g} mm{hint}")
    if not (math.isnan(st.close_distance) or (_finite(st.close_distance) and st.close_distance > 0)):
        raise InputError(f"-close_distance: the distance must be positive, got {st.close_distance * 1000:g} mm{hint}")
    if not (_finite(st.lambda0) and st.lambda0 > 0):
        raise InputError(f"-lambda/-energy: the wavelength must be positive and finite, got {st.lambda0 * 1e10:g} A{hint}")
    for name, value in (("-Xbeam", st.Xbeam), ("-Ybeam", st.Ybeam), ("-Xclose", st.Xclose),
                        ("-Yclose", st.Yclose), ("-ORGX", st.ORGX), ("-ORGY", st.ORGY),
                        ("-phi", st.phi0), ("-osc", st.osc)):
        if math.isinf(value) or (math.isnan(value) and name in ("-phi", "-osc")):  # NaN: "not given"
            raise InputError(f"{name}: must be finite, got {value:g}{hint}")
    if st.fpixels < 0 or st.spixels < 0:
        raise InputError(f"-detpixels: pixel counts must not be negative, got {st.fpixels}x{st.spixels}{hint}")
    sizes = []
    for count, size in ((st.fpixels, st.detsize_f), (st.spixels, st.detsize_s)):
        extent = st.pixel_size * count if count else size
        sizes.append(extent / st.pixel_size - 0.5)
    if not all(_finite(n) and n <= MAX_PIXELS for n in sizes) or math.ceil(sizes[0]) * math.ceil(sizes[1]) > MAX_PIXELS:
        raise InputError(f"-detpixels/-detsize/-pixel: a detector of {sizes[0] + 0.5:.6g} x {sizes[1] + 0.5:.6g} pixels "
                         f"is too large (nbjax renders at most {MAX_PIXELS} pixels){hint}")
    # the phi, divergence and dispersion steps nanoBragg derives from ranges and step sizes
    if st.phisteps < 0 and st.osc >= 0.0 and st.phistep > 0.0 and not st.osc / st.phistep <= MAX_COUNT:
        raise InputError(f"-osc/-phistep: asks for {st.osc / st.phistep:.3g} phi steps; nbjax allows at most {MAX_COUNT}")
    hsteps = _resolved_count(st.hdivsteps, st.hdivrange, st.hdivstep, "-hdivrange/-hdivstep")
    vsteps = _resolved_count(st.vdivsteps, st.vdivrange, st.vdivstep, "-vdivrange/-vdivstep")
    dsteps = _resolved_count(st.dispsteps, st.dispersion, st.dispstep, "-dispersion/-dispsteps")
    if hsteps * vsteps > MAX_SOURCES or hsteps * vsteps * dsteps > MAX_SOURCES:
        raise InputError(f"-hdivsteps/-vdivsteps/-dispsteps: {hsteps}x{vsteps} divergence x {dsteps} dispersion "
                         f"steps make more than {MAX_SOURCES} sources")


def _lenient(kind, text):
    if kind == "i":
        return c_atoi(text)
    if kind == "f":
        return c_atof(text)
    return text


def _strict(kind, text, flag):
    if kind == "i":
        return parse_int(text, flag)
    if kind == "f":
        return parse_float(text, flag)
    return text


def _values_needed(kinds):
    if kinds == "-":  # a following argument must exist (but is not consumed)
        return 1
    if kinds == "a":
        return 1
    return len(kinds)


#: Options nanoBragg.c tests with ``argc >= i+1`` instead of ``argc > i+1``: as
#: the last argument it reads the list's terminating null pointer and crashes.
READS_PAST_END = ("-detector_abs", "-detector_thick", "-detector_thicksteps", "-thicksteps")


@dataclasses.dataclass
class _Scan:
    """Book-keeping of one scan: which arguments were read as what."""

    argv: list
    c_parity: bool
    consumed: set = dataclasses.field(default_factory=set)   # indices read as some option's value
    matched: set = dataclasses.field(default_factory=set)    # indices read as an option
    taken: dict = dataclasses.field(default_factory=dict)    # option index -> values it took
    short: dict = dataclasses.field(default_factory=dict)    # option index -> (name, values needed)
    arity: dict = dataclasses.field(default_factory=dict)    # option index -> values it takes

    def take(self, i, count, arity=None):
        self.matched.add(i)
        self.taken[i] = max(self.taken.get(i, 0), count)
        self.arity[i] = max(self.arity.get(i, 0), count if arity is None else arity)
        self.consumed.update(range(i + 1, i + 1 + count))


def _read_values(rule, argv, i, strict):
    """Values of ``rule`` for ``argv[i]`` (enough arguments follow it)."""
    flag = argv[i]
    if rule.kinds == "-":
        return []
    if rule.kinds == "s" and strict and rule.apply is _pivot_value:
        if "sample" not in argv[i + 1] and "beam" not in argv[i + 1]:
            raise InputError(f"{flag}: expected 'beam' or 'sample', got {argv[i + 1]!r}")
    if rule.kinds == "a":
        text = argv[i + 1]
        if strict and "inf" not in text:
            parse_float(text, flag)
        return [text, c_atof(text)]
    texts = argv[i + 1:i + 1 + len(rule.kinds)]
    if strict:
        return [_strict(k, t, flag) for k, t in zip(rule.kinds, texts)]
    return [_lenient(k, t) for k, t in zip(rule.kinds, texts)]


def _consumes(rule):
    if rule.kinds == "-":
        return 0
    return _values_needed(rule.kinds)


def _too_few(scan, i, name, need, strict):
    """``argv[i]`` (read as ``name``) lacks the ``need`` values nanoBragg.c waits for.

    nanoBragg.c then skips the option.  Default mode: an exact option name is an
    error at once; --c-parity: skipped with a warning (see :func:`_leftovers`).
    The options nanoBragg.c reads past the end of the list are refused in both.
    """
    flag = scan.argv[i]
    what = "a value" if need == 1 else f"{need} values"
    if name in READS_PAST_END and (strict or scan.c_parity):
        raise InputError(f"{flag}: needs {what} (as the last argument nanoBragg.c reads past the end of "
                         "its argument list and crashes)")
    if strict and not scan.c_parity:
        raise InputError(f"{flag}: needs {what}")
    if strict:
        scan.short[i] = (name, need)  # the option's own name wins over a substring match
    else:
        scan.short.setdefault(i, (name, need))


def _parse_cell(st, scan, i, strict):
    """-cell a b c alpha beta gamma (Å, degrees)."""
    argv = scan.argv
    flag = argv[i]
    st.user_cell = True
    values = []
    for k in range(1, 7):
        if len(argv) <= i + k or argv[i + k].startswith("-"):
            break
        values.append(argv[i + k])
    if strict and len(values) < 6:
        stop = argv[i + 1 + len(values)] if len(argv) > i + 1 + len(values) else None
        why = " (a value starting with '-' ends the list: lengths and angles must be positive)" \
            if stop is not None and is_number(stop) else ""
        if not scan.c_parity or not values:
            raise InputError(f"{flag}: needs six values a b c alpha beta gamma (Å, degrees), got {len(values)}{why}")
        given = " ".join(values)
        st.notes.append(f"WARNING: -cell {given}: only {len(values)} of the six cell constants given{why}; nanoBragg.c "
                        "(and nbjax --c-parity) reads what is there and takes the rest as not given "
                        "(b or c: equal to a; an angle: 90 degrees)")
    numbers = [parse_float(v, flag) if strict else c_atof(v) for v in values]
    if strict:
        if not all(_finite(x) for x in numbers):
            raise InputError(f"{flag}: the cell constants must be finite numbers")
        if not numbers[0] > 0:
            raise InputError(f"{flag}: the length a must be positive, got {numbers[0]:g}")
        if not all(x < 180.0 for x in numbers[3:]):
            raise InputError(f"{flag}: the angles must be below 180 degrees, got "
                             f"{' '.join(_shown(x) for x in numbers[3:])}")
    for k, x in enumerate(numbers):
        st.cell[k] = x if k < 3 else x / RTD
    scan.take(i, len(numbers), arity=6)
    return len(values) < 6  # nanoBragg 'continue's when it stopped early


def _parse_misset(st, scan, i, strict):
    argv = scan.argv
    flag = argv[i]
    if len(argv) > i + 1 and "rand" in argv[i + 1]:
        st.misset_mode = -1
        scan.take(i, 1)
        return True
    if len(argv) > i + 3:
        texts = argv[i + 1:i + 4]
        if strict:
            numbers = [parse_float(t, flag) for t in texts]
        else:
            numbers = [c_atof(t) for t in texts]
        if not all(_finite(x) for x in numbers):
            as_read = "" if strict else " (read as -misset by nanoBragg's substring rule)"
            raise InputError(f"{flag}: the misset angles must be finite, got "
                             f"{' '.join(_shown(x) for x in numbers)}{as_read}")
        st.misset_mode = 1
        st.misset_rad = [x / RTD for x in numbers]
        if strict:
            scan.take(i, 3)
        else:
            scan.matched.add(i)
            if flag != "-misset":
                st.notes.append(
                    f"{flag} also matches -misset (nanoBragg substring rule): misset angles set to "
                    f"{numbers[0]:g} {numbers[1]:g} {numbers[2]:g} degrees"
                )
    elif strict and not scan.c_parity:
        raise InputError(f"{flag}: needs three angles (degrees) or 'random'")
    elif strict or flag != "-misset" and not _matching_rules(flag):
        scan.short.setdefault(i, ("-misset", 3))
    return False


@functools.lru_cache(maxsize=4096)
def _matching_rules(arg: str) -> tuple:
    """Positions in :data:`_RULES` of the rules whose nanoBragg test accepts ``arg`` (each test is pure)."""
    return tuple(k for k, rule in enumerate(_RULES) if rule.match(arg))


def parse(argv, initial: CSettings | None = None, *, c_parity: bool = False) -> CSettings:
    """Scan nanoBragg command-line arguments (without the program name).

    ``initial`` holds values set before the scan (nanoBragg applies the -mask
    and -img headers first); the defaults otherwise.  ``c_parity``: read the
    list as released nanoBragg.c does where nbjax's default refuses it -- an
    argument that is neither an option nor an option's value, an unknown
    option, and an option without the values it needs at the end of the list
    (a last ``-curved_det`` included) are skipped, each with a warning in
    ``notes`` (see :func:`_leftovers`); the values themselves are checked in
    both modes.
    """
    argv = [str(a) for a in argv]
    st = dataclasses.replace(initial) if initial is not None else CSettings()
    st.notes = list(st.notes)
    scan = _Scan(argv, c_parity)
    # nanoBragg reads the -img and -mask headers before everything else
    for i, arg in enumerate(argv):
        if arg.startswith("-"):
            if "-img" in arg and len(argv) > i + 1:
                st.imginfilename = argv[i + 1]
            if "-mask" in arg and len(argv) > i + 1:
                st.maskfilename = argv[i + 1]
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            continue
        if "-mask" in arg:
            if len(argv) <= i + 1:
                if not c_parity:
                    raise InputError(f"{arg}: needs a file name")
                scan.short.setdefault(i, ("-mask", 1))
            else:
                scan.take(i, 1)
        stopped = False
        matching = _matching_rules(arg)
        for k in matching:
            if k >= 4:
                break
            stopped = _apply(_RULES[k], st, scan, i)
            if stopped:
                break
        if stopped:
            continue
        if "-cell" in arg and len(argv) > i + 1:
            st.given.add("-cell")
            if _parse_cell(st, scan, i, arg == "-cell"):
                continue
        elif "-cell" in arg:
            if arg == "-cell" and not c_parity:
                raise InputError("-cell: needs six values a b c alpha beta gamma (Å, degrees)")
            scan.short.setdefault(i, ("-cell", 6))
        if "-misset" in arg:
            st.given.add("-misset")
            if _parse_misset(st, scan, i, arg == "-misset"):
                continue
        for k in matching:
            if k >= 4 and _apply(_RULES[k], st, scan, i):
                break
    _leftovers(st, scan)
    check_settings(st)
    return st


def _apply(rule, st, scan, i):
    argv = scan.argv
    arg = argv[i]
    strict = arg in rule.names
    need = _values_needed(rule.kinds)
    if len(argv) <= i + need:
        if strict and rule.kinds == "-" and not scan.c_parity:
            # honoured; nanoBragg.c would skip it (--c-parity does, with a warning)
            st.given.add(arg)
            scan.matched.add(i)
            scan.taken.setdefault(i, 0)
            st.notes.append(f"{arg} is the last argument: nanoBragg.c would ignore it there, nbjax honours it "
                            "(--c-parity ignores it, as nanoBragg.c does)")
            rule.apply(st, [])
            return rule.stop
        _too_few(scan, i, rule.names[0], need, strict)
        return False
    values = _read_values(rule, argv, i, strict)
    _check_values(rule, arg, values, strict)
    if strict:
        st.given.add(arg)
        scan.take(i, _consumes(rule))
    else:
        st.given.add(rule.names[0])
        exact_owner = any(arg in r.names for r in _RULES) or arg in ("-cell", "-misset")
        if exact_owner:
            scan.matched.add(i)
            scan.taken.setdefault(i, 0)
            st.notes.append(f"{arg} also matches {rule.names[0]} (nanoBragg substring rule)")
        else:
            scan.take(i, _consumes(rule))
            st.notes.append(f"{arg} read as {rule.names[0]} (nanoBragg substring rule)")
    rule.apply(st, values)
    return rule.stop


# --------------------------------------------------------------------------
# what the scan left over: unknown options, stray values, options without values


def suggestions(arg, limit=3):
    """Option names close to ``arg`` (names it begins, then difflib's nearest)."""
    import difflib

    stem = arg.split("=")[0]
    begun = sorted(n for n in OPTION_NAMES if n.startswith(stem) and n != stem) if len(stem) > 2 else []
    near = difflib.get_close_matches(stem, OPTION_NAMES, n=limit, cutoff=0.6)
    out = []
    for name in begun + near:
        if name not in out:
            out.append(name)
    return out[:limit]


def _did_you_mean(arg):
    names = suggestions(arg)
    if not names:
        return ""
    if len(names) == 1:
        return f"did you mean {names[0]}?"
    return f"did you mean {', '.join(names[:-1])} or {names[-1]}?"


def _is_option(arg):
    return arg.startswith("-") and not is_number(arg)


def _switch_effect(flag):
    from nbjax import flaghelp

    meaning = flaghelp.meaning(flag)
    return f" ({meaning})" if meaning else ""


_OFF_WORDS = ("0", "off", "no", "false", "none", "0.0")


def _values_text(scan, i):
    return " ".join(scan.argv[i:i + 1 + scan.taken.get(i, 0)])


def _plural(n):
    return {1: "one value", 6: "six values"}.get(n, f"{n} values")


def _leftovers(st, scan):
    """Arguments the scan did not read, grouped under the option before them.

    Default mode: the first one is an error saying what it is (an unknown
    option, with the nearest names; a value after a switch, which takes none;
    a value too many).  --c-parity: each group is skipped, as nanoBragg.c
    skips it, with one warning in ``st.notes``.
    """
    argv = scan.argv
    groups = {}      # owner index (None: before any option) -> stray value indices
    unknown = []
    owner = None
    for i, arg in enumerate(argv):
        read = i in scan.matched or i in scan.consumed
        if _is_option(arg) and (i in scan.matched or not read):
            owner = i
            groups.setdefault(i, [])
            if not read and i not in scan.short:
                unknown.append(i)
        elif not read:
            groups.setdefault(owner, []).append(i)
    for i, strays in groups.items():
        words = " ".join(repr(argv[k]) for k in strays)
        rest = " " + " ".join(argv[k] for k in strays) if strays else ""
        if i is None or (i not in scan.short and i not in unknown and not strays) or \
                (i in scan.short and i in scan.matched and not scan.c_parity and not strays):
            if i is None and strays:
                _problem(st, scan, f"unexpected argument {argv[strays[0]]!r} (not the value of any option)",
                         f"WARNING: ignored {words}: neither an option nor an option's value; "
                         "nanoBragg.c skips it")
            continue
        flag = argv[i]
        if i in scan.short and (scan.c_parity or i not in scan.matched):
            name, need = scan.short[i]
            as_read = "" if flag == name else f" (read as {name} by nanoBragg's substring rule)"
            if name == "-curved_det":
                warning = (f"WARNING: ignored {flag}{rest}: it is the last argument and nanoBragg.c reads "
                           f"-curved_det only when another argument follows it (the detector stays flat)")
            else:
                warning = (f"WARNING: ignored {flag}{rest}{as_read}: it needs {_plural(need)} and nanoBragg.c "
                           f"reads it only when {'another argument follows' if need == 1 else f'{need} arguments follow'}")
            _problem(st, scan, f"{flag}: needs {'a value' if need == 1 else f'{need} values'}{as_read}", warning)
        elif i in unknown:
            values = f" and the value{'s' if len(strays) > 1 else ''} after it" if strays else ""
            hint = _did_you_mean(flag)
            _problem(st, scan,
                     f"{flag}: unknown option{'; ' + hint if hint else ''} (see 'nbjax --help'; nanoBragg.c and "
                     "nbjax --c-parity ignore it)",
                     f"WARNING: ignored {flag}{rest}: no nanoBragg option has this name, and nanoBragg.c skips "
                     f"it{values}{' (' + hint + ')' if hint else ''}")
        elif scan.taken.get(i, 0) == 0:
            first = argv[strays[0]]
            off = first.strip().lower() in _OFF_WORDS
            keep_off = f"; leave {flag} out to keep it off" if off else ""
            _problem(st, scan,
                     f"{flag} is a switch and takes no value, got {first!r}: nanoBragg.c ignores {first!r} and "
                     f"still turns {flag} on{_switch_effect(flag)}{keep_off}",
                     f"WARNING: ignored {words} after {flag}: the switch takes no value; nanoBragg.c skips "
                     f"{'it' if len(strays) == 1 else 'them'} and turns {flag} on{_switch_effect(flag)}")
        else:
            n = scan.arity.get(i, scan.taken[i])
            _problem(st, scan,
                     f"unexpected argument {argv[strays[0]]!r} after {_values_text(scan, i)} "
                     f"({flag} takes {_plural(n)})",
                     f"WARNING: ignored {words} after {_values_text(scan, i)}: not a value of {flag} (which takes "
                     f"{_plural(n)}); nanoBragg.c skips {'it' if len(strays) == 1 else 'them'}")


def _problem(st, scan, error, warning):
    if not scan.c_parity:
        raise InputError(error)
    st.notes.append(warning)


def value_count(flag: str, following=()) -> int:
    """How many of the ``following`` arguments the exact option ``flag`` takes as its values.

    ``-cell`` takes up to six values (a value starting with '-' ends them),
    ``-misset`` one ('random') or three; an option nbjax does not know takes none.
    """
    following = list(following)
    if flag == "-cell":
        count = 0
        while count < 6 and count < len(following) and not following[count].startswith("-"):
            count += 1
        return count
    if flag == "-misset":
        return 1 if following and "rand" in following[0] else 3
    for rule in _RULES:
        if flag in rule.names:
            return _consumes(rule)
    return 0
