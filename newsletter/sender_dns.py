"""Who sends, as DNS sees it: for the configured transport, which domain SPF is checked on,
which ``include:`` or relay addresses it must authorise, and which DKIM records must exist.

Each provider's records are the ones its documentation tells a customer to publish:

* Postmark: DKIM is a TXT record at a selector Postmark assigns (``20240101123456pm``) —
  https://postmarkapp.com/support/article/how-do-i-verify-a-domain ; the custom
  Return-Path is ``pm-bounces.<domain>`` CNAME ``pm.mtasv.net`` —
  https://postmarkapp.com/support/article/910-how-do-i-add-a-custom-return-path-domain
* SendGrid: domain authentication publishes CNAMEs ``s1._domainkey`` and ``s2._domainkey``
  into ``*.sendgrid.net``, and a Return-Path CNAME ``em<N>.<domain>`` (automated security) —
  https://www.twilio.com/docs/sendgrid/ui/account-and-settings/how-to-set-up-domain-authentication
* Amazon SES: Easy DKIM publishes three CNAMEs ``<token>._domainkey`` → ``<token>.dkim.amazonses.com``
  — https://docs.aws.amazon.com/ses/latest/dg/send-email-authentication-dkim-easy.html ; a custom
  MAIL FROM domain has ``v=spf1 include:amazonses.com ~all`` —
  https://docs.aws.amazon.com/ses/latest/dg/mail-from.html
* Resend: DKIM at ``resend._domainkey`` (a TXT record with the key; its Domain Connect template
  publishes the same) and the Return-Path subdomain ``send.<domain>`` with
  ``v=spf1 include:amazonses.com ~all`` — https://resend.com/docs/dashboard/domains/introduction
* Mailgun: the sending domain (MAILGUN_DOMAIN) carries ``v=spf1 include:mailgun.org ~all`` and a
  DKIM TXT record at a selector Mailgun shows (``pic``, ``krs``, ``smtp``…) —
  https://documentation.mailgun.com/docs/mailgun/user-manual/domains/domains-verify
* Brevo: CNAMEs ``brevo1._domainkey`` and ``brevo2._domainkey`` into ``*.dkim.brevo.com`` —
  https://help.brevo.com/hc/en-us/articles/12163873383186

Settings the doctor reads beyond the transport's own: ``NEWSLETTER_DKIM_SELECTOR`` (the
selector(s), comma-separated, that the provider assigned: Postmark, SES tokens, Mailgun) and
``NEWSLETTER_RETURN_PATH_DOMAIN`` (the bounce / MAIL FROM domain set up at the provider, e.g.
SendGrid's ``em123.example.org`` or SES's custom MAIL FROM).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from newsletter.errors import ConfigError

if TYPE_CHECKING:
    from newsletter.config import Settings


class ProviderDNS(NamedTuple):
    """One provider's documented records (see the module docstring for the sources)."""

    spf_includes: tuple[str, ...]          # an ``include:`` that authorises the provider
    return_path: str | None = None         # its default Return-Path host under the From domain
    return_path_cname: str | None = None   # the Return-Path is a CNAME into this domain
    dkim_type: str = "TXT"                 # what the DKIM names are: CNAME (into dkim_target) or TXT
    dkim_selectors: tuple[str, ...] = ()   # fixed names; empty: NEWSLETTER_DKIM_SELECTOR names them
    dkim_target: str = ""
    signs_as_sending_domain: bool = False  # DKIM d= is the provider sending domain (Mailgun), not From


PROVIDERS: dict[str, ProviderDNS] = {
    "postmark": ProviderDNS(("spf.mtasv.net",), return_path="pm-bounces.{domain}", return_path_cname="mtasv.net"),
    "sendgrid": ProviderDNS(("sendgrid.net",), return_path_cname="sendgrid.net", dkim_type="CNAME",
                            dkim_selectors=("s1", "s2"), dkim_target="sendgrid.net"),
    "ses": ProviderDNS(("amazonses.com",), dkim_type="CNAME", dkim_target="dkim.amazonses.com"),
    "resend": ProviderDNS(("amazonses.com",), return_path="send.{domain}", dkim_selectors=("resend",)),
    "mailgun": ProviderDNS(("mailgun.org",), dkim_selectors=(), signs_as_sending_domain=True),
    "brevo": ProviderDNS(("spf.brevo.com", "spf.sendinblue.com"), dkim_type="CNAME",
                         dkim_selectors=("brevo1", "brevo2"), dkim_target="dkim.brevo.com"),
}
#: Selectors tried for Mailgun when NEWSLETTER_DKIM_SELECTOR is unset (the ones its dashboard assigns).
MAILGUN_SELECTORS = ("pic", "krs", "mx", "smtp", "k1")


class Sender(NamedTuple):
    """What the doctor checks, resolved from the settings."""

    transport: str
    from_domain: str
    spf_domain: str | None          # the envelope (Return-Path) domain whose SPF must authorise the sender
    provider: ProviderDNS | None    # None: our own SMTP relay (or no real transport)
    return_path_explicit: bool      # the editor named the Return-Path domain (a missing one is a fail)
    dkim_domain: str                # d= of the signature receivers will see
    dkim_selectors: tuple[str, ...]
    dkim_key_file: str              # our own signing key, if we sign
    relay_host: str                 # SMTP_HOST
    helo_name: str                  # SMTP_HELO_NAME, else SMTP_HOST

    @property
    def own_relay(self) -> bool:
        return self.transport == "smtp"


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def sender_of(settings: "Settings") -> Sender:
    """The sender as configured: refuses an unknown transport name in one line."""
    transport = settings.transport_name
    pub = settings.publication
    from_domain = pub.sender_domain
    selectors = tuple(s.strip() for s in settings.get("NEWSLETTER_DKIM_SELECTOR").split(",") if s.strip())
    key_file = settings.get("NEWSLETTER_DKIM_KEY_FILE")
    explicit = settings.get("NEWSLETTER_RETURN_PATH_DOMAIN").strip().lower().rstrip(".")
    provider = PROVIDERS.get(transport)
    if transport == "smtp":
        envelope = settings.get("SMTP_ENVELOPE_FROM") or pub.from_email
        spf_domain: str | None = _domain(envelope)
    elif provider is not None:
        default = provider.return_path.format(domain=from_domain) if provider.return_path else None
        if transport == "mailgun":
            default = settings.get("MAILGUN_DOMAIN").strip().lower() or None
        spf_domain = explicit or default
    elif transport in ("dryrun", "null"):
        spf_domain = from_domain
    else:
        raise ConfigError(f"NEWSLETTER_TRANSPORT={transport!r} is not a transport the doctor knows")
    dkim_domain = settings.get("NEWSLETTER_DKIM_DOMAIN") or from_domain
    if provider is not None and not key_file:
        if provider.signs_as_sending_domain and settings.get("MAILGUN_DOMAIN"):
            dkim_domain = settings.get("MAILGUN_DOMAIN").strip().lower()
        selectors = provider.dkim_selectors or selectors or (MAILGUN_SELECTORS if transport == "mailgun" else ())
    relay = settings.get("SMTP_HOST").strip() if transport == "smtp" else ""
    helo = (settings.get("SMTP_HELO_NAME").strip() or relay) if transport == "smtp" else ""
    return Sender(transport, from_domain, spf_domain, provider, bool(explicit), dkim_domain.lower(), selectors,
                  key_file, relay, helo.strip("[]").lower().rstrip("."))
