"""`python -m bangd` runs the daemon, like the `bangd` command."""

import sys

from .cli.bangd_main import main

sys.exit(main())
