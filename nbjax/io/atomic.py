"""Safe file access: all-or-nothing writes, and reads that report InputError.

Every output file nbjax writes (images, Fdump.bin) goes through
:func:`atomic_open` or :func:`atomic_write`.  The bytes are first written to a
temporary file in the same directory as the target (named
``.<target name>.<random>.tmp``), which then replaces the target with
``os.replace`` -- an atomic rename on POSIX and Windows.  If anything goes
wrong before that (an exception, Ctrl-C), the temporary file is deleted, so a
failed or interrupted run leaves either the old file or no file, never a
half-written one.  The new file gets the usual permissions (0666 minus the
umask), like a file opened by C's ``fopen``.  Data are not fsync'ed: the
guarantee is against crashes of the program, not of the machine.

:func:`read_file_bytes` is the one place where the readers open user files; it
turns every operating-system error into an :class:`~nbjax.errors.InputError`
that names the file.  It reads only regular files (a FIFO, a terminal or
``/dev/zero`` would block or never end) and at most ``limit`` bytes
(:data:`MAX_INPUT_BYTES`, 2 GiB, unless the reader asks for another limit),
checked with ``stat`` before anything is read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from typing import IO, Iterator

from nbjax.errors import InputError

__all__ = ["array_bytes", "atomic_open", "atomic_path", "atomic_write", "read_file_bytes", "read_file_head", "map_file",
           "MAX_INPUT_BYTES"]

# The largest input file read unless a reader says otherwise (2 GiB): larger
# than any image, HKL or Fdump.bin within nbjax's grid and detector limits.
MAX_INPUT_BYTES = 1 << 31

_ALLOWED_MODES = ("wb", "w")


def _describe(error: BaseException) -> str:
    """Short reason for an OS error, e.g. 'No such file or directory'."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _create_temporary(target: str) -> tuple[int, str]:
    """Create a new, empty temporary file next to ``target``; return (fd, name)."""
    directory, name = os.path.split(target)
    for _ in range(100):
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return fd, temporary
    raise FileExistsError(f"could not create a temporary file next to {target}")


def remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing so that it appears only when the block succeeds.

    ``mode`` is ``"wb"`` (bytes) or ``"w"`` (text).  Yields the open file
    object of the temporary file.  On normal exit from the ``with`` block the
    file is closed and moved onto ``path``; on any exception the temporary file
    is removed and the exception propagates unchanged.  Failure to create the
    temporary file, to close it or to move it into place raises
    :class:`InputError` naming ``path``.
    """
    if mode not in _ALLOWED_MODES:
        raise ValueError(f"atomic_open: mode must be one of {_ALLOWED_MODES}, got {mode!r}")
    target = os.fspath(path)
    try:
        fd, temporary = _create_temporary(target)
    except (OSError, ValueError) as error:
        raise InputError(f"{target}: cannot write: {_describe(error)}") from error
    try:
        handle = os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        remove_quietly(temporary)
        raise
    try:
        yield handle
    except BaseException:
        with contextlib.suppress(OSError):
            handle.close()
        remove_quietly(temporary)
        raise
    try:
        handle.close()
        os.replace(temporary, target)
    except OSError as error:
        remove_quietly(temporary)
        raise InputError(f"{target}: cannot write: {_describe(error)}") from error


@contextlib.contextmanager
def atomic_path(path) -> Iterator[str]:
    """Like :func:`atomic_open`, but yields the temporary file's *name*.

    For writers that open the file themselves (h5py, fabio): the block writes
    to the yielded name; on normal exit the file is moved onto ``path``, on any
    exception it is removed.  Operating-system errors raise :class:`InputError`
    naming ``path``.
    """
    target = os.fspath(path)
    try:
        fd, temporary = _create_temporary(target)
        os.close(fd)
    except (OSError, ValueError) as error:
        raise InputError(f"{target}: cannot write: {_describe(error)}") from error
    try:
        yield temporary
    except OSError as error:
        remove_quietly(temporary)
        raise InputError(f"{target}: cannot write: {_describe(error)}") from error
    except BaseException:
        remove_quietly(temporary)
        raise
    try:
        os.replace(temporary, target)
    except OSError as error:
        remove_quietly(temporary)
        raise InputError(f"{target}: cannot write: {_describe(error)}") from error


def atomic_write(path, data, *more) -> None:
    """Write ``data`` (then each of ``more``) to ``path`` all-or-nothing (see :func:`atomic_open`).

    Each part is bytes or any C-contiguous buffer (e.g. :func:`array_bytes` of
    an image), written as it is: a header and 16 MB of pixels need not be
    joined into one new bytes object first.  Any operating-system error (no
    such directory, permission denied, disk full) raises :class:`InputError`
    naming ``path``; no partial file is left.
    """
    target = os.fspath(path)
    try:
        with atomic_open(target, "wb") as handle:
            for part in (data, *more):
                handle.write(part)
    except OSError as error:
        raise InputError(f"{target}: cannot write: {_describe(error)}") from error


def array_bytes(array, dtype) -> memoryview:
    """The bytes of ``array`` as ``dtype`` in C order: a view when it already is, else of one converted copy."""
    import numpy as np

    return memoryview(np.ascontiguousarray(array, dtype=dtype).reshape(-1).view(np.uint8))


def _size_text(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def read_file_bytes(path, limit: int = MAX_INPUT_BYTES) -> bytes:
    """All bytes of the user file ``path``; any failure is an InputError naming it.

    Refuses, before reading, anything that is not a regular file (directory,
    FIFO, device such as ``/dev/zero``) and files larger than ``limit`` bytes.
    """
    name, fd, size = _open_regular(path, limit)
    try:
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(size + 1)
    except (OSError, ValueError) as error:
        raise InputError(f"{name}: cannot read: {_describe(error)}") from error
    if len(data) > limit:  # it grew while we read it
        raise InputError(f"{name}: file too large (more than {_size_text(limit)})")
    return data


def map_file(path, limit: int = MAX_INPUT_BYTES):
    """The bytes of ``path`` as a read-only buffer (memory-mapped when possible), checked as above.

    Cheaper than :func:`read_file_bytes` for hashing a large file: no copy.
    (Truncating the file while the map is in use would crash the reader, as
    it would any program that maps files.)
    """
    import mmap

    name, fd, size = _open_regular(path, limit)
    try:
        if size > 0:
            with contextlib.suppress(OSError, ValueError):
                return mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    return read_file_bytes(name, limit)


def read_file_head(path, count: int) -> tuple[bytes, int]:
    """The first ``count`` bytes of the regular file ``path`` and its size (InputError as above)."""
    name, fd, size = _open_regular(path, MAX_INPUT_BYTES * 64)
    try:
        with os.fdopen(fd, "rb") as handle:
            return handle.read(count), size
    except (OSError, ValueError) as error:
        raise InputError(f"{name}: cannot read: {_describe(error)}") from error


def _open_regular(path, limit: int) -> tuple[str, int, int]:
    """(name, open read-only descriptor, size) of a regular file of at most ``limit`` bytes.

    Checked before opening (a FIFO or device is never opened) and again on the
    open descriptor; O_NONBLOCK so that a name turned into a FIFO after the
    check still does not wait for a writer.  Any failure is an InputError.
    """
    try:
        name = os.fspath(path)
    except TypeError as error:
        raise InputError(f"{path!r}: not a file name") from error
    try:
        _check_regular(name, os.stat(name), limit)
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except (OSError, ValueError) as error:
        raise InputError(f"{name}: cannot read: {_describe(error)}") from error
    try:
        return name, fd, _check_regular(name, os.fstat(fd), limit)
    except BaseException:
        os.close(fd)
        raise


def _check_regular(name: str, info: os.stat_result, limit: int) -> int:
    """The file's size; InputError unless it is a regular file of at most ``limit`` bytes."""
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{name}: cannot read: Is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{name}: cannot read: not a regular file (a device, FIFO or socket)")
    if info.st_size > limit:
        raise InputError(
            f"{name}: file too large ({_size_text(info.st_size)}; the limit is {_size_text(limit)})"
        )
    return info.st_size
