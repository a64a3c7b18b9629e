"""``python -m app.cli``: the ``minmo`` command line."""

import sys

from app.cli import main

sys.exit(main())
