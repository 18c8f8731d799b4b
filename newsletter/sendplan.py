"""What a send needs, from the settings and a rendered issue: the prepared issue
(with its DKIM signer), checked test recipients, the dry run over every active
subscriber, and what the scheduler needs to prepare and send an issue later.

The CLI parses arguments, asks for confirmation and prints; the decisions live here.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable, Sequence

from newsletter.errors import ConfigError, InputError
from newsletter.states import SubscriberStatus

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.editions import Editions
    from newsletter.message import PreparedIssue
    from newsletter.prepared_editions import PreparedEditions
    from newsletter.render import RenderedEmail
    from newsletter.transports.base import SendResult, Transport

Progress = Callable[[int, int, int, int], None]
DRY_RUN_BATCH = 200


def prepare_issue(settings: "Settings", rendered: "RenderedEmail", *, test: bool = False) -> "PreparedIssue":
    """The issue made ready to personalise, signed with DKIM when a key is configured."""
    from newsletter.dkim import signer_from_settings
    from newsletter.message import PreparedIssue

    return PreparedIssue(rendered=rendered, publication=settings.publication, secret_key=str(settings.secret_key),
                         test=test, signer=signer_from_settings(settings))


def prepare_editions(settings: "Settings", editions: "Editions", rendered: dict[str, "RenderedEmail"]) -> "PreparedEditions":
    """Every edition in ``rendered`` (tag → rendered once) prepared, and each reader's edition
    decided by ``editions`` among those: a draft edition left out sends its readers the main one."""
    from newsletter.prepared_editions import PreparedEditions

    sent = {tag: r for tag, r in rendered.items() if tag}
    prepared = {tag: prepare_issue(settings, r) for tag, r in sent.items()}

    def edition_for(lang: str | None) -> str:
        tag = editions.tag_for(lang)
        return tag if tag in prepared else ""

    return PreparedEditions(prepare_issue(settings, rendered[""]), prepared, edition_for)


def checked_test_recipients(settings: "Settings", addresses: Sequence[str]) -> list[str]:
    """Checked --test addresses; test sends respect the suppression list too."""
    from newsletter.addresses import validate_address
    from newsletter.unsubscribe_spool import open_store

    recipients = [validate_address(a, "--test address") for a in addresses]
    with open_store(settings) as store:
        suppressed = [a for a in recipients
                      if (s := store.get_by_email(a)) is not None and s.status != SubscriberStatus.ACTIVE]
    if suppressed:
        raise InputError(f"{', '.join(suppressed)} unsubscribed or bounced; test sends respect the suppression list")
    return recipients


def send_test(settings: "Settings", rendered: "RenderedEmail", recipients: Sequence[str],
              factory: Callable[[], "Transport"]) -> list["SendResult"]:
    """A [TEST] copy to each named recipient, outside the ledger."""
    from newsletter.message import Recipient

    prepared = prepare_issue(settings, rendered, test=True)
    with factory() as transport:
        return transport.send([prepared.personalise(Recipient(a)) for a in recipients])


def _scanning_store(settings: "Settings") -> Any:
    """The subscriber store with a small page cache, for one pass over the whole list:
    SQLite's default cache (2 MB) would only make memory grow with the list's size. Unsubscribes
    the web app spooled are applied first: a dry run shows exactly who a send would mail."""
    from newsletter.unsubscribe_spool import open_store

    from newsletter.db import backend

    store = open_store(settings)
    if backend(store.conn) == "sqlite":
        store.conn.execute("PRAGMA cache_size=-64")
    return store


def active_subscribers(settings: "Settings") -> int:
    with _scanning_store(settings) as store:
        return store.count(SubscriberStatus.ACTIVE)


FAILURE_DETAILS = 20  # failed recipients named in a dry run's summary; the rest are counted


@dataclass
class DryRunSummary:
    messages: int = 0  # written to the outbox
    size: int = 0  # bytes written
    failed: int = 0  # could not be built (e.g. an address that cannot be sent)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (address, why), the first ones
    editions: dict[str, int] = field(default_factory=dict)  # messages written per edition ("" the main one)


def dry_run_all(settings: "Settings", rendered: "RenderedEmail", progress: Progress | None = None, *,
                prepared: "PreparedEditions | None" = None) -> DryRunSummary:
    """Personalise for every active subscriber into the outbox, without touching the ledger.

    A message that cannot be built fails alone (the transport says so); it is
    counted and named here, never built a second time outside that handling.
    """
    from newsletter.transports.dryrun import DryRunTransport

    store = _scanning_store(settings)
    total = store.count(SubscriberStatus.ACTIVE)
    from newsletter.prepared_editions import as_editions

    editions = prepared or as_editions(prepare_issue(settings, rendered))
    messages = (editions.for_reader(s.id, s.email, s.name, s.lang)
                for s in store.iter_subscribers(status=SubscriberStatus.ACTIVE))
    summary = DryRunSummary()
    done = 0
    with store, DryRunTransport.from_settings(settings) as transport:
        while batch := list(islice(messages, DRY_RUN_BATCH)):
            for msg, result in zip(batch, transport.send(batch)):
                if result.status.delivered:
                    summary.messages += 1
                    tag = msg.prepared.rendered.edition
                    summary.editions[tag] = summary.editions.get(tag, 0) + 1
                    summary.size += len(msg.as_bytes())  # built by the transport: cached
                else:
                    summary.failed += 1
                    if len(summary.failures) < FAILURE_DETAILS:
                        summary.failures.append((result.recipient, result.error or result.status.value))
            done += len(batch)
            if progress:
                progress(done, total, summary.messages, summary.failed)
    return summary


def open_delivery(settings: "Settings") -> tuple[sqlite3.Connection, int, Callable[[], "Transport"]]:
    """The ledger, the number of active subscribers, and a checked transport factory for a real send."""
    from newsletter.schema import open_database
    from newsletter.store import SubscriberStore
    from newsletter.transports import transport_factory
    from newsletter.unsubscribe_spool import open_store

    if settings.transport_name != "dryrun" and not settings.has_secret_key:
        raise ConfigError("NEWSLETTER_SECRET_KEY is not set; it signs unsubscribe links (see .env.example)")
    open_store(settings).close()  # spooled unsubscribes first: the count asked about is the list that is sent
    conn = open_database(settings.db_target)
    try:
        return conn, SubscriberStore(conn).count(SubscriberStatus.ACTIVE), transport_factory(settings, ledger=True)
    except BaseException:  # e.g. a transport setting refused: the caller never gets the connection to close
        conn.close()
        raise


def scheduler_args(settings: "Settings") -> dict[str, Any]:
    """The keyword arguments :func:`newsletter.schedule.dispatch_once` and ``run_worker`` need."""
    from newsletter.delivery import DeliveryOptions
    from newsletter.issue import list_issues, parse_issue
    from newsletter.render import Renderer
    from newsletter.transports import transport_factory

    renderer = Renderer(settings)

    def prepare(slug: str) -> "PreparedEditions":
        from newsletter.editions import load_editions, render_editions

        for path in list_issues(settings.issues_dir):
            if (parsed := parse_issue(path)).slug == slug:
                parsed.require_ready("send")  # set back to draft after it was scheduled: held, not sent
                editions = load_editions(path, settings.publication.lang, main=parsed)
                return prepare_editions(settings, editions, render_editions(editions, settings, renderer,
                                                                            include_drafts=False))
        raise InputError(f"the scheduled issue {slug!r} is no longer in {settings.issues_dir}")

    hours = settings.number("NEWSLETTER_MAX_LATENESS", 6.0)
    return dict(prepare=prepare, transport_factory=transport_factory(settings, ledger=True),
                options=DeliveryOptions.from_settings(settings), max_lateness=dt.timedelta(hours=hours or 0))


def send_zones(settings: "Settings") -> dict[str, Any]:
    """Slug → the time zone the editor wrote the issue's ``send_at`` in (for showing send times);
    issues that do not parse are left out (``check`` reports them)."""
    from newsletter.errors import NewsletterError
    from newsletter.issue import list_issues, parse_issue

    zones: dict[str, Any] = {}
    for path in list_issues(settings.issues_dir):
        try:
            issue = parse_issue(path)
        except NewsletterError:
            continue
        if issue.send_at is not None:
            zones[issue.slug] = issue.send_at.tzinfo
    return zones
