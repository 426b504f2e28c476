"""
Messaging Layer Security (RFC 9420), sans-I/O: bytes in, bytes and state out.

No sockets, clocks, files or global randomness: randomness is an injected
``rng(n) -> bytes`` and time is passed in. Modules follow the RFC's sections;
``docs/mls.md`` maps each module to its section.
"""

from __future__ import annotations
