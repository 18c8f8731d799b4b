"""DMARC (RFC 7489): find the policy for a From domain, parse it, and decide alignment.

The organisational domain comes from the Public Suffix List as shipped in the
``publicsuffixlist`` package (kept up to date by its releases, read offline: no
download at run time, unlike tldextract's default).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from newsletter.dns_client import Lookup

POLICIES = ("none", "quarantine", "reject")


@lru_cache(maxsize=1)
def _psl():  # type: ignore[no-untyped-def]
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def organisational_domain(domain: str) -> str:
    """The registered domain (``news.example.co.uk`` → ``example.co.uk``); a name the list
    does not know is its own."""
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


def aligned(a: str, b: str, mode: str) -> bool:
    """RFC 7489 3.1: strict ``s`` needs the same name; relaxed ``r`` the same organisational domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if mode == "s" else organisational_domain(a) == organisational_domain(b)


class Dmarc(NamedTuple):
    """A found record: where, its text, its tags, and what is wrong with it (empty: usable)."""

    name: str
    record: str
    tags: dict[str, str]
    problems: tuple[str, ...]

    @property
    def adkim(self) -> str:
        return self.tags.get("adkim", "r")

    @property
    def aspf(self) -> str:
        return self.tags.get("aspf", "r")

    @property
    def policy(self) -> str:
        return self.tags.get("p", "")


def parse_dmarc(name: str, record: str) -> Dmarc:
    """Tags of a DMARC record, with the problems that make receivers ignore it."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    problems = []
    if not record.replace(" ", "").startswith("v=DMARC1"):
        problems.append("it does not start with v=DMARC1")
    if tags.get("p", "").lower() not in POLICIES:
        problems.append(f"p={tags.get('p', '')!r} is not none, quarantine or reject (p is required)")
    for key in ("adkim", "aspf"):
        if tags.get(key, "r").lower() not in ("r", "s"):
            problems.append(f"{key}={tags[key]!r} is not r or s")
    tags = {k: (v.lower() if k in ("p", "sp", "adkim", "aspf") else v) for k, v in tags.items()}
    return Dmarc(name, record, tags, tuple(problems))


def find_dmarc(lookup: "Lookup", from_domain: str) -> tuple[list[Dmarc], str]:
    """The DMARC records for ``from_domain`` at ``_dmarc.<domain>``, else at its organisational
    domain (RFC 7489 6.6.3); with the name last asked (where a fix would go)."""
    org = organisational_domain(from_domain)
    for domain in dict.fromkeys((from_domain, org)):
        name = f"_dmarc.{domain}"
        found = [parse_dmarc(name, t) for t in lookup.txt(name) if t.lower().replace(" ", "").startswith("v=dmarc")]
        if found:
            return found, name
    return [], f"_dmarc.{org}"
