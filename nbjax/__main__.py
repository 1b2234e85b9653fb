"""``python -m nbjax`` is the ``nbjax`` command."""

import sys

from nbjax.cli import main

sys.exit(main())
