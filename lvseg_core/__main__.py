"""``python -m lvseg_core``: the command line (see :mod:`lvseg_core.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
