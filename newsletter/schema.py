"""Every component's tables, in one ordered list: the one opener migrates them all, and
``db status`` and ``db copy`` know every table from here.

Order matters: a later component's tables reference an earlier one's (the ledger points
at subscribers). Each component keeps its migrations beside the code that uses them; this
module only names them, and imports a component's module only when asked.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, NamedTuple

from newsletter.db import backend, connect, migrate


class Component(NamedTuple):
    name: str             # as ``schema_migrations`` records it
    module: str           # where its ``MIGRATIONS`` list lives
    tables: tuple[str, ...]


COMPONENTS: tuple[Component, ...] = (
    Component("subscribers", "newsletter.store", ("subscribers", "subscriber_former_addresses")),
    Component("delivery", "newsletter.ledger.schema", ("deliveries", "ledger", "daily_counts")),
    Component("events", "newsletter.events", ("feedback_events",)),
    Component("signup", "newsletter.signups", ("signup_events", "signup_outbox")),
    Component("replies", "newsletter.replies", ("inbox_messages", "replies")),
    Component("webhook_nonces", "newsletter.webhooks.replay", ("webhook_nonces",)),
    Component("inbox", "newsletter.inbox", ("inbox_state",)),
)


def migrations(component: Component) -> list[Any]:
    return importlib.import_module(component.module).MIGRATIONS


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
