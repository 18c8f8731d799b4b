"""SPF (RFC 7208) as far as a sender needs it: find the one record, count its DNS lookups, and
say which hosts and ``include:`` domains it authorises.

Not a receiver's evaluator (pyspf is one, unmaintained since 2020, and would need a full
check per address): the doctor asks a different question, "does this record authorise *my*
sender, and will receivers be able to evaluate it at all", which is a walk over the record.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from newsletter.dns_client import Lookup

#: RFC 7208 4.6.4: include, a, mx, ptr, exists and redirect cost one DNS lookup each; past 10 the
#: result is a permanent error, and receivers treat the domain as having no usable SPF.
MAX_LOOKUPS = 10
_LOOKUP_TERMS = ("include", "a", "mx", "ptr", "exists", "redirect")
_MAX_MX_HOSTS = 10  # RFC 7208 4.6.4: at most 10 MX names are looked up for one mx mechanism


def spf_records(txts: list[str]) -> list[str]:
    """The TXT strings that are SPF records (``v=spf1`` alone or followed by a space)."""
    return [t for t in txts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


@dataclass
class SpfWalk:
    """What following one domain's SPF record found."""

    domain: str
    record: str | None = None
    lookups: int = 0
    includes: set[str] = field(default_factory=set)          # every include:/redirect= domain, followed
    networks: list[ipaddress._BaseNetwork] = field(default_factory=list)  # pass-qualified ip4/ip6/a/mx
    plus_all: bool = False
    problems: list[str] = field(default_factory=list)

    def authorises(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == n.version and ip in n for n in self.networks)

    def includes_any(self, domains: tuple[str, ...]) -> bool:
        return any(d in self.includes for d in domains)


def walk_spf(lookup: "Lookup", domain: str) -> SpfWalk:
    """Follow ``domain``'s SPF record and every include/redirect in it, counting lookups."""
    result = SpfWalk(domain)
    records = spf_records(lookup.txt(domain))
    if len(records) > 1:
        result.problems.append(f"{domain} has {len(records)} SPF records; RFC 7208 makes that a permanent "
                               "error: merge them into one")
    if records:
        result.record = records[0]
        _follow(lookup, domain, records[0], result, depth=0, seen={domain})
    return result


def _follow(lookup: "Lookup", domain: str, record: str, out: SpfWalk, depth: int, seen: set[str]) -> None:
    """Walk one record's terms; stops counting (but keeps reporting) past the limit."""
    for term in record.split()[1:]:
        qualifier = term[0] if term[0] in "+-~?" else "+"
        body = term[1:] if term[0] in "+-~?" else term
        name, value = _split_term(body)
        if name in _LOOKUP_TERMS:
            out.lookups += 1
        if out.lookups > MAX_LOOKUPS or depth > MAX_LOOKUPS:
            return
        target = (value or domain).split("/")[0].lower().rstrip(".")
        if name == "all" and qualifier == "+":
            out.plus_all = True
        elif name in ("ip4", "ip6") and qualifier == "+":
            _add_network(out, value)
        elif name in ("include", "redirect") and value:
            out.includes.add(target)
            if target in seen:
                out.problems.append(f"{target} is included twice (a loop)")
                continue
            inner = spf_records(lookup.txt(target))
            if not inner:
                out.problems.append(f"{name}:{target} has no SPF record: receivers treat that as a permanent "
                                    "error")
                continue
            _follow(lookup, target, inner[0], out, depth + 1, seen | {target})
        elif name == "a" and qualifier == "+":
            for address in lookup.addresses(target):
                _add_network(out, _with_prefix(address, body))
        elif name == "mx" and qualifier == "+":
            for _, host in lookup.mx(target)[:_MAX_MX_HOSTS]:
                for address in lookup.addresses(host):
                    _add_network(out, _with_prefix(address, body))


def _split_term(body: str) -> tuple[str, str]:
    """``redirect=x`` (a modifier) or ``include:x``, ``a``, ``a/24`` (a mechanism) → (name, value)."""
    eq, colon = body.find("="), body.find(":")
    if eq > 0 and (colon < 0 or eq < colon):
        name, value = body[:eq], body[eq + 1:]
    else:
        name, _, value = body.partition(":")
    return name.split("/")[0].lower(), value


def _with_prefix(address: str, body: str) -> str:
    """``a/24`` and ``mx:host/24//64`` widen the host's address to a network."""
    parts = body.split("/")
    v4, v6 = (parts[1] if len(parts) > 1 else ""), (parts[3] if len(parts) > 3 else "")
    prefix = v6 if ":" in address else v4
    return f"{address}/{prefix}" if prefix.isdigit() else address


def _add_network(out: SpfWalk, text: str) -> None:
    try:
        out.networks.append(ipaddress.ip_network(text, strict=False))
    except ValueError:
        out.problems.append(f"{text[:60]!r} is not an IP address or network")
