"""Every component's tables, in one ordered list: the one opener migrates them all, and
``db status`` and ``db copy`` know every table from here.

Order matters: a later component's tables reference an earlier one's (the ledger points
at subscribers). Each component's migrations live in a module light to import (most beside the
code that uses them; the inbound side's in :mod:`newsletter.intake_schema`), since every command
opens the database here, ``status`` included; this module only names them. A component's
migrations write only its own tables.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, NamedTuple

from newsletter.db import backend, connect, migrate


class Component(NamedTuple):
    name: str             # as ``schema_migrations`` records it
    steps: str            # where its migrations list lives: ``module:NAME``
    tables: tuple[str, ...]


COMPONENTS: tuple[Component, ...] = (
    Component("subscribers", "newsletter.store:MIGRATIONS", ("subscribers", "subscriber_former_addresses")),
    Component("delivery", "newsletter.ledger.schema:MIGRATIONS", ("deliveries", "ledger", "daily_counts")),
    Component("events", "newsletter.events:MIGRATIONS", ("feedback_events",)),
    Component("signup", "newsletter.intake_schema:SIGNUP", ("signup_events", "signup_outbox")),
    Component("replies", "newsletter.intake_schema:REPLIES", ("inbox_messages", "replies")),
    Component("webhook_nonces", "newsletter.intake_schema:WEBHOOK_NONCES", ("webhook_nonces",)),
    Component("inbox", "newsletter.intake_schema:INBOX", ("inbox_state",)),
)


def migrations(component: Component) -> list[Any]:
    module, name = component.steps.split(":")
    return getattr(importlib.import_module(module), name)


def available(conn: Any) -> tuple[Component, ...]:
    """The components this backend has migrations for (all of them on SQLite)."""
    if backend(conn) == "sqlite":
        return COMPONENTS
    from newsletter.pg_schema import MIGRATIONS as PG

    return tuple(c for c in COMPONENTS if c.name in PG)


def migrate_all(conn: Any) -> None:
    """Bring every component this backend has up to date, in order."""
    for component in available(conn):
        migrate(conn, component.name, migrations(component))


def open_database(target: Path | str) -> Any:
    """The one opener: connect to ``target`` (a SQLite path or a ``postgresql://`` URL) and migrate."""
    conn = connect(target)
    try:
        migrate_all(conn)
    except BaseException:
        conn.close()
        raise
    return conn
