"""SMTP transport: any SMTP submission server, through the standard library's smtplib.

Settings (environment / .env):

``SMTP_HOST``         server name (required)
``SMTP_PORT``         default 587 for ``starttls``, 465 for ``ssl``, 25 for ``none``
``SMTP_SECURITY``     ``starttls`` (default: required, never optional), ``ssl`` (TLS from
                      the first byte, port 465), or ``none`` (plaintext, only if chosen)
``SMTP_USERNAME``     login, optional; ``SMTP_PASSWORD`` its password (kept as a Secret)
``SMTP_CA_FILE``      PEM file of the CA(s) to trust *instead of* the system store (a private relay)
``SMTP_TIMEOUT``      seconds per socket operation (default 30)
``SMTP_ENVELOPE_FROM``  envelope sender (MAIL FROM); default: the publication's From
``SMTP_HELO_NAME``    name given in EHLO; default: this machine's fully qualified name
``SMTP_PIPELINING``   ``on`` (default: used when the server offers it) or ``off``
``SMTP_ALLOW_PLAINTEXT``  ``1`` lets ``SMTP_SECURITY=none`` log in to a host other than
                      this machine (127.0.0.0/8, ::1, localhost); refused otherwise

Certificates are always verified (``ssl.create_default_context``) and credentials
never cross a plaintext connection unless ``SMTP_SECURITY=none`` was set, and then
only to this machine unless ``SMTP_ALLOW_PLAINTEXT=1`` says the network is yours.

One connection carries many messages: it opens on the first :meth:`send` and stays
open across calls until :meth:`close`. Each message is its own transaction
(MAIL, RCPT, DATA) with one recipient, so every reply maps onto exactly one
:class:`SendResult`; with PIPELINING those three commands share one round trip.
A dropped connection (or a 421 reply) is reopened and that one message is tried
once more on the new connection, unless the whole message had gone out: a
connection lost after the final "." is ``uncertain`` and never sent again here.

Replies are read by :mod:`newsletter.smtp_status` (one table of what Postfix, Exim,
Microsoft and Gmail say). A rate limit is a pacing signal, not a failure: a 4xx reply
that asks us to slow down ("450 4.7.1 Error: too much mail from …"), or a 4xx greeting
("421 too many connections"), pauses the shared :class:`~newsletter.transports.ratelimit.RateLimiter`,
slows it down, and the same message is tried again, a few times; only a limit that
persists reaches the delivery engine, as ``rate_limited``. Postfix's "421 … too many
errors" is not one: the connection is renewed, at full speed.

A permanent refusal of the *sender* (our HELO name, login, relay permission, envelope
sender; or the same permanent answer for several readers in a row) is charged to nobody:
that reader and the rest of the batch come back ``about_sender`` and the engine holds
the delivery until the configuration is fixed.

Refusals cost errors on the server's count (Postfix slows every reply after 10 and hangs up
at 20): after a refused recipient, DATA is sent only once RCPT was accepted (RFC 2920 lets a
client wait), and a connection that collected :data:`ERROR_BUDGET` refusals is renewed.
TCP_NODELAY is set: the last small TLS record of each message must not wait for the
server's delayed ACK (Nagle), ~40 ms a message.

:meth:`SMTPTransport.open` checks what can be checked before anyone is claimed:
``SMTP_HELO_NAME`` (a host name or address literal), ``SMTP_CA_FILE`` (loads),
and the credentials' shape.
"""

from __future__ import annotations

import base64
import re
import smtplib
import socket
import ssl
from contextlib import nullcontext
from functools import lru_cache
from typing import TYPE_CHECKING, Callable, ContextManager, Sequence

from newsletter.clock import Clock
from newsletter.errors import ConfigError, TransportError, TransportUnavailableError, scrub
from newsletter.hosts import is_loopback
from newsletter.patterns import CONTROL_CHARS, compiled
from newsletter.smtp_status import ReplyKind, enhanced_code, is_hard_bounce, reply_kind
from newsletter.transports.base import (UNBUILDABLE, SameAnswerRun, SendResult, Status, Transport, check_credential,
                                        unbuildable)
from newsletter.transports.ratelimit import RETRIES, RateLimiter, shared_limiter

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.message import OutgoingMessage

SECURITY_MODES = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
DEFAULT_TIMEOUT = 30.0

_MAX_ERROR = 300
#: Refusals one connection may collect before it is renewed: below Postfix's
#: smtpd_soft_error_limit (10), after which it delays every reply by a second.
ERROR_BUDGET = 8
# EHLO argument: a domain name, or an address literal (RFC 5321 4.1.3).
_HELO = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?|\[(?:IPv6:)?[0-9A-Fa-f:.]{2,60}\]")


def is_rate_limit(code: int, resp: bytes | str) -> bool:
    """A 4xx reply that asks us to slow down, rather than a failure of this message."""
    return 400 <= code < 500 and reply_kind(code, _text(resp)) is ReplyKind.RATE


class _Busy(Exception):
    """The server said "not now" to the connection itself (a 4xx greeting, a closing 421)."""


class _LostAfterData(Exception):
    """The connection failed after the end of DATA was sent, before the server's reply."""


@lru_cache(maxsize=1)
def _fqdn() -> str:
    # smtplib calls getfqdn() (a DNS lookup) for every new SMTP object; once is enough.
    return socket.getfqdn()


def _text(resp: bytes | str) -> str:
    if isinstance(resp, bytes):
        resp = resp.decode("utf-8", "replace")
    return scrub(resp, _MAX_ERROR)  # one line, no control characters or configured secrets


def classify(phase: str, code: int, resp: bytes | str) -> tuple[Status, bool]:
    """Map one SMTP reply to (status, bounce).

    2xx is sent, 4xx temporary, 5xx permanent. A permanent failure is a *bounce*
    (the address is bad, stop mailing it) as :func:`newsletter.smtp_status.is_hard_bounce`
    defines it, the one definition the inbox's DSNs use too.
    """
    if 200 <= code < 300:
        return Status.SENT, False
    if phase == "RCPT" and code == 552:
        # RFC 5321 4.5.3.1.10: 552 at RCPT is "too many recipients"; treat as 452.
        return Status.FAILED_TEMPORARY, False
    if not 500 <= code < 600:
        return Status.FAILED_TEMPORARY, False
    text = _text(resp)
    enhanced = enhanced_code(text)
    if enhanced is not None and enhanced[0] != 5:  # a 5xx with a 4.x.x code: no verdict on the address
        return Status.FAILED_PERMANENT, False
    if phase == "MAIL" or reply_kind(code, text, phase) is ReplyKind.SENDER:  # about us, not the address
        return Status.FAILED_PERMANENT, False
    return Status.FAILED_PERMANENT, is_hard_bounce(enhanced, basic=code, phase=phase)


class SMTPTransport(Transport):
    """Send through an SMTP server, one reused connection, one transaction per message."""

    name = "smtp"
    real = True
    max_batch = 100

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        envelope_from: str,
        security: str = "starttls",
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        helo_name: str | None = None,
        pipelining: bool = True,
        allow_plaintext: bool = False,
        clock: Clock | None = None,
        limiter: RateLimiter | None = None,
    ):
        security = security.lower()
        if security not in SECURITY_MODES:
            raise ConfigError(f"SMTP_SECURITY={security!r} is not one of: {', '.join(SECURITY_MODES)}")
        if not host:
            raise ConfigError("SMTP_HOST is not set; it is needed to send with NEWSLETTER_TRANSPORT=smtp")
        if bool(username) != bool(password):
            raise ConfigError("set both SMTP_USERNAME and SMTP_PASSWORD, or neither")
        if security == "none" and password and not allow_plaintext and not is_loopback(host):
            raise ConfigError(f"SMTP_SECURITY=none would send SMTP_PASSWORD to {host[:80]!r} unencrypted; it is "
                              "allowed only for 127.0.0.1, ::1 or localhost (use starttls or ssl, or set "
                              "SMTP_ALLOW_PLAINTEXT=1 if the network in between is yours)")
        quoted_from = smtplib.quoteaddr(envelope_from or "")
        if "@" not in quoted_from or not quoted_from.isascii() or compiled(CONTROL_CHARS).search(quoted_from):
            raise ConfigError(f"envelope sender {envelope_from!r} is not an address (set SMTP_ENVELOPE_FROM)")
        self.host = host
        self.port = int(port or DEFAULT_PORTS[security])
        if not 0 < self.port < 65536:
            raise ConfigError(f"SMTP_PORT={self.port} is not a TCP port")
        self.security = security
        self.username = username or None
        self._password = password or None
        self.ca_file = ca_file or None
        self.timeout = float(timeout)
        self.envelope_from = envelope_from
        self._quoted_from = quoted_from
        #: Use PIPELINING (RFC 2920) when the server offers it.
        self.pipelining = pipelining
        self.helo_name = helo_name or None
        # One limiter per server in this process (shared by the engine's worker threads);
        # a test's own clock gets its own.
        self.limiter = limiter or (RateLimiter(clock) if clock is not None
                                   else shared_limiter(f"smtp {self.host}:{self.port}"))
        self._smtp: smtplib.SMTP | None = None
        self._tls_context: ssl.SSLContext | None = None
        self._dirty = False  # a transaction was left half-done: RSET before the next one
        self._refusals = 0   # refusals on this connection (the server's error count)
        self._careful = False  # after a refusal on this connection: DATA only after an accepted RCPT
        self._run = SameAnswerRun()  # the last permanent answer's gist, and how many in a row
        self._opened = False
        #: Connections opened so far (for summaries and tests).
        self.connections = 0
        #: Told ``(index, result)`` as soon as a message's answer is final (the delivery engine records
        #: it at once); a permanent refusal waits until no run of them can make it the sender's.
        self.on_result: Callable[[int, SendResult], None] | None = None
        # The engine's check right before message i goes out (False: the reader is no longer active
        # and the engine has recorded it); the context is held until the server has answered.
        self.fence: Callable[[int], ContextManager[bool]] | None = None

    @classmethod
    def from_settings(cls, settings: "Settings", **options: object) -> "SMTPTransport":
        security = settings.get("SMTP_SECURITY", "starttls").strip().lower()
        if security not in SECURITY_MODES:
            raise ConfigError(f"SMTP_SECURITY={security!r} is not one of: {', '.join(SECURITY_MODES)}")
        kwargs: dict[str, object] = dict(
            host=settings.require("SMTP_HOST", "to send with NEWSLETTER_TRANSPORT=smtp"),
            port=settings.integer("SMTP_PORT", DEFAULT_PORTS[security], minimum=1),
            security=security,
            username=settings.get("SMTP_USERNAME") or None,
            password=settings.secret("SMTP_PASSWORD"),
            ca_file=str(settings.path("SMTP_CA_FILE", "")) if settings.get("SMTP_CA_FILE") else None,
            timeout=settings.number("SMTP_TIMEOUT", DEFAULT_TIMEOUT, minimum=0.001),
            envelope_from=settings.get("SMTP_ENVELOPE_FROM") or settings.publication.from_email,
            helo_name=settings.get("SMTP_HELO_NAME") or None,
            pipelining=settings.flag("SMTP_PIPELINING", default=True),
            allow_plaintext=settings.flag("SMTP_ALLOW_PLAINTEXT"),
        )
        kwargs.update(options)
        return cls(**kwargs)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        user = f" as {self.username}" if self.username else ""
        return f"<SMTPTransport {self.security}://{self.host}:{self.port}{user}>"

    # ---- checks before any reader is claimed ---------------------------------------------
    def open(self) -> None:
        """Refuse what would fail after a batch was claimed: a bad HELO name, CA file or credential."""
        if self.helo_name is not None and not _HELO.fullmatch(self.helo_name):
            raise ConfigError("SMTP_HELO_NAME is not a host name (letters, digits, hyphens and dots) "
                              "or an address literal such as [192.0.2.1]")
        for setting, value in (("SMTP_USERNAME", self.username), ("SMTP_PASSWORD", self._password)):
            if value:
                check_credential(setting, value)
                if not value.isascii():  # smtplib sends AUTH as ASCII
                    raise ConfigError(f"{setting} contains a non-ASCII character, which SMTP AUTH cannot send")
        if self.security != "none":
            self._context()
        self._opened = True

    # ---- sending ---------------------------------------------------------------------
    def send(self, messages: Sequence["OutgoingMessage"], idempotency_key: str | None = None) -> list[SendResult]:
        if not self._opened:
            self.open()
        results: list[SendResult] = []
        told = 0  # results already given to on_result
        for i, msg in enumerate(messages):
            try:
                with self.fence(i) if self.fence is not None else nullcontext(True) as allowed:
                    result = self._send_one(msg) if allowed else SendResult(
                        msg.to_email, Status.FAILED_TEMPORARY, attempted=False,
                        error="not sent: the reader is no longer active")
            except TransportError as exc:
                if i == 0:
                    raise
                # Earlier messages of this batch are already with the server: report them, and leave
                # the rest to be retried (the next send() will raise if it persists). A refusal that is
                # not an outage (the login, the certificate) is the sender's: nobody is charged for it.
                about = not isinstance(exc, TransportUnavailableError)
                results.extend(SendResult(m.to_email, Status.FAILED_TEMPORARY, error=f"not sent: {exc.message}",
                                          attempted=False, about_sender=about) for m in messages[i:])
                break
            results.append(result)
            self._note_run(results)
            told = self._tell(results, told)
            rest = messages[i + 1:]
            if results[-1].about_sender:  # charged to nobody: the rest waits for a fixed configuration
                results.extend(SendResult(m.to_email, Status.FAILED_TEMPORARY, about_sender=True, attempted=False,
                                          error=f"not attempted: {results[-1].error}") for m in rest)
                break
            if result.rate_limited:  # still limited after the waits: the rest waits with the engine
                results.extend(SendResult(m.to_email, Status.FAILED_TEMPORARY, rate_limited=True,
                                          retry_after=result.retry_after, attempted=False,
                                          error=f"not attempted (rate limited): {result.error}")
                               for m in rest)
                break
        return results

    def _tell(self, results: list[SendResult], told: int) -> int:
        """Give ``on_result`` the answers that can no longer change; returns how many it has had."""
        settled = len(results)
        while settled > told and results[settled - 1].status is Status.FAILED_PERMANENT \
                and not results[settled - 1].bounce:  # may yet be found the sender's (SAME_ANSWER_RUN)
            settled -= 1
        if self.on_result is not None:
            for j in range(told, settled):
                self.on_result(j, results[j])
        return settled

    def _note_run(self, results: list[SendResult]) -> None:
        """The same permanent answer for readers in a row is about the sender (:class:`SameAnswerRun`)."""
        self._run.note(results)

    def _send_one(self, msg: "OutgoingMessage") -> SendResult:
        rcpt = msg.to_email
        try:
            data = msg.smtp_bytes()  # dot-stuffed already, from segments stuffed once per issue
        except UNBUILDABLE as exc:
            return unbuildable(msg, exc)
        drops = limited = 0
        while True:
            granted = self.limiter.acquire()
            try:
                result = self._transaction(self._connection(), msg, rcpt, data)
            except _LostAfterData as lost:
                # The whole message and its final "." went out; the server may have queued it.
                # Sending it again here could deliver it twice: the ledger's policy decides.
                self._discard()
                return SendResult(rcpt, Status.UNCERTAIN, provider_id=msg.message_id,
                                  error=f"connection to {self._where} lost after the message was sent: "
                                        f"{self._describe(lost.__cause__)}")
            except _Busy as busy:
                self._discard()
                result = SendResult(rcpt, Status.FAILED_TEMPORARY, rate_limited=True,
                                    error=f"SMTP server {self._where} is busy: {busy}")
            except (smtplib.SMTPException, OSError) as exc:
                # Dropped connection, timeout, 421, or a reply smtplib cannot parse: the
                # connection is no longer trustworthy; open a fresh one and try once more.
                self._discard()
                drops += 1
                if drops < 2:
                    continue
                return SendResult(rcpt, Status.FAILED_TEMPORARY,
                                  error=f"connection to {self._where} lost twice: {self._describe(exc)}")
            if not result.status.delivered:
                self._refused()
            if not result.rate_limited:
                if result.status.delivered:
                    self.limiter.accepted(granted)
                return result
            pause = self.limiter.limited(None, granted)
            limited += 1
            if limited > RETRIES:
                return SendResult(rcpt, Status.FAILED_TEMPORARY, rate_limited=True, retry_after=pause,
                                  error=result.error)

    def _refused(self) -> None:
        """Count a refusal against this connection; renew it before the server starts slowing it."""
        self._careful = True
        self._refusals += 1
        if self._refusals >= ERROR_BUDGET and self._smtp is not None:
            smtp, self._smtp = self._smtp, None
            try:
                if smtp.sock is not None:
                    if self._dirty:
                        smtp.send(b"RSET\r\n")
                        smtp.getreply()
                    smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                self._close_quietly(smtp)

    def _transaction(self, smtp: smtplib.SMTP, msg: "OutgoingMessage", rcpt: str, data: bytes) -> SendResult:
        """One MAIL/RCPT/DATA transaction. With PIPELINING (RFC 2920) the three commands
        go out in one write and the replies are read together: two round trips per
        message instead of four. After a refusal on this connection, DATA waits for an
        accepted RCPT (a DATA into a refused transaction is one more error on the server's count)."""
        quoted = smtplib.quoteaddr(rcpt)
        if not quoted.isascii() or compiled(CONTROL_CHARS).search(quoted):
            return SendResult(rcpt, Status.FAILED_PERMANENT, error="RCPT: address cannot be sent over SMTP "
                              "(control or non-ASCII characters)")
        size = f" SIZE={len(data)}" if "size" in smtp.esmtp_features else ""
        mail_cmd = f"MAIL FROM:{self._quoted_from}{size}\r\n".encode("ascii")
        rcpt_cmd = f"RCPT TO:{quoted}\r\n".encode("ascii")
        reset, self._dirty = self._dirty, False
        rcpt_reply = data_reply = None
        if self.pipelining and "pipelining" in smtp.esmtp_features:
            careful = self._careful
            smtp.send((b"RSET\r\n" if reset else b"") + mail_cmd + rcpt_cmd + (b"" if careful else b"DATA\r\n"))
            if reset:
                self._check_closing(smtp, *smtp.getreply())
            mail_reply, rcpt_reply = smtp.getreply(), smtp.getreply()
            if not careful:
                data_reply = smtp.getreply()
            elif mail_reply[0] == 250 and rcpt_reply[0] in (250, 251):
                smtp.send(b"DATA\r\n")
                data_reply = smtp.getreply()
        else:
            if reset:
                smtp.send(b"RSET\r\n")
                self._check_closing(smtp, *smtp.getreply())
            smtp.send(mail_cmd)
            mail_reply = smtp.getreply()
            if mail_reply[0] == 250:
                smtp.send(rcpt_cmd)
                rcpt_reply = smtp.getreply()
                if rcpt_reply[0] in (250, 251):
                    smtp.send(b"DATA\r\n")
                    data_reply = smtp.getreply()
        for reply in (mail_reply, rcpt_reply, data_reply):
            if reply is not None:
                self._check_closing(smtp, *reply)

        code, resp = mail_reply
        if code != 250:
            self._abandon(smtp, data_reply)
            return self._result(rcpt, "MAIL", code, resp)
        assert rcpt_reply is not None
        code, resp = rcpt_reply
        if code not in (250, 251):
            self._abandon(smtp, data_reply)
            return self._result(rcpt, "RCPT", code, resp)
        assert data_reply is not None
        code, resp = data_reply
        if code != 354:
            self._dirty = True
            return self._result(rcpt, "DATA", code, resp)
        code, resp = self._data(smtp, data)
        if code != 250:
            self._check_closing(smtp, code, resp)
            self._dirty = True
            return self._result(rcpt, "DATA", code, resp)
        return SendResult(rcpt, Status.SENT, provider_id=msg.message_id)

    def _abandon(self, smtp: smtplib.SMTP, data_reply: tuple[int, bytes] | None) -> None:
        """After a refused MAIL or RCPT: RSET before the next message, and if a pipelined
        DATA was accepted anyway (RFC 2920 says it must not be), end it with no content."""
        self._dirty = True
        if data_reply is not None and data_reply[0] == 354:
            smtp.send(b".\r\n")
            self._check_closing(smtp, *smtp.getreply())

    @staticmethod
    def _data(smtp: smtplib.SMTP, data: bytes) -> tuple[int, bytes]:
        """The (already dot-stuffed) message after a 354, as smtplib's ``data()``."""
        if data[-2:] != b"\r\n":
            data += b"\r\n"
        smtp.send(data + b".\r\n")
        try:
            return smtp.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise _LostAfterData() from exc

    def _check_closing(self, smtp: smtplib.SMTP, code: int, resp: bytes) -> None:
        # 421: the server is closing the channel; treat it like a dropped connection (Postfix's
        # "too many errors" included: a new connection starts a new count), or, when it asks
        # us to slow down ("too many connections"), as a rate limit.
        if code == 421 or code == -1:
            smtp.close()
            if is_rate_limit(code, resp):
                raise _Busy(f"{code} {self._scrub(_text(resp))}")
            raise smtplib.SMTPServerDisconnected(f"{code} {_text(resp)}")

    def _result(self, rcpt: str, phase: str, code: int, resp: bytes) -> SendResult:
        text = _text(resp)
        error = f"{phase} {code} {self._scrub(text)}"
        kind = reply_kind(code, text, phase)
        if kind is ReplyKind.SENDER:  # our HELO, login, relay permission or sender: nobody's fault but ours
            return SendResult(rcpt, Status.FAILED_TEMPORARY, about_sender=True,
                              error=f"SMTP server {self._where} refused the sender: {error}")
        status, bounce = classify(phase, code, resp)
        return SendResult(rcpt, status, error=error, bounce=bounce,
                          rate_limited=status is Status.FAILED_TEMPORARY and kind is ReplyKind.RATE)

    # ---- connection ------------------------------------------------------------------
    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            try:
                self._tls_context = ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"SMTP_CA_FILE={self.ca_file!r} cannot be loaded: "
                                  f"{getattr(exc, 'strerror', None) or exc}") from None
        return self._tls_context

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is None or self._smtp.sock is None:
            self._smtp = self._open()
            self._dirty = self._careful = False
            self._refusals = 0
        return self._smtp

    def _discard(self) -> None:
        smtp, self._smtp = self._smtp, None
        self._close_quietly(smtp)

    def _open(self) -> smtplib.SMTP:
        where = self._where
        helo = self.helo_name or _fqdn()
        context = self._context() if self.security != "none" else None  # a bad SMTP_CA_FILE fails first
        smtp: smtplib.SMTP | None = None
        try:
            # Connecting in the constructor also records the host name that STARTTLS and
            # SMTP_SSL check the certificate against; a greeting other than 220 raises.
            if self.security == "ssl":
                smtp = smtplib.SMTP_SSL(self.host, self.port, local_hostname=helo, timeout=self.timeout,
                                        context=context)
            else:
                smtp = smtplib.SMTP(self.host, self.port, local_hostname=helo, timeout=self.timeout)
            # Before TLS wraps it (the option stays on the socket): no Nagle delay on small writes.
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            smtp.ehlo_or_helo_if_needed()
            if self.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise TransportError(
                        f"SMTP server {where} does not offer STARTTLS, and SMTP_SECURITY=starttls requires it "
                        "(use SMTP_SECURITY=ssl for implicit TLS, or SMTP_SECURITY=none to allow plaintext)")
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username:
                if not smtp.has_extn("auth"):
                    raise TransportError(f"SMTP server {where} does not offer AUTH; cannot log in as {self.username}")
                smtp.login(self.username, self._password or "")
        except TransportError:
            self._close_quietly(smtp)
            raise
        except smtplib.SMTPAuthenticationError as exc:
            self._close_quietly(smtp)
            raise TransportError(f"SMTP server {where} refused the login for {self.username}: "
                                 f"{exc.smtp_code} {self._scrub(_text(exc.smtp_error))}") from None
        except ssl.SSLCertVerificationError as exc:
            self._close_quietly(smtp)
            raise TransportError(f"TLS certificate of SMTP server {where} failed verification "
                                 f"({exc.verify_message}); to trust a private CA set SMTP_CA_FILE") from None
        except smtplib.SMTPResponseException as exc:
            self._close_quietly(smtp)
            if 400 <= exc.smtp_code < 500:  # "421 too many connections", "454 try again later"
                raise _Busy(f"{exc.smtp_code} {self._scrub(_text(exc.smtp_error))}") from None
            raise TransportError(f"cannot use SMTP server {where}: {self._describe(exc)}") from None
        except (smtplib.SMTPException, OSError) as exc:  # refused, timed out, dropped: maybe only for now
            self._close_quietly(smtp)
            raise TransportUnavailableError(f"cannot use SMTP server {where}: {self._describe(exc)}") from None
        self.connections += 1
        return smtp

    @staticmethod
    def _close_quietly(smtp: smtplib.SMTP | None) -> None:
        if smtp is not None:
            try:
                smtp.close()
            except OSError:
                pass

    def _describe(self, exc: BaseException | None) -> str:
        if exc is None:
            return "unknown error"
        if isinstance(exc, ConnectionRefusedError):
            text = "connection refused"
        elif isinstance(exc, socket.gaierror):
            text = f"cannot resolve host ({exc.strerror})"
        elif isinstance(exc, TimeoutError):
            text = f"timed out after {self.timeout:g}s"
        elif isinstance(exc, ssl.SSLError):
            text = f"TLS error: {exc.reason or exc}"
        elif isinstance(exc, smtplib.SMTPResponseException):
            text = f"{exc.smtp_code} {_text(exc.smtp_error)}"
        elif isinstance(exc, OSError) and exc.strerror:
            text = exc.strerror
        else:
            text = str(exc) or type(exc).__name__
        return self._scrub(" ".join(text.split()))

    def _scrub(self, text: str) -> str:
        """Never let the password (or its AUTH encodings) reach a message or log."""
        pw = self._password
        if not pw:
            return text
        user = self.username or ""
        for form in (pw, base64.b64encode(pw.encode()).decode(),
                     base64.b64encode(f"\0{user}\0{pw}".encode()).decode()):
            text = text.replace(form, "***")
        return text

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            if smtp.sock is not None:
                smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            self._close_quietly(smtp)
