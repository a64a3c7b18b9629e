import sys

from minmo_core.cli import main

sys.exit(main())
