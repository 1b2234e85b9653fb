"""Where nbjax keeps its caches (compiled renderers, parsed ``-hkl`` files).

One folder, chosen as: ``$NBJAX_CACHE_DIR`` if set and not empty, else
``$XDG_CACHE_HOME/nbjax``, else ``~/.cache/nbjax``.  Nothing in it is needed
for correct results: deleting it only makes the next start slower.  The
folder is not created here; writers create what they need and give up
quietly when they cannot.
"""

from __future__ import annotations

import os

__all__ = ["cache_dir"]


def cache_dir() -> str:
    """The nbjax cache folder (which may not exist yet)."""
    explicit = os.environ.get("NBJAX_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nbjax")
