"""`python -m based_core ...` is the `based-core` command."""

import sys

from .cli import main

sys.exit(main())
