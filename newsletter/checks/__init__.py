"""Pre-flight checks: everything worth knowing about an issue before it goes to thousands.

``run_checks`` runs each check over one rendered issue and returns
:class:`Finding` objects: ``error`` (sending refuses), ``warning`` and ``info``.
Each check lives in the module named for its concern and reports through
:meth:`CheckContext.add`, so adding one is adding a function to :data:`CHECKS`.
"""

from __future__ import annotations

from typing import Callable

from newsletter.checks import (accessibility, content, deliverability, editions, frontmatter, links, plaintext, size,
                               support, templates)
from newsletter.checks.context import CheckContext
from newsletter.checks.findings import Finding, sort_findings
from newsletter.config import Settings
from pathlib import Path

from newsletter.render import RenderedEmail

__all__ = ["CHECKS", "CheckContext", "Finding", "check_issue", "run_checks"]

CHECKS: tuple[Callable[[CheckContext], None], ...] = (
    frontmatter.check_front_matter,
    frontmatter.check_archive,
    content.check_headings,
    content.check_leftovers,
    content.check_scaffold_text,
    content.check_insecure_links,
    content.check_image_sizes,
    links.check_link_syntax,
    links.check_links_online,
    size.check_size,
    support.check_client_support,
    accessibility.check_lang,
    accessibility.check_alt_text,
    accessibility.check_link_text,
    accessibility.check_contrast,
    deliverability.check_subject,
    deliverability.check_preheader,
    deliverability.check_addresses,
    deliverability.check_unsubscribe,
    deliverability.check_postal_address,
    deliverability.check_hidden_text_colour,
    deliverability.check_helo_name,
    plaintext.check_plain_text,
    templates.check_template_copies,
    editions.check_editions,
)


def run_checks(settings: Settings, rendered: RenderedEmail, *, online: bool = False) -> list[Finding]:
    """All findings for ``rendered``, errors first. ``online`` also fetches external links."""
    ctx = CheckContext(settings, rendered, online=online)
    for check in CHECKS:
        check(ctx)
    return sort_findings(ctx.findings)


def check_issue(settings: Settings, path: Path, *, online: bool = False, readiness: list | None = None,
                render: Callable[[], RenderedEmail] | None = None) -> list[Finding]:
    """Every finding for the issue file at ``path`` in one run, errors first: what a build
    would refuse (each with its line) and, wherever the issue can still be rendered, all the
    checks above and the sender's (DNS, as `newsletter doctor`); ``readiness``, when given,
    receives the bulk-sender readiness list. ``render``, when given, makes the rendering the
    checks see once nothing is refused (an edition, linked to the others)."""
    from newsletter.checks.refusals import refusals_and_rendering

    refused, rendered = refusals_and_rendering(settings, path)
    if render is not None and rendered is not None and not refused:
        rendered = render()
    findings = run_checks(settings, rendered, online=online) if rendered is not None else []
    if rendered is not None:
        from newsletter.checks.sender import check_sender

        sender = check_sender(settings, CheckContext(settings, rendered).message)
        findings += sender.findings
        if readiness is not None:
            readiness.extend(sender.readiness)
    return sort_findings([*refused, *findings])
