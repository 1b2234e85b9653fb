"""Progress bars for long renders and fits (tqdm, on stderr).

nanoBragg.c prints ``N% done`` lines while it renders unless ``-noprogress``
is given.  nbjax shows a tqdm bar instead, on stderr so stdout keeps exactly
nanoBragg's summary lines, and only when somebody is watching:

* stderr is a terminal (not a pipe, a file or a test's captured stream),
* neither ``-noprogress`` nor ``--quiet`` was given,
* the task has already run for :data:`DELAY_S` seconds (short renders never
  show a bar; the bar of a long one appears after a second and is removed when
  it is done).

:func:`wanted` makes the first two decisions, :class:`Bar` the last.  A render
advances the bar once per row block (:func:`nbjax.renderer.engine.render_blocks`); a
fit once per optimisation step.  Without tqdm installed no bar is shown.
"""

from __future__ import annotations

import sys
import time

#: Seconds a task runs before its bar appears.
DELAY_S = 1.0


def wanted(*, quiet: bool = False, meter: bool = True, stream=None) -> bool:
    """Whether a bar may be shown: not quiet, meter on, ``stream`` (stderr) a terminal."""
    if quiet or not meter:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Bar:
    """A progress bar over ``total`` steps that appears after ``delay`` seconds.

    Use as a context manager; call :meth:`update_to` with the number of steps
    done (it has the ``(done, total)`` signature of the engine's ``on_block``
    callback).  With ``enabled=False`` (or without tqdm) it does nothing.
    """

    def __init__(self, total: int, description: str = "", *, unit: str = "block", enabled: bool = True,
                 delay: float = DELAY_S, stream=None):
        self.total = int(total)
        self._bar = None
        self._started = False
        if not enabled or self.total <= 0:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(total=self.total, desc=description or None, unit=unit, delay=delay,
                         file=sys.stderr if stream is None else stream, leave=False, dynamic_ncols=True)

    @property
    def active(self) -> bool:
        return self._bar is not None

    def update_to(self, done: int, total: int | None = None) -> None:
        """Set the number of steps done (``total`` may change the bar's length)."""
        if self._bar is None:
            return
        if total is not None and int(total) != self._bar.total:
            self._bar.total = int(total)
        step = int(done) - self._bar.n
        if step and not self._started:
            # the first step holds the tracing and compilation: count it, but start the clock
            # (rate, time left) after it, or the first estimate is ten times too long
            self._started = True
            now = time.time()
            bar = self._bar
            bar.n = bar.last_print_n = bar.initial = int(done)
            bar.start_t = bar.last_print_t = now  # the bar shows from `delay` after this on
            return
        if step:
            self._bar.update(step)
            if self._bar.n >= self._bar.total and time.time() - self._bar.start_t >= self._bar.delay:
                self._bar.refresh()  # show the finished bar even within tqdm's refresh interval

    def write(self, line: str) -> None:
        """Print ``line`` above the bar (on stdout)."""
        from tqdm import tqdm

        tqdm.write(line, file=sys.stdout)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
