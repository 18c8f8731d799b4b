"""The db group: where the database is and what it holds."""

from __future__ import annotations

import click

from newsletter.cli import settings_of


@click.group("db")
def db() -> None:
    """The database: SQLite (NEWSLETTER_DB=path, the default newsletter.db) or PostgreSQL
    (NEWSLETTER_DB=postgresql://user@host:port/dbname; password from the URL, PGPASSWORD or ~/.pgpass)."""


@db.command("status")
@click.pass_context
def db_status_command(ctx: click.Context) -> None:
    """Show the backend, each component's schema version and the rows in every table."""
    from newsletter.dbstatus import db_status

    report = db_status(settings_of(ctx).db_target)
    click.echo(f"Backend: {report.backend} ({report.where})")
    for c in report.components:
        if c.known is None:
            schema = "not available on this backend yet"
        elif c.version == 0:
            schema = f"not created yet (this tool: v{c.known})"
        else:
            schema = f"v{c.version}" + ("" if c.version == c.known else f" (this tool: v{c.known})")
        rows = ", ".join(f"{table} {n:,}" for table, n in c.rows.items()) or "no tables"
        click.echo(f"  {c.name:<15} {schema:<24} {rows}")


@db.command("copy")
@click.option("--to", "target", required=True, metavar="URL",
              help="An empty PostgreSQL database: postgresql://user@host:port/dbname.")
@click.pass_context
def db_copy_command(ctx: click.Context, target: str) -> None:
    """Copy this publication's SQLite database (NEWSLETTER_DB) into an empty PostgreSQL database,
    checking the rows of every table. Then set NEWSLETTER_DB to that URL."""
    from newsletter.dbcopy import copy_database

    report = copy_database(settings_of(ctx).db_path, target)
    for table, n in report.counts.items():
        click.echo(f"  {table:<28} {n:>10,}")
    click.echo(f"Copied {sum(report.counts.values()):,} rows into {report.target}; every table's count matches. "
               "Set NEWSLETTER_DB to that URL on every host.")


@db.command("web-role")
@click.argument("role")
@click.pass_context
def db_web_role_command(ctx: click.Context, role: str) -> None:
    """Print the SQL that makes ROLE a web host's least-privilege role on this PostgreSQL database
    (unsubscribe, signup, webhooks; no ledger error texts, no deliveries). Run it as the owner."""
    from urllib.parse import urlsplit

    from newsletter.errors import InputError
    from newsletter.pg_roles import web_role_sql

    target = settings_of(ctx).db_target
    if not isinstance(target, str):
        raise InputError("NEWSLETTER_DB is a SQLite file; a web role is for PostgreSQL (postgresql://…)")
    try:
        statements = web_role_sql(role, urlsplit(target).path.lstrip("/") or "postgres")
    except ValueError as exc:
        raise InputError(str(exc)) from None
    click.echo(";\n".join(statements) + ";")
