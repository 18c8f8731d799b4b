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
from newsletter.render import RenderedEmail

__all__ = ["CHECKS", "CheckContext", "Finding", "run_checks"]

CHECKS: tuple[Callable[[CheckContext], None], ...] = (
    frontmatter.check_front_matter,
    frontmatter.check_archive,
    content.check_headings,
    content.check_leftovers,
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
