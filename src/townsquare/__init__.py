"""
Townsquare: group chat that a community owns.
"""

from __future__ import annotations

__version__ = "0.1.0"
