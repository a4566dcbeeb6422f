"""``python -m medlens``: the ``medlens`` command, for an environment whose scripts are not on PATH."""

import sys

from medlens.cli import main

sys.exit(main())
