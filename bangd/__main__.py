"""`python -m bangd` runs the daemon, like the `bangd` command."""

import sys

from .cli.daemon import main

sys.exit(main())
