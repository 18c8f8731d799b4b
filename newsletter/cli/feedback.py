"""Reader feedback: read the reply-to inbox, and the editors' digest of replies per issue."""

from __future__ import annotations

import click

from newsletter.cli import issue_path, settings_of
from newsletter.errors import InputError


@click.command()
@click.option("--move-processed", "move_to", metavar="FOLDER",
              help="File each handled message into FOLDER (IMAP MOVE). Default: the inbox is only read.")
@click.pass_context
def inbox(ctx: click.Context, move_to: str | None) -> None:
    """Read new mail in the reply-to inbox (IMAP_* settings) once: reader replies, auto-replies,
    bounces (DSN), complaints (ARF), mailed unsubscribes and the rest.

    One line per message with its class and why. Bounces and complaints suppress
    the reader, verified unsubscribes are applied, replies go to `newsletter replies`.
    Each message is read once (by UID); nothing is deleted.
    """
    from collections import Counter

    from newsletter.inbox import check_inbox

    results = check_inbox(settings_of(ctx), move_to=move_to, on_result=lambda r: click.echo(r.line()))
    counts = Counter(r.handled.category for r in results)
    click.echo(f"Read {len(results)} new message(s)" + (": " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
                                                       if counts else "") + ".")


@click.command()
@click.argument("issue", required=False)
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@click.option("--forget-older-than", "days", type=click.IntRange(1, 36500), metavar="DAYS",
              help="First delete stored replies and message records older than DAYS days.")
@click.pass_context
def replies(ctx: click.Context, issue: str | None, fmt: str, days: int | None) -> None:
    """The feedback digest for ISSUE: each reader's reply (name, masked address, date, their
    own first lines) and how many messages of each class concern it."""
    import datetime as dt
    from contextlib import closing

    from newsletter import replies as digest
    from newsletter.schema import open_database

    settings = settings_of(ctx)
    if issue is None and days is None:
        raise InputError("give an ISSUE, or --forget-older-than DAYS, or both")
    conn = ctx.with_resource(closing(open_database(settings.db_target)))  # closed when the command ends
    if days is not None:
        n = digest.forget(conn, dt.timedelta(days=days))
        click.echo(f"Forgot {n} message record(s) older than {days} day(s).", err=True)
    if issue is not None:
        from newsletter.issue import parse_issue

        parsed = parse_issue(issue_path(settings, issue))
        click.echo(digest.FORMATS[fmt](digest.digest(conn, parsed.slug, parsed.title)), nl=False)
