"""Sending commands: send, resume, status, schedule (add/list/cancel), dispatch, worker.

What to send and how is decided in :mod:`newsletter.sendplan`, :mod:`newsletter.delivery`
and :mod:`newsletter.schedule`; here are the prompts, progress bars and reports.
"""

from __future__ import annotations

import sys
import threading
from contextlib import closing, contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

import click

from newsletter.cli import console, issue_path, settings_of
from newsletter.errors import InputError
from newsletter.states import DeliveryState, RowState

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.render import RenderedEmail


class _DefaultGroup(click.Group):
    """A group whose first argument may be an issue instead of a subcommand:
    ``schedule 6 --at …`` means ``schedule add 6 --at …``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["add", *args]
        return super().parse_args(ctx, args)


def _run_checks(settings: "Settings", rendered: "RenderedEmail", skip: bool) -> None:
    if skip:
        console(stderr=True).print("[bold red]WARNING: --skip-checks given; pre-flight checks were NOT run.[/]")
        return
    from newsletter.checks import run_checks
    from newsletter.errors import ChecksFailedError

    findings = run_checks(settings, rendered)
    errors = [f for f in findings if f.level == "error"]
    if errors:
        for f in errors:
            click.echo(f.format(), err=True)
        raise ChecksFailedError(f"{len(errors)} pre-flight error(s); fix them or pass --skip-checks")
    warnings = sum(f.level == "warning" for f in findings)
    click.echo(f"Pre-flight checks: no errors, {warnings} warning(s)"
               + (f" (`newsletter check {rendered.number}` lists them)." if warnings else "."), err=True)


def _progress(total: int, label: str) -> tuple[Any, Callable[[int, int, int, int], None],
                                             Callable[[float, str], None]]:
    """A progress bar, its update function, and a countdown shown while retries are awaited."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from newsletter.errors import scrub

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]:.0f} msg/s"), TimeRemainingColumn(),
                        console=console(stderr=True), transient=False, disable=total <= 5)
    task = progress.add_task(label, total=total, rate=0.0)

    def update(done: int, total_: int, sent: int, failed: int) -> None:
        elapsed = progress.tasks[task].elapsed or 0
        progress.update(task, completed=done, total=total_, rate=(done / elapsed) if elapsed else 0.0,
                        description=label)

    def waiting(seconds_left: float, why: str) -> None:
        minutes, seconds = divmod(int(seconds_left), 60)
        progress.update(task, description=f"{label} (next retry in {minutes}:{seconds:02d}: {scrub(why, 40)})")

    return progress, update, waiting


def _confirm_real_send(settings: "Settings", count: int, what: str, yes: bool, dry_run: bool) -> None:
    if dry_run or settings.transport_name in ("dryrun", "null") or yes:
        return
    if not sys.stdin.isatty():
        raise InputError(f"refusing to send {what} to {count} recipient(s) without confirmation: pass --yes")
    click.confirm(f"Send {what} to {count} recipient(s) via {settings.transport_name}?", abort=True)


def _send_test(settings: "Settings", rendered: "RenderedEmail", addresses: tuple[str, ...],
               dry_run: bool, yes: bool) -> None:
    import time

    from newsletter.sendplan import checked_test_recipients, send_test
    from newsletter.transports import transport_factory

    recipients = checked_test_recipients(settings, addresses)
    factory = transport_factory(settings, "dryrun" if dry_run else None)
    _confirm_real_send(settings, len(recipients), "a [TEST] copy", yes, dry_run)
    start = time.monotonic()
    results = send_test(settings, rendered, recipients, factory)
    from newsletter.errors import scrub

    written = dry_run or settings.transport_name == "dryrun"
    for r in results:  # a provider's error text is outside input: scrubbed like every stored error
        if written and r.status.delivered:
            click.echo(f"written to {_outbox_file(settings, rendered.slug, r.recipient)}  (not sent)")
            continue
        click.echo(f"{r.status.value:>16}  {r.recipient}" + (f"  ({scrub(r.error)})" if r.error else ""))
    failed = [r for r in results if not r.status.delivered]
    done = f"{len(results) - len(failed)} written to the outbox, nothing sent" if written else \
        f"{len(results) - len(failed)} sent"
    click.echo(f"Test send: {done}, {len(failed)} failed in {time.monotonic() - start:.1f}s.")
    if failed:
        click.get_current_context().exit(1)


def _outbox_file(settings: "Settings", slug: str, address: str) -> str:
    """Where the dry-run transport wrote ``address``'s copy, relative to the publication when inside it."""
    from newsletter.transports.dryrun import safe_name

    folder = settings.outbox / slug
    found = sorted(folder.glob(f"*-{safe_name(address, 'recipient')}.eml"))
    path = found[-1] if found else folder
    try:
        return str(path.relative_to(settings.root))
    except ValueError:
        return str(path)


def _dry_run_all(settings: "Settings", rendered: "RenderedEmail", prepared: Any = None) -> None:
    import time

    from newsletter.sendplan import active_subscribers, dry_run_all

    total = active_subscribers(settings)
    progress, update, _ = _progress(total, "Dry run")
    start = time.monotonic()
    with progress:
        summary = dry_run_all(settings, rendered, update, prepared=prepared)
    click.echo(f"Dry run: {summary.messages} message(s) for {total} active subscriber(s), {summary.size / 1024:.0f} KB, "
               f"written to {settings.outbox / rendered.slug}/ in {time.monotonic() - start:.1f}s. Nothing was sent.")
    if len(summary.editions) > 1 or any(summary.editions):
        main = settings.publication.lang if rendered.lang is None else rendered.lang
        click.echo("Editions: " + ", ".join(f"{tag or main} {n}" for tag, n in sorted(summary.editions.items())) + ".")
    if total == 0:
        click.echo("No active subscribers yet: add some with `newsletter subscribers import FILE.csv`.")
    if summary.failed:
        for address, why in summary.failures:
            click.echo(f"  not written: {address}: {why}", err=True)
        more = summary.failed - len(summary.failures)
        click.echo(f"{summary.failed} message(s) could not be built" + (f" ({more} not listed)" if more else "")
                   + "; a real send would fail them too.", err=True)
        click.get_current_context().exit(1)


def _started(delivery: Any) -> None:
    """The line `dispatch` and `worker` print as a delivery's sending begins."""
    click.echo(f"Delivery {delivery.id} of {delivery.slug}: sending (was {delivery.state}).")


def _report(report: Any) -> None:
    click.echo(
        f"Delivery {report.delivery_id} of {report.slug} ({report.state}): {report.sent} sent, {report.failed_permanent} failed "
        f"permanently, {report.failed_temporary} gave up after retrying, {report.skipped} skipped, "
        f"{report.pending} pending ({report.deferred} deferred); {report.sent_this_run} sent in this run in "
        f"{report.elapsed:.1f}s ({report.rate:.0f} msg/s)."
    )
    # A deferral gets its own line (describe_deferral), a stop the command's own instruction.
    if report.note and report.state not in (DeliveryState.DEFERRED, DeliveryState.PAUSED):
        click.echo(report.note)
    if report.interrupted_resent:
        click.echo(f"{report.interrupted_resent} reader(s) left mid-send by an earlier crash or kill were sent "
                   "again (a duplicate is possible over SMTP).")
    if report.uncertain_resent:
        click.echo(f"{report.uncertain_resent} reader(s) got no clear answer from the server and were sent once "
                   "more.")
    if report.uncertain_reported:
        click.echo(f"{report.uncertain_reported} reader(s) may or may not have got it and were NOT sent again "
                   "(--no-resend-uncertain, or no clear answer twice); see `newsletter status --failed`.")


def _outcome(report: Any) -> None:
    """How a delivery `dispatch` or `worker` ran ended: its report, and a deferral's next retry."""
    from newsletter.cli.formatting import describe_deferral

    _report(report)
    if report.state == DeliveryState.DEFERRED:
        click.echo(describe_deferral(report, report.slug), err=True)


def _issue_ref(rendered: "RenderedEmail") -> str:
    return str(rendered.number) if rendered.number is not None else rendered.slug


def _exit_for(report: Any, ref: str, stopped: bool) -> None:
    """The exit code tells the truth: 0 only when nobody is left waiting by this run."""
    from newsletter.cli.formatting import describe_deferral
    from newsletter.errors import SendDeferredError, SendInterruptedError

    ctx = click.get_current_context()
    if report.state == DeliveryState.HELD:
        from newsletter.errors import SendHeldError
        from newsletter.guard import RESUME_FLAG, is_guard_hold

        flag = f" {RESUME_FLAG}" if is_guard_hold(report.state, report.note) else ""  # complaints, bounces
        click.echo(f"Held with {report.pending} readers pending, none of them charged for it; fix what the "
                   f"reason above says (`newsletter status {ref}`), then `newsletter resume {ref}{flag}` continues.",
                   err=True)
        ctx.exit(SendHeldError.exit_code)
    if report.state == DeliveryState.DEFERRED:
        click.echo(describe_deferral(report, ref), err=True)
        ctx.exit(SendDeferredError.exit_code)
    if stopped and report.pending:
        click.echo(f"Stopped with {report.pending} readers pending; `newsletter resume {ref}` will continue.",
                   err=True)
        ctx.exit(SendInterruptedError.exit_code)


def _retired_notes(settings: "Settings") -> None:
    from newsletter.delivery import retired_settings

    for note in retired_settings(settings):
        click.echo(f"note: {note}", err=True)


@contextmanager
def _graceful_stop() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM sets the event: the batch in flight is finished and recorded,
    nothing is left mid-send, and the delivery stays resumable."""
    import signal  # here: `status` and `schedule list` never need it (start-up time)

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _deliver(settings: "Settings", rendered: "RenderedEmail", *, yes: bool, resend_uncertain: bool,
             force_new_content: bool, retry_failed: bool = False, retry_now: bool = False,
             despite_guard: bool = False, prepared: Any = None) -> None:
    from newsletter.delivery import DeliveryOptions, run_delivery
    from newsletter.errors import ConfigError, TransportError
    from newsletter.ledger.deliveries import hold_for_editor, readers_to_send, wait_for_editor
    from newsletter.ledger.engine import start_or_resume
    from newsletter.sendplan import open_delivery, prepare_issue

    conn, active, factory = open_delivery(settings)
    with closing(conn):
        options = DeliveryOptions.from_settings(settings, resend_uncertain=resend_uncertain,
                                                retry_failed=retry_failed, retry_now=retry_now,
                                                despite_guard=despite_guard)
        _retired_notes(settings)
        left = readers_to_send(conn, rendered.slug, retry_failed=retry_failed)  # a delivery under way: its own
        _confirm_real_send(settings, active if left is None else left, f"“{rendered.subject}”", yes, dry_run=False)
        prepared = prepared or prepare_issue(settings, rendered)
        delivery_id = start_or_resume(conn, prepared, force_new_content=force_new_content)
        progress, update, waiting = _progress(active, "Sending")
        with progress, _graceful_stop() as stop:
            try:
                report = run_delivery(conn, delivery_id, prepared, factory, options=options, progress=update,
                                      waiting=waiting, stop=stop)
            except (TransportError, ConfigError) as exc:  # exit 4/3, nobody contacted: nor may a worker go on
                hold_for_editor(conn, delivery_id, f"could not start: {exc.format_message()}")
                raise
        _report(report)
        if stop.is_set():
            wait_for_editor(conn, delivery_id)
        if report.failed_permanent or report.failed_temporary or report.uncertain:
            click.echo("Some recipients failed: `newsletter status --failed` lists them.")
        _exit_for(report, _issue_ref(rendered), stop.is_set())


@click.command()
@click.argument("issue")
@click.option("--dry-run", is_flag=True, help="Write every message as .eml into the outbox; no network, no ledger.")
@click.option("--test", "test_addresses", multiple=True, metavar="ADDRESS",
              help="Send a [TEST] copy to ADDRESS only (repeatable); never to subscribers.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation before a real send.")
@click.option("--skip-checks", is_flag=True, help="Send even if pre-flight checks find errors (loudly).")
@click.option("--no-resend-uncertain", is_flag=True,
              help="On resume, report rather than resend recipients left mid-send by a crash.")
@click.option("--force-new-content", is_flag=True,
              help="Resume a delivery even though the issue changed since it started.")
@click.option("--retry-failed", is_flag=True,
              help="On resume, give recipients whose retry window ran out a fresh one.")
@click.option("--lang", metavar="TAG", help="With --test: send the TAG edition's copy (default: the main one).")
@click.pass_context
def send(ctx: click.Context, issue: str, dry_run: bool, test_addresses: tuple[str, ...], yes: bool,
         skip_checks: bool, no_resend_uncertain: bool, force_new_content: bool, retry_failed: bool,
         lang: str | None) -> None:
    """Send ISSUE to every active subscriber, or a test copy, or a dry run.

    A real send keeps a per-recipient ledger in the database: run the same
    command again (or `newsletter resume`) after a crash or Ctrl-C and it
    continues where it stopped, never sending twice to anyone marked sent.
    The transport is NEWSLETTER_TRANSPORT (default: dryrun).
    """
    from newsletter.editions import render_editions

    settings = settings_of(ctx)
    editions, named = _editions(settings, issue)
    if not (test_addresses or dry_run or settings.transport_name == "dryrun"):
        editions.main.require_ready("send")
    if test_addresses:
        tag = editions.tag_of(lang or named or "")
        rendered = render_editions(editions, settings, test=True, only=tag)[tag]
        _run_checks(settings, rendered, skip_checks)
        _send_test(settings, rendered, test_addresses, dry_run, yes)
        return
    rendered, prepared = _prepare_all(settings, editions, skip_checks)
    if dry_run or settings.transport_name == "dryrun":
        from newsletter.render import write_build

        for edition in prepared.tags:
            built = prepared.prepared(edition).rendered
            target = write_build(built, settings.build_dir)
            click.echo(f"Built {built.source.name if built.source else built.slug} → {target}/")
        _dry_run_all(settings, rendered, prepared)
    else:
        _deliver(settings, rendered, yes=yes, resend_uncertain=not no_resend_uncertain,
                 force_new_content=force_new_content, retry_failed=retry_failed, prepared=prepared)


def _editions(settings: "Settings", ref: str) -> tuple[Any, str | None]:
    """The issue ``ref`` names with its editions, and the edition tag when ``ref`` is an edition's file."""
    from newsletter.editions import load_editions, resolve

    path, named = resolve(issue_path(settings, ref))
    return load_editions(path, settings.publication.lang), named


def _prepare_all(settings: "Settings", editions: Any, skip_checks: bool, *,
                 check: bool = True) -> tuple["RenderedEmail", Any]:
    """Each edition to be sent rendered once and checked; a draft edition is named (its readers
    get the main edition) before anything is confirmed."""
    from newsletter.editions import MAIN, render_editions
    from newsletter.sendplan import prepare_editions

    rendered = render_editions(editions, settings, include_drafts=False)
    for i, r in enumerate(rendered.values() if check else ()):
        if not (skip_checks and i):  # --skip-checks: said once
            _run_checks(settings, r, skip_checks)
    for tag in editions.drafts:
        click.echo(f"note: the {tag} edition is a draft: its readers get the main edition ({editions.main_lang}) "
                   "this time; set 'status: ready' in it to send it", err=True)
    return rendered[MAIN], prepare_editions(settings, editions, rendered)


@click.command()
@click.argument("issue")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-resend-uncertain", is_flag=True, help="Report, rather than resend, recipients left mid-send.")
@click.option("--force-new-content", is_flag=True, help="Resume even though the issue changed.")
@click.option("--retry-failed", is_flag=True, help="Give recipients whose retry window ran out a fresh one.")
@click.option("--despite-complaints", "--despite-bounces", "despite", is_flag=True,
              help="Continue a delivery the reputation guard held (too many complaints or hard bounces); "
                   "the guard then counts only what comes back from now on.")
@click.pass_context
def resume(ctx: click.Context, issue: str, yes: bool, no_resend_uncertain: bool, force_new_content: bool,
           retry_failed: bool, despite: bool) -> None:
    """Continue the unfinished delivery of ISSUE after a crash, Ctrl-C, hold, deferral or daily cap.

    Readers waiting for a retry are tried at once, not at their next retry time.
    Never starts a new one: use `newsletter send` for that. A delivery held because readers
    complained or bounced (NEWSLETTER_COMPLAINT_PAUSE, NEWSLETTER_BOUNCE_PAUSE) continues only
    with --despite-complaints: look at `newsletter status ISSUE` first.
    """
    from newsletter.ledger.deliveries import open_delivery_id
    from newsletter.schema import open_database

    settings = settings_of(ctx)
    editions, _ = _editions(settings, issue)
    with closing(open_database(settings.db_target)) as conn:
        unfinished = open_delivery_id(conn, editions.main.slug)
    if unfinished is None:
        raise InputError(f"no unfinished delivery of {editions.main.slug}; `newsletter send {issue}` starts one")
    rendered, prepared = _prepare_all(settings, editions, skip_checks=False, check=False)
    _deliver(settings, rendered, yes=yes, resend_uncertain=not no_resend_uncertain,
             force_new_content=force_new_content, retry_failed=retry_failed, retry_now=True,
             despite_guard=despite, prepared=prepared)


@click.command()
@click.argument("issue", required=False)
@click.option("--failed", is_flag=True, help="List who did not get it, and why.")
@click.pass_context
def status(ctx: click.Context, issue: str | None, failed: bool) -> None:
    """Show deliveries: counts per state, rate, ETA and failures."""
    from newsletter.ledger.reports import delivery_status, failed_recipients
    from newsletter.schema import open_database

    settings = settings_of(ctx)
    conn = ctx.with_resource(closing(open_database(settings.db_target)))
    slug = None
    if issue:
        from newsletter.issue import parse_issue

        try:
            slug = parse_issue(issue_path(settings, issue)).slug
        except InputError:  # renamed or removed since it was sent: its deliveries are still on record
            if not delivery_status(conn, issue):
                raise
            slug = issue
    rows = delivery_status(conn, slug)
    _signup_mail_status(conn)
    if not rows:
        click.echo("No deliveries yet.")
        return
    from newsletter.events import delivery_event_counts

    # A plain aligned table: loading rich's table machinery would triple this command's start-up.
    header = ("id", "issue", "state", "total", "sent", "pending", "failed", "skipped", "rate", "ETA",
              "bounces", "complaints")
    cells = [header]
    for s in rows:
        events = delivery_event_counts(conn, s.id)
        bounces = f"{events['hard-bounce']} hard, {events['soft-bounce']} soft"
        cells.append((*(str(x) for x in s.as_row()), bounces, str(events["complaint"])))
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    _edition_lines(conn, rows, settings.publication.lang)
    for s in rows:
        if s.deferred:
            from newsletter.cli.formatting import local_time

            reasons = "; ".join(f"{why} ({n})" for why, n in s.reasons)
            when = local_time(s.next_retry) if s.next_retry else "when resumed"
            click.echo(f"#{s.id} {s.delivery.slug}: {s.deferred} readers deferred; next retry at {when}; "
                       f"commonest reasons: {reasons or '-'}")
    _status_notes(settings, conn, rows, issue is not None)
    if failed:
        for s in rows:
            for email, state, error in failed_recipients(conn, s.id):
                click.echo(f"{s.id}\t{email}\t{state}\t{error or ''}")


def _edition_lines(conn: Any, rows: list[Any], main_lang: str) -> None:
    """Per delivery with more than one edition, each edition's readers: "en 4 (4 sent), zh-Hans 2 (1 sent, 1 pending)"."""
    from newsletter.ledger.reports import edition_counts, open_rows

    for s in rows:
        per = edition_counts(conn, s.id)
        if set(per) <= {""}:
            continue
        parts = []
        for tag, counts in per.items():
            detail = [f"{counts['sent']} sent"] + ([f"{open_rows(counts)} pending"] if open_rows(counts) else [])
            failed = counts[RowState.FAILED_PERMANENT] + counts[RowState.GAVE_UP]
            detail += [f"{failed} failed"] if failed else []
            parts.append(f"{tag or main_lang} {sum(counts.values())} ({', '.join(detail)})")
        click.echo(f"#{s.id} {s.delivery.slug} editions: " + "; ".join(parts))


def _status_notes(settings: "Settings", conn: Any, rows: list, rates: bool) -> None:
    """Why a delivery is held or paused; with an issue named, its complaint and bounce rates
    beside the guard's thresholds."""
    from newsletter.errors import scrub
    from newsletter.guard import RESUME_FLAG, Guard, Tally, is_guard_hold
    from newsletter.ledger.reports import last_error

    guard = Guard.from_settings(settings) if rates else None
    for s in rows:
        d = s.delivery
        error = last_error(conn, d.id) if d.state in (DeliveryState.HELD, DeliveryState.PAUSED) else None
        if d.state in (DeliveryState.HELD, DeliveryState.PAUSED) and (d.reason or error):
            reason = d.reason or ""
            how = f"; `newsletter resume {d.slug} {RESUME_FLAG}` continues it" if is_guard_hold(d.state, reason) \
                else ""
            why = reason if reason.startswith(d.state) else f"{d.state}: {reason}".rstrip(": ")
            if error and error not in reason:  # the last transport error says what to fix
                why += f"; last transport error: {error}"
            click.echo(scrub(f"#{d.id} {d.slug}: {why}{how}", 800))
        if guard is not None:
            from newsletter.events import guard_counts

            tally = Tally(s.counts[RowState.SENT], s.counts[RowState.FAILED_PERMANENT], *guard_counts(conn, d.id))
            click.echo(f"#{d.id} {d.slug}: {guard.describe(tally)}")


def _signup_mail_status(conn: Any) -> None:
    """Signup confirmation (and welcome) mails that failed: retrying, or given up after the window."""
    from newsletter.signup_status import mail_counts

    retrying, gave_up = mail_counts(conn)
    if gave_up:
        click.echo(f"signup mail: {gave_up} not sent, given up after NEWSLETTER_RETRY_WINDOW; "
                   "`newsletter subscribers list --status pending` names them (a new signup queues it again)")
    if retrying:
        click.echo(f"signup mail: {retrying} failed and waiting to retry")


@click.group(cls=_DefaultGroup)
def schedule() -> None:
    """Schedule a send: `schedule ISSUE --at 2025-03-10T09:00+08:00`, `schedule list`, `schedule cancel ISSUE`.

    A worker (`newsletter worker`, or `newsletter dispatch` from cron) sends
    due deliveries. The issue is built and checked now, and its content is
    frozen: if it changes before the send time the send is held, not sent.
    """


@schedule.command("add")
@click.argument("issue")
@click.option("--at", "at", help="When, with a timezone: 2025-03-10T09:00+08:00 (default: the issue's send_at).")
@click.option("--skip-checks", is_flag=True, help="Schedule even if pre-flight checks find errors.")
@click.pass_context
def schedule_add(ctx: click.Context, issue: str, at: str | None, skip_checks: bool) -> None:
    """Schedule ISSUE for sending at a time."""
    import datetime as dt

    from newsletter.issue import parse_issue
    from newsletter.schema import open_database
    from newsletter.schedule import schedule as schedule_delivery

    settings = settings_of(ctx)
    path = issue_path(settings, issue)
    parsed = parse_issue(path)
    parsed.require_ready("schedule")
    if at:
        try:
            when = dt.datetime.fromisoformat(at)
        except (ValueError, OverflowError):
            raise InputError(f"--at {at!r} is not an ISO date-time like 2025-03-10T09:00+08:00") from None
        if when.tzinfo is None:
            raise InputError("--at needs a timezone, e.g. 2025-03-10T09:00+08:00 or …Z")
    elif parsed.send_at:
        when = parsed.send_at
    else:
        raise InputError("give --at with a timezone, or set send_at in the issue's front matter", path=path)
    from newsletter.schedule import check_send_time

    check_send_time(when, dt.datetime.now(dt.timezone.utc))  # before the (slow) build and checks
    from newsletter.editions import load_editions

    _, prepared = _prepare_all(settings, load_editions(path, settings.publication.lang, main=parsed), skip_checks)
    with closing(open_database(settings.db_target)) as conn:  # every edition: the worker sends each its readers
        delivery_id = schedule_delivery(conn, prepared, when)
    click.echo(f"Scheduled {path.name} for {when.isoformat()} (delivery {delivery_id}). "
               "A running `newsletter worker` or `newsletter dispatch` will send it.")


@schedule.command("list")
@click.pass_context
def schedule_list(ctx: click.Context) -> None:
    """List scheduled deliveries."""
    from newsletter.schema import open_database
    from newsletter.cli.formatting import display_time
    from newsletter.schedule import list_scheduled
    from newsletter.sendplan import send_zones

    settings = settings_of(ctx)
    with closing(open_database(settings.db_target)) as conn:
        rows = list_scheduled(conn)
    if not rows:
        click.echo("Nothing scheduled.")
    zones = send_zones(settings) if rows else {}
    for row in rows:
        when = display_time(row.send_at, zones.get(row.slug)) if row.send_at else (row.send_at_text or "-")
        click.echo(f"{row.id}\t{row.slug}\t{when}\t{row.state}")


@schedule.command("cancel")
@click.argument("issue")
@click.pass_context
def schedule_cancel(ctx: click.Context, issue: str) -> None:
    """Cancel the scheduled send of ISSUE (slug, number or delivery id)."""
    from newsletter.schema import open_database
    from newsletter.schedule import cancel

    settings = settings_of(ctx)
    ref = issue
    try:
        from newsletter.issue import parse_issue

        ref = parse_issue(issue_path(settings, issue)).slug
    except InputError:
        pass
    with closing(open_database(settings.db_target)) as conn:
        cancel(conn, ref)
    click.echo(f"Cancelled the scheduled send of {ref}.")


@click.command()
@click.pass_context
def dispatch(ctx: click.Context) -> None:
    """Send every due scheduled delivery once, then exit (for cron or a systemd timer)."""
    import datetime as dt

    from newsletter.schema import open_database
    from newsletter.schedule import dispatch_once
    from newsletter.sendplan import scheduler_args

    from newsletter.errors import SendDeferredError, SendHeldError, SendInterruptedError

    settings = settings_of(ctx)
    args = scheduler_args(settings)
    _retired_notes(settings)
    with _graceful_stop() as stop, closing(open_database(settings.db_target)) as conn:
        reports = dispatch_once(conn, dt.datetime.now(dt.timezone.utc), stop=stop, on_start=_started, **args)
    for report in reports:
        _outcome(report)
    if not reports:
        click.echo("Nothing due.")
    pending = sum(r.pending for r in reports)
    if stop.is_set() and pending:  # SIGTERM/Ctrl-C: say so, as `send` does (exit 130, not 0)
        click.echo(f"Stopped with {pending} readers pending; the next `newsletter dispatch` (or `resume`) "
                   "will continue.", err=True)
        ctx.exit(SendInterruptedError.exit_code)
    if any(r.state == DeliveryState.HELD for r in reports):  # nobody mailed, and nothing will be until the editor acts
        ctx.exit(SendHeldError.exit_code)
    if any(r.state == DeliveryState.DEFERRED for r in reports):
        ctx.exit(SendDeferredError.exit_code)


@click.command()
@click.option("--poll", default=30.0, show_default=True, help="Seconds between checks for due sends.")
@click.option("--quiet", "-q", is_flag=True, help="Print only errors and held deliveries (no start, finish or inbox lines).")
@click.option("--verbose", "-v", is_flag=True, help="Also print each check for due sends.")
@click.pass_context
def worker(ctx: click.Context, poll: float, quiet: bool, verbose: bool) -> None:
    """Run until stopped, sending scheduled deliveries when due.

    Prints one line as each delivery starts and as it ends (sent, deferred or held), in
    the words `dispatch` uses, and every error: under systemd the journal shows each send.
    SIGTERM or Ctrl-C finishes the current batch, leaves nothing mid-send, and exits.
    """
    from newsletter.inbox import start_inbox_polling
    from newsletter.schema import open_database
    from newsletter.schedule import check_poll_interval, run_worker
    from newsletter.sendplan import scheduler_args

    if quiet and verbose:
        raise InputError("--quiet and --verbose contradict each other: give one")
    check_poll_interval(poll)
    settings = settings_of(ctx)
    say = (lambda *_: None) if quiet else click.echo
    say(f"Worker started (polling every {poll:g}s); stop with SIGTERM or Ctrl-C.")

    def error(exc: Exception) -> None:
        click.echo(f"error: {exc.format_message() if hasattr(exc, 'format_message') else exc}", err=True)

    def outcome(report: Any) -> None:
        if not quiet or report.state == DeliveryState.HELD:
            _outcome(report)
        if report.state == DeliveryState.PAUSED and not quiet:
            click.echo(f"Delivery {report.delivery_id} of {report.slug} stopped with {report.pending} readers "
                       "left; the next `newsletter worker` or `dispatch` continues it.")

    def inbox_result(result: Any) -> None:
        say(result.line())

    def polled() -> None:
        if verbose:
            click.echo("Checking for due sends.")

    with _graceful_stop() as stop:
        minutes = start_inbox_polling(settings, stop, on_result=inbox_result, on_error=error)
        if minutes:
            say(f"Reading the reply-to inbox every {minutes:g} minute(s).")
        with closing(open_database(settings.db_target)) as conn:
            run_worker(conn, poll_interval=poll, stop=stop, on_poll=polled, on_report=outcome, on_error=error,
                       on_start=None if quiet else _started, **scheduler_args(settings))
    say("Worker stopped cleanly.")
