"""-hkl layouts nanoBragg.c reads, hostile inputs (huge index ranges, devices, FIFOs,
NaN in Fdump.bin, F whose square overflows), the three HKL readers agreeing,
and the parsed-file cache."""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbjax.errors import InputError
from nbjax.io import hkl, read_fdump, read_file_bytes, read_hkl, read_mosflm_matrix, read_smv, write_fdump
from nbjax.io.fdump import fdump_bytes

INPUTS = os.path.join(os.path.dirname(__file__), "golden", "inputs")
# Three reflections, as nanoBragg.c reads them from every layout below (its
# output "3 initialized hkls" and Fdump.bin header "-1 5 0 6 0 7" were checked
# with the C binary on these files).
THREE = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [-1, 0, 0, 9]], dtype=np.float64)


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1") if isinstance(content, str) else content)
    return path


def all_readers(raw: bytes):
    """(reference, loadtxt, compiled) results: an (n, 4) table or None (refused / handed over)."""
    try:
        reference = hkl._parse_line_by_line(raw, "x")[0]
    except InputError:
        reference = None
    return reference, hkl._parse_fast(raw), hkl._parse_kernel(raw)


def assert_same(a, b):
    assert a.shape == b.shape and np.array_equal(a, b) and np.array_equal(np.signbit(a), np.signbit(b))


# --------------------------------------------------------------------------- layouts (issue 14 item 6)

@pytest.mark.parametrize(
    "content",
    [
        "1 2 3 4\r5 6 7 8\r-1 0 0 9\r",  # CR-only line ends: C reads 3
        "1 2 3 4\r\n5 6 7 8\r\n-1 0 0 9\r\n",
        "1 2 3 4 5 6 7 8 -1 0 0 9\n",  # all on one line: C reads 3
        "1 2 3 4 5 6\n7 8 -1 0\n0 9\n",  # records wrapped over lines
        "1\n2\n3\n4\n5\n6\n7\n8\n-1\n0\n0\n9",  # one number per line
    ],
)
def test_layouts_nanobragg_reads(tmp_path, content):
    table = read_hkl(write(tmp_path, "f.hkl", content))
    assert table.count == 3 and table.hkl_min == (-1, 0, 0) and table.hkl_max == (5, 6, 7)
    assert table.values[1 + 1, 2, 3] == 4 and table.values[5 + 1, 6, 7] == 8 and table.values[0, 0, 0] == 9
    reference, fast, kernel = all_readers(content.encode())
    assert_same(reference, THREE)
    assert_same(kernel, THREE)
    assert fast is None or np.array_equal(fast, THREE)


def test_extra_columns_still_ignored(tmp_path):
    # every line has the same five columns: a table, not a stream
    table = read_hkl(write(tmp_path, "f.hkl", "1 2 3 4 0.5\n5 6 7 8 0.5\n"))
    assert table.count == 2 and table.values[0, 0, 0] == 4.0


@pytest.mark.parametrize(
    "content, message",
    [
        # C drops an incomplete last record silently; nbjax names it
        ("1 2 3 4\n5 6 7 8\n-1 0 0 9\n3 3\n", r"line 4: expected 'h k l F'.*14 numbers.*only 2"),
        ("1 2 3 4 5 6 7 8 9 10\n", r"line 1: .*10 numbers"),
        # C stops at the word (losing the reflections after it); nbjax names it
        ("1 2 3 4\n5 6 7 8\nfoo\n-1 0 0 9\n", r"line 3: .*'foo' is not a finite number"),
        ("1 2 3 4\r5 6 7 8\rfoo\r", r"line 3: .*'foo'"),
    ],
)
def test_incomplete_or_junk_refused(tmp_path, content, message):
    path = write(tmp_path, "bad.hkl", content)
    with pytest.raises(InputError, match=message):
        read_hkl(path)
    assert hkl._parse_kernel(content.encode()) is None


# --------------------------------------------------------------------------- the three readers agree

TOKENS = st.one_of(
    st.integers(-40, 40).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.sampled_from(["1.", ".5", "-.5", "+3", "-0", "0.0", "1e3", "2E-2", "1e", ".", "-", "1-2", "1.2.3",
                     "12345678901234567890", "0.1234567890123456789", "1e-30", "4.9e-324", "1e400", "007",
                     "nan", "inf", "0x10", "abc", "#", "# c", ",", "\u00e9"]),
)
SEPARATORS = st.sampled_from([" ", "  ", "\t", ",", " , ", "\n", "\r", "\r\n", "\v", "\f"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(TOKENS, SEPARATORS), max_size=40))
def test_compiled_scanner_matches_the_reference(pieces):
    raw = "".join(token + separator for token, separator in pieces).encode("utf-8")
    reference, fast, kernel = all_readers(raw)
    for result in (fast, kernel):
        if result is not None:  # a fast reader may hand over, never disagree
            assert reference is not None
            assert_same(result, reference)
    text = raw.decode("utf-8")
    fields = [f for line in re.split(r"\r\n|\r|\n", text) for f in line.split("#", 1)[0].replace(",", " ").split()]
    plain = all(f.isascii() and hkl._DECIMAL.fullmatch(f) for f in fields)
    if reference is not None and plain and not re.search(r"[^\x20-\x7e\t\n\r\v\f]", text.split("#")[0]):
        assert kernel is not None  # plain syntax: the scanner does not hand over needlessly


def test_readers_agree_on_the_golden_files():
    for name in ("small.hkl", "scaled.hkl", "sparse.hkl"):
        with open(os.path.join(INPUTS, name), "rb") as handle:
            raw = handle.read()
        reference, fast, kernel = all_readers(raw)
        assert_same(fast, reference)
        assert_same(kernel, reference)


def test_large_file_goes_through_the_scanner(tmp_path, monkeypatch):
    monkeypatch.setattr(hkl, "KERNEL_MIN_BYTES", 1)
    monkeypatch.setattr(hkl, "_parse_fast", None)  # would raise if used
    table = read_hkl(os.path.join(INPUTS, "sparse.hkl"), cache=None)
    assert table.count == 553 and table.values[0, 0, 0] == 181.363


# --------------------------------------------------------------------------- hostile values (issue 14 item 2)

def test_huge_index_range_refused_quickly(tmp_path):
    path = write(tmp_path, "huge.hkl", "0 0 0 1\n1000000 0 0 1\n0 9 0 1\n0 0 19 1\n")
    started = time.perf_counter()
    with pytest.raises(InputError) as info:
        read_hkl(path)
    message = str(info.value)
    assert "-hkl" in message and "1000002x11x21 = 231000462 values" in message and "2^27" in message
    assert str(path) in message and "\n" not in message
    assert time.perf_counter() - started < 5.0  # nothing of the 1.7 GiB grid is allocated


def test_largest_allowed_grid_shape():
    assert hkl.grid_shape((0, 0, 0), (510, 510, 510), "x") == (512, 512, 512)  # 2^27 exactly
    with pytest.raises(InputError, match="too large"):
        hkl.grid_shape((0, 0, 0), (511, 510, 510), "x")


@pytest.mark.parametrize(
    "content, line",
    [("1 2 3 4\n0 0 0 1e200\n", 2), ("1 2 3 4 5 6 7 -2e154\n", 1), ("0 0 0 1\r1 1 1 1.35e154\r", 2)],
)
def test_F_whose_square_overflows_refused(tmp_path, content, line):
    with pytest.raises(InputError, match=rf"line {line}: F = .* too large"):
        read_hkl(write(tmp_path, "f.hkl", content))


def test_F_just_below_the_limit_accepted(tmp_path):
    table = read_hkl(write(tmp_path, "f.hkl", "0 0 0 1.34e154\n"))
    assert table.values[0, 0, 0] == 1.34e154 and np.isfinite(table.values[0, 0, 0] ** 2)


def _fdump_with(tmp_path, value, where=(3, 4, 5)):
    table = read_hkl(os.path.join(INPUTS, "sparse.hkl"))
    raw = bytearray(fdump_bytes(table))
    header = raw.index(b"\f") + 1
    grid = np.frombuffer(raw, dtype="<f8", offset=header).reshape(table.values.shape).copy()
    grid[where] = value
    raw[header:] = grid.astype("<f8").tobytes()
    return write(tmp_path, "Fdump.bin", bytes(raw))


@pytest.mark.parametrize("value", [np.nan, np.inf, -1e300])
def test_fdump_bad_values_refused(tmp_path, value):
    with pytest.raises(InputError, match=r"Fdump.bin holds F = .* at h,k,l = -3,-2,-1"):
        read_fdump(_fdump_with(tmp_path, value))


def test_fdump_huge_header_refused_without_reading(tmp_path):
    path = write(tmp_path, "Fdump.bin", b"0 1000000 0 9 0 19\n\f" + b"\0" * 64)
    with pytest.raises(InputError, match=r"Fdump.bin Miller index range .* too large"):
        read_fdump(path)


def test_fdump_round_trip_streamed_write(tmp_path):
    table = read_hkl(os.path.join(INPUTS, "small.hkl"))
    write_fdump(tmp_path / "Fdump.bin", table)
    assert (tmp_path / "Fdump.bin").read_bytes() == fdump_bytes(table)
    assert read_fdump(tmp_path / "Fdump.bin").values.tobytes() == table.values.tobytes()


# --------------------------------------------------------------------------- devices, FIFOs, sizes

@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
@pytest.mark.parametrize("reader", [read_hkl, read_mosflm_matrix, read_smv, read_fdump, read_file_bytes])
def test_devices_refused(reader):
    with pytest.raises(InputError, match="/dev/zero: cannot read: not a regular file"):
        reader("/dev/zero")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_fifo_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.hkl"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="pipe.hkl: cannot read: not a regular file"):
        read_hkl(fifo)  # would block forever waiting for a writer if it were opened


def test_size_cap(tmp_path):
    path = write(tmp_path, "f.hkl", "0 0 0 1\n" * 10)
    with pytest.raises(InputError, match=r"f.hkl: file too large \(80 bytes; the limit is 79 bytes\)"):
        read_file_bytes(path, limit=79)
    assert len(read_file_bytes(path, limit=80)) == 80


# --------------------------------------------------------------------------- the cache

@pytest.fixture
def big_hkl(tmp_path, monkeypatch):
    """A 2-reflection-per-kB file made large enough to be cached, and a private cache folder."""
    monkeypatch.setattr(hkl, "CACHE_MIN_BYTES", 1000)
    with open(os.path.join(INPUTS, "sparse.hkl"), "rb") as handle:
        raw = handle.read()
    path = write(tmp_path, "s.hkl", raw)
    return path, tmp_path / "cache"


def _entries(folder):
    return sorted((folder / "hkl").iterdir()) if (folder / "hkl").exists() else []


def test_second_read_comes_from_the_cache(big_hkl, monkeypatch):
    path, folder = big_hkl
    uncached = read_hkl(path, cache=None)
    first = read_hkl(path, default_F=2.5, cache=str(folder))
    (entry,) = _entries(folder)
    assert len(entry.name) == 64 + 4  # sha256 hex + .bin
    monkeypatch.setattr(hkl, "_parse", lambda raw, source: pytest.fail("parsed again"))
    assert read_hkl(path, default_F=2.5, cache=str(folder)) == first
    assert read_hkl(path, cache=str(folder)) == uncached  # default_F is applied after the cache
    assert first.values[0, 0, 1] == 2.5 and uncached.values[0, 0, 1] == 0.0


@pytest.mark.parametrize("damage", ["flip", "truncate", "version", "garbage"])
def test_damaged_cache_entry_is_rebuilt(big_hkl, damage):
    path, folder = big_hkl
    expected = read_hkl(path, cache=str(folder))
    (entry,) = _entries(folder)
    raw = bytearray(entry.read_bytes())
    if damage == "flip":
        raw[-3] ^= 0x40  # inside an amplitude: only the CRC can tell
    elif damage == "truncate":
        raw = raw[:-8]
    elif damage == "version":
        raw = raw.replace(b'"version": 1', b'"version": 0')
    else:
        raw = bytearray(b"junk")
    entry.write_bytes(bytes(raw))
    assert read_hkl(path, cache=str(folder)) == expected
    assert hkl._cache_load(entry.name[:-4], str(folder)) is not None  # rewritten, good again


def test_cache_key_is_the_content(big_hkl):
    path, folder = big_hkl
    a = read_hkl(path, cache=str(folder))
    path.write_bytes(path.read_bytes().replace(b"181.363", b"181.364"))
    b = read_hkl(path, cache=str(folder))
    assert a.values[0, 0, 0] == 181.363 and b.values[0, 0, 0] == 181.364
    assert len(_entries(folder)) == 2
    assert not [p for p in (folder / "hkl").iterdir() if p.name.endswith(".tmp")]


def test_cache_keeps_the_most_recent_entries(big_hkl, monkeypatch):
    path, folder = big_hkl
    monkeypatch.setattr(hkl, "CACHE_ENTRIES", 2)
    raw = path.read_bytes()
    for i in range(4):
        path.write_bytes(raw + f"# {i}\n".encode())
        read_hkl(path, cache=str(folder))
        time.sleep(0.01)
    assert len(_entries(folder)) == 2


def test_unwritable_cache_is_only_slower(big_hkl):
    path, _ = big_hkl
    not_a_folder = path  # a file where the folder should be
    assert read_hkl(path, cache=str(not_a_folder)) == read_hkl(path, cache=None)


def test_cache_dir_environment(monkeypatch):
    from nbjax.io.cachedir import cache_dir

    monkeypatch.setenv("NBJAX_CACHE_DIR", "/x/y")
    assert cache_dir() == "/x/y"
    monkeypatch.setenv("NBJAX_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", "/c")
    assert cache_dir() == os.path.join("/c", "nbjax")


def test_bytes_already_read_are_used(big_hkl, monkeypatch):
    from nbjax.io import reflections

    path, folder = big_hkl
    expected = read_hkl(path, cache=None)
    raw = path.read_bytes()
    monkeypatch.setattr(hkl, "map_file", lambda *a, **k: pytest.fail("read again"))
    monkeypatch.setattr(hkl, "read_file_bytes", lambda *a, **k: pytest.fail("read again"))
    assert read_hkl(path, cache=str(folder), raw=raw) == expected  # parsed, cached
    assert read_hkl(path, cache=str(folder), raw=raw) == expected  # from the cache
    assert len(_entries(folder)) == 1
    monkeypatch.setenv("NBJAX_CACHE_DIR", str(folder))
    data = reflections.load_structure_factors(path)  # the -hkl entry point: one read of the file
    assert data.format == "text" and data.table == expected


def test_unchanged_file_is_known_by_its_identity(big_hkl, monkeypatch):
    """A file read before and not changed since is not read (nor hashed) again: its stat fields name its entry."""
    from nbjax.io import reflections

    path, folder = big_hkl
    expected = read_hkl(path, cache=None)
    read_hkl(path, cache=str(folder))
    assert [p.suffix for p in _entries(folder)] == [".bin"]  # just written: too young to be known by its stat
    monkeypatch.setattr(hkl, "IDENTITY_MIN_AGE_NS", 0)
    assert read_hkl(path, default_F=1.5, cache=str(folder)) == read_hkl(path, default_F=1.5, cache=None)
    assert sorted(p.suffix for p in _entries(folder)) == [".bin", ".id"]
    for name in ("map_file", "read_file_bytes", "_parse"):
        monkeypatch.setattr(hkl, name, lambda *a, **k: pytest.fail("the file was read again"))
    monkeypatch.setattr(reflections, "read_file_bytes", lambda *a, **k: pytest.fail("the file was read again"))
    assert read_hkl(path, cache=str(folder)) == expected
    monkeypatch.setenv("NBJAX_CACHE_DIR", str(folder))
    data = reflections.load_structure_factors(path)
    assert data.format == "text" and data.table == expected


def test_changed_file_is_read_again_even_with_its_old_size_and_time(big_hkl, monkeypatch):
    path, folder = big_hkl
    monkeypatch.setattr(hkl, "IDENTITY_MIN_AGE_NS", 0)
    before = read_hkl(path, cache=str(folder))
    read_hkl(path, cache=str(folder))  # remembered by its identity now
    assert any(p.suffix == ".id" for p in _entries(folder))
    old = os.stat(path)
    time.sleep(0.05)  # past the file system's clock tick: the change time moves on
    path.write_bytes(path.read_bytes().replace(b"181.363", b"181.364"))  # same size, same inode
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # and the old modification time
    assert os.stat(path).st_size == old.st_size and os.stat(path).st_mtime_ns == old.st_mtime_ns
    after = read_hkl(path, cache=str(folder))
    assert before.values[0, 0, 0] == 181.363 and after.values[0, 0, 0] == 181.364
