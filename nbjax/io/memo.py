"""Input files read once per batch: a memo of what a reader returned, by file identity.

A batch of jobs (``nbjax batch``, ``series``, ``stills``) builds one
experiment per job from the same flags; without a memo every job would read
and parse the same ``-hkl``, ``-mat`` or ``-sourcefile`` again.  Inside
:class:`memoized_files` each (file, reader) pair is read once.  A file is known
by its real path, modification time (ns) and size, so a file changed on disk
between two jobs is read again.  Outside the context every call reads.
"""

from __future__ import annotations

import os

__all__ = ["memoized_files", "memoized_read"]

# (real path, mtime_ns, size, reader, options...) -> what the reader returned, while memoized_files() is active
_MEMO: dict | None = None


def memoized_read(path, options: tuple, read):
    """``read()``, done once per file and ``options`` inside :class:`memoized_files` (else every time).

    ``options`` (hashable) names the reader and whatever else its result
    depends on.  A path that cannot be examined is simply read (the reader
    reports the error).
    """
    key = None
    if _MEMO is not None and isinstance(path, (str, os.PathLike)):
        try:
            info = os.stat(path)
            key = (os.path.realpath(path), info.st_mtime_ns, info.st_size) + tuple(options)
        except OSError:
            key = None  # the read below reports it
        if key in _MEMO:
            return _MEMO[key]
    value = read()
    if key is not None:
        _MEMO[key] = value
    return value


class memoized_files:
    """Within this context, :func:`memoized_read` reads each file once per reader (contexts nest)."""

    def __enter__(self):
        global _MEMO
        self._outer = _MEMO
        if _MEMO is None:
            _MEMO = {}
        return self

    def __exit__(self, *exc):
        global _MEMO
        _MEMO = self._outer
        return False
