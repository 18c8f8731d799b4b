"""Local emulators of the six HTTP email APIs, for tests and the provider benchmark.

Each emulator is a real HTTP server on 127.0.0.1 that reads the request as the
provider documents it (see each transport module's docstring), does what the
provider would do with it, and answers with the provider's documented reply:

* it expands batch requests into the messages each reader would receive, applying
  SendGrid ``substitutions`` and Mailgun ``recipient-variables`` the way the
  provider does, and records them in :attr:`ProviderEmulator.delivered`;
* it rate-limits like a provider: a token bucket of ``rate`` requests per second
  (burst: one second's worth), answering ``429`` with ``Retry-After`` in whole
  seconds (SES: ``TooManyRequestsException``);
* it can be down: ``503`` for every request inside ``outage=(start, end)``;
* it deduplicates by idempotency key where the provider has one (Resend's
  ``Idempotency-Key`` header, Brevo's ``idempotencyKey`` entry in ``headers``): a
  repeated key gets the first reply back and delivers nothing again.

Time is read from a :class:`~newsletter.clock.Clock` shared with the client, so with
a :class:`~newsletter.clock.FakeClock` a run of many simulated seconds takes no
wall time and every 429 and outage lands at the same place on every run.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.utils import parseaddr
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from newsletter.clock import Clock

PROVIDERS = ("postmark", "resend", "sendgrid", "mailgun", "brevo", "ses")
MAILGUN_DOMAIN = "mg.example.org"
KEY = "emulator-key-0123456789"


def env(provider: str, url: str) -> dict[str, str]:
    """Settings that point ``provider``'s transport at an emulator."""
    if provider == "ses":
        return {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": KEY, "AWS_REGION": "eu-west-1",
                "SES_API_URL": url}
    key = "POSTMARK_SERVER_TOKEN" if provider == "postmark" else f"{provider.upper()}_API_KEY"
    extra = {"MAILGUN_DOMAIN": MAILGUN_DOMAIN} if provider == "mailgun" else {}
    return {key: KEY, f"{provider.upper()}_API_URL": url, **extra}


@dataclass(frozen=True)
class Delivered:
    """One message as the reader would receive it."""

    recipient: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]


class BadRequest(Exception):
    """The request is not what the provider documents: answered with 400."""


@dataclass
class Counters:
    requests: int = 0
    rate_limited: int = 0
    outage: int = 0
    deduplicated: int = 0
    bad: int = 0
    errors: list[str] = field(default_factory=list)


class LoopbackHTTP:
    """A threaded HTTP server on 127.0.0.1, on a free port, serving ``handler`` in a thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProviderEmulator(LoopbackHTTP):
    """One provider's API on a free loopback port. Use as a context manager."""

    def __init__(self, provider: str, clock: Clock, *, rate: float | None = None,
                 outage: tuple[float, float] | None = None, lose_replies: frozenset[int] = frozenset(),
                 inspect: bool = True):
        if provider not in PROVIDERS:
            raise ValueError(provider)
        self.provider, self.clock, self.rate, self.outage = provider, clock, rate, outage
        #: Request numbers (1-based) that are carried out but whose reply is lost on the way back
        #: (never a replay of an earlier key's reply: one lost answer per request).
        self.lose_replies = lose_replies
        self.replays: set[int] = set()
        #: Parse each MIME message into its parts (False: only who it is for, for benchmarks).
        self.inspect = inspect
        self.delivered: list[Delivered] = []
        #: Every request as it arrived: (method, path, headers, body), for checks against the
        #: provider's own API description (tests/transports/spec_check.py).
        self.received: list[tuple[str, str, list[tuple[str, str]], bytes]] = []
        self.record = inspect  # benchmarks (inspect=False) keep nothing
        self.counters = Counters()
        self._tokens = rate or 0.0
        self._last = clock.monotonic()
        self._replies: dict[str, tuple[int, Any, dict[str, str]]] = {}
        self._ids = 0
        self._lock = threading.Lock()
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # head and body in one write: no Nagle/delayed-ACK stall per reply

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if emulator.record:
                    with emulator._lock:
                        emulator.received.append((self.command, self.path, list(self.headers.items()), body))
                number, (status, reply, headers) = emulator.handle(self.path, dict(self.headers.items()), body)
                if number in emulator.lose_replies and number not in emulator.replays and status < 300:
                    self.close_connection = True  # done, but the answer never arrives
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                raw = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)

    # ---- one request ---------------------------------------------------------------
    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, tuple[int, Any, dict[str, str]]]:
        """(this request's number, (status, body, headers) of the reply)."""
        with self._lock:
            self.counters.requests += 1
            number, replays = self.counters.requests, self.counters.deduplicated
            answer = self._answer(path, headers, body)
            if self.counters.deduplicated != replays:
                self.replays.add(number)
            return number, answer

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        now = self.clock.monotonic()
        if self.outage and self.outage[0] <= now < self.outage[1]:
            self.counters.outage += 1
            return 503, {"message": "Service Unavailable"}, {}
        wait = self._take(now)
        if wait is not None:
            self.counters.rate_limited += 1
            extra = {"x-amzn-ErrorType": "TooManyRequestsException:"} if self.provider == "ses" else {}
            return 429, {"message": "Too many requests"}, {"Retry-After": str(wait), **extra}
        try:
            key, messages = getattr(self, f"_read_{self.provider}")(path, headers, body)
        except (BadRequest, ValueError, KeyError, TypeError, IndexError) as exc:
            self.counters.bad += 1
            self.counters.errors.append(f"{type(exc).__name__}: {exc}")
            return 400, {"message": f"bad request: {exc}"}, {}
        if key is not None and key in self._replies:
            self.counters.deduplicated += 1
            return self._replies[key]
        self.delivered.extend(messages)
        reply = self._reply([self._new_id() for _ in messages])
        if key is not None:
            self._replies[key] = reply
        return reply

    def _take(self, now: float) -> int | None:
        """A token, or the whole seconds until one is due (the ``Retry-After``)."""
        if self.rate is None:
            return None
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self._tokens) / self.rate))

    def _new_id(self) -> str:
        self._ids += 1
        return f"{self.provider}-{self._ids}"

    def _reply(self, ids: list[str]) -> tuple[int, Any, dict[str, str]]:
        p = self.provider
        if p == "postmark":
            return 200, [{"ErrorCode": 0, "Message": "OK", "MessageID": i} for i in ids], {}
        if p == "resend":
            return 200, {"data": [{"id": i} for i in ids]}, {}
        if p == "sendgrid":
            return 202, b"", {"X-Message-Id": ids[0]}
        if p == "mailgun":
            return 200, {"id": f"<{ids[0]}@{MAILGUN_DOMAIN}>", "message": "Queued. Thank you."}, {}
        if p == "brevo":
            return 201, {"messageId": f"<{ids[0]}@smtp-relay.mailin.fr>"}, {}
        return 200, {"MessageId": ids[0]}, {}

    # ---- what each provider reads ----------------------------------------------------
    def _read_postmark(self, path: str, headers: dict[str, str], body: bytes):
        _expect(path == "/email/batch", path)
        items = json.loads(body)
        _expect(isinstance(items, list) and 1 <= len(items) <= 500, "1 to 500 messages")
        return None, [Delivered(parseaddr(m["To"])[1], m["Subject"], m["TextBody"], m["HtmlBody"],
                                {h["Name"]: h["Value"] for h in m["Headers"]}) for m in items]

    def _read_resend(self, path: str, headers: dict[str, str], body: bytes):
        _expect(path == "/emails/batch", path)
        items = json.loads(body)
        _expect(isinstance(items, list) and 1 <= len(items) <= 100, "1 to 100 emails")
        key = _header(headers, "Idempotency-Key")
        return key, [Delivered(parseaddr(m["to"][0])[1], m["subject"], m["text"], m["html"], m["headers"])
                     for m in items]

    def _read_sendgrid(self, path: str, headers: dict[str, str], body: bytes):
        _expect(path == "/v3/mail/send", path)
        data = json.loads(body)
        people = data["personalizations"]
        _expect(1 <= len(people) <= 1000, "1 to 1000 personalizations")
        _expect([c["type"] for c in data["content"]] == ["text/plain", "text/html"], "text/plain first")
        text, html = (c["value"] for c in data["content"])
        out = []
        for p in people:
            (to,) = p["to"]
            subs = p.get("substitutions", {})
            _expect(all(isinstance(v, str) for v in subs.values()), "string substitutions")
            out.append(Delivered(to["email"], substitute(data["subject"], subs), substitute(text, subs),
                                 substitute(html, subs), {**data.get("headers", {}), **p.get("headers", {})}))
        _expect(len({d.recipient for d in out}) == len(out), "each address once")
        return None, out

    def _read_mailgun(self, path: str, headers: dict[str, str], body: bytes):
        if path == f"/v3/{MAILGUN_DOMAIN}/messages.mime":
            form = dict(_multipart(headers, body))
            return None, [self._from_mime(form["to"].decode(), form["message"])]
        _expect(path == f"/v3/{MAILGUN_DOMAIN}/messages", path)
        fields = [(name, value.decode("utf-8")) for name, value in _multipart(headers, body)]
        single = {k: v for k, v in fields}
        to = [parseaddr(v)[1] for k, v in fields if k == "to"]
        _expect(1 <= len(to) <= 1000, "1 to 1000 recipients")
        variables = json.loads(single["recipient-variables"])
        out = []
        for address in to:
            subs = {f"%recipient.{k}%": v for k, v in variables[address].items()}
            hdrs = {k[2:]: substitute(v, subs) for k, v in fields if k.startswith("h:")}
            out.append(Delivered(address, substitute(single["subject"], subs), substitute(single["text"], subs),
                                 substitute(single["html"], subs), hdrs))
        return None, out

    def _read_brevo(self, path: str, headers: dict[str, str], body: bytes):
        _expect(path == "/v3/smtp/email", path)
        m = json.loads(body)
        (to,) = m["to"]
        extra = dict(m["headers"])
        key = extra.pop("idempotencyKey", None)
        return key, [Delivered(to["email"], m["subject"], m["textContent"], m["htmlContent"], extra)]

    def _read_ses(self, path: str, headers: dict[str, str], body: bytes):
        _expect(path == "/v2/email/outbound-emails", path)
        _expect(_header(headers, "Authorization", "").startswith("AWS4-HMAC-SHA256 "), "SigV4")
        m = json.loads(body)
        (to,) = m["Destination"]["ToAddresses"]
        return None, [self._from_mime(to, base64.b64decode(m["Content"]["Raw"]["Data"]))]

    def _from_mime(self, recipient: str, raw: bytes) -> Delivered:
        if not self.inspect:
            return Delivered(recipient, "", "", "", {})
        msg = message_from_bytes(raw, policy=policy.SMTP)
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        return Delivered(recipient, str(msg["Subject"]), text, html, {k: str(v) for k, v in msg.items()})


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise BadRequest(what)


def _header(headers: dict[str, str], name: str, default: str | None = None) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), default)


def substitute(text: str, subs: dict[str, str]) -> str:
    """What SendGrid and Mailgun do with tags: one pass, longest tag first, as a template
    engine would (a substituted value is never scanned again)."""
    if not subs:
        return text
    import re

    pattern = re.compile("|".join(re.escape(k) for k in sorted(subs, key=len, reverse=True)))
    return pattern.sub(lambda m: subs[m.group()], text)


def _multipart(headers: dict[str, str], body: bytes) -> list[tuple[str, bytes]]:
    """A multipart/form-data body's fields, in order, repeats kept, each part's exact bytes
    (Mailgun's only request encoding). Split by the boundary, as a form server does: the email
    parser would take a message/rfc822 part apart."""
    content_type = _header(headers, "Content-Type", "")
    _expect(content_type.startswith("multipart/form-data"), f"multipart/form-data, not {content_type}")
    boundary = message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n",
                                  policy=policy.HTTP).get_param("boundary")
    chunks = body.split(b"--" + boundary.encode())
    _expect(len(chunks) > 2 and chunks[-1].strip() == b"--", "closing boundary")
    fields = []
    for chunk in chunks[1:-1]:
        head, _, content = chunk[2:].partition(b"\r\n\r\n")
        part = message_from_bytes(head + b"\r\n\r\n", policy=policy.HTTP)
        _expect(content.endswith(b"\r\n"), "part ends with CRLF")
        fields.append((part.get_param("name", header="content-disposition"), content[:-2]))
    return fields
