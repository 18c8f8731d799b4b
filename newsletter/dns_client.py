"""DNS lookups for the sender checks (dnspython), bounded in time, with two kinds of failure.

``NEWSLETTER_RESOLVER=HOST[:PORT]`` (``[v6]:PORT`` for IPv6) sends every query to that server
instead of the system's (tests, and sites with their own resolver); ``NEWSLETTER_DNS_TIMEOUT``
bounds one name's lookup in seconds (default 5). Answers are treated as outside input: text is
decoded leniently and cut, and a name that does not exist is an empty answer, not an error.

Two failures are kept apart because they mean different things to the editor:
:class:`DnsUnavailable` (no resolver answered at all: nothing can be concluded about the domain)
and :class:`DnsLookupFailed` (a server answered with an error for one name: SERVFAIL, a broken
delegation), which is a finding about that name.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Callable

from newsletter.errors import ConfigError, NewsletterError

if TYPE_CHECKING:
    import dns.resolver

    from newsletter.config import Settings

DEFAULT_TIMEOUT = 5.0
#: One run of the checks asks at most this many queries (an SPF tree of 10 mx mechanisms with 10
#: hosts each is 200), and spends at most this many lookup timeouts in all: hostile or slow DNS
#: cannot keep a command waiting for long.
MAX_QUERIES, BUDGET_TIMEOUTS = 300, 6
#: At most this many records of one type are kept from an answer, each cut to this length.
MAX_RECORDS, MAX_TEXT = 50, 4096


class DnsUnavailable(NewsletterError):
    """No resolver answered: the checks cannot say anything (exit 75, try again later)."""

    exit_code = 75


class DnsLookupFailed(NewsletterError):
    """A server answered with an error for one name (SERVFAIL, REFUSED, a broken delegation)."""


def resolver_address(raw: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[V6]:PORT`` as (address, port); refuses anything else in one line."""
    text, port = raw.strip(), "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ConfigError(f"NEWSLETTER_RESOLVER={raw[:80]!r} is not an IP address with an optional port "
                          "(127.0.0.1:5353, [::1]:53)") from None
    if not 0 < number < 65536:
        raise ConfigError(f"NEWSLETTER_RESOLVER={raw[:80]!r}: the port is not a TCP/UDP port")
    return host, number


def make_resolver(settings: "Settings") -> "dns.resolver.Resolver":
    """The resolver the settings name (or the system's), with every lookup bounded in time."""
    import dns.resolver

    timeout = settings.number("NEWSLETTER_DNS_TIMEOUT", DEFAULT_TIMEOUT, minimum=0.1) or DEFAULT_TIMEOUT
    raw = settings.get("NEWSLETTER_RESOLVER")
    if raw:
        host, port = resolver_address(raw)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = [host], port
    else:
        try:
            resolver = dns.resolver.Resolver()
        except (dns.resolver.NoResolverConfiguration, OSError) as exc:
            raise DnsUnavailable(f"no DNS resolver is configured on this machine ({exc}); "
                                 "set NEWSLETTER_RESOLVER") from None
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 2.0)
    resolver.cache = dns.resolver.Cache()
    return resolver


class Lookup:
    """Record lookups by type; an absent name or type is ``[]``. Counts the queries it made."""

    def __init__(self, resolver: "dns.resolver.Resolver", *, clock: Callable[[], float] | None = None):
        import time

        self.resolver = resolver
        self.queries = 0
        self.clock = clock or time.monotonic
        self.deadline = self.clock() + BUDGET_TIMEOUTS * float(resolver.lifetime or DEFAULT_TIMEOUT)

    def _ask(self, name: str, rdtype: str) -> list:
        import dns.exception
        import dns.name
        import dns.resolver

        self.queries += 1
        if self.queries > MAX_QUERIES:
            raise DnsLookupFailed(f"more than {MAX_QUERIES} DNS queries for one check run: stopped at {name[:100]}")
        if self.clock() > self.deadline:
            raise DnsUnavailable(f"the DNS checks took longer than {BUDGET_TIMEOUTS * self.resolver.lifetime:g}s "
                                 f"in all; the resolver {self._servers()} is too slow")
        try:
            answer = self.resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.resolver.NoNameservers as exc:
            errors = exc.kwargs.get("errors") or []
            if errors and all(isinstance(e[3], (OSError, EOFError)) for e in errors if len(e) > 3):
                raise DnsUnavailable(f"the DNS resolver {self._servers()} cannot be reached") from None
            raise DnsLookupFailed(f"the DNS lookup of {name} ({rdtype}) failed: the server answered with an "
                                  "error (SERVFAIL or REFUSED)") from None
        except dns.exception.Timeout:
            raise DnsUnavailable(f"no answer from the DNS resolver {self._servers()} within "
                                 f"{self.resolver.lifetime:g}s") from None
        except (dns.name.EmptyLabel, dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.BadEscape) as exc:
            raise DnsLookupFailed(f"{name[:100]!r} is not a valid DNS name ({exc})") from None
        except OSError as exc:
            raise DnsUnavailable(f"the DNS resolver {self._servers()} cannot be reached ({exc.strerror or exc})") \
                from None
        return list(answer.rrset or [])[:MAX_RECORDS]

    def _servers(self) -> str:
        servers = ", ".join(str(s) for s in self.resolver.nameservers[:3])
        port = getattr(self.resolver, "port", 53)
        return servers + (f" (port {port})" if port != 53 else "")

    def txt(self, name: str) -> list[str]:
        """TXT records, each as one string (its pieces joined, as SPF and DKIM read them)."""
        return [b"".join(r.strings).decode("utf-8", "replace")[:MAX_TEXT] for r in self._ask(name, "TXT")]

    def cname(self, name: str) -> str | None:
        records = self._ask(name, "CNAME")
        return _host(records[0].target) if records else None

    def addresses(self, name: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``name`` (an address literal is its own)."""
        try:
            return [str(ipaddress.ip_address(name.strip("[]")))]
        except ValueError:
            pass
        return [r.address for r in self._ask(name, "A")] + [r.address for r in self._ask(name, "AAAA")]

    def mx(self, name: str) -> list[tuple[int, str]]:
        return sorted((r.preference, _host(r.exchange)) for r in self._ask(name, "MX"))

    def ptr(self, address: str) -> list[str]:
        import dns.reversename

        return [_host(r.target) for r in self._ask(dns.reversename.from_address(address).to_text(), "PTR")]


def _host(name: object) -> str:
    """A DNS name as people write it: lower case, no trailing dot."""
    return str(name).rstrip(".").lower()


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower().rstrip(".") in ("localhost", "localhost.localdomain")
