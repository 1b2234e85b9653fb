"""Interrupts and closed pipes: a run ends promptly and leaves no file behind.

Python runs signal handlers only in the main thread and only between
bytecodes, so a handler cannot act while the main thread sits inside XLA
(compiling or running the render): the interrupt would wait for the render to
end, and raising an exception inside JAX's tracing can leave it in a state that
crashes the interpreter at exit.  So:

* :func:`run` executes the heavy computation (trace, compile, render) in a
  worker thread while the main thread waits in short, interruptible waits;
* :func:`installed` maps SIGINT, SIGTERM and SIGHUP (unless ignored, as under
  ``nohup``) to an exception raised in
  the main thread -- :class:`KeyboardInterrupt` for SIGINT, :class:`Terminated`
  for the others -- and remembers the signal (:func:`pending`), so an
  exception that some library swallowed is still acted on before the output
  files are committed (:func:`raise_if_pending`); while files are written
  (:func:`deferred`) a signal is only recorded and acted on at those checks,
  so no temporary file escapes its clean-up;
* the command then discards its temporary files and :func:`exit_now` ends the
  process at once with status 128 + signal number (130, 143, 129), without
  waiting for the worker (which is still inside XLA) and without the
  interpreter's shutdown, which could race with that thread.

SIGKILL cannot be caught: its temporaries (``.<name>.<hex>.part``) stay;
:class:`nbjax.io.outputs.OutputSet` removes such leftovers of the same output
name when they are more than an hour old.

A closed stdout (``nbjax ... | head``) is not an error: :func:`safe_print`
stops printing, the run goes on and writes its files, and exits 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

#: Signals that end a run cleanly, and the exit status for each.
HANDLED = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}

_pending = []  # signal numbers received (main thread only)


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: end the run (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return HANDLED.get(self.signum, 128 + int(self.signum))

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_deferring = []  # non-empty: handlers only record (see deferred())


def _handler(signum, frame):
    _pending.append(signum)
    if _deferring:
        return  # acted on at the next check point (run()'s wait, raise_if_pending())
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


@contextlib.contextmanager
def installed():
    """Install the handlers (main thread only; elsewhere a no-op) and restore the old ones after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    _pending.clear()
    try:
        for signum in HANDLED:
            try:
                if signal.getsignal(signum) is signal.SIG_IGN:
                    continue  # ignored on purpose (nohup, a background job): keep it so
                old[signum] = signal.signal(signum, _handler)
                _active.add(signum)
            except (OSError, ValueError):
                pass
        yield
    finally:
        for signum, previous in old.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(signum, previous)
        _active.clear()
        _pending.clear()


_active = set()  # the signals whose handler :func:`installed` put in place


def reinstall():
    """Put the handlers back over any that a C library installed meanwhile (XLA: SIGTERM)."""
    for signum in _active:
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, _handler)


@contextlib.contextmanager
def deferred():
    """Within the block a signal is only recorded; it is acted on at explicit check points.

    Used while output files are written: an exception raised at an arbitrary
    bytecode (between creating a temporary file and registering it for
    clean-up) could leave the file behind.  :func:`run` still checks every
    tenth of a second, so a render stays promptly interruptible; the block
    ends with a check.
    """
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.pop()
    raise_if_pending()


def pending():
    """The first signal received and not yet acted on, or None."""
    return _pending[0] if _pending else None


def raise_if_pending():
    """Raise the exception for a signal that arrived but was swallowed on its way up."""
    signum = pending()
    if signum is None:
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def run(function, *args, **kwargs):
    """``function(*args, **kwargs)`` in a worker thread; the main thread waits interruptibly.

    A signal raises its exception here, in the main thread, within a tenth of
    a second, while the worker (inside XLA) is left to be ended with the
    process by :func:`exit_now`.  The worker's own exception is re-raised here.
    Off the main thread, or with no handler installed, it simply calls.
    """
    if threading.current_thread() is not threading.main_thread():
        return function(*args, **kwargs)
    reinstall()  # JAX's runtime may have put its own SIGTERM handler in place as it started
    box = {}

    def work():
        try:
            box["value"] = function(*args, **kwargs)
        except BaseException as error:  # handed to the main thread
            box["error"] = error

    worker = threading.Thread(target=work, name="nbjax-render", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
        raise_if_pending()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def exit_now(code: int):
    """End the process at once with ``code`` (streams flushed; no interpreter shutdown)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def safe_print(*args, file=None, **kwargs):
    """``print`` that survives a closed pipe: once stdout is gone, further output goes to /dev/null."""
    stream = sys.stdout if file is None else file
    try:
        print(*args, file=stream, flush=True, **kwargs)
    except BrokenPipeError:
        silence(stream)


def silence(stream):
    """Point ``stream``'s file descriptor at /dev/null, so later writes and the final flush succeed."""
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
