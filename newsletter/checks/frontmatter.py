"""Front matter: fields an editor forgets, impossible dates, numbers and slugs used twice."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from newsletter.checks.context import CheckContext
from newsletter.errors import NewsletterError
from newsletter.issue import FILENAME_RE, Issue, list_issues, parsed_issues

EARLIEST = dt.date(1990, 1, 1)
MAX_DAYS_AHEAD = 365


def _others(ctx: CheckContext, issue: Issue) -> list[Issue]:
    """The other issue files that parse; a broken one is its own check's business. An edition's
    main edition is the same issue, not another one."""
    from newsletter.editions import resolve

    mine = resolve(issue.path)[0].resolve()
    return list(parsed_issues(p for p in list_issues(ctx.settings.issues_dir) if p.resolve() != mine))


def check_front_matter(ctx: CheckContext, today: dt.date | None = None) -> None:
    issue = ctx.issue
    if issue is None:
        return
    today = today or dt.date.today()
    if not issue.subtitle and not issue.preheader:
        ctx.add("warning", "frontmatter.subtitle",
                "no 'subtitle' (or 'preheader'): the inbox preview and the archive's summary will be empty", line=1)
    if not issue.writers:
        ctx.add("info", "frontmatter.writers",
                "no 'Writers' in credits: the web archive's citation_author metadata will be empty",
                line=issue.field_line("credits") or 1)
    if issue.date < EARLIEST or issue.date > today + dt.timedelta(days=MAX_DAYS_AHEAD):
        ctx.add("warning", "frontmatter.date",
                f"date {issue.date.isoformat()} looks wrong: it is before {EARLIEST.year} or more than a year ahead",
                line=issue.field_line("date"))
    m = FILENAME_RE.match(issue.path.name)
    if m and int(m.group("number")) != issue.number:
        ctx.add("warning", "frontmatter.number-filename",
                f"the file name says issue {int(m.group('number'))} but 'number' is {issue.number}; "
                "commands find issues by the file name", line=issue.field_line("number"))
    for other in _others(ctx, issue):
        name = Path(other.path).name
        if other.number == issue.number:
            ctx.add("error", "frontmatter.number-reused",
                    f"number {issue.number} is already used by {name}", line=issue.field_line("number"))
        if other.slug == issue.slug:
            ctx.add("error", "frontmatter.slug-reused",
                    f"slug '{issue.slug}' is already used by {name}; both would share one web address",
                    line=issue.field_line("slug") or 1)


def check_archive(ctx: CheckContext, today: dt.date | None = None) -> None:
    """Say what the web archive will do with the issue, so a draft is never public by surprise."""
    from newsletter.archive import publishing, sent_slugs

    issue = ctx.issue
    if issue is None:
        return
    try:
        sent = issue.slug in sent_slugs(ctx.settings)
    except NewsletterError as exc:
        ctx.add("warning", "archive.unknown", f"cannot tell whether it was sent: {exc.format_message()}")
        return
    decision = publishing(issue, today or dt.date.today(), sent)
    ctx.add("info", "archive.published" if decision.published else "archive.held", decision.reason,
            line=issue.field_line("status") or issue.field_line("date"))
