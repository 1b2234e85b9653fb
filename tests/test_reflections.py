"""MTZ, SF-mmCIF and atomic models as -hkl sources (nbjax.io.reflections, through gemmi).

The files are written here with gemmi from the golden small.hkl (or from a
hand-made model), and checked against the text reader, the golden images of
nanoBragg.c, an independent P1 expansion through gemmi's own operators, and a
direct structure-factor sum.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import INPUTS, case_args, reference_image
from nbjax import cli, experiment
from nbjax.renderer import engine
from nbjax.compare import metrics
from nbjax.errors import InputError
from nbjax.io import read_hkl, read_structure_factors
from nbjax.io import reflections

gemmi = pytest.importorskip("gemmi")

CASE = "p38_roi"  # small.hkl, -cell 100 100 100 90 90 90, a 101x121 region: quick to render


def _render(args, **kw):
    exp = experiment.build(args, **kw)
    result = engine.render(exp.scene, exp.config, None if exp.mask is None else np.asarray(exp.mask))
    return np.asarray(result.image, dtype=np.float32), exp


def _case_with(hkl_name):
    args = case_args(CASE)
    args[args.index("-hkl") + 1] = hkl_name
    return args


def _small_table():
    return np.loadtxt(INPUTS / "small.hkl")


def _write_mtz(path, hkl, columns, spacegroup="P 1", cell=(100, 100, 100, 90, 90, 90)):
    """``columns``: list of (label, type, values)."""
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup(spacegroup)
    mtz.set_cell_for_all(gemmi.UnitCell(*cell))
    mtz.add_dataset("sim")
    for label, kind, _ in columns:
        mtz.add_column(label, kind)
    data = np.column_stack([np.asarray(hkl, dtype=np.float64)] + [np.asarray(v, np.float64) for _, _, v in columns])
    mtz.set_data(data.astype(np.float32))
    mtz.write_to_file(str(path))
    return path


def test_mtz_gives_the_text_table_and_renders_its_image(in_inputs_dir):
    table = _small_table()
    _write_mtz(in_inputs_dir / "small.mtz", table[:, :3], [("F", "F", table[:, 3])])
    assert (in_inputs_dir / "small.mtz").read_bytes()[:4] == b"MTZ "
    # MTZ stores float32: the table is small.hkl's with each F rounded to float32
    rounded = in_inputs_dir / "small32.hkl"
    rounded.write_text("".join("%d %d %d %r\n" % (h, k, l, float(np.float32(f))) for h, k, l, f in table))
    from_mtz = read_structure_factors(in_inputs_dir / "small.mtz")
    assert from_mtz == read_hkl(rounded)
    assert from_mtz.count == 15625 and from_mtz.hkl_min == (-12, -12, -12)
    text = read_hkl(INPUTS / "small.hkl")
    assert np.max(np.abs(from_mtz.values - text.values)) <= 6e-8 * np.max(text.values)

    image_mtz, exp = _render(_case_with("small.mtz"))
    image_rounded, _ = _render(_case_with("small32.hkl"))
    assert np.array_equal(image_mtz, image_rounded)  # bit for bit
    assert any("reading MTZ small.mtz: F, space group P 1, 15625 reflections" in line for line in exp.log)
    reference = reference_image(CASE, "spec").reshape(image_mtz.shape)
    m = metrics(reference, image_mtz)
    assert m.strict, m


def test_sf_mmcif_renders_the_golden_image_bit_for_bit(in_inputs_dir):
    doc = gemmi.cif.Document()
    block = doc.add_new_block("r1sim")
    block.set_pair("_cell.length_a", "100")
    block.set_pair("_cell.length_b", "100")
    block.set_pair("_cell.length_c", "100")
    for angle in ("alpha", "beta", "gamma"):
        block.set_pair(f"_cell.angle_{angle}", "90")
    block.set_pair("_symmetry.space_group_name_H-M", "'P 1'")
    loop = block.init_mmcif_loop("_refln.", ["index_h", "index_k", "index_l", "F_meas_au", "F_meas_sigma_au"])
    for line in (INPUTS / "small.hkl").read_text().splitlines():
        h, k, l, f = line.split()
        loop.add_row([h, k, l, f, "1.0"])
    path = in_inputs_dir / "small_sf.txt"  # no telling extension: the content decides
    doc.write_file(str(path))
    assert read_structure_factors(path) == read_hkl(INPUTS / "small.hkl")

    image_cif, exp = _render(_case_with("small_sf.txt"))
    image_text, _ = _render(case_args(CASE))
    assert np.array_equal(image_cif, image_text)
    reference = reference_image(CASE, "spec").reshape(image_cif.shape)
    assert metrics(reference, image_cif).strict
    assert np.mean(image_cif == reference) >= 0.9999
    assert any("SF-mmCIF" in line and "F_meas_au" in line for line in exp.log)


def _asu_reflections(spacegroup, cell, d_min, rng):
    """Indices of one reciprocal asymmetric unit (gemmi's), skipping systematic absences and 000."""
    sg = gemmi.SpaceGroup(spacegroup)
    uc = gemmi.UnitCell(*cell)
    asu = gemmi.ReciprocalAsu(sg)
    ops = sg.operations()
    limit = 8
    rows = [(h, k, l) for h in range(-limit, limit + 1) for k in range(-limit, limit + 1)
            for l in range(-limit, limit + 1)
            if (h, k, l) != (0, 0, 0) and asu.is_in([h, k, l]) and not ops.is_systematically_absent([h, k, l])
            and uc.calculate_d([h, k, l]) >= d_min]
    hkl = np.asarray(rows, dtype=np.int64)
    return hkl, sg


@pytest.mark.parametrize("spacegroup,cell", [
    ("P 21 21 21", (30, 40, 50, 90, 90, 90)),
    ("P 61", (40, 40, 60, 90, 90, 120)),
    ("C 1 2 1", (50, 30, 40, 90, 105, 90)),
])
def test_p1_expansion_puts_F_on_every_symmetry_and_friedel_mate(tmp_path, spacegroup, cell):
    rng = np.random.default_rng(7)
    hkl, sg = _asu_reflections(spacegroup, cell, 6.0, rng)
    n = len(hkl)
    F = rng.uniform(10, 100, n)
    Fp = F + rng.uniform(1, 5, n)
    Fm = F - rng.uniform(1, 5, n)
    I = rng.uniform(-50, 400, n)
    path = _write_mtz(tmp_path / "asu.mtz", hkl,
                      [("FP", "F", F), ("SIGFP", "Q", np.ones(n)), ("F(+)", "G", Fp), ("SIGF(+)", "L", np.ones(n)),
                       ("F(-)", "G", Fm), ("SIGF(-)", "L", np.ones(n)), ("IMEAN", "J", I)],
                      spacegroup=spacegroup, cell=cell)
    F32, Fp32, Fm32, I32 = (v.astype(np.float32).astype(np.float64) for v in (F, Fp, Fm, I))

    def at(table, index):
        return table.values[tuple(np.asarray(index) - np.asarray(table.hkl_min))]

    mean = read_structure_factors(path)  # first amplitude column: FP
    anomalous = read_structure_factors(path, column="F(-)")  # either member selects the pair
    intensity = read_structure_factors(path, column="IMEAN")
    expected = {}
    centric = np.zeros(n, dtype=bool)
    for i, row in enumerate(hkl):
        mates = {tuple(op.apply_to_hkl([int(x) for x in row])) for op in sg.operations()}
        friedel = {tuple(-x for x in mate) for mate in mates}
        centric[i] = bool(mates & friedel)
        for mate in mates:
            expected[mate] = i
            assert at(mean, mate) == F32[i]
            assert at(anomalous, mate) == Fp32[i]
            assert at(intensity, mate) == np.sqrt(max(I32[i], 0.0))
        for mate in friedel:
            expected.setdefault(mate, i)
            assert at(mean, mate) == F32[i]
            assert at(intensity, mate) == np.sqrt(max(I32[i], 0.0))
            if not centric[i]:
                assert at(anomalous, mate) == Fm32[i]  # F(-) kept apart at -hR
    # every distinct P1 index once, nothing else
    assert mean.count == anomalous.count == len(expected)
    assert np.count_nonzero(mean.values) == len(expected)
    assert intensity.count == len(expected)
    assert np.any(I32 < 0) and np.all(np.isfinite(intensity.values))


def test_missing_values_are_skipped_and_the_other_bijvoet_mate_stands_in(tmp_path):
    hkl = np.array([[1, 2, 3], [2, 3, 4]])
    nan = np.nan
    path = _write_mtz(tmp_path / "m.mtz", hkl,
                      [("F", "F", [nan, 5.0]), ("F(+)", "G", [7.0, nan]), ("F(-)", "G", [6.0, 3.0])])
    mean = read_structure_factors(path, default_F=1.5)
    assert mean.count == 2  # (2,3,4) and its Friedel mate
    assert mean.values[tuple(np.array([1, 2, 3]) - mean.hkl_min)] == 1.5  # missing: the default
    pair = read_structure_factors(path, column="F(+)")
    at = lambda index: pair.values[tuple(np.asarray(index) - pair.hkl_min)]
    assert (at([1, 2, 3]), at([-1, -2, -3]), at([2, 3, 4]), at([-2, -3, -4])) == (7.0, 6.0, 3.0, 3.0)


def test_expand_to_p1_listed_entries_win_over_mates():
    hkl = np.array([[1, 0, 0], [-1, 0, 0], [1, 0, 0]])
    indices, values = reflections.expand_to_p1(hkl, np.array([1.0, 2.0, 3.0]), np.eye(3, dtype=np.int64)[None])
    got = {tuple(i): v for i, v in zip(indices.tolist(), values)}
    assert got == {(1, 0, 0): 3.0, (-1, 0, 0): 2.0}  # listed beats Friedel; the later line wins


def _tiny_model(path, cell=(30.0, 35.0, 40.0, 90.0, 90.0, 90.0), spacegroup="P 21 21 21"):
    atoms = [("C", (4.1, 7.3, 2.2), 12.0, 1.0), ("N", (11.5, 20.2, 9.9), 18.0, 1.0),
             ("O", (22.4, 3.3, 31.0), 25.0, 0.7), ("S", (8.8, 30.1, 17.4), 15.0, 1.0),
             ("FE", (17.0, 13.0, 25.5), 9.0, 1.0)]
    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(*cell)
    st.spacegroup_hm = spacegroup
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    for number, (element, xyz, b, occ) in enumerate(atoms, start=1):
        residue = gemmi.Residue()
        residue.name = "LIG"
        residue.seqid = gemmi.SeqId(number, " ")
        atom = gemmi.Atom()
        atom.name = element
        atom.element = gemmi.Element(element)
        atom.pos = gemmi.Position(*xyz)
        atom.b_iso = b
        atom.occ = occ
        residue.add_atom(atom)
        chain.add_residue(residue)
    model.add_chain(chain)
    st.add_model(model)
    st.write_pdb(str(path))
    return atoms


def _direct_sum(atoms, cell, spacegroup, hkl):
    """F(h) = sum_j occ_j f_j(s) exp(-B_j s^2/4) exp(2 pi i h.x_j) over atoms and symmetry copies."""
    uc = gemmi.UnitCell(*cell)
    ops = gemmi.SpaceGroup(spacegroup).operations()
    inv_d2 = uc.calculate_1_d2([int(x) for x in hkl])
    stol2 = inv_d2 / 4.0
    total = 0j
    for element, xyz, b, occ in atoms:
        a1, a2, a3, a4, b1, b2, b3, b4, c = gemmi.Element(element).it92.get_coefs()
        f = c + sum(a * np.exp(-bb * stol2) for a, bb in ((a1, b1), (a2, b2), (a3, b3), (a4, b4)))
        frac = uc.fractionalize(gemmi.Position(*xyz))
        x = np.array([frac.x, frac.y, frac.z])
        for op in ops:
            rot = np.array(op.rot) / op.DEN
            tran = np.array(op.tran) / op.DEN
            total += occ * f * np.exp(-b * stol2) * np.exp(2j * np.pi * np.dot(hkl, rot @ x + tran))
    return abs(total)


def test_model_F_match_a_direct_sum(tmp_path):
    cell = (30.0, 35.0, 40.0, 90.0, 90.0, 90.0)
    atoms = _tiny_model(tmp_path / "tiny.pdb", cell)
    data = reflections.structure_factors_from_model(tmp_path / "tiny.pdb", 2.0)
    table = data.table
    assert data.spacegroup == "P 21 21 21"
    for hkl in [(1, 2, 3), (5, -3, 2), (-7, 4, -9), (0, 0, 4), (10, 11, -6), (-10, -11, 6), (3, 16, -2), (0, 0, 0)]:
        got = table.values[tuple(np.array(hkl) - table.hkl_min)]
        want = _direct_sum(atoms, cell, "P 21 21 21", np.array(hkl))
        assert got == pytest.approx(want, rel=1e-3), hkl
    # exactly the indices with d >= 2 A are listed
    uc = gemmi.UnitCell(*cell)
    inside = sum(1 for h in range(-15, 16) for k in range(-18, 19) for l in range(-20, 21)
                 if uc.calculate_1_d2([h, k, l]) <= 0.25 * (1 + 1e-9))  # d >= 2 A, d = 2 A included
    assert table.count == inside


def test_model_through_the_setup_covers_the_detector_corner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tiny_model(tmp_path / "tiny.pdb")
    args = ("-cell 30 35 40 90 90 90 -lambda 1.2 -N 5 -detpixels 100 -pixel 0.2 -distance 100 "
            "-nonoise -floatfile f.bin -noprogress").split()
    exp = experiment.build(args, model="tiny.pdb")
    # the farthest corner of the 20 mm detector, normal to the beam 100 mm away, from the beam spot
    spot_f, spot_s = exp.header["adxv_center_x_mm"], 20.0 - exp.header["adxv_center_y_mm"]
    reach = max(np.hypot(f - spot_f, s - spot_s) for f in (0.0, 20.0) for s in (0.0, 20.0))
    assert 14.1 < reach < 14.5
    two_theta = np.arctan(reach / 100.0)
    d_corner = 1.2 / (2 * np.sin(two_theta / 2))
    reached = [line for line in exp.log if line.startswith("reading model tiny.pdb")]
    assert reached, exp.log
    d_used = float(reached[0].split("|F| to ")[1].split(" A")[0])
    assert d_used < d_corner
    assert 1 / d_used == pytest.approx(1 / d_corner + 2 / 30.0, rel=1e-4)  # two steps of a* = 1/30
    F = np.asarray(exp.scene.F_table)
    direct = reflections.structure_factors_from_model("tiny.pdb", d_used).table
    # the log's d_min has 6 digits, so the density grid may differ a little: equal to ~1e-5 of max F
    assert F.shape == direct.values[:-1, :-1, :-1].shape
    assert np.max(np.abs(F - direct.values[:-1, :-1, :-1])) < 1e-4 * F.max()
    assert exp.fdump is not None and not any("differs" in w for w in exp.warnings)

    other = experiment.build([a if a != "35" else "36" for a in args], model="tiny.pdb", model_dmin="3")
    assert any("WARNING: the cell of tiny.pdb" in w and "more than 1%" in w for w in other.warnings)
    assert any("|F| to 3 A" in line for line in other.log)


def test_fit_model_reads_the_same_structure_factors_as_the_render(tmp_path, monkeypatch, capsys):
    """``params.from_args`` (what ``nbjax fit`` builds its model with) takes --model/--model-dmin too."""
    from nbjax import params as P

    monkeypatch.chdir(tmp_path)
    _tiny_model(tmp_path / "tiny.pdb")
    args = "-cell 30 35 40 90 90 90 -lambda 1.2 -N 5 -detpixels 24 -pixel 0.8 -distance 100 -nonoise".split()
    exp = experiment.build(args, model="tiny.pdb", model_dmin="3")
    model = P.from_args(args, model="tiny.pdb", model_dmin="3")
    got = np.asarray(model.params.crystal.F_table)
    assert got.shape == np.asarray(exp.scene.F_table).shape
    assert np.array_equal(got, np.asarray(exp.scene.F_table))
    assert float(np.max(got)) > 0
    # and the fit command passes the options on: a resolution without a model is refused, naming the option
    err = _error(["fit", "--observed", "x.bin", "--refine", "N", "--model-dmin", "3"] + args, capsys)
    assert "--model-dmin" in err


# ---------------------------------------------------------------------------
# bad input: one line naming the flag and the file, exit 2


def _error(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("nbjax: error: ")
    return err


BASE = "-cell 100 100 100 90 90 90 -lambda 1 -distance 100 -detpixels 8 -nonoise -noprogress".split()


def test_bad_inputs_are_one_line(in_inputs_dir, capsys):
    hkl = np.array([[1, 2, 3], [2, 3, 4]])
    _write_mtz(in_inputs_dir / "sig.mtz", hkl, [("SIGF", "Q", [1.0, 2.0]), ("PHI", "P", [0.0, 1.0])])
    err = _error(["-hkl", "sig.mtz"] + BASE, capsys)
    assert "-hkl sig.mtz" in err and "no amplitude" in err and "SIGF (Q)" in err

    _write_mtz(in_inputs_dir / "f.mtz", hkl, [("FP", "F", [1.0, 2.0]), ("SIGFP", "Q", [1.0, 2.0])])
    err = _error(["-hkl", "f.mtz", "--hkl-column", "FOBS"] + BASE, capsys)
    assert "--hkl-column FOBS" in err and "f.mtz" in err and "FP (F), SIGFP (Q)" in err
    err = _error(["-hkl", "f.mtz", "--hkl-column", "SIGFP"] + BASE, capsys)
    assert "--hkl-column SIGFP" in err and "type Q" in err

    err = _error(["-hkl", "small.hkl", "--hkl-column", "F"] + BASE, capsys)
    assert "--hkl-column F" in err and "small.hkl" in err
    err = _error(["--hkl-column", "F"] + BASE, capsys)
    assert "--hkl-column" in err and "-hkl" in err

    (in_inputs_dir / "junk.pdb").write_text("this is not a model\n")
    err = _error(["--model", "junk.pdb"] + BASE, capsys)
    assert "--model junk.pdb" in err
    err = _error(["--model", "missing.pdb"] + BASE, capsys)
    assert "missing.pdb" in err
    _tiny_model(in_inputs_dir / "tiny.pdb")
    err = _error(["--model", "tiny.pdb", "-hkl", "small.hkl"] + BASE, capsys)
    assert "--model tiny.pdb" in err and "-hkl" in err
    err = _error(["--model-dmin", "2"] + ["-hkl", "small.hkl"] + BASE, capsys)
    assert "--model-dmin" in err
    err = _error(["--model", "tiny.pdb", "--model-dmin", "-1"] + BASE, capsys)
    assert "--model-dmin" in err
    err = _error(["-hkl", "tiny.pdb"] + BASE, capsys)
    assert "-hkl tiny.pdb" in err and "--model" in err
    (in_inputs_dir / "bad.mtz").write_bytes(b"MTZ \x00\x00garbage")
    err = _error(["-hkl", "bad.mtz"] + BASE, capsys)
    assert "-hkl bad.mtz" in err
    assert not (in_inputs_dir / "floatimage.bin").exists()


def test_gemmi_is_imported_only_for_such_files():
    import subprocess
    import sys

    code = ("import sys, nbjax.experiment, nbjax.io, nbjax.cli; "
            "print('gemmi' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_without_gemmi_the_error_says_how_to_get_it(in_inputs_dir, monkeypatch):
    hkl = np.array([[1, 2, 3]])
    _write_mtz(in_inputs_dir / "f.mtz", hkl, [("FP", "F", [1.0])])
    monkeypatch.setitem(__import__("sys").modules, "gemmi", None)  # import gemmi now fails
    with pytest.raises(InputError, match=r"-hkl f.mtz: .*needs gemmi \(a dependency of nbjax\): pip install gemmi"):
        read_structure_factors("f.mtz")
    assert read_structure_factors("small.hkl") == read_hkl("small.hkl")  # text needs no gemmi


@pytest.mark.parametrize("extra", ["-twotheta 40 -pivot sample -detector_rotx 10",
                                   "-curved_det -twotheta 30 -pivot sample",
                                   "-Xbeam 30 -Ybeam -5 -divergence 2 -divsteps 3 -dispersion 10 -dispsteps 3"])
def test_model_resolution_is_the_largest_q_over_every_pixel_and_source(tmp_path, monkeypatch, extra):
    """The corners (flat) or the edge (curved) give the same largest |q| as all pixel corners do."""
    from nbjax.geometry import pixels as pixel_geometry

    monkeypatch.chdir(tmp_path)
    _tiny_model(tmp_path / "tiny.pdb")
    args = ("-cell 30 35 40 90 90 90 -lambda 1.2 -N 3 -detpixels 64 -pixel 0.2 -distance 50 -nonoise "
            "-floatfile t.bin -noprogress " + extra).split()
    exp = experiment.build(args, model="tiny.pdb")
    line = next(line for line in exp.log if line.startswith("reading model tiny.pdb"))
    d_used = float(line.split("|F| to ")[1].split(" A")[0])
    sc = exp.scene
    ff, ss = np.meshgrid(np.arange(65) * 0.2e-3, np.arange(65) * 0.2e-3)
    pos = np.asarray(pixel_geometry.lab_position(ff.ravel(), ss.ravel(), 0.0, np.asarray(sc.pix0_m),
                                                 np.asarray(sc.fdet), np.asarray(sc.sdet), np.asarray(sc.odet)))
    if exp.config.curved_detector:
        pos = np.asarray(pixel_geometry.curved_position(tuple(pos), float(sc.distance_m), np.asarray(sc.beam),
                                                        np.asarray(sc.fdet), np.asarray(sc.sdet)))
    d = pos / np.linalg.norm(pos, axis=0)
    incident, lam = np.asarray(sc.incident), np.asarray(sc.wavelength_m)
    q_max = np.linalg.norm((d[None] - incident[:, :, None]) / lam[:, None, None], axis=1).max() * 1e-10
    assert 1 / d_used == pytest.approx(q_max + 2 / 30.0, rel=2e-5)
