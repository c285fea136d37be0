"""``python -m pytest_llmppl``."""

import sys

from .cli import main

sys.exit(main())
