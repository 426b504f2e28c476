"""
Numbered schema migrations, read from ``migrations/`` beside this module.

A migration is a file ``NNNN_name.sql`` (every engine) or
``NNNN_name.<engine>.sql`` (one engine: ``sqlite``, later ``postgres``),
after synapse's ``.sql.sqlite``/``.sql.postgres`` variants: a dialect variant
exists only where the dialects differ. Versions start at 1 and have no gaps.
A backend applies each pending migration in its own transaction and records it
in ``schema_migrations`` in that same transaction, so a crash leaves the schema
at a whole version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from townsquare.server.errors import SchemaError

__all__ = ["Migration", "load_migrations"]

_NAME = re.compile(r"(?P<version>[0-9]{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<engine>[a-z]+))?\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    """
    One schema version: its number, name and SQL script for one engine.
    """

    version: int
    name: str
    sql: str


def load_migrations(engine: str) -> tuple[Migration, ...]:
    """
    Read every migration for one engine, in version order.

    :param engine: ``"sqlite"`` (or, later, ``"postgres"``).
    :returns: the migrations, version 1 first.
    :raises SchemaError: if a version is missing or given twice for this engine.
    """
    folder = resources.files("townsquare.server.storage").joinpath("migrations")
    portable: dict[int, Migration] = {}
    variants: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _NAME.fullmatch(entry.name)
        if match is None:
            continue
        found = match["engine"]
        if found is not None and found != engine:
            continue
        migration = Migration(
            version=int(match["version"]),
            name=match["name"],
            sql=entry.read_text(encoding="utf-8"),
        )
        chosen = portable if found is None else variants
        if migration.version in chosen:
            raise SchemaError(f"migration {migration.version} is given twice for {engine}")
        chosen[migration.version] = migration
    merged = portable | variants
    ordered = tuple(merged[version] for version in sorted(merged))
    for expected, migration in enumerate(ordered, start=1):
        if migration.version != expected:
            raise SchemaError(f"migration {expected} is missing for {engine}")
    return ordered
