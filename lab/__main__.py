"""`python -m lab`: the `vpnlab` command (lab/cli/)."""

import sys

from lab.cli import main

sys.exit(main())
