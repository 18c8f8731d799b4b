"""The subscribers group: import, add, remove, unsubscribe, list, count, export."""

from __future__ import annotations

import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import click

from newsletter.cli import settings_of
from newsletter.errors import InputError
from newsletter.states import SubscriberStatus


@click.group()
def subscribers() -> None:
    """Manage the subscriber list (SQLite, NEWSLETTER_DB, default newsletter.db).

    Unsubscribed, bounced and complained addresses stay as a suppression list
    that no command sends to.
    """


def _store(ctx: click.Context) -> Any:
    """The store, with unsubscribes spooled by the web app applied first (closed when the command ends)."""
    from newsletter.unsubscribe_spool import open_store

    return ctx.with_resource(open_store(settings_of(ctx)))


PROGRESS_FROM_BYTES = 1 << 20  # a file this big takes long enough to show a progress bar


@subscribers.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resubscribe", is_flag=True, hidden=True)
@click.option("--source", default=None, help="Where these subscribers came from (kept with each).")
@click.pass_context
def subscribers_import(ctx: click.Context, file: Path, resubscribe: bool, source: str | None) -> None:
    """Import a CSV with a header row (email, name, …). Good rows land even if some are bad;
    then each bad row is listed by line, and the exit code is 2.

    A file from `subscribers export` (it has a status column) restores each reader's status
    and consent record. No import ever reactivates an unsubscribed, bounced or complained address."""
    from newsletter.csvio import import_csv

    if resubscribe:
        raise InputError("an import never reactivates unsubscribed or bounced addresses; for one reader who "
                         "asked to come back: `newsletter subscribers add ADDRESS --resubscribe`")
    if not file.exists():
        raise InputError("no such file", path=file)
    progress, update = _import_progress(file)
    with progress:
        report = import_csv(_store(ctx), file, source=source, progress=update)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    for line, reason in report.errors:
        click.echo(f"{file}:{line}: {reason}", err=True)
    for line, email, reason in report.skipped:
        click.echo(f"{file}:{line}: skipped {email}: {reason}", err=True)
    unlisted = report.error_count - len(report.errors) + report.skipped_count - len(report.skipped)
    if unlisted:
        click.echo(f"{file}: {unlisted} more bad or skipped row(s) not listed", err=True)
    click.echo(f"Imported {report.added} new, updated {report.updated}, skipped {report.skipped_count}, "
               f"{report.error_count} bad row(s) ({report.encoding}).")
    if report.error_count:  # the good rows landed; the exit code still says the file was not all good
        raise InputError(f"{report.error_count} bad row(s) not imported (listed above); fix them and import "
                         "the file again: rows already in are updated, not doubled", path=file)


def _import_progress(file: Path) -> tuple[Any, Any]:
    """A progress bar on stderr (rows, bytes, time left) for a file big enough to take a while."""
    import contextlib

    size = file.stat().st_size
    if size < PROGRESS_FROM_BYTES:
        return contextlib.nullcontext(), None
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from newsletter.cli import console

    progress = Progress(TextColumn("Importing"), BarColumn(), TextColumn("{task.fields[rows]:,} rows"),
                        TimeRemainingColumn(), console=console(stderr=True), transient=False)
    task = progress.add_task("import", total=size, rows=0)

    def update(rows: int, done: int, total: int) -> None:
        progress.update(task, completed=done, total=total, rows=rows)

    return progress, update


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--consent", default="", help="How and when they agreed to receive the newsletter.")
@click.option("--resubscribe", is_flag=True, help="Reactivate an address that had unsubscribed.")
@click.option("--lang", default=None, metavar="TAG",
              help="The language they read (e.g. zh-Hans): they get that edition of each issue.")
@click.pass_context
def subscribers_add(ctx: click.Context, email: str, name: str, consent: str, resubscribe: bool,
                    lang: str | None) -> None:
    """Add one subscriber (or set a known one's name or --lang)."""
    sub = _store(ctx).add(email, name, source="cli", consent=consent, resubscribe=resubscribe, lang=lang)
    click.echo(f"{sub.email}: {sub.status}" + (f" ({sub.lang})" if sub.lang else ""))


@subscribers.command("remove")
@click.argument("email")
@click.option("--forget-deliveries", is_flag=True, help="Also delete their rows in past deliveries' ledgers.")
@click.pass_context
def subscribers_remove(ctx: click.Context, email: str, forget_deliveries: bool) -> None:
    """Delete a subscriber entirely, for erasure requests (prefer `unsubscribe`, which keeps
    them suppressed). With --forget-deliveries their rows in past deliveries go too."""
    store = _store(ctx)
    if forget_deliveries and (sub := store.get_by_email(email)) is not None:
        from newsletter.ledger.deliveries import forget_subscriber
        from newsletter.schema import open_database

        with closing(open_database(settings_of(ctx).db_target)) as conn:
            forget_subscriber(conn, sub.id)
    if not store.remove(email):
        raise InputError(f"no subscriber {email}")
    click.echo(f"Removed {email}.")


@subscribers.command("unsubscribe")
@click.argument("address_or_token")
@click.pass_context
def subscribers_unsubscribe(ctx: click.Context, address_or_token: str) -> None:
    """Unsubscribe an address, or apply a mailed unsubscribe request: paste its subject
    ("unsubscribe TOKEN") whole, the token alone, or the mailto: link. The token is
    verified. The address stays on the suppression list."""
    from newsletter.tokens import token_from_request

    store = _store(ctx)
    target: str | int = address_or_token
    if "@" not in address_or_token or address_or_token.lower().startswith("mailto:"):
        token = token_from_request(address_or_token)
        sub = store.get_by_token(str(settings_of(ctx).secret_key), token) if token else None
        if sub is None:
            raise InputError(f"{address_or_token[:80]!r} is neither an address nor a valid unsubscribe token")
        target = sub.id
    sub = store.unsubscribe(target, reason="cli")
    if sub.status == SubscriberStatus.UNSUBSCRIBED:
        click.echo(f"Unsubscribed {sub.email}.")
    else:  # bounced or complained: already never mailed, and that stronger record is kept
        click.echo(f"{sub.email} stays {sub.status}: it is already never mailed, and that record is kept "
                   "(an unsubscribe would weaken it).")


@subscribers.command("list")
@click.option("--status", type=click.Choice([s.value for s in SubscriberStatus]))
@click.pass_context
def subscribers_list(ctx: click.Context, status: str | None) -> None:
    """List subscribers (email, name, status; for a signup whose mail has not gone out, what
    happened to it: retrying, or given up after NEWSLETTER_RETRY_WINDOW). With --status
    unsubscribed, bounced or complained, also when and why each was suppressed: a review of
    the suppression list."""
    from newsletter.store import SUPPRESSED

    store = _store(ctx)
    if status in SUPPRESSED:
        from newsletter.errors import scrub

        for email, name, state, changed_at, reason in store.iter_records(
                ("email", "name", "status", "changed_at", "status_reason"), status):
            # the reason may quote a bounce or a webhook: outside input, one scrubbed line
            click.echo(f"{email}\t{name}\t{state}\t{changed_at}\t{scrub(reason, 300) or '-'}")
        return
    from newsletter.signup_status import mail_problems

    problems = mail_problems(store.conn)
    for sub in store.iter_subscribers(status=status):
        note = problems.get(sub.id)
        click.echo(f"{sub.email}\t{sub.name}\t{sub.status}" + (f"\t{note}" if note else ""))


@subscribers.command("count")
@click.pass_context
def subscribers_count(ctx: click.Context) -> None:
    """Count subscribers by status."""
    store = _store(ctx)
    counts = store.counts()
    click.echo("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "No subscribers.")
    unsendable, example = store.unsendable()
    if unsendable:
        click.echo(f"note: {unsendable} active address(es) cannot be sent to, e.g. {example}: a non-ASCII "
                   "local part needs SMTPUTF8, which newsletter does not use; sends report them as failed", err=True)


@subscribers.command("export")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE instead of stdout.")
@click.option("--status", type=click.Choice([s.value for s in SubscriberStatus]))
@click.pass_context
def subscribers_export(ctx: click.Context, out: Path | None, status: str | None) -> None:
    """Export subscribers as CSV: each reader's whole record (status and why, dates, source, consent
    record with IPs, open signup request). `subscribers import` of the file restores it."""
    from newsletter.csvio import export_csv

    store = _store(ctx)
    if out:
        with out.open("w", encoding="utf-8", newline="") as fh:
            export_csv(store, fh, status=status)
    else:
        export_csv(store, sys.stdout, status=status)
