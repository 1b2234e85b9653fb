"""File formats nbjax reads and writes, in pure numpy.

Each module documents one format: :mod:`.hkl` (structure factors, text),
:mod:`.fdump` (nanoBragg's binary structure-factor cache), :mod:`.matrix`
(MOSFLM orientation matrix), :mod:`.smv` (SMV/ADSC images), :mod:`.pgm`
(8-bit previews), :mod:`.sourcefile` (X-ray source points),
:mod:`.floatimage` (raw float32 images), :mod:`.reflections` (MTZ, SF-mmCIF
and atomic models, through gemmi, as the same P1 table); :mod:`.numbers` has C-compatible
number parsing and :mod:`.atomic` all-or-nothing file writing.  Every problem
with a user file is raised as :class:`nbjax.errors.InputError`.
"""

from nbjax.io.atomic import atomic_open, atomic_write, read_file_bytes
from nbjax.io.fdump import read_fdump, write_fdump
from nbjax.io.floatimage import read_float_image, write_float_image
from nbjax.io.hkl import HKLTable, read_hkl
from nbjax.io.matrix import read_mosflm_matrix
from nbjax.io.numbers import c_atof, c_atoi, c_strtod, is_number, parse_float, parse_int
from nbjax.io.pgm import read_pgm, write_pgm
from nbjax.io.reflections import read_structure_factors
from nbjax.io.smv import SMVImage, nanobragg_header, read_smv, smv_value, write_smv
from nbjax.io.sourcefile import read_sourcefile

__all__ = [
    "HKLTable",
    "SMVImage",
    "atomic_open",
    "atomic_write",
    "c_atof",
    "c_atoi",
    "c_strtod",
    "is_number",
    "nanobragg_header",
    "parse_float",
    "parse_int",
    "read_fdump",
    "read_file_bytes",
    "read_float_image",
    "read_hkl",
    "read_mosflm_matrix",
    "read_pgm",
    "read_smv",
    "read_structure_factors",
    "read_sourcefile",
    "smv_value",
    "write_fdump",
    "write_float_image",
    "write_pgm",
    "write_smv",
]
