"""`newsletter doctor`: the sender's DNS, checked against the configured transport.

Each check gives a :class:`DnsFinding` (pass / warn / fail) with the record found and the
record that would fix it. What is checked, and why each matters to Gmail, Yahoo and
Outlook.com, is in docs/deliverability.md. Lookups go through :mod:`newsletter.dns_client`
(dnspython); when no resolver answers, :class:`~newsletter.dns_client.DnsUnavailable` is raised
and nothing is concluded.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from newsletter.dmarc import aligned, find_dmarc, organisational_domain
from newsletter.dns_client import DnsLookupFailed, Lookup, is_loopback
from newsletter.sender_dns import Sender, sender_of
from newsletter.spf import MAX_LOOKUPS, SpfWalk, walk_spf

if TYPE_CHECKING:
    from newsletter.config import Settings

STATUSES = ("pass", "warn", "fail")


@dataclass(frozen=True)
class DnsFinding:
    """One verdict: ``check`` (spf, dkim, dmarc, reply-to, helo), the DNS ``name`` looked at,
    the record ``found`` there ("" for none) and the record that would ``fix`` it."""

    status: str
    check: str
    name: str
    message: str
    found: str = ""
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Report:
    """Every finding, plus what DMARC alignment needs to know from SPF and DKIM."""

    sender: Sender
    findings: list[DnsFinding]
    spf_ok: bool = False
    dkim_ok: bool = False

    def add(self, status: str, check: str, name: str, message: str, found: str = "", fix: str = "") -> None:
        self.findings.append(DnsFinding(status, check, name, message, found, fix))

    @property
    def failed(self) -> bool:
        return any(f.status == "fail" for f in self.findings)

    def of(self, check: str) -> list[DnsFinding]:
        return [f for f in self.findings if f.check == check]


def diagnose(settings: "Settings", lookup: Lookup) -> Report:
    """Run every check for the configured sender. Raises DnsUnavailable when DNS cannot be reached."""
    sender = sender_of(settings)
    report = Report(sender, [])
    for check in (check_spf, check_dkim, check_dmarc, check_reply_to, check_helo):
        try:
            check(settings, lookup, report)
        except DnsLookupFailed as exc:
            report.add("fail", check.__name__.removeprefix("check_").replace("_", "-"), "", exc.message)
    return report


def _txt(name: str, value: str) -> str:
    return f'{name}. TXT "{value}"'


# ---- SPF -------------------------------------------------------------------------------
def check_spf(settings: "Settings", lookup: Lookup, report: Report) -> None:
    s = report.sender
    if s.provider is not None and s.provider.return_path_cname and s.spf_domain:
        _check_return_path_cname(lookup, report)
        return
    if s.provider is not None and s.spf_domain is None:
        _spf_authorises_provider(walk_spf(lookup, s.from_domain), report)
        return
    domain = s.spf_domain or s.from_domain
    walk = walk_spf(lookup, domain)
    relay = _relay_terms(_relay_addresses(lookup, s)) if s.own_relay else None
    if not _spf_sound(walk, report, relay):
        return
    if s.own_relay:
        _spf_authorises_relay(lookup, walk, report)
    elif s.provider is not None:
        _spf_authorises_provider(walk, report)
    else:
        report.add("pass", "spf", domain, f"{domain} has an SPF record (the transport is {s.transport}: which "
                   "sender it must authorise is checked once a real transport is set)", walk.record or "")
        report.spf_ok = True


def _relay_terms(addresses: list[str]) -> str | None:
    return " ".join(f"ip{6 if ':' in a else 4}:{a}" for a in addresses) or None


def _spf_sound(walk: SpfWalk, report: Report, relay: str | None) -> bool:
    """The record exists, is alone, allows not everyone, and stays within 10 lookups."""
    d, record = walk.domain, walk.record or ""
    if walk.record is None:
        report.add("fail", "spf", d, f"{d} has no SPF record: receivers cannot tell who may send for it",
                   fix=_txt(d, _suggest_spf(report.sender, None, relay)))
        return False
    bad = [p for p in walk.problems if "SPF records" in p]
    if walk.plus_all:
        bad.append("it ends in +all, which authorises every server on the internet to send as you")
    if walk.lookups > MAX_LOOKUPS:
        bad.append(f"it needs {walk.lookups} or more DNS lookups; receivers stop at {MAX_LOOKUPS} and treat SPF as a "
                   "permanent error")
    if bad:
        fix = _flattened(walk) if walk.lookups > MAX_LOOKUPS else record.replace("+all", "~all")
        report.add("fail", "spf", d, f"the SPF record of {d} does not work: " + "; ".join(bad), record,
                   _txt(d, fix))
        return False
    for problem in walk.problems:
        report.add("warn", "spf", d, problem, record)
    return True


def _flattened(walk: SpfWalk) -> str:
    """A record with every authorised network written out: no lookups at all."""
    terms = [f"ip{n.version}:{n}" for n in walk.networks[:30]]
    return "v=spf1 " + " ".join(terms + ["~all"]) if terms else "v=spf1 (replace include: with ip4:/ip6:) ~all"


def _suggest_spf(s: Sender, record: str | None, extra: str | None = None) -> str:
    """The record with ``extra`` inserted before its ``all`` (or a new one)."""
    if extra is None:
        extra = (f"include:{s.provider.spf_includes[0]}" if s.provider is not None else
                 "a" if s.own_relay else "<your sender's include: or ip4:>")
    if not record:
        return f"v=spf1 {extra} ~all"
    terms = record.split()
    at = next((i for i, t in enumerate(terms) if t.lstrip("+-~?").lower() in ("all",) or
               t.lower().startswith("redirect=")), len(terms))
    return " ".join(terms[:at] + [extra] + terms[at:])


def _spf_authorises_relay(lookup: Lookup, walk: SpfWalk, report: Report) -> None:
    s = report.sender
    addresses = _relay_addresses(lookup, s)
    if not addresses:
        report.add("warn", "spf", walk.domain, f"cannot tell which address the relay {s.relay_host!r} sends from "
                   "(it is this machine, or its name does not resolve): set SMTP_HELO_NAME to the name it "
                   "announces so its address can be checked", walk.record or "")
        return
    missing = [a for a in addresses if not walk.authorises(a)]
    if missing:
        extra = _relay_terms(missing)
        report.add("fail", "spf", walk.domain, f"the SPF record of {walk.domain} does not authorise the relay "
                   f"{s.relay_host} ({', '.join(missing)})", walk.record or "",
                   _txt(walk.domain, _suggest_spf(s, walk.record, extra)))
        return
    report.add("pass", "spf", walk.domain, f"{walk.domain} authorises the relay {s.relay_host} "
               f"({', '.join(addresses)}) in {walk.lookups} of {MAX_LOOKUPS} lookups", walk.record or "")
    report.spf_ok = True


def _relay_addresses(lookup: Lookup, s: Sender) -> list[str]:
    """The relay's addresses; for a relay on this machine, those of the name it announces."""
    if s.relay_host and not is_loopback(s.relay_host):
        return lookup.addresses(s.relay_host)
    if s.helo_name and not is_loopback(s.helo_name):
        return lookup.addresses(s.helo_name)
    return []


def _spf_authorises_provider(walk: SpfWalk, report: Report) -> None:
    s = report.sender
    assert s.provider is not None
    wanted = s.provider.spf_includes
    if s.spf_domain is None:  # the provider's own Return-Path: SPF passes there, but not for our domain
        report.add("warn", "spf", walk.domain, f"{s.transport} sends with its own Return-Path domain, so SPF "
                   "passes for it, not for yours: DMARC then rests on DKIM alone. Set up a custom Return-Path / "
                   "MAIL FROM domain at the provider and name it in NEWSLETTER_RETURN_PATH_DOMAIN",
                   walk.record or "")
        return
    if walk.includes_any(wanted):
        report.add("pass", "spf", walk.domain, f"{walk.domain} authorises {s.transport} (include:{wanted[0]}) in "
                   f"{walk.lookups} of {MAX_LOOKUPS} lookups", walk.record or "")
        report.spf_ok = True
        return
    report.add("fail", "spf", walk.domain, f"the SPF record of {walk.domain} does not include {s.transport}'s "
               f"include:{wanted[0]}", walk.record or "", _txt(walk.domain, _suggest_spf(s, walk.record)))


def _check_return_path_cname(lookup: Lookup, report: Report) -> None:
    """Postmark and SendGrid: the Return-Path host is a CNAME into the provider's domain."""
    s = report.sender
    assert s.provider is not None and s.spf_domain is not None and s.provider.return_path_cname
    suffix = s.provider.return_path_cname
    target = lookup.cname(s.spf_domain)
    if target and (target == suffix or target.endswith("." + suffix)):
        report.add("pass", "spf", s.spf_domain, f"the Return-Path {s.spf_domain} points to {s.transport} "
                   f"({target}): SPF passes, aligned with {s.from_domain}", f"CNAME {target}")
        report.spf_ok = True
        return
    status = "fail" if s.return_path_explicit else "warn"
    want = "pm.mtasv.net" if s.transport == "postmark" else f"<the host {s.transport} shows>.{suffix}"
    report.add(status, "spf", s.spf_domain, f"the Return-Path {s.spf_domain} is not a CNAME into {suffix}: SPF "
               f"passes only for {s.transport}'s own domain, and DMARC rests on DKIM alone",
               f"CNAME {target}" if target else "", f"{s.spf_domain}. CNAME {want}.")


# ---- DKIM ------------------------------------------------------------------------------
def check_dkim(settings: "Settings", lookup: Lookup, report: Report) -> None:
    s = report.sender
    if s.dkim_key_file:
        _check_own_dkim(settings, lookup, report)
    elif s.provider is not None:
        _check_provider_dkim(lookup, report)
    elif s.dkim_selectors:  # a relay that signs for us: its selector must publish a key
        name = f"{s.dkim_selectors[0]}._domainkey.{s.dkim_domain}"
        keys = [t for t in lookup.txt(name) if _tags(t).get("p")]
        if keys:
            report.add("pass", "dkim", name, "the relay's DKIM selector publishes a key", keys[0])
            report.dkim_ok = True
        else:
            report.add("fail", "dkim", name, f"no DKIM key at {name}", fix=_txt(name, "v=DKIM1; k=rsa; p=<key>"))
    elif s.own_relay:
        report.add("fail", "dkim", s.from_domain, "nothing signs these messages with DKIM, which Gmail and Yahoo "
                   "require of bulk senders: set NEWSLETTER_DKIM_KEY_FILE and NEWSLETTER_DKIM_SELECTOR (or "
                   "NEWSLETTER_DKIM_SELECTOR alone if your relay signs)")
    else:
        report.add("warn", "dkim", s.from_domain, f"the transport is {s.transport}: DKIM is checked once a real "
                   "transport or NEWSLETTER_DKIM_KEY_FILE is set")


def _tags(record: str) -> dict[str, str]:
    out = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip().lower()] = "".join(value.split())
    return out


def _check_own_dkim(settings: "Settings", lookup: Lookup, report: Report) -> None:
    s = report.sender
    selector = s.dkim_selectors[0] if s.dkim_selectors else ""
    if not selector:
        report.add("fail", "dkim", s.dkim_domain, "NEWSLETTER_DKIM_KEY_FILE is set but NEWSLETTER_DKIM_SELECTOR "
                   "is not: receivers cannot find the key")
        return
    name = f"{selector}._domainkey.{s.dkim_domain}"
    ours = public_key_b64(settings.path("NEWSLETTER_DKIM_KEY_FILE", s.dkim_key_file))
    fix = _txt(name, f"v=DKIM1; k=rsa; p={ours}")
    records = [t for t in lookup.txt(name) if "p=" in t]
    if not records:
        report.add("fail", "dkim", name, f"no DKIM key is published at {name}", fix=fix)
        return
    published = _tags(records[0]).get("p", "")
    if not published:
        report.add("fail", "dkim", name, "the DKIM key at this selector is revoked (empty p=)", records[0], fix)
    elif not same_public_key(published, ours):
        report.add("fail", "dkim", name, "the DKIM key published at this selector does not match "
                   "NEWSLETTER_DKIM_KEY_FILE: every signature will fail", records[0], fix)
    else:
        report.add("pass", "dkim", name, "the published key matches NEWSLETTER_DKIM_KEY_FILE", records[0])
        report.dkim_ok = True


def public_key_b64(path: object) -> str:
    """The public half of the PEM private key at ``path``, base64 SubjectPublicKeyInfo (as p=)."""
    from pathlib import Path

    from cryptography.hazmat.primitives import serialization

    from newsletter.errors import ConfigError

    try:
        key = serialization.load_pem_private_key(Path(str(path)).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"NEWSLETTER_DKIM_KEY_FILE cannot be read as a PEM private key "
                          f"({type(exc).__name__})", path=str(path)) from None
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def same_public_key(published: str, ours: str) -> bool:
    """Compare keys, not text: p= may hold SubjectPublicKeyInfo or a bare PKCS#1 RSA key."""
    from cryptography.hazmat.primitives import serialization

    try:
        theirs = base64.b64decode(published + "=" * (-len(published) % 4), validate=True)
    except ValueError:
        return False
    mine = serialization.load_der_public_key(base64.b64decode(ours))
    for load in (serialization.load_der_public_key, _pkcs1):
        try:
            return load(theirs).public_numbers() == mine.public_numbers()  # type: ignore[union-attr,operator]
        except (ValueError, TypeError, AttributeError):
            continue
    return False


def _pkcs1(der: bytes) -> object:
    from cryptography.hazmat.primitives import serialization

    pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END RSA PUBLIC KEY-----\n"
    return serialization.load_pem_public_key(pem)


def _check_provider_dkim(lookup: Lookup, report: Report) -> None:
    s = report.sender
    p = s.provider
    assert p is not None
    if not s.dkim_selectors:
        report.add("warn", "dkim", s.dkim_domain, f"{s.transport} assigns its own DKIM selector: set "
                   "NEWSLETTER_DKIM_SELECTOR to the one its dashboard shows so it can be checked")
        return
    found = []
    for selector in s.dkim_selectors:
        name = f"{selector}._domainkey.{s.dkim_domain}"
        if p.dkim_type == "CNAME":
            target = lookup.cname(name)
            ok = bool(target) and (target == p.dkim_target or str(target).endswith("." + p.dkim_target))
            found.append((name, ok, f"CNAME {target}" if target else "",
                          f"{name}. CNAME <the host {s.transport} shows>.{p.dkim_target}."))
        else:
            keys = [t for t in lookup.txt(name) if _tags(t).get("p")]
            found.append((name, bool(keys), keys[0] if keys else "", _txt(name, "p=<the key " + s.transport
                                                                          + " shows>")))
    if s.transport == "mailgun" and len(found) > 1:  # the usual selectors tried: one is enough
        if not any(ok for _, ok, _, _ in found):
            report.add("fail", "dkim", s.dkim_domain, f"no DKIM key at any of Mailgun's usual selectors "
                       f"({', '.join(s.dkim_selectors)}): publish the one Mailgun shows, and name it in "
                       "NEWSLETTER_DKIM_SELECTOR")
            return
        found = [f for f in found if f[1]]
    for name, ok, record, fix in found:
        if ok:
            report.add("pass", "dkim", name, f"{s.transport}'s DKIM record is published", record)
        else:
            report.add("fail", "dkim", name, f"{s.transport}'s DKIM record {name} is missing or points elsewhere",
                       record, fix)
    report.dkim_ok = all(ok for _, ok, _, _ in found)


# ---- DMARC -----------------------------------------------------------------------------
def check_dmarc(settings: "Settings", lookup: Lookup, report: Report) -> None:
    s = report.sender
    records, name = find_dmarc(lookup, s.from_domain)
    org = organisational_domain(s.from_domain)
    fix = _txt(f"_dmarc.{org}", f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{org}")
    if not records:
        where = s.from_domain if org == s.from_domain else f"{s.from_domain} or {org}"
        report.add("fail", "dmarc", name, f"no DMARC record for {where}: Gmail and Yahoo require one of bulk "
                   "senders", fix=fix)
        return
    if len(records) > 1:
        report.add("fail", "dmarc", name, f"{len(records)} DMARC records: receivers ignore them all",
                   " | ".join(r.record for r in records), fix)
        return
    d = records[0]
    if d.problems:
        report.add("fail", "dmarc", d.name, "the DMARC record does not parse: " + "; ".join(d.problems), d.record,
                   fix)
        return
    dkim_aligns = report.dkim_ok and aligned(s.dkim_domain, s.from_domain, d.adkim)
    spf_aligns = report.spf_ok and s.spf_domain is not None and aligned(s.spf_domain, s.from_domain, d.aspf)
    if not (dkim_aligns or spf_aligns):
        report.add("fail", "dmarc", d.name, "DMARC cannot pass: " + _why_unaligned(s, d.adkim, d.aspf, report),
                   d.record, _txt(d.name, _relaxed(d.record)) if "s" in (d.adkim, d.aspf) else "")
        return
    how = " and ".join(w for w, ok in (("DKIM", dkim_aligns), ("SPF", spf_aligns)) if ok)
    note = " (p=none only monitors; move to quarantine once reports are clean)" if d.policy == "none" else ""
    report.add("pass", "dmarc", d.name, f"DMARC p={d.policy} can pass through {how} aligned with "
               f"{s.from_domain}{note}", d.record)


def _why_unaligned(s: Sender, adkim: str, aspf: str, report: Report) -> str:
    parts = []
    if not report.dkim_ok:
        parts.append("no working DKIM signature")
    elif not aligned(s.dkim_domain, s.from_domain, adkim):
        parts.append(f"DKIM signs as {s.dkim_domain}, which does not align with {s.from_domain} (adkim={adkim})")
    if not report.spf_ok or s.spf_domain is None:
        parts.append("no SPF pass for a domain of yours")
    elif not aligned(s.spf_domain, s.from_domain, aspf):
        parts.append(f"SPF passes for {s.spf_domain}, which does not align with {s.from_domain} (aspf={aspf})")
    return "; ".join(parts)


def _relaxed(record: str) -> str:
    return "; ".join(p.strip() for p in record.replace("adkim=s", "adkim=r").replace("aspf=s", "aspf=r").split(";")
                     if p.strip())


# ---- Reply-To, HELO --------------------------------------------------------------------
def check_reply_to(settings: "Settings", lookup: Lookup, report: Report) -> None:
    domain = settings.publication.reply_to_address.rpartition("@")[2].lower()
    mx = lookup.mx(domain)
    if mx and all(host in ("", ".") for _, host in mx):
        report.add("fail", "reply-to", domain, f"{domain} says it takes no mail (null MX): replies bounce",
                   "MX 0 .", f"{domain}. MX 10 <your mail server>.")
    elif mx:
        report.add("pass", "reply-to", domain, f"replies to {domain} are delivered to {mx[0][1]}",
                   ", ".join(f"MX {p} {h}" for p, h in mx[:3]))
    elif lookup.addresses(domain):
        report.add("pass", "reply-to", domain, f"{domain} has no MX but an address record, which senders use "
                   "instead (RFC 5321 5.1)")
    else:
        report.add("fail", "reply-to", domain, f"{domain} has neither MX nor address records: replies cannot "
                   "arrive", fix=f"{domain}. MX 10 <your mail server>.")


def check_helo(settings: "Settings", lookup: Lookup, report: Report) -> None:
    """Own relay only: the announced name resolves, and each address's PTR names it again."""
    s = report.sender
    if not s.own_relay:
        return
    name = s.helo_name
    if not name or is_loopback(name):
        report.add("warn", "helo", name or "-", "the relay is this machine and SMTP_HELO_NAME is not set: set it "
                   "to the public name the relay announces so forward and reverse DNS can be checked")
        return
    addresses = lookup.addresses(name)
    if not addresses:
        report.add("fail", "helo", name, f"the HELO name {name} does not resolve: receivers distrust a sender "
                   "whose name has no address", fix=f"{name}. A <the relay's public address>")
        return
    for address in addresses:
        names = lookup.ptr(address)
        if name in names:
            report.add("pass", "helo", name, f"{name} → {address} → {name}: forward and reverse DNS agree",
                       f"PTR {name}")
        else:
            import dns.reversename

            rev = dns.reversename.from_address(address).to_text().rstrip(".")
            report.add("fail", "helo", rev, f"the PTR of {address} is {', '.join(names) or 'missing'}, not "
                       f"{name}: Gmail and Yahoo require reverse DNS that points back (ask whoever owns the "
                       "address, usually the hosting provider)", f"PTR {', '.join(names)}" if names else "",
                       f"{rev}. PTR {name}.")
