"""``python -m app``: start MinMo Assistant (same as ``minmo-assistant``)."""

import sys

from app.main import main

sys.exit(main())
