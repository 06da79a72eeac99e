"""``python -m impresslearn`` runs the command line."""

import sys

from impresslearn.cli import main

sys.exit(main())
