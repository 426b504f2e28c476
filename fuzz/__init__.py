"""
Coverage-guided fuzzing of the MLS decoders (RFC 9420): targets, seed corpus and runner.

See ``fuzz/README.md``. Nothing here is imported by ``townsquare``; the bounded
run in ``tests/fuzz/`` drives :mod:`fuzz.run` as a subprocess.
"""

from __future__ import annotations
