"""``python -m usdh``: the stage commands that dvc.yaml calls."""

import sys

from usdh.cli import main

sys.exit(main())
