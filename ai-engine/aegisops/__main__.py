"""`python -m aegisops` is the `aegisops` console script."""

import sys

from aegisops.cli import main

sys.exit(main())
