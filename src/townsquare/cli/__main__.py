"""
``python -m townsquare.cli``: the same as the ``townsquare`` command.
"""

from __future__ import annotations

import sys

from townsquare.cli import main

sys.exit(main())
