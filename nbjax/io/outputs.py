"""A set of output files written under temporary names and renamed together at the end.

A run either leaves all of its files or none of them: every target is written
as ``.<name>.<random>.part`` next to it and renamed into place by
:meth:`OutputSet.commit`; :meth:`OutputSet.discard` removes the temporaries
on any failure (Ctrl-C included).

A run killed by SIGKILL (or a power cut) cannot clean up: its temporaries
stay.  The next run that writes the same output name removes them (and
``.<name>.<random>.old`` backups of an interrupted commit) once they are more
than :data:`STALE_AFTER_S` seconds old -- old enough that no other run can
still be writing them, since temporaries only live while files are written.
"""

from __future__ import annotations

import os
import re
import secrets
import time

from nbjax.errors import InputError
from nbjax.io.atomic import remove_quietly


#: Age (seconds) after which a leftover temporary of an output name is removed.
STALE_AFTER_S = 3600.0


def sweep_stale(target, *, older_than_s: float = STALE_AFTER_S, now: float | None = None) -> list:
    """Remove ``target``'s leftover ``.<name>.<8 hex>.part``/``.old`` files older than ``older_than_s``.

    Returns the paths removed.  Errors (a file gone meanwhile, no permission)
    are ignored: the sweep is housekeeping, never a reason to fail a run.
    """
    return sweep_stale_all([target], older_than_s=older_than_s, now=now)


def sweep_stale_all(targets, *, older_than_s: float = STALE_AFTER_S, now: float | None = None) -> list:
    """:func:`sweep_stale` for many targets, reading each directory once (a batch's thousands of images)."""
    names = {}
    for target in targets:
        if not isinstance(target, str) or not target:
            continue
        directory, name = os.path.split(target)
        names.setdefault(directory, set()).add(name)
    pattern = re.compile(r"\.(.+)\.[0-9a-f]{8}\.(part|old)\Z")
    now = time.time() if now is None else now
    removed = []
    for directory, wanted in names.items():
        try:
            entries = os.scandir(directory or ".")
        except OSError:
            continue
        with entries:
            for entry in entries:
                match = pattern.match(entry.name)
                if match is None or match.group(1) not in wanted:
                    continue
                try:
                    if (entry.is_file(follow_symlinks=False)
                            and now - entry.stat(follow_symlinks=False).st_mtime > older_than_s):
                        os.remove(entry.path)
                        removed.append(entry.path)
                except OSError:
                    pass
    return removed


class OutputSet:
    """The files of one run, written under temporary names and renamed together at the end.

    :meth:`reserve` checks a target (a file name, in an existing directory, not
    a directory itself) and returns the temporary name to write it under --
    ``.<name>.<random>.part`` next to it, so the final rename stays on one file
    system.  :meth:`commit` renames them all into place once everything has
    been written (undoing the renames already made if one fails);
    :meth:`discard` (on any failure, Ctrl-C included) deletes the temporary
    files, so a run that does not finish leaves none of its outputs and the
    files it would have replaced as they were.
    Optional files (nanoBragg's Fdump.bin cache) only cost a warning when they
    cannot be written.
    """

    def __init__(self, *, sweep: bool = True):
        self._pending = []  # (temporary, target, optional)
        self._claimed = {}  # real path -> what
        self._sweep = sweep  # False: the caller swept the targets' leftovers (sweep_stale_all)

    @staticmethod
    def check_distinct(targets):
        """InputError when two of ``targets`` ((name, what) pairs) are one file.

        Names are compared as real paths (``os.path.realpath``: ``./f.bin``,
        ``f.bin`` and a symbolic link to it are one file), so no image is
        silently replaced by another of the same run.
        """
        seen = {}
        for target, what in targets:
            if not isinstance(target, str) or not target:
                continue
            real = os.path.realpath(target)
            if real in seen:
                raise InputError(f"{what}: {target} is also the {seen[real]} output; give each output its own name")
            seen[real] = what

    @staticmethod
    def check(target, what):
        """InputError naming ``what`` when ``target`` cannot be an output file."""
        if not isinstance(target, str) or not target or "\0" in target:
            raise InputError(f"{what}: {target!r} is not a usable file name")
        if os.path.isdir(target):
            raise InputError(f"{what}: {target} is a directory, not a file name")
        directory = os.path.dirname(target) or "."
        if not os.path.isdir(directory):
            raise InputError(f"{what}: cannot write {target}: no such directory {directory}")
        if not os.access(directory, os.W_OK):
            raise InputError(f"{what}: cannot write {target}: the directory {directory} is not writable")

    def reserve(self, target, what, *, optional=False):
        if optional:
            try:
                self.check(target, what)
            except InputError:
                return None
        else:
            self.check(target, what)
        real = os.path.realpath(target)
        if real in self._claimed:
            raise InputError(f"{what}: {target} is also the {self._claimed[real]} output; give each output its own name")
        self._claimed[real] = what
        if self._sweep:
            sweep_stale(target)
        directory, name = os.path.split(target)
        temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.part")
        self._pending.append((temporary, target, optional))
        return temporary

    def drop(self, temporary):
        """Forget an optional file that could not be written."""
        for p in self._pending:
            if p[0] == temporary:
                self._claimed.pop(os.path.realpath(p[1]), None)
        self._pending = [p for p in self._pending if p[0] != temporary]
        remove_quietly(temporary)

    def commit(self):
        """Rename every file into place; on a failure put back what was there before.

        An existing target is first hard-linked to a backup name, so that a
        rename failing half-way through the set can be undone: the files
        already renamed are removed again (or restored from their backups).
        """
        warnings = []
        pending, self._pending = self._pending, []
        done = []  # (target, backup or None), in order
        try:
            for index, (temporary, target, optional) in enumerate(pending):
                backup = None
                if os.path.isfile(target):
                    directory, name = os.path.split(target)
                    backup = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.old")
                    try:
                        os.link(target, backup)
                    except OSError:
                        backup = None  # no hard links here: the old file cannot come back
                try:
                    os.replace(temporary, target)
                except OSError as error:
                    if backup is not None:
                        remove_quietly(backup)
                    if optional:
                        remove_quietly(temporary)
                        warnings.append(f"WARNING: unable to open dump file: {target}")
                        continue
                    raise InputError(f"{target}: cannot write: {error.strerror or error}") from None
                done.append((target, backup))
        except BaseException:
            for target, backup in reversed(done):
                if backup is not None:
                    try:
                        os.replace(backup, target)
                        continue
                    except OSError:
                        remove_quietly(backup)
                remove_quietly(target)
            for temporary, _, _ in pending:
                remove_quietly(temporary)
            raise
        for _, backup in done:
            if backup is not None:
                remove_quietly(backup)
        return warnings

    def discard(self):
        pending, self._pending = self._pending, []
        for temporary, _, _ in pending:
            remove_quietly(temporary)
