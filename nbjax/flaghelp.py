"""What nanoBragg's flags mean, in one line each: the data behind ``nbjax --help``.

:data:`GROUPS` lists every option name the flag scanner (:mod:`nbjax.cflags`)
accepts, grouped as in docs/flags.md (crystal, beam, detector, rotation,
output), with the values it takes and a one-line meaning in the units typed
on the command line (mm, degrees, Å, eV, mrad, µm).  :func:`flag_listing`
formats it for ``--help``; :func:`meaning` gives one flag's line for error
messages.  The full table (defaults, accepted ranges, how nbjax compares with
nanoBragg.c) is docs/flags.md.  Also here: the version line (``--version``)
and the words that name the run's mode on the summary's first line.
"""

from __future__ import annotations

#: (group title, [(names, values, meaning)]) -- names are the spellings the
#: scanner knows (first one is the main name), values as typed after the flag.
GROUPS = [
    ("Crystal", [
        (("-mat",), "FILE", "MOSFLM orientation matrix (reciprocal vectors x wavelength)"),
        (("-cell",), "a b c al be ga", "unit cell instead of -mat (Å, degrees)"),
        (("-misset",), "x y z | random", "crystal rotations about x, y, z (degrees), or a random orientation"),
        (("-hkl",), "FILE", "structure factors, lines of h k l F (default: re-read the -dump file)"),
        (("-default_F",), "F", "F of every reflection the -hkl file does not list (electrons)"),
        (("-dump",), "FILE", "structure-factor cache written after reading -hkl (default Fdump.bin)"),
        (("-N",), "n", "unit cells along a, b and c"),
        (("-Na", "-Nb", "-Nc"), "n", "unit cells along a / b / c"),
        (("-samplesize", "-sample_size", "-xtalsize", "-xtal_size"), "mm", "crystal size along x, y and z (sets N)"),
        (("-sample_thick", "-sample_x", "-xtal_thick", "-xtal_x"), "mm", "crystal size along x"),
        (("-sample_width", "-sample_y", "-xtal_width", "-xtal_y", "-width"), "mm", "crystal size along y"),
        (("-sample_height", "-sample_z", "-xtal_height", "-xtal_z", "-height"), "mm", "crystal size along z"),
        (("-density", "-sample_density"), "g/cm3", "sample density (read, not used, as in nanoBragg.c)"),
        (("-MW", "-molecular_weight"), "g/mol", "molecular weight (read, not used, as in nanoBragg.c)"),
        (("-round_xtal",), "", "ellipsoidal crystal: sinc3 lattice transform"),
        (("-square_xtal",), "", "parallelepiped crystal: sincg lattice transform (default)"),
        (("-gauss_xtal",), "", "Gaussian spots, no inter-Bragg maxima"),
        (("-tophat_spots", "-binary_spots"), "", "spots cut off at their half maximum"),
        (("-fudge",), "f", "factor on the squared distance from the Bragg point (round, Gaussian, top-hat)"),
        (("-interpolate",), "", "tricubic interpolation of F between reflections"),
        (("-nointerpolate",), "", "no interpolation: nearest reflection"),
        (("-mosaic", "-mosaicity", "-mosaic_spread"), "deg", "isotropic mosaic spread"),
        (("-mosaic_domains", "-mosaic_dom"), "n", "number of mosaic domains"),
        (("-mosaic_seed",), "n", "seed of the mosaic-domain orientations"),
        (("-misset_seed",), "n", "seed of -misset random"),
    ]),
    ("Beam", [
        (("-lambda", "-wavelength"), "Å", "wavelength"),
        (("-energy",), "eV", "photon energy (instead of -lambda)"),
        (("-fluence",), "ph/m2", "incident photons per area"),
        (("-flux",), "ph/s", "incident photons per second (with -exposure and -beamsize)"),
        (("-exposure",), "s", "exposure time"),
        (("-beamsize",), "mm", "beam size (also clips the crystal)"),
        (("-dispersion",), "%", "spectral width, delta-lambda / lambda"),
        (("-dispsteps",), "n", "wavelengths across the dispersion"),
        (("-divergence",), "mrad", "horizontal and vertical divergence range"),
        (("-hdivrange", "-vdivrange"), "mrad", "horizontal / vertical divergence range"),
        (("-hdivstep", "-vdivstep"), "mrad", "divergence step size"),
        (("-hdivsteps", "-vdivsteps", "-divsteps"), "n", "divergence steps (horizontal, vertical, both)"),
        (("-round_div",), "", "drop divergence points outside the ellipse (default)"),
        (("-square_div",), "", "keep the whole divergence grid"),
        (("-sourcefile",), "FILE", "X-ray sources, lines of X Y Z weight lambda (replace the grid)"),
        (("-polar",), "k", "Kahn polarization factor (-1 to 1)"),
        (("-nopolar",), "", "no polarization correction"),
        (("-beam_vector",), "x y z", "beam direction (custom convention)"),
        (("-polar_vector",), "x y z", "polarization direction (custom convention)"),
        (("-water",), "um", "thickness of water around the crystal (background)"),
        (("-coherent",), "", "coherent addition (never implemented: no effect, as in nanoBragg.c)"),
    ]),
    ("Detector", [
        (("-distance",), "mm", "sample to detector along its normal (beam pivot)"),
        (("-close_distance",), "mm", "sample to the nearest point of the detector plane (sample pivot)"),
        (("-pixel",), "mm", "pixel size"),
        (("-detpixels",), "n", "pixels along both axes"),
        (("-detpixels_f", "-detpixels_x"), "n", "pixels along the fast axis"),
        (("-detpixels_s", "-detpixels_y"), "n", "pixels along the slow axis"),
        (("-detsize",), "mm", "detector size, both axes"),
        (("-detsize_f", "-detsize_s"), "mm", "detector size along fast / slow"),
        (("-img",), "FILE", "SMV image whose header sets the detector up"),
        (("-mask",), "FILE", "SMV image: pixels that are 0 are not rendered"),
        (("-mosflm", "-xds", "-adxv", "-denzo", "-dials"), "", "detector convention (axes, beam centre, pivot)"),
        (("-Xbeam", "-Ybeam"), "mm", "direct-beam position (beam pivot)"),
        (("-Xclose", "-Yclose"), "mm", "point of the detector nearest the sample (sample pivot)"),
        (("-ORGX", "-ORGY"), "px", "XDS detector origin (sample pivot)"),
        (("-pivot",), "beam|sample", "point the detector rotations turn about"),
        (("-fdet_vector", "-sdet_vector"), "x y z", "fast / slow pixel axis (custom convention)"),
        (("-odet_vector",), "x y z", "detector normal (custom convention)"),
        (("-twotheta",), "deg", "detector rotation about the two-theta axis (sample pivot)"),
        (("-twotheta_axis",), "x y z", "axis of that rotation (custom convention; also sets -twotheta)"),
        (("-detector_rotx", "-detector_roty", "-detector_rotz"), "deg", "detector rotations about x, y, z"),
        (("-pix0_vector", "-pix0_vector_mm"), "x y z", "first pixel's position (no effect on the geometry, as in C)"),
        (("-curved_det",), "", "spherical detector: every pixel at the same distance"),
        (("-point_pixel",), "", "no pixel solid-angle (obliquity) correction"),
        (("-detector_thick",), "um", "sensor thickness"),
        (("-detector_abs", "-detector_absorb"), "um|inf", "sensor attenuation depth"),
        (("-detector_thicksteps", "-thicksteps"), "n", "sensor layers"),
        (("-oversample",), "n", "sub-pixels per pixel side"),
        (("-oversample_thick",), "", "recompute sensor absorption for every sub-pixel"),
        (("-oversample_polar",), "", "recompute polarization for every sub-pixel"),
        (("-oversample_omega",), "", "recompute the solid angle for every sub-pixel"),
        (("-roi",), "x0 x1 y0 y1", "render only these pixels (inclusive)"),
        (("-dmin",), "Å", "leave out scattering beyond this resolution"),
    ]),
    ("Rotation", [
        (("-phi",), "deg", "spindle angle at the start"),
        (("-osc",), "deg", "oscillation range"),
        (("-phistep",), "deg", "phi step size"),
        (("-phisteps",), "n", "phi steps"),
        (("-spindle_axis",), "x y z", "rotation axis (custom convention)"),
    ]),
    ("Output", [
        (("-floatfile", "-floatimage"), "FILE", "float image, photons per pixel (default floatimage.bin)"),
        (("-intfile", "-intimage"), "FILE", "SMV image (default intimage.img)"),
        (("-scale",), "f", "scale of the SMV image (counts per photon)"),
        (("-adc",), "counts", "offset added to SMV pixels"),
        (("-pgmfile", "-pgmimage"), "FILE", "8-bit PGM picture (default image.pgm)"),
        (("-pgmscale",), "f", "grey levels per photon"),
        (("-nopgm",), "", "no PGM picture"),
        (("-noisefile", "-noiseimage"), "FILE", "SMV image with Poisson noise (default noiseimage.img)"),
        (("-nonoise",), "", "no noise image"),
        (("-seed",), "n", "seed of the noise image"),
        (("-noprogress", "-progress"), "", "progress meter off / on"),
        (("-printout",), "", "print every pixel (refused: use the Python API)"),
        (("-printout_pixel",), "f s", "print one pixel's computation (refused, as -printout)"),
        (("-stol", "-4stol", "-Q"), "FILE", "F versus resolution table (not used, as in nanoBragg.c)"),
        (("-stolout",), "FILE", "output of that table (refused: nanoBragg.c never writes it)"),
    ]),
]

_MEANINGS = {name: meaning for _, entries in GROUPS for names, _, meaning in entries for name in names}


def names() -> list:
    """Every option name listed, in listing order."""
    return [name for _, entries in GROUPS for names_, _, _ in entries for name in names_]


def meaning(flag: str) -> str:
    """The one-line meaning of option ``flag`` ('' for a name not listed)."""
    return _MEANINGS.get(flag, "")


def flag_listing(width: int = 36) -> str:
    """Every nanoBragg flag by group, one line each, for ``nbjax --help``."""
    lines = []
    for title, entries in GROUPS:
        lines.append(f"{title}:")
        for names_, values, text in entries:
            head = "  " + ", ".join(names_) + (f" {values}" if values else "")
            if len(head) + 1 > width:
                lines.append(head)
                lines.append(" " * width + text)
            else:
                lines.append(head.ljust(width) + text)
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def version_text() -> str:
    """``nbjax <version>``, the version from the installed package's metadata."""
    from importlib import metadata

    try:
        version = metadata.version("nbjax")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from nbjax import __version__ as version
    return f"nbjax {version}"


def mode_text(accumulation: str = "spec", phi_carryover: str = "spec", argument_scan: str = "spec") -> str:
    """Which program the run reproduces, for the summary's first line.

    The default mode is nanoBragg.c with its two upstream fixes (the spec
    oracle, nanoBragg_spec); ``--c-parity`` is released nanoBragg.c, its
    argument scan included.  ``--accumulation`` / ``--phi-carryover-mode``
    may mix the two; then every part is named.
    """
    parts = {"accumulation": accumulation, "phi carry-over": phi_carryover,
             "argument scan": argument_scan}
    if set(parts.values()) == {"spec"}:
        return "nbjax engine, default mode: nanoBragg.c with its upstream fixes"
    if set(parts.values()) == {"c-parity"}:
        return "nbjax engine, --c-parity: released nanoBragg.c"
    return "nbjax engine, mixed mode: " + ", ".join(f"{k} {v}" for k, v in parts.items())
