"""The command line: parse arguments, call one function, map typed errors to exit codes.

Heavy modules (the renderer, premailer, requests) are imported inside the
commands that need them, so ``--help`` and ``subscribers`` start fast.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NoReturn

import click

from newsletter import __version__
from newsletter.errors import InputError, NewsletterError

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.message import PreparedIssue
    from newsletter.render import RenderedEmail


class _DefaultGroup(click.Group):
    """A group whose first argument may be an issue instead of a subcommand:
    ``schedule 6 --at …`` means ``schedule add 6 --at …``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["add", *args]
        return super().parse_args(ctx, args)


def _settings(ctx: click.Context) -> "Settings":
    from newsletter.config import load_settings

    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("root"))
    return obj["settings"]


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 160  # piped or logged: don't squeeze tables into 80 columns
    return console


def _issue_path(settings: "Settings", ref: str) -> Path:
    from newsletter.issue import find_issue

    return find_issue(settings.issues_dir, ref)


def _render(settings: "Settings", ref: str) -> "RenderedEmail":
    from newsletter.render import render_issue

    return render_issue(_issue_path(settings, ref), settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Publication folder holding newsletter.toml, issues/ and templates/ (default: current folder).")
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, root: Path | None) -> None:
    """Publish an email newsletter from Markdown issues kept in git.

    \b
    Typical flow:
      newsletter new "Title"          start the next issue in issues/
      newsletter preview 7            live preview at desktop and phone widths
      newsletter check 7              pre-flight checks before sending
      newsletter send 7 --test me@x   a [TEST] copy to named addresses only
      newsletter send 7 --dry-run     write every message as .eml, send nothing
      newsletter send 7               send to all active subscribers (resumable)

    Issues are named by number (7), slug or path. Configuration comes from
    newsletter.toml (public identity) and the environment or .env (secrets,
    transport); see .env.example.
    """
    ctx.ensure_object(dict)["root"] = root


# ---------------------------------------------------------------- authoring -----------
@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Start a new publication in DIRECTORY with the default templates and a first issue."""
    from newsletter.scaffold import init_publication

    created = init_publication(directory)
    click.echo(f"Created {len(created)} files in {directory}. Next: cd {directory} && newsletter preview 1")


@cli.command()
@click.argument("title")
@click.pass_context
def new(ctx: click.Context, title: str) -> None:
    """Scaffold the next numbered issue file with TITLE."""
    from newsletter.scaffold import new_issue

    path = new_issue(_settings(ctx).issues_dir, title)
    click.echo(f"Created {path}")


@cli.command()
@click.argument("issues", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write to DIR/<slug>/ instead of build/<slug>/.")
@click.pass_context
def build(ctx: click.Context, issues: tuple[str, ...], out: Path | None) -> None:
    """Render ISSUES (default: all) to email.html, email.txt and preview.html.

    Markdown → Jinja2 → MJML → mjml-python → premailer, and a plain-text part
    from the same source. Output goes to build/<slug>/ (or --out DIR/<slug>/).
    """
    from newsletter.issue import list_issues
    from newsletter.preview import preview_page
    from newsletter.render import Renderer, render_issue, write_build

    settings = _settings(ctx)
    paths = [_issue_path(settings, ref) for ref in issues] or list_issues(settings.issues_dir)
    if not paths:
        raise InputError(f"no issue files in {settings.issues_dir}")
    renderer = Renderer(settings)
    pub = settings.publication
    for path in paths:
        rendered = render_issue(path, settings, renderer)
        target = write_build(rendered, out or settings.build_dir,
                             preview_page(rendered, pub.from_name or pub.name))
        size = len(rendered.html.encode("utf-8"))
        click.echo(f"Built {path.name} → {target}/ (HTML {size / 1024:.1f} KB, text {len(rendered.text) / 1024:.1f} KB)")


@cli.command()
@click.argument("issue")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1 (0 picks a free one).")
@click.option("--no-open", is_flag=True, help="Do not open a browser.")
@click.option("--screenshot", "screenshot_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Instead of serving, write PNGs at 375 and 800 px, light and dark, to DIR.")
@click.pass_context
def preview(ctx: click.Context, issue: str, port: int, no_open: bool, screenshot_dir: Path | None) -> None:
    """Live preview of ISSUE at desktop and phone widths, with the plain text beside them.

    Serves on 127.0.0.1 only, rebuilds within a second when the issue or a
    template changes, and shows render errors on the page.
    """
    settings = _settings(ctx)
    path = _issue_path(settings, issue)
    if screenshot_dir is not None:
        from newsletter.screenshots import take_screenshots

        for png in take_screenshots(_render(settings, issue), screenshot_dir):
            click.echo(f"Wrote {png}")
        return
    from newsletter.preview import PreviewServer

    server = PreviewServer(settings, path, log=lambda m: click.echo(m, err=True))
    try:
        server.serve(port=port, open_browser=not no_open, ready=lambda m: click.echo(m))
    except KeyboardInterrupt:
        pass


@cli.command()
@click.argument("issue")
@click.option("--online", is_flag=True, help="Also fetch every external link (HEAD/GET) and report broken ones.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def check(ctx: click.Context, issue: str, online: bool, fmt: str) -> None:
    """Pre-flight checks for ISSUE: size and clipping, links, images, accessibility,
    client support, deliverability headers and the plain text.

    One line per finding (error / warning / info) with file:line where it applies.
    Exits non-zero on any error; `send` and `schedule` run these first.
    """
    import json

    from newsletter.checks import run_checks
    from newsletter.errors import ChecksFailedError

    settings = _settings(ctx)
    findings = run_checks(settings, _render(settings, issue), online=online)
    if fmt == "json":
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2, ensure_ascii=False))
    else:
        for f in findings:
            click.echo(f.format())
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    if fmt == "text":
        click.echo(f"{errors} error(s), {warnings} warning(s), {len(findings) - errors - warnings} note(s).")
    if errors:
        raise ChecksFailedError(f"{errors} pre-flight error(s)")


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("site"), show_default=True,
              help="Folder for the static site.")
@click.pass_context
def archive(ctx: click.Context, out: Path) -> None:
    """Build the public web archive: index, one page per issue, Atom and JSON feeds, sitemap.

    Deploy the folder to any static host; set NEWSLETTER_BASE_URL so the emails'
    "read in your browser" links point at it.
    """
    from newsletter.archive import build_archive

    settings = _settings(ctx)
    target = out if out.is_absolute() else settings.root / out
    written = build_archive(settings, target)
    click.echo(f"Wrote {len(written)} files to {target}/")


# ---------------------------------------------------------------- sending -------------
def _prepare(settings: "Settings", rendered: "RenderedEmail", *, test: bool = False) -> "PreparedIssue":
    from newsletter.message import PreparedIssue, dkim_signer

    signer = None
    key_file = settings.get("NEWSLETTER_DKIM_KEY_FILE")
    if key_file:
        selector = settings.require("NEWSLETTER_DKIM_SELECTOR", "to sign with DKIM")
        try:
            key = Path(key_file).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read DKIM key: {exc.strerror}", path=key_file) from None
        domain = settings.get("NEWSLETTER_DKIM_DOMAIN", settings.publication.sender_domain)
        signer = dkim_signer(selector, domain, key)
    return PreparedIssue(rendered=rendered, publication=settings.publication,
                         secret_key=str(settings.secret_key), test=test, signer=signer)


def _run_checks(settings: "Settings", rendered: "RenderedEmail", skip: bool) -> None:
    if skip:
        _console(stderr=True).print("[bold red]WARNING: --skip-checks given; pre-flight checks were NOT run.[/]")
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


def _progress(total: int, label: str) -> tuple[Any, Callable[[int, int, int, int], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]:.0f} msg/s"), TimeRemainingColumn(),
                        console=_console(stderr=True), transient=False, disable=total <= 5)
    task = progress.add_task(label, total=total, rate=0.0)

    def update(done: int, total_: int, sent: int, failed: int) -> None:
        elapsed = progress.tasks[task].elapsed or 0
        progress.update(task, completed=done, total=total_, rate=(done / elapsed) if elapsed else 0.0)

    return progress, update


def _transport_factory(settings: "Settings", dry_run: bool, *, ledger: bool = False) -> Callable[[], Any]:
    """Check the configuration now, before anything starts; ``ledger`` sends must really send."""
    from newsletter.errors import ConfigError
    from newsletter.transports import get_transport

    name = "dryrun" if dry_run else None
    probe = get_transport(settings, name)
    probe.close()
    if ledger and not probe.real:
        # A ledger run through a transport that sends nothing would mark everyone sent.
        raise ConfigError(f"NEWSLETTER_TRANSPORT={probe.name} sends nothing, so it cannot run a delivery; "
                          "set a real transport, or use `newsletter send ISSUE --dry-run`")
    return lambda: get_transport(settings, name)


def _confirm_real_send(settings: "Settings", count: int, what: str, yes: bool, dry_run: bool) -> None:
    if dry_run or settings.transport_name in ("dryrun", "null") or yes:
        return
    if not sys.stdin.isatty():
        raise InputError(f"refusing to send {what} to {count} recipient(s) without confirmation: pass --yes")
    click.confirm(f"Send {what} to {count} recipient(s) via {settings.transport_name}?", abort=True)


def _send_test(settings: "Settings", rendered: "RenderedEmail", addresses: tuple[str, ...],
               dry_run: bool, yes: bool) -> None:
    import time

    from newsletter.message import Recipient, validate_address
    from newsletter.store import SubscriberStore

    recipients = [validate_address(a, "--test address") for a in addresses]
    store = SubscriberStore.open(settings.db_path)
    suppressed = [a for a in recipients if (s := store.get_by_email(a)) is not None and s.status != "active"]
    if suppressed:
        raise InputError(f"{', '.join(suppressed)} unsubscribed or bounced; test sends respect the suppression list")
    factory = _transport_factory(settings, dry_run)
    _confirm_real_send(settings, len(recipients), "a [TEST] copy", yes, dry_run)
    prepared = _prepare(settings, rendered, test=True)
    start = time.monotonic()
    with factory() as transport:
        results = transport.send([prepared.personalise(Recipient(a)) for a in recipients])
    for r in results:
        click.echo(f"{r.status.value:>16}  {r.recipient}" + (f"  ({r.error})" if r.error else ""))
    failed = [r for r in results if not r.status.delivered]
    click.echo(f"Test send: {len(results) - len(failed)} sent, {len(failed)} failed in {time.monotonic() - start:.1f}s"
               + (f" → {settings.outbox / rendered.slug}" if dry_run or settings.transport_name == "dryrun" else ""))
    if failed:
        ctx = click.get_current_context()
        ctx.exit(1)


def _dry_run_all(settings: "Settings", rendered: "RenderedEmail") -> None:
    """Personalise for every active subscriber into the outbox, without touching the ledger."""
    import time

    from newsletter.store import SubscriberStore
    from newsletter.transports.dryrun import DryRunTransport

    store = SubscriberStore.open(settings.db_path)
    total = store.count("active")
    prepared = _prepare(settings, rendered)
    progress, update = _progress(total, "Dry run")
    start, done, size = time.monotonic(), 0, 0
    with progress, DryRunTransport.from_settings(settings) as transport:
        batch: list[Any] = []

        def flush() -> None:
            nonlocal done, size
            transport.send(batch)
            size += sum(len(m.as_bytes()) for m in batch)  # already built by the transport: cached
            done += len(batch)
            batch.clear()
            update(done, total, done, 0)

        for sub in store.iter_subscribers(status="active"):
            batch.append(prepared.for_subscriber(sub.id, sub.email, sub.name))
            if len(batch) >= 200:
                flush()
        if batch:
            flush()
    elapsed = time.monotonic() - start
    click.echo(f"Dry run: {done} message(s) for {total} active subscriber(s), {size / 1024:.0f} KB, "
               f"written to {settings.outbox / rendered.slug}/ in {elapsed:.1f}s. Nothing was sent.")
    if total == 0:
        click.echo("No active subscribers yet: add some with `newsletter subscribers import FILE.csv`.")


def _delivery_options(settings: "Settings", **overrides: Any) -> Any:
    from newsletter.delivery import DeliveryOptions

    rate = settings.number("NEWSLETTER_RATE", None)
    cap = settings.number("NEWSLETTER_DAILY_CAP", None, minimum=1)
    return DeliveryOptions(
        batch_size=settings.integer("NEWSLETTER_BATCH_SIZE", 100, minimum=1),
        rate=rate or None,
        concurrency=settings.integer("NEWSLETTER_CONCURRENCY", 1, minimum=1),
        daily_cap=int(cap) if cap else None,
        max_attempts=settings.integer("NEWSLETTER_MAX_ATTEMPTS", 5, minimum=1),
        **overrides,
    )


def _report(report: Any) -> None:
    click.echo(
        f"Delivery {report.delivery_id} ({report.state}): {report.sent} sent, {report.failed_permanent} failed "
        f"permanently, {report.failed_temporary} failed temporarily, {report.skipped} skipped, "
        f"{report.pending} pending; {report.sent_this_run} sent in this run in {report.elapsed:.1f}s "
        f"({report.rate:.0f} msg/s)."
    )
    if report.note:
        click.echo(report.note)
    if getattr(report, "uncertain_reported", 0):
        click.echo(f"{report.uncertain_reported} recipient(s) were mid-send during a crash and were NOT resent "
                   "(--no-resend-uncertain); see `newsletter status --failed`.")
    elif getattr(report, "uncertain_resent", 0):
        click.echo(f"{report.uncertain_resent} recipient(s) left mid-send by an earlier crash were sent again.")


@contextmanager
def _graceful_stop() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM sets the event: the batch in flight is finished and recorded,
    nothing is left mid-send, and the delivery stays resumable."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _deliver(settings: "Settings", rendered: "RenderedEmail", *, yes: bool, resend_uncertain: bool,
             force_new_content: bool, retry_failed: bool = False) -> None:
    from newsletter.delivery import run_delivery
    from newsletter.ledger import open_ledger, start_or_resume

    if settings.transport_name != "dryrun" and not settings.has_secret_key:
        from newsletter.errors import ConfigError

        raise ConfigError("NEWSLETTER_SECRET_KEY is not set; it signs unsubscribe links (see .env.example)")
    conn = open_ledger(settings.db_path)
    from newsletter.store import SubscriberStore

    active = SubscriberStore(conn).count("active")
    factory = _transport_factory(settings, dry_run=False, ledger=True)
    _confirm_real_send(settings, active, f"“{rendered.subject}”", yes, dry_run=False)
    prepared = _prepare(settings, rendered)
    delivery_id = start_or_resume(conn, prepared, force_new_content=force_new_content)
    progress, update = _progress(active, "Sending")
    with progress, _graceful_stop() as stop:
        report = run_delivery(conn, delivery_id, prepared, factory,
                              options=_delivery_options(settings, resend_uncertain=resend_uncertain,
                                                        retry_failed=retry_failed),
                              progress=update, stop=stop)
    _report(report)
    if stop.is_set():
        from newsletter.ledger import wait_for_editor

        wait_for_editor(conn, delivery_id)
        click.echo("Stopped after the current batch; run the same command again to continue.")
    if report.failed_permanent or report.failed_temporary:
        click.echo("Some recipients failed: `newsletter status --failed` lists them.")


@cli.command()
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
              help="On resume, give recipients whose temporary failures ran out of attempts a fresh try.")
@click.pass_context
def send(ctx: click.Context, issue: str, dry_run: bool, test_addresses: tuple[str, ...], yes: bool,
         skip_checks: bool, no_resend_uncertain: bool, force_new_content: bool, retry_failed: bool) -> None:
    """Send ISSUE to every active subscriber, or a test copy, or a dry run.

    A real send keeps a per-recipient ledger in the database: run the same
    command again (or `newsletter resume`) after a crash or Ctrl-C and it
    continues where it stopped, never sending twice to anyone marked sent.
    The transport is NEWSLETTER_TRANSPORT (default: dryrun).
    """
    settings = _settings(ctx)
    rendered = _render(settings, issue)
    _run_checks(settings, rendered, skip_checks)
    if test_addresses:
        _send_test(settings, rendered, test_addresses, dry_run, yes)
    elif dry_run or settings.transport_name == "dryrun":
        from newsletter.render import write_build

        target = write_build(rendered, settings.build_dir)
        click.echo(f"Built {rendered.source.name if rendered.source else rendered.slug} → {target}/")
        _dry_run_all(settings, rendered)
    else:
        _deliver(settings, rendered, yes=yes, resend_uncertain=not no_resend_uncertain,
                 force_new_content=force_new_content, retry_failed=retry_failed)


@cli.command()
@click.argument("issue")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--no-resend-uncertain", is_flag=True, help="Report, rather than resend, recipients left mid-send.")
@click.option("--force-new-content", is_flag=True, help="Resume even though the issue changed.")
@click.option("--retry-failed", is_flag=True, help="Give recipients whose retries ran out a fresh try.")
@click.pass_context
def resume(ctx: click.Context, issue: str, yes: bool, no_resend_uncertain: bool, force_new_content: bool,
           retry_failed: bool) -> None:
    """Continue the unfinished delivery of ISSUE after a crash, Ctrl-C, hold or daily cap.

    Never starts a new one: use `newsletter send` for that.
    """
    from newsletter.ledger import open_delivery_id, open_ledger

    settings = _settings(ctx)
    rendered = _render(settings, issue)
    if open_delivery_id(open_ledger(settings.db_path), rendered.slug) is None:
        raise InputError(f"no unfinished delivery of {rendered.slug}; `newsletter send {issue}` starts one")
    _deliver(settings, rendered, yes=yes, resend_uncertain=not no_resend_uncertain,
             force_new_content=force_new_content, retry_failed=retry_failed)


@cli.command()
@click.argument("issue", required=False)
@click.option("--failed", is_flag=True, help="List who did not get it, and why.")
@click.pass_context
def status(ctx: click.Context, issue: str | None, failed: bool) -> None:
    """Show deliveries: counts per state, rate, ETA and failures."""
    from rich.table import Table

    from newsletter.ledger import delivery_status, failed_recipients, open_ledger

    settings = _settings(ctx)
    conn = open_ledger(settings.db_path)
    slug = None
    if issue:
        from newsletter.issue import parse_issue

        slug = parse_issue(_issue_path(settings, issue)).slug
    rows = delivery_status(conn, slug)
    if not rows:
        click.echo("No deliveries yet.")
        return
    table = Table("id", "issue", "state", "total", "sent", "pending", "failed", "skipped", "rate", "ETA")
    for s in rows:
        table.add_row(*(str(x) for x in s.as_row()))
    _console().print(table)
    if failed:
        for s in rows:
            for email, state, error in failed_recipients(conn, s.id):
                click.echo(f"{s.id}\t{email}\t{state}\t{error or ''}")


# ---------------------------------------------------------------- scheduling ----------
@cli.group(cls=_DefaultGroup)
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

    from newsletter.ledger import open_ledger
    from newsletter.issue import parse_issue
    from newsletter.schedule import schedule as schedule_delivery

    settings = _settings(ctx)
    path = _issue_path(settings, issue)
    parsed = parse_issue(path)
    if at:
        try:
            when = dt.datetime.fromisoformat(at)
        except ValueError:
            raise InputError(f"--at {at!r} is not an ISO date-time like 2025-03-10T09:00+08:00") from None
        if when.tzinfo is None:
            raise InputError("--at needs a timezone, e.g. 2025-03-10T09:00+08:00 or …Z")
    elif parsed.send_at:
        when = parsed.send_at
    else:
        raise InputError("give --at with a timezone, or set send_at in the issue's front matter", path=path)
    rendered = _render(settings, issue)
    _run_checks(settings, rendered, skip_checks)
    conn = open_ledger(settings.db_path)
    delivery_id = schedule_delivery(conn, _prepare(settings, rendered), when)
    click.echo(f"Scheduled {path.name} for {when.isoformat()} (delivery {delivery_id}). "
               "A running `newsletter worker` or `newsletter dispatch` will send it.")


@schedule.command("list")
@click.pass_context
def schedule_list(ctx: click.Context) -> None:
    """List scheduled deliveries."""
    from newsletter.ledger import open_ledger
    from newsletter.schedule import list_scheduled

    rows = list_scheduled(open_ledger(_settings(ctx).db_path))
    if not rows:
        click.echo("Nothing scheduled.")
    for row in rows:
        click.echo(f"{row.id}\t{row.slug}\t{row.send_at}\t{row.state}")


@schedule.command("cancel")
@click.argument("issue")
@click.pass_context
def schedule_cancel(ctx: click.Context, issue: str) -> None:
    """Cancel the scheduled send of ISSUE (slug, number or delivery id)."""
    from newsletter.ledger import open_ledger
    from newsletter.schedule import cancel

    settings = _settings(ctx)
    ref = issue
    try:
        from newsletter.issue import parse_issue

        ref = parse_issue(_issue_path(settings, issue)).slug
    except InputError:
        pass
    cancel(open_ledger(settings.db_path), ref)
    click.echo(f"Cancelled the scheduled send of {ref}.")


def _dispatch_args(settings: "Settings") -> dict[str, Any]:
    import datetime as dt

    from newsletter.issue import list_issues, parse_issue
    from newsletter.render import Renderer, render_issue

    renderer = Renderer(settings)

    def prepare(slug: str) -> "PreparedIssue":
        for path in list_issues(settings.issues_dir):
            if parse_issue(path).slug == slug:
                return _prepare(settings, render_issue(path, settings, renderer))
        raise InputError(f"the scheduled issue {slug!r} is no longer in {settings.issues_dir}")

    hours = settings.number("NEWSLETTER_MAX_LATENESS", 6.0)
    return dict(prepare=prepare, transport_factory=_transport_factory(settings, dry_run=False, ledger=True),
                options=_delivery_options(settings), max_lateness=dt.timedelta(hours=hours or 0))


@cli.command()
@click.pass_context
def dispatch(ctx: click.Context) -> None:
    """Send every due scheduled delivery once, then exit (for cron or a systemd timer)."""
    import datetime as dt

    from newsletter.ledger import open_ledger
    from newsletter.schedule import dispatch_once

    settings = _settings(ctx)
    with _graceful_stop() as stop:
        reports = dispatch_once(open_ledger(settings.db_path), dt.datetime.now(dt.timezone.utc), stop=stop,
                                **_dispatch_args(settings))
    for report in reports:
        _report(report)
    if not reports:
        click.echo("Nothing due.")


@cli.command()
@click.option("--poll", default=30.0, show_default=True, help="Seconds between checks for due sends.")
@click.pass_context
def worker(ctx: click.Context, poll: float) -> None:
    """Run until stopped, sending scheduled deliveries when due.

    SIGTERM or Ctrl-C finishes the current batch, leaves nothing mid-send, and exits.
    """
    import datetime as dt

    from newsletter.ledger import open_ledger
    from newsletter.schedule import run_worker

    settings = _settings(ctx)
    click.echo(f"Worker started (polling every {poll:g}s); stop with SIGTERM or Ctrl-C.")
    with _graceful_stop() as stop:
        run_worker(open_ledger(settings.db_path), poll_interval=poll, stop=stop,
                   now=lambda: dt.datetime.now(dt.timezone.utc), **_dispatch_args(settings))
    click.echo("Worker stopped cleanly.")


# ---------------------------------------------------------------- subscribers ---------
@cli.group()
def subscribers() -> None:
    """Manage the subscriber list (SQLite, NEWSLETTER_DB, default newsletter.db).

    Unsubscribed, bounced and complained addresses stay as a suppression list
    that no command sends to.
    """


def _store(ctx: click.Context) -> Any:
    from newsletter.store import SubscriberStore

    return SubscriberStore.open(_settings(ctx).db_path)


@subscribers.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resubscribe", is_flag=True, help="Reactivate addresses that had unsubscribed or bounced.")
@click.option("--source", default=None, help="Where these subscribers came from (kept with each).")
@click.pass_context
def subscribers_import(ctx: click.Context, file: Path, resubscribe: bool, source: str | None) -> None:
    """Import a CSV with a header row (email, name, …). Good rows land even if some are bad."""
    from newsletter.csvio import import_csv

    if not file.exists():
        raise InputError("no such file", path=file)
    report = import_csv(_store(ctx), file, resubscribe=resubscribe, source=source)
    for line, reason in report.errors:
        click.echo(f"{file}:{line}: {reason}", err=True)
    for line, email, reason in report.skipped:
        click.echo(f"{file}:{line}: skipped {email}: {reason}", err=True)
    click.echo(f"Imported {report.added} new, updated {report.updated}, skipped {len(report.skipped)}, "
               f"{len(report.errors)} bad row(s) ({report.encoding}).")


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--consent", default="", help="How and when they agreed to receive the newsletter.")
@click.option("--resubscribe", is_flag=True, help="Reactivate an address that had unsubscribed.")
@click.pass_context
def subscribers_add(ctx: click.Context, email: str, name: str, consent: str, resubscribe: bool) -> None:
    """Add one subscriber."""
    sub = _store(ctx).add(email, name, source="cli", consent=consent, resubscribe=resubscribe)
    click.echo(f"{sub.email}: {sub.status}")


@subscribers.command("remove")
@click.argument("email")
@click.option("--forget-deliveries", is_flag=True, help="Also delete their rows in past deliveries' ledgers.")
@click.pass_context
def subscribers_remove(ctx: click.Context, email: str, forget_deliveries: bool) -> None:
    """Delete a subscriber entirely, for erasure requests (prefer `unsubscribe`, which keeps
    them suppressed). With --forget-deliveries their rows in past deliveries go too."""
    store = _store(ctx)
    if forget_deliveries and (sub := store.get_by_email(email)) is not None:
        from newsletter.ledger import forget_subscriber, open_ledger

        forget_subscriber(open_ledger(_settings(ctx).db_path), sub.id)
    if not store.remove(email):
        raise InputError(f"no subscriber {email}")
    click.echo(f"Removed {email}.")


@subscribers.command("unsubscribe")
@click.argument("address_or_token")
@click.pass_context
def subscribers_unsubscribe(ctx: click.Context, address_or_token: str) -> None:
    """Unsubscribe an address, or the token from a mailto unsubscribe request
    (its subject reads "unsubscribe TOKEN"). The address stays on the suppression list."""
    from newsletter.tokens import verified_subscriber_id

    store = _store(ctx)
    target: str | int = address_or_token
    if "@" not in address_or_token:
        sid = verified_subscriber_id(str(_settings(ctx).secret_key), address_or_token,
                                     lambda i: (s.email if (s := store.get(i)) else None))
        if sid is None:
            raise InputError(f"{address_or_token!r} is neither an address nor a valid unsubscribe token")
        target = sid
    sub = store.unsubscribe(target, reason="cli")
    click.echo(f"Unsubscribed {sub.email}.")


@subscribers.command("list")
@click.option("--status", type=click.Choice(["active", "unsubscribed", "bounced", "complained", "pending"]))
@click.pass_context
def subscribers_list(ctx: click.Context, status: str | None) -> None:
    """List subscribers (email, name, status)."""
    for sub in _store(ctx).iter_subscribers(status=status):
        click.echo(f"{sub.email}\t{sub.name}\t{sub.status}")


@subscribers.command("count")
@click.pass_context
def subscribers_count(ctx: click.Context) -> None:
    """Count subscribers by status."""
    counts = _store(ctx).counts()
    click.echo("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "No subscribers.")


@subscribers.command("export")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE instead of stdout.")
@click.option("--status", type=click.Choice(["active", "unsubscribed", "bounced", "complained", "pending"]))
@click.pass_context
def subscribers_export(ctx: click.Context, out: Path | None, status: str | None) -> None:
    """Export subscribers as CSV, with the status column."""
    from newsletter.csvio import export_csv

    store = _store(ctx)
    if out:
        with out.open("w", encoding="utf-8", newline="") as fh:
            export_csv(store, fh, status=status)
    else:
        export_csv(store, sys.stdout, status=status)


# ---------------------------------------------------------------- web ------------------
@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (keep 127.0.0.1 behind a proxy).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port, printed at start).")
@click.option("--site", type=click.Path(file_okay=False, path_type=Path),
              help="Also serve a built web archive (newsletter archive) from this folder.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, site: Path | None) -> None:
    """Serve one-click unsubscribe (RFC 8058), signup with double opt-in and, optionally,
    the web archive, on waitress (a production WSGI server). Put a TLS proxy in front.

    Or run `newsletter.web:create_app()` under another WSGI server.
    """
    from newsletter.errors import ConfigError
    from newsletter.web import make_app
    from newsletter.web.server import ServerLimits, serve as run

    settings = _settings(ctx)
    if not settings.has_secret_key:
        raise ConfigError("NEWSLETTER_SECRET_KEY is not set: no unsubscribe link from a real send would verify")
    app = make_app(settings, site_dir=site)
    try:
        run(app, host=host, port=port, limits=ServerLimits.from_settings(settings), ready=click.echo)
    except OSError as exc:  # the port is taken, or the address cannot be bound
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@cli.command("form-snippet")
@click.pass_context
def form_snippet(ctx: click.Context) -> None:
    """Print an HTML signup form to paste into the publication's own website.

    It posts to BASE_URL/subscribe; add the site's origin to NEWSLETTER_FORM_ORIGINS.
    """
    from newsletter.web.snippet import form_snippet as snippet

    click.echo(snippet(_settings(ctx)), nl=False)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: one line per error, exit codes from the exception types, never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="newsletter", standalone_mode=False)
    except NewsletterError as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted; nothing was sent.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except OSError as exc:  # a path the user gave cannot be read or written
        where = f"{exc.filename}: " if exc.filename else ""
        click.echo(f"error: {where}{exc.strerror or exc}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
