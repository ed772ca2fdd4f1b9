"""``python -m mambaseg`` (also under ``torchrun``)."""

import sys

from .cli import main

sys.exit(main())
