"""Structure factors from crystallographic files: MTZ, SF-mmCIF, atomic models.

``-hkl FILE`` accepts three formats, told apart by content (not by name):

* an MTZ file (binary, starts with the bytes ``MTZ ``);
* an SF-mmCIF file (text with a ``data_`` block holding a ``_refln.`` loop);
* anything else is nanoBragg's ``h k l F`` text (:mod:`nbjax.io.hkl`).

MTZ and mmCIF are read with gemmi (https://gemmi.readthedocs.io), imported
only when such a file is read.

Which column
------------
Without ``--hkl-column`` the first amplitude column in file order is used: in
an MTZ a column of type ``F`` (amplitude) or ``G`` (anomalous amplitude,
F(+)/F(-)); in mmCIF one of ``F_meas_au``, ``F_meas``, ``F_calc_au``,
``F_calc`` or the pair ``pdbx_F_plus``/``pdbx_F_minus``.  When there is no
amplitude column, the first intensity column (MTZ type ``J`` or ``K``; mmCIF
``intensity_meas``, ``F_squared_meas``, ``intensity_calc``, ``F_squared_calc``
or ``pdbx_I_plus``/``pdbx_I_minus``) is converted to an amplitude with
``F = sqrt(max(I, 0))``: negative intensities (noise around zero) give F = 0.
``--hkl-column NAME`` picks a column by its MTZ label or mmCIF tag (with or
without the ``_refln.`` prefix); naming either member of an anomalous pair
selects the pair.  F is in the file's units, taken as electrons.

P1 expansion
------------
Merged data list only the reflections of one asymmetric unit.  nbjax renders
a triclinic lattice, so every reflection ``h`` (a row vector) is copied to its
symmetry mates ``h R`` for every rotation ``R`` of the file's space group
(centring translations create no new indices; the phase shifts they carry do
not change |F|) and, by Friedel's law, to ``-h R``.  For an anomalous pair,
F(+) goes to ``h R`` and F(-) to ``-h R``, so the Bijvoet difference is kept;
where one member is missing (NaN / ``?``) the other stands in for it.  When
two entries land on the same index the one the file lists wins over a
symmetry mate, which wins over a Friedel mate (an F(-) value at ``-h R`` ranks
with the symmetry mates); among equals the later line
wins, as in the text reader.  Missing values are skipped: their slots hold
``-default_F`` like any unlisted reflection.  The result is the same
:class:`~nbjax.io.hkl.HKLTable` the text reader builds; its ``count`` is the
number of distinct P1 reflections.  Unmerged files are refused.

Models (``--model``)
--------------------
:func:`structure_factors_from_model` computes |F(h)| of an atomic model (PDB
or mmCIF, anything gemmi reads) for every P1 index with resolution
``d >= d_min`` (Å), with the model's own cell and space group::

    F(h) = sum_j occ_j f_j(s) exp(-B_j s^2/4) exp(2 pi i h.x_j)

summed over all atoms of the first model and their symmetry copies, where
``s = 1/d`` (Å^-1), ``f_j`` the IT92 four-Gaussian X-ray form factor (gemmi's
``DensityCalculatorX``; no anomalous f', f''), ``B_j`` the model's B-factors
(anisotropic ADPs where given), hydrogens and waters as in the file and no
bulk solvent.  gemmi evaluates the sum by putting the electron density on a
grid (spacing ``d_min/4``, density cutoff 1e-6, the atoms blurred for
sampling and the blur divided out again) and Fourier-transforming it; against
the direct sum this is accurate to ~1e-5 of the r.m.s. F.  F(000) (the
electron count of the cell) is included.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time

import numpy as np

from nbjax.errors import InputError
from nbjax.io import hkl as hkl_io
from nbjax.io import memo
from nbjax.io.atomic import read_file_bytes

__all__ = [
    "ReflectionData",
    "read_structure_factors",
    "load_structure_factors",
    "structure_factors_from_model",
    "expand_to_p1",
    "file_format",
]

# mmCIF _refln tags, by kind (the order inside a kind does not matter: the
# file's own column order decides which comes first).
_CIF_AMPLITUDES = ("F_meas_au", "F_meas", "F_calc_au", "F_calc")
_CIF_INTENSITIES = ("intensity_meas", "F_squared_meas", "intensity_calc", "F_squared_calc")
_CIF_PAIRS = {
    "pdbx_F_plus": ("pdbx_F_plus", "pdbx_F_minus", False),
    "pdbx_F_minus": ("pdbx_F_plus", "pdbx_F_minus", False),
    "pdbx_I_plus": ("pdbx_I_plus", "pdbx_I_minus", True),
    "pdbx_I_minus": ("pdbx_I_plus", "pdbx_I_minus", True),
}
# MTZ column types: amplitude, anomalous amplitude, intensity, anomalous intensity.
_MTZ_KINDS = {"F": "amplitude", "G": "anomalous amplitude", "J": "intensity", "K": "anomalous intensity"}

# Density grid for --model: spacing d_min/(2 rate); cutoff of each atom's density.
MODEL_GRID_RATE = 2.0
MODEL_DENSITY_CUTOFF = 1e-6


@dataclasses.dataclass(frozen=True)
class ReflectionData:
    """A P1 structure-factor table and where it came from.

    ``table``: the :class:`~nbjax.io.hkl.HKLTable`; ``format``: "text", "mtz",
    "mmcif" or "model"; ``column``: what was read (e.g. ``"F"``,
    ``"F(+)/F(-)"``, ``"I -> sqrt(max(I,0))"``); ``cell``: the file's unit cell
    (a, b, c in Å, angles in degrees) or None; ``spacegroup``: its
    Hermann-Mauguin name or None; ``notes``: lines for the user.
    """

    table: hkl_io.HKLTable
    format: str
    column: str | None = None
    cell: tuple | None = None
    spacegroup: str | None = None
    notes: tuple = ()


def _gemmi(flag: str, path: str):
    try:
        import gemmi
    except ImportError:
        raise InputError(
            f"{flag} {path}: reading MTZ/mmCIF files and models needs gemmi (a dependency of nbjax): pip install gemmi"
        ) from None
    return gemmi


def _cif_has_refln(raw: bytes) -> bool:
    return re.search(rb"^[ \t]*data_", raw, re.MULTILINE) is not None and b"_refln." in raw


# What a plain 'h k l F' file holds: one pass over it (30 MB: 0.02 s) spares the
# searches for mmCIF and PDB words (0.3 s).
_NUMERIC_TEXT = b"0123456789+-.eE \t\n\r\v\f,"


def file_format(raw: bytes) -> str:
    """"mtz", "mmcif" or "text", from the file's bytes."""
    if raw[:4] == b"MTZ ":
        return "mtz"
    if _cif_has_refln(raw):
        return "mmcif"
    return "text"


def read_structure_factors(path, *, column: str | None = None, default_F: float = 0.0) -> hkl_io.HKLTable:
    """The P1 structure-factor table of ``path`` (text ``h k l F``, MTZ or SF-mmCIF).

    ``column``: MTZ label or mmCIF tag to read (default: the first amplitude
    column, see the module docstring).  Raises :class:`InputError` naming the
    file for anything unusable.
    """
    return load_structure_factors(path, column=column, default_F=default_F).table


def load_structure_factors(path, *, column: str | None = None, default_F: float = 0.0,
                           flag: str = "-hkl", column_flag: str = "--hkl-column") -> ReflectionData:
    """Like :func:`read_structure_factors`, also returning cell, space group and notes.

    Inside :class:`nbjax.io.memo.memoized_files` a file is read once (kept by
    path, modification time and size, like the tables there): a batch of many
    jobs reading one file neither re-reads nor re-checks its bytes.
    """
    return memo.memoized_read(
        path, ("load_structure_factors", column, float(default_F), flag, column_flag),
        lambda: _load_structure_factors(path, column=column, default_F=default_F, flag=flag, column_flag=column_flag))


def _load_structure_factors(path, *, column, default_F, flag, column_flag) -> ReflectionData:
    source = os.fspath(path) if isinstance(path, (str, os.PathLike)) else repr(path)
    if column is None:
        table = hkl_io.cached_table(path, default_F=default_F)  # a text file read before, unchanged
        if table is not None:
            return ReflectionData(table=table, format="text")
    read_started_ns = time.time_ns()
    raw = read_file_bytes(path)
    numbers_only = not raw.translate(None, _NUMERIC_TEXT)
    kind = "text" if numbers_only else file_format(raw)
    if kind == "text":
        if column is not None:
            raise InputError(f"{column_flag} {column}: {source} is a text 'h k l F' file, it has no named columns")
        if not numbers_only and (re.match(rb"\s*data_", raw)
                                 or re.search(rb"^(CRYST1|ATOM  |HETATM)", raw, re.MULTILINE)):
            raise InputError(f"{flag} {source}: an atomic model or an mmCIF file without a _refln loop, "
                             "not structure factors (give a model with --model)")
        return ReflectionData(table=hkl_io.read_hkl(path, default_F=default_F, raw=raw, raw_read_at_ns=read_started_ns),
                              format="text")
    gemmi = _gemmi(flag, source)
    if kind == "mtz":
        hkl, plus, minus, label, cell, sg, notes = _read_mtz(gemmi, source, column, flag, column_flag)
    else:
        hkl, plus, minus, label, cell, sg, notes = _read_cif(gemmi, raw, source, column, flag, column_flag)
    if sg is None:
        notes.append(f"NOTE: {source} names no space group; its reflections are taken as P1")
        rotations = np.eye(3, dtype=np.int64)[None]
        sg_name = None
    else:
        rotations = _rotations(sg)
        sg_name = sg.hm
    indices, values = expand_to_p1(hkl, plus, rotations, minus)
    if len(values) == 0:
        raise InputError(f"{flag} {source}: column {label} holds no values (all missing)")
    table = hkl_io.build_grid(indices, values, float(default_F), source)
    cell_tuple = (cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma)
    return ReflectionData(table=table, format=kind, column=label, cell=cell_tuple, spacegroup=sg_name,
                          notes=tuple(notes))


# ---------------------------------------------------------------------------
# MTZ


def _read_mtz(gemmi, source, column, flag, column_flag):
    try:
        mtz = gemmi.read_mtz_file(source)
    except (RuntimeError, ValueError, OSError) as error:
        raise InputError(f"{flag} {source}: not a readable MTZ file: {error}") from None
    if len(mtz.batches) > 0:
        raise InputError(f"{flag} {source}: unmerged MTZ (it has batch headers); merge the data first")
    columns = [c for c in mtz.columns if c.type != "H"]
    usable = [c for c in columns if c.type in _MTZ_KINDS]
    if column is not None:
        chosen = next((c for c in columns if c.label == column), None)
        if chosen is None:
            names = ", ".join(f"{c.label} ({c.type})" for c in columns) or "none"
            raise InputError(f"{column_flag} {column}: no such column in {source}; it has: {names}")
        if chosen.type not in _MTZ_KINDS:
            raise InputError(
                f"{column_flag} {column}: column of MTZ type {chosen.type} in {source} is not an "
                "amplitude (F, G) or intensity (J, K)")
    else:
        chosen = next((c for c in usable if c.type in "FG"), None) or next(iter(usable), None)
        if chosen is None:
            names = ", ".join(f"{c.label} ({c.type})" for c in columns) or "none"
            raise InputError(
                f"{flag} {source}: no amplitude (MTZ type F, G) or intensity (J, K) column; it has: {names}")
    hkl = np.asarray(mtz.make_miller_array(), dtype=np.int64)
    intensity = chosen.type in "JK"
    if chosen.type in "GK":
        plus_col, minus_col = _mtz_pair(chosen, columns, source, flag)
        plus = np.asarray(plus_col.array, dtype=np.float64)
        minus = np.asarray(minus_col.array, dtype=np.float64)
        label = f"{plus_col.label}/{minus_col.label}"
    else:
        plus = np.asarray(chosen.array, dtype=np.float64)
        minus = None
        label = chosen.label
    if intensity:
        plus, minus = _amplitudes(plus), (None if minus is None else _amplitudes(minus))
        label += " -> sqrt(max(I,0))"
    return hkl, plus, minus, label, mtz.cell, mtz.spacegroup, []


_PAIR_SWAPS = (("(+)", "(-)"), ("plus", "minus"), ("PLUS", "MINUS"), ("Plus", "Minus"), ("+", "-"))


def _mtz_pair(chosen, columns, source, flag):
    """(plus column, minus column) of the anomalous pair ``chosen`` belongs to."""
    same = [c for c in columns if c.type == chosen.type and c.dataset_id == chosen.dataset_id]
    by_label = {c.label: c for c in same}
    for plus_mark, minus_mark in _PAIR_SWAPS:
        if plus_mark in chosen.label and chosen.label.replace(plus_mark, minus_mark) in by_label:
            return chosen, by_label[chosen.label.replace(plus_mark, minus_mark)]
        if minus_mark in chosen.label and chosen.label.replace(minus_mark, plus_mark) in by_label:
            return by_label[chosen.label.replace(minus_mark, plus_mark)], chosen
    # No telling labels: the columns of this type pair up in file order, (+) first.
    position = same.index(chosen)
    partner = position + 1 if position % 2 == 0 else position - 1
    if partner >= len(same):
        raise InputError(f"{flag} {source}: anomalous column {chosen.label} ({chosen.type}) has no partner "
                         "(F(+) needs F(-))")
    first, second = sorted((position, partner))
    return same[first], same[second]


def _amplitudes(intensity):
    """F = sqrt(max(I, 0)); missing (NaN) stays missing."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(intensity), np.nan, np.sqrt(np.maximum(intensity, 0.0)))


# ---------------------------------------------------------------------------
# SF-mmCIF


def _read_cif(gemmi, raw, source, column, flag, column_flag):
    try:
        doc = gemmi.cif.read_string(raw.decode("utf-8", errors="replace"))
        blocks = gemmi.as_refln_blocks(doc)
    except (RuntimeError, ValueError) as error:
        raise InputError(f"{flag} {source}: not a readable mmCIF file: {error}") from None
    blocks = [b for b in blocks if b.default_loop is not None and "index_h" in b.column_labels()]
    if not blocks:
        raise InputError(f"{flag} {source}: no _refln loop with index_h/index_k/index_l")
    block = blocks[0]
    if block.is_unmerged():
        raise InputError(f"{flag} {source}: unmerged reflections (_diffrn_refln); merge the data first")
    notes = []
    if len(blocks) > 1:
        notes.append(f"NOTE: {source} holds {len(blocks)} reflection blocks; reading the first, data_{block.block.name}")
    tags = [t for t in block.column_labels() if t not in ("index_h", "index_k", "index_l")]
    known = _CIF_AMPLITUDES + _CIF_INTENSITIES + tuple(_CIF_PAIRS)
    if column is not None:
        name = column[len("_refln."):] if column.startswith("_refln.") else column
        if name not in tags:
            raise InputError(f"{column_flag} {column}: no such column in {source}; it has: {', '.join(tags) or 'none'}")
        if name not in known:
            raise InputError(
                f"{column_flag} {column}: {name} in {source} is not an amplitude or intensity "
                f"(one of {', '.join(known)})")
    else:
        amplitudes = [t for t in tags if t in _CIF_AMPLITUDES or t in ("pdbx_F_plus", "pdbx_F_minus")]
        intensities = [t for t in tags if t in _CIF_INTENSITIES or t in ("pdbx_I_plus", "pdbx_I_minus")]
        if not amplitudes and not intensities:
            raise InputError(
                f"{flag} {source}: no amplitude ({', '.join(_CIF_AMPLITUDES)}, pdbx_F_plus/minus) or "
                f"intensity ({', '.join(_CIF_INTENSITIES)}, pdbx_I_plus/minus) column; it has: {', '.join(tags) or 'none'}")
        name = (amplitudes or intensities)[0]
    hkl = np.asarray(block.make_miller_array(), dtype=np.int64)
    if name in _CIF_PAIRS:
        plus_tag, minus_tag, intensity = _CIF_PAIRS[name]
        if plus_tag not in tags or minus_tag not in tags:
            raise InputError(f"{flag} {source}: {name} has no partner ({plus_tag} needs {minus_tag})")
        plus = np.asarray(block.make_float_array(plus_tag), dtype=np.float64)
        minus = np.asarray(block.make_float_array(minus_tag), dtype=np.float64)
        label = f"{plus_tag}/{minus_tag}"
    else:
        intensity = name in _CIF_INTENSITIES
        plus = np.asarray(block.make_float_array(name), dtype=np.float64)
        minus = None
        label = name
    if intensity:
        plus, minus = _amplitudes(plus), (None if minus is None else _amplitudes(minus))
        label += " -> sqrt(max(I,0))"
    return hkl, plus, minus, label, block.cell, block.spacegroup, notes


# ---------------------------------------------------------------------------
# P1 expansion


def _rotations(spacegroup) -> np.ndarray:
    """Integer rotation matrices (n, 3, 3) of the space group's primitive operations, identity first."""
    ops = spacegroup.operations()
    mats = [np.asarray(op.rot, dtype=np.int64) // op.DEN for op in ops.sym_ops]
    return np.stack(mats)


def expand_to_p1(hkl, plus, rotations, minus=None):
    """Expand asymmetric-unit reflections to all of P1 (see the module docstring).

    ``hkl``: int (n, 3); ``plus``: F (n,) (NaN = missing); ``rotations``: int
    (m, 3, 3), identity first; ``minus``: F(-) (n,) for an anomalous pair, else
    None.  Returns ``(indices int64 (k, 3), F float64 (k,))`` with every index once.
    """
    hkl = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    plus = np.asarray(plus, dtype=np.float64).reshape(-1)
    n = len(hkl)
    if minus is None:
        f_at_h, f_at_minus_h, friedel_rank = plus, plus, 2
    else:
        minus = np.asarray(minus, dtype=np.float64).reshape(-1)
        f_at_h = np.where(np.isnan(plus), minus, plus)
        f_at_minus_h = np.where(np.isnan(minus), plus, minus)
        friedel_rank = 1  # F(-) at -h is data, on a par with symmetry mates
    mates = np.einsum("ni,oij->onj", hkl, rotations)  # (m, n, 3): h R for each R
    m = len(rotations)
    rank_h = np.ones((m, n), dtype=np.int64)
    rank_h[0] = 0  # the listed index itself
    if minus is not None:
        rank_h[:, np.isnan(plus)] = 2  # F(+) missing: filled from F(-)
    rank_minus = np.full((m, n), friedel_rank, dtype=np.int64)
    if minus is not None:
        rank_minus[:, np.isnan(minus)] = 2
    indices = np.concatenate([mates.reshape(-1, 3), -mates.reshape(-1, 3)])
    values = np.concatenate([np.broadcast_to(f_at_h, (m, n)).reshape(-1),
                             np.broadcast_to(f_at_minus_h, (m, n)).reshape(-1)])
    ranks = np.concatenate([rank_h.reshape(-1), rank_minus.reshape(-1)])
    order = np.concatenate([np.tile(np.arange(n), m), np.tile(np.arange(n), m)])
    keep = ~np.isnan(values)
    indices, values, ranks, order = indices[keep], values[keep], ranks[keep], order[keep]
    if len(values) == 0:
        return indices.reshape(0, 3), values
    low = indices.min(axis=0)
    span = indices.max(axis=0) - low + 1
    flat = np.ravel_multi_index((indices - low).T, span)
    # Best first: lowest rank, then the latest line of the file.
    sort = np.lexsort((-order, ranks, flat))
    first = np.ones(len(sort), dtype=bool)
    first[1:] = flat[sort][1:] != flat[sort][:-1]
    pick = sort[first]
    return indices[pick], values[pick]


# ---------------------------------------------------------------------------
# atomic models


def structure_factors_from_model(path, d_min: float, *, default_F: float = 0.0,
                                 flag: str = "--model") -> ReflectionData:
    """|F(h)| of an atomic model for every P1 index with d >= ``d_min`` (Å).

    See the module docstring for the physics and gemmi's method.
    """
    source = os.fspath(path)
    read_file_bytes(path)  # a missing or unreadable file: the usual one-line error
    if not (d_min > 0 and math.isfinite(d_min)):
        raise InputError(f"{flag} {source}: resolution limit must be positive, got {d_min:g} A")
    gemmi = _gemmi(flag, source)
    try:
        structure = gemmi.read_structure(source)
    except (RuntimeError, ValueError, OSError) as error:
        raise InputError(f"{flag} {source}: not a model gemmi can read: {error}") from None
    if len(structure) == 0 or not any(True for _ in structure[0].all()):
        raise InputError(f"{flag} {source}: the model has no atoms")
    cell = structure.cell
    if not cell.is_crystal() or cell.volume <= 0:
        raise InputError(f"{flag} {source}: the model has no unit cell (CRYST1 / _cell)")
    notes = []
    spacegroup = structure.find_spacegroup()
    if spacegroup is None:
        notes.append(f"NOTE: {source} names no space group; the model is taken as P1")
        structure.spacegroup_hm = "P 1"
        structure.setup_cell_images()
    if len(structure) > 1:
        notes.append(f"NOTE: {source} holds {len(structure)} models; using the first")
    frac = np.asarray(cell.frac.mat, dtype=np.float64)  # fractional = frac @ cartesian
    # every index with |s| = |frac^T h| <= 1/d_min lies in this box
    limits = np.floor(np.linalg.norm(np.linalg.inv(frac), axis=0) / d_min).astype(np.int64)
    hkl_io.grid_shape([-int(v) for v in limits], [int(v) for v in limits], f"{flag} {source} (d_min {d_min:g} A)")  # refuses a huge box early
    calc = gemmi.DensityCalculatorX()
    calc.d_min = float(d_min)
    calc.rate = MODEL_GRID_RATE
    calc.cutoff = MODEL_DENSITY_CUTOFF
    calc.set_refmac_compatible_blur(structure[0])
    calc.grid.setup_from(structure)
    calc.put_model_density_on_grid(structure[0])
    transform = gemmi.transform_map_to_f_phi(calc.grid, half_l=True)
    amplitudes = np.abs(np.array(transform, copy=True))
    nu, nv, nw = calc.grid.nu, calc.grid.nv, calc.grid.nw
    if np.any(2 * limits >= np.array([nu, nv, nw])):
        raise InputError(f"{flag} {source}: density grid {nu}x{nv}x{nw} too coarse for d_min {d_min:g} A")
    table = _sphere_table(amplitudes, frac, limits, d_min, calc.blur, float(default_F), source)
    cell_tuple = (cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma)
    sg = structure.find_spacegroup()
    return ReflectionData(table=table, format="model", column=f"|F| to {d_min:g} A", cell=cell_tuple,
                          spacegroup=sg.hm if sg is not None else "P 1", notes=tuple(notes))


def _sphere_table(amplitudes, frac, limits, d_min, blur, default_F, source) -> hkl_io.HKLTable:
    """The dense table of |F| for every index with d >= d_min, filled one h-slab at a time.

    ``amplitudes``: |F| on the half-l transform grid (nu, nv, nw//2+1), still
    blurred by ``blur`` (Å^2); ``frac``: the fractionalisation matrix, so
    that 1/d^2 = |h @ frac|^2.  No list of indices is ever built: memory is
    the table itself plus one slab.
    """
    nu, nv = amplitudes.shape[:2]
    inv_dmin2 = (1.0 + 1e-12) / (d_min * d_min)
    k_axis = np.arange(-limits[1], limits[1] + 1)
    l_axis = np.arange(-limits[2], limits[2] + 1)
    kk, ll = np.meshgrid(k_axis, l_axis, indexing="ij")
    partial = kk[..., None] * frac[1] + ll[..., None] * frac[2]  # (K, L, 3): the k, l part of s

    def slab(h):
        s = h * frac[0] + partial
        inv_d2 = np.einsum("...i,...i->...", s, s)
        return inv_d2, inv_d2 <= inv_dmin2

    # pass 1: the index box the sphere really occupies, and the count
    lows, highs, count = np.array(limits), -np.array(limits), 0
    for h in range(-limits[0], limits[0] + 1):
        _, inside = slab(h)
        if inside.any():
            k_in, l_in = kk[inside], ll[inside]
            lows = np.minimum(lows, [h, k_in.min(), l_in.min()])
            highs = np.maximum(highs, [h, k_in.max(), l_in.max()])
            count += int(inside.sum())
    hkl_min, hkl_max = tuple(int(v) for v in lows), tuple(int(v) for v in highs)
    shape = hkl_io.grid_shape(hkl_min, hkl_max, source)
    values = np.zeros(shape, dtype=np.float64)
    if default_F != 0.0:
        values[:-1, :-1, :-1] = default_F
    # pass 2: fill; the transform holds l >= 0 only, and |F(-h)| = |F(h)|
    flip = ll < 0
    k_half, l_half = np.where(flip, -kk, kk), np.where(flip, -ll, ll)
    k_rows, l_cols = kk - hkl_min[1], ll - hkl_min[2]
    for h in range(hkl_min[0], hkl_max[0] + 1):
        inv_d2, inside = slab(h)
        h_half = np.where(flip, -h, h)
        F = amplitudes[h_half % nu, k_half % nv, l_half] * np.exp(0.25 * blur * inv_d2)  # blur undone
        values[h - hkl_min[0]][k_rows[inside], l_cols[inside]] = F[inside]
    values.flags.writeable = False
    return hkl_io.HKLTable(values=values, hkl_min=hkl_min, hkl_max=hkl_max, count=count)
