"""The ``nbjax`` console script: a thin entry point over :mod:`nbjax.commands`."""

from __future__ import annotations

import sys

from nbjax.commands.main import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
