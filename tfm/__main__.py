"""`python -m tfm ...`: the `tfm` command, for environments where its script is not on PATH (a notebook kernel)."""

import sys

from tfm.cli import main

sys.exit(main())
