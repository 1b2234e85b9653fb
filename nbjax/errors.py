"""Errors that nbjax reports to its users.

Every problem with what a user gave us (a flag, a value, a file) is raised as
:class:`InputError`.  The command line turns it into one line on stderr and
exit status 2; Python callers can catch it.  Anything else that escapes is a
bug in nbjax.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad user input: a flag, a value or a file that nbjax cannot use.

    ``str(error)`` is a single line that names the flag or file and says what
    is wrong with it.
    """

    exit_code = 2

    def __init__(self, message: str):
        # Keep the message on one line whatever the caller passed in.
        super().__init__(" ".join(str(message).split()))


class OutOfMemory(Exception):
    """The machine (host or accelerator) ran out of memory for a task of the sizes named.

    ``str(error)`` says where (``host`` or the device kind) and what was being
    allocated (e.g. the -hkl grid's size, the rows per render block).  The
    command line reports it on one line with exit status 1.
    """

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
