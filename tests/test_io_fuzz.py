"""Property tests: whatever bytes a user file holds, the readers raise only InputError.

Each reader gets random bytes, random text made of the characters its format
uses, and damaged versions of valid files (truncated, with bytes flipped or
inserted).  A reader may accept the file or raise InputError; any other
exception is a bug.

Example counts: 200 per test, 8 tests: 1,600 generated inputs.  The Hypothesis
profile (tests/conftest.py) makes them the same on every CI run.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbjax.errors import InputError
from nbjax.io import (
    read_fdump,
    read_float_image,
    read_hkl,
    read_mosflm_matrix,
    read_pgm,
    read_smv,
    read_sourcefile,
    write_fdump,
)

GOLDEN = Path(__file__).parent / "golden"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

NUMBER_TEXT = st.text(alphabet="0123456789+-.eEx#,;:! \t\n\r\fnaifINF", max_size=300)
ANY_TEXT = st.text(max_size=200)


def _damaged(original: bytes) -> st.SearchStrategy[bytes]:
    """Strategy: ``original`` truncated, with a byte range replaced, or with bytes inserted."""
    size = len(original)

    @st.composite
    def damage(draw):
        start = draw(st.integers(0, size))
        end = draw(st.integers(start, min(size, start + 64)))
        replacement = draw(st.binary(max_size=16))
        if draw(st.booleans()):
            return original[:start]
        return original[:start] + replacement + original[end:]

    return damage()


def _small_fdump(tmp_dir: Path) -> bytes:
    table = read_hkl(GOLDEN / "inputs" / "sparse.hkl")
    write_fdump(tmp_dir / "seed_Fdump.bin", table)
    return (tmp_dir / "seed_Fdump.bin").read_bytes()


def _small_smv() -> bytes:
    return (GOLDEN / "inputs" / "header.img").read_bytes()[:1024]


def _small_pgm() -> bytes:
    with gzip.open(GOLDEN / "cases" / "p48_pgm" / "image.pgm.gz", "rb") as handle:
        return handle.read()[:200]


READERS = {
    "hkl": read_hkl,
    "fdump": read_fdump,
    "matrix": read_mosflm_matrix,
    "smv": read_smv,
    "pgm": read_pgm,
    "sources": read_sourcefile,
    "float": read_float_image,
}


def accepts_or_input_error(reader, path: Path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        reader(path)
    except InputError as error:
        message = str(error)
        assert str(path) in message and "\n" not in message


@FUZZ
@given(content=st.binary(max_size=600), reader_name=st.sampled_from(sorted(READERS)))
def test_random_bytes(tmp_path, content, reader_name):
    accepts_or_input_error(READERS[reader_name], tmp_path / "fuzz.dat", content)


@FUZZ
@given(text=st.one_of(NUMBER_TEXT, ANY_TEXT), reader_name=st.sampled_from(["hkl", "matrix", "sources"]))
def test_random_text(tmp_path, text, reader_name):
    accepts_or_input_error(READERS[reader_name], tmp_path / "fuzz.txt", text.encode("utf-8"))


@FUZZ
@given(
    rows=st.lists(
        st.lists(st.one_of(st.integers(-40, 40).map(str), st.floats(allow_nan=True).map(repr), NUMBER_TEXT),
                 min_size=0, max_size=7),
        max_size=30,
    ),
    separator=st.sampled_from([" ", "\t", ",", " , ", ";"]),
)
def test_hkl_like_rows(tmp_path, rows, separator):
    text = "\n".join(separator.join(row) for row in rows)
    for reader in (read_hkl, read_sourcefile, read_mosflm_matrix):
        accepts_or_input_error(reader, tmp_path / "rows.txt", text.encode("utf-8"))
    # read_hkl's numpy fast path and its line-by-line reader (forced by a
    # non-ASCII comment) must agree on what they accept and what they return.
    outcomes = []
    for suffix in ("", "\n# \u00e9"):
        (tmp_path / "rows.hkl").write_bytes((text + suffix).encode("utf-8"))
        try:
            outcomes.append(read_hkl(tmp_path / "rows.hkl"))
        except InputError:
            outcomes.append(None)
    assert outcomes[0] == outcomes[1]


@FUZZ
@given(data=st.data())
def test_damaged_fdump(tmp_path, data):
    seed = _small_fdump(tmp_path)
    accepts_or_input_error(read_fdump, tmp_path / "Fdump.bin", data.draw(_damaged(seed)))


@FUZZ
@given(data=st.data())
def test_damaged_smv(tmp_path, data):
    accepts_or_input_error(read_smv, tmp_path / "image.img", data.draw(_damaged(_small_smv())))


@FUZZ
@given(
    header_bytes=st.one_of(st.integers(-5, 5000).map(str), NUMBER_TEXT),
    size1=st.one_of(st.integers(-5, 70).map(str), NUMBER_TEXT),
    size2=st.one_of(st.integers(-5, 70).map(str), NUMBER_TEXT),
    byte_order=st.sampled_from(["little_endian", "big_endian", "", "x"]),
    tail=st.binary(max_size=3000),
)
def test_smv_header_fields(tmp_path, header_bytes, size1, size2, byte_order, tail):
    header = f"{{\nHEADER_BYTES={header_bytes};\nBYTE_ORDER={byte_order};\nSIZE1={size1};\nSIZE2={size2};\n}}\f"
    accepts_or_input_error(read_smv, tmp_path / "image.img", header.encode("utf-8") + tail)


@FUZZ
@given(data=st.data())
def test_damaged_pgm(tmp_path, data):
    accepts_or_input_error(read_pgm, tmp_path / "image.pgm", data.draw(_damaged(_small_pgm())))


@FUZZ
@given(content=st.binary(max_size=100), shape=st.tuples(st.integers(0, 6), st.integers(0, 6)))
def test_float_image_shapes(tmp_path, content, shape):
    path = tmp_path / "float.bin"
    path.write_bytes(content)
    try:
        image = read_float_image(path, shape)
    except InputError:
        assert len(content) != 4 * shape[0] * shape[1]
    else:
        assert image.shape == shape and image.dtype == np.float32
