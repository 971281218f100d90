"""`python -m zhiyin`: the `zhiyin` command, for editors that know a Python interpreter, not a script."""

import sys

from zhiyin.cli import main

sys.exit(main())
