"""The sender side of `check`: the doctor's DNS findings, and bulk-sender readiness.

Gmail and Yahoo (February 2024) and Outlook.com (May 2025) require of bulk senders: SPF and
DKIM, DMARC aligned with From, TLS, forward and reverse DNS for the sending host, one-click
unsubscribe honoured within two days, and a spam-complaint rate below 0.3%. Each requirement
says how it was established: from the built message's headers, from DNS (the doctor), from the
settings, or from the feedback events of recent deliveries.

DNS is asked only when a real transport is configured (a dry run has no sender to check), and
every lookup is bounded by NEWSLETTER_DNS_TIMEOUT; when no resolver answers, `check` says so and
goes on without the DNS findings.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from newsletter.checks.findings import Finding

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.doctor import DnsFinding, Report

#: Gmail's and Yahoo's ceiling for bulk senders (their pages ask to stay below 0.1%).
COMPLAINT_CEILING = 0.3
RECENT = timedelta(days=30)
_HTTP_TRANSPORTS = ("postmark", "sendgrid", "mailgun", "resend", "brevo", "ses")


class Requirement(NamedTuple):
    """One bulk-sender requirement: pass, fail or unknown, how that was established, and why."""

    name: str
    status: str
    source: str
    detail: str


class SenderCheck(NamedTuple):
    findings: list[Finding]
    readiness: list[Requirement]


def check_sender(settings: "Settings", message: EmailMessage, *, now: datetime | None = None) -> SenderCheck:
    """DNS findings (as check findings) and the readiness list, for the built ``message``."""
    report, why_not = _dns_report(settings)
    findings = [_as_finding(f) for f in report.findings if f.status != "pass"] if report else []
    if why_not and settings.transport_name not in ("dryrun", "null"):
        findings.append(Finding("warning", "sender.dns-unreachable", f"sender DNS not checked: {why_not}"))
    complaint = _complaint_rate(settings, now or datetime.now(timezone.utc))
    if complaint.status == "fail":
        findings.append(Finding("warning", "sender.complaint-rate", complaint.detail))
    readiness = [*_dns_requirements(report, why_not), _tls(settings), _reverse_dns(settings, report, why_not),
                 _one_click(message), complaint]
    return SenderCheck(findings, readiness)


def _dns_report(settings: "Settings") -> tuple["Report | None", str | None]:
    if settings.transport_name in ("dryrun", "null"):
        return None, f"NEWSLETTER_TRANSPORT={settings.transport_name} sends nothing (`newsletter doctor` checks DNS)"
    from newsletter.dns_client import DnsUnavailable, Lookup, make_resolver
    from newsletter.doctor import diagnose

    try:
        return diagnose(settings, Lookup(make_resolver(settings))), None
    except DnsUnavailable as exc:
        return None, f"DNS is not reachable ({exc.message})"


def _as_finding(f: "DnsFinding") -> Finding:
    """A doctor's FAIL is an error (it blocks `check`), a WARN a warning; DNS text is scrubbed."""
    from newsletter.errors import scrub

    fix = f" Fix: {f.fix}" if f.fix else ""
    return Finding("error" if f.status == "fail" else "warning", f"sender.{f.check}",
                   scrub(f"{f.name}: {f.message}.{fix}", 1000))


def _verdict(report: "Report | None", check: str, why_not: str | None, name: str) -> Requirement:
    if report is None:
        return Requirement(name, "unknown", "DNS", f"not checked: {why_not}")
    found = report.of(check)
    failed = [f for f in found if f.status == "fail"]
    if failed:
        return Requirement(name, "fail", "DNS (doctor)", f"{failed[0].name}: {failed[0].message}")
    if any(f.status == "pass" for f in found):
        first = next(f for f in found if f.status == "pass")
        return Requirement(name, "pass", "DNS (doctor)", f"{first.name}: {first.message}")
    return Requirement(name, "unknown", "DNS (doctor)", found[0].message if found else "nothing to check")


def _dns_requirements(report: "Report | None", why_not: str | None) -> list[Requirement]:
    return [_verdict(report, "spf", why_not, "SPF"), _verdict(report, "dkim", why_not, "DKIM"),
            _verdict(report, "dmarc", why_not, "DMARC aligned with From")]


def _tls(settings: "Settings") -> Requirement:
    name, t = "TLS", settings.transport_name
    if t == "smtp":
        security = settings.get("SMTP_SECURITY", "starttls").strip().lower()
        if security in ("starttls", "ssl"):
            return Requirement(name, "pass", "settings", f"SMTP_SECURITY={security}: the relay is reached over TLS")
        from newsletter.dns_client import is_loopback

        if is_loopback(settings.get("SMTP_HOST")):
            return Requirement(name, "unknown", "settings", "a relay on this machine without TLS: whether it uses "
                               "TLS onward is its own configuration")
        return Requirement(name, "fail", "settings", "SMTP_SECURITY=none sends over the network without TLS")
    if t in _HTTP_TRANSPORTS:
        return Requirement(name, "pass", "settings", f"{t}'s API is called over https, and {t} delivers with TLS")
    return Requirement(name, "unknown", "settings", f"NEWSLETTER_TRANSPORT={t} sends nothing")


def _reverse_dns(settings: "Settings", report: "Report | None", why_not: str | None) -> Requirement:
    name = "Forward and reverse DNS of the sending host"
    if settings.transport_name in _HTTP_TRANSPORTS:
        return Requirement(name, "pass", "settings", f"{settings.transport_name}'s own sending hosts")
    return _verdict(report, "helo", why_not, name)


def _one_click(message: EmailMessage) -> Requirement:
    name = "One-click unsubscribe (RFC 8058)"
    header = str(message.get("List-Unsubscribe", ""))
    post = str(message.get("List-Unsubscribe-Post", ""))
    if "<https://" in header and post == "List-Unsubscribe=One-Click":
        return Requirement(name, "pass", "headers (built message)", "List-Unsubscribe has an https link and "
                           "List-Unsubscribe-Post: List-Unsubscribe=One-Click; `serve` applies it at once")
    return Requirement(name, "fail", "headers (built message)", "List-Unsubscribe needs an https link and "
                       "List-Unsubscribe-Post: List-Unsubscribe=One-Click (set NEWSLETTER_BASE_URL to https)")


def _complaint_rate(settings: "Settings", now: datetime) -> Requirement:
    name = f"Complaint rate below {COMPLAINT_CEILING:g}%"
    source = "feedback events of deliveries in the last 30 days"
    path = settings.db_target
    if isinstance(path, Path) and not path.exists():
        return Requirement(name, "unknown", source, "no deliveries yet")
    from contextlib import closing

    from newsletter.events import guard_counts
    from newsletter.ledger.lookups import recent_deliveries
    from newsletter.schema import open_database

    with closing(open_database(path)) as conn:
        recent = recent_deliveries(conn, now - RECENT)
        sent = sum(n for _, n in recent)
        complaints = sum(guard_counts(conn, did)[0] for did, _ in recent)
    if not sent:
        return Requirement(name, "unknown", source, "nothing delivered in the last 30 days")
    from newsletter.guard import rate

    figures = f"{complaints} complaint(s) in {sent:,} messages delivered ({rate(complaints, sent)})"
    if complaints * 100 >= COMPLAINT_CEILING * sent:
        return Requirement(name, "fail", source, f"{figures}: at or above {COMPLAINT_CEILING:g}%, Gmail and Yahoo "
                           "send the newsletter to spam or refuse it")
    return Requirement(name, "pass", source, figures)
