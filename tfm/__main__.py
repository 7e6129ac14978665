"""`python -m tfm ...`: the `tfm` command, for environments where its script is not on PATH (a notebook kernel)."""

import sys

from tfm.cli import main

if __name__ == "__main__":  # (imported, e.g. by the doctest collector, it does nothing)
    sys.exit(main())
