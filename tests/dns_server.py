"""A real DNS server on 127.0.0.1 (dnslib's), answering from zone-file text: for the sender checks.

Authoritative for what it holds: a name with records of another type answers NOERROR with
no data, an unknown name NXDOMAIN, and a CNAME is returned (with its target's records when
held) for any type asked at its name, as a recursive resolver would.
"""

from __future__ import annotations

from dnslib import QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class ZoneResolver(BaseResolver):
    def __init__(self, zone: str):
        self.records = RR.fromZone(zone)
        self.queries: list[tuple[str, str]] = []

    def _at(self, name: object) -> list[RR]:
        return [rr for rr in self.records if rr.rname == name]

    def resolve(self, request, handler):  # noqa: ANN001 (dnslib's interface)
        reply = request.reply()
        qname, qtype = request.q.qname, QTYPE[request.q.qtype]
        self.queries.append((str(qname), qtype))
        here = self._at(qname)
        for _ in range(8):  # follow CNAME chains a little, as a resolver would
            cname = [rr for rr in here if QTYPE[rr.rtype] == "CNAME"]
            if not cname or qtype == "CNAME":
                break
            reply.add_answer(*cname)
            here = self._at(cname[0].rdata.label)
        reply.add_answer(*[rr for rr in here if QTYPE[rr.rtype] == qtype])
        if not self._at(qname):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class LoopbackDNS:
    """``with LoopbackDNS(zone) as dns: env = {"NEWSLETTER_RESOLVER": dns.address}``"""

    def __init__(self, zone: str):
        self.resolver = ZoneResolver(zone)
        self.server = DNSServer(self.resolver, address="127.0.0.1", port=0,
                                logger=DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data",
                                                 prefix=False))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server.server_address[1]}"

    def __enter__(self) -> "LoopbackDNS":
        self.server.start_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.server.server.server_close()
