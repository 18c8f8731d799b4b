"""Transports: the one seam between prepared messages and the outside world.

Each transport implements :meth:`Transport.send`. A dry run or a test double is
just another transport, never a flag threaded through the code (after httpx).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Callable

from newsletter.errors import ConfigError

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.transports.base import Transport

# name -> "module:Class"; imported lazily so a dry run never imports requests or botocore.
TRANSPORTS = {
    "dryrun": "newsletter.transports.dryrun:DryRunTransport",
    "smtp": "newsletter.transports.smtp:SMTPTransport",
    "postmark": "newsletter.transports.postmark:PostmarkTransport",
    "sendgrid": "newsletter.transports.sendgrid:SendGridTransport",
    "mailgun": "newsletter.transports.mailgun:MailgunTransport",
    "resend": "newsletter.transports.resend:ResendTransport",
    "brevo": "newsletter.transports.brevo:BrevoTransport",
    "ses": "newsletter.transports.ses:SESTransport",
    "null": "newsletter.transports.base:NullTransport",
}


def get_transport(settings: "Settings", name: str | None = None, **options: object) -> "Transport":
    """Build the transport named by ``name`` or ``NEWSLETTER_TRANSPORT`` (default ``dryrun``)."""
    name = (name or settings.transport_name).lower()
    target = TRANSPORTS.get(name)
    if target is None:
        raise ConfigError(f"NEWSLETTER_TRANSPORT={name!r} is not one of: {', '.join(sorted(TRANSPORTS))}")
    module_name, _, class_name = target.partition(":")
    cls = getattr(import_module(module_name), class_name)
    return cls.from_settings(settings, **options)


def transport_factory(settings: "Settings", name: str | None = None, *,
                      ledger: bool = False) -> Callable[[], "Transport"]:
    """Check the configuration now, before anything starts, and return a maker of fresh
    transports (one per worker). ``ledger`` runs must really send: one through a transport
    that sends nothing would mark everyone sent."""
    probe = get_transport(settings, name)
    try:
        probe.open()  # CA file, HELO name, the credentials' shape: refused before any reader is claimed
    finally:
        probe.close()
    if ledger and not probe.real:
        raise ConfigError(f"NEWSLETTER_TRANSPORT={probe.name} sends nothing, so it cannot run a delivery; "
                          "set a real transport, or use `newsletter send ISSUE --dry-run`")
    return lambda: get_transport(settings, name)
