"""Provider webhooks: ``POST /webhooks/<provider>`` verified and turned into store events.

:func:`handle` is the entry point the web app mounts; :data:`PROVIDERS` names every
provider module. See :mod:`newsletter.webhooks.base` for the shared sequence.
"""

from __future__ import annotations

from newsletter.webhooks.base import MAX_BODY_BYTES, Refused, WebhookContext, fetch_https, handle
from newsletter.webhooks.brevo import BrevoWebhook
from newsletter.webhooks.mailgun import MailgunWebhook
from newsletter.webhooks.postmark import PostmarkWebhook
from newsletter.webhooks.resend import ResendWebhook
from newsletter.webhooks.sendgrid import SendGridWebhook
from newsletter.webhooks.ses import SesWebhook

PROVIDERS = {p.name: p for p in (PostmarkWebhook, SendGridWebhook, MailgunWebhook, ResendWebhook, BrevoWebhook,
                                 SesWebhook)}

__all__ = ["MAX_BODY_BYTES", "PROVIDERS", "Refused", "WebhookContext", "fetch_https", "handle"]
