"""``python -m supervisor.simulator``: run the simulator in the foreground (see ``cli``)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
