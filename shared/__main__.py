"""``python -m shared``: the command line."""

import sys

from shared.cli import main

sys.exit(main())
