"""`python -m bench …` is `hoinghi bench …` (see bench/cli.py)."""

import sys

from bench.cli import main

sys.exit(main(sys.argv[1:]))
