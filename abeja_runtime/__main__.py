"""``python -m abeja_runtime`` runs the CLI."""

import sys

from .cli import main

sys.exit(main())
