"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, on a free port, in a thread.

Everything a transport test needs to provoke, in one place::

    from tests.smtp_server import SMTPTestServer, make_tls_files

    tls = make_tls_files(tmp_path)                   # private CA + localhost certificate
    with SMTPTestServer(tls=tls, auth=True,
                        rcpt_replies={"gone@example.com": "550 5.1.1 no such user"}) as server:
        env = server.env()                           # SMTP_HOST/PORT/SECURITY/CA_FILE/...
        ...
        assert server.connections == 1
        msg = server.messages[0].parse()             # email.message.EmailMessage

Features:

* ``tls=``  STARTTLS with a certificate from :func:`make_tls_files` (``implicit_tls=True``
  for SMTPS on connect instead). ``server.ca_file`` is what a client must trust.
* ``auth=True``  AUTH LOGIN and PLAIN with :data:`TEST_USERNAME` / :data:`TEST_PASSWORD`;
  MAIL is refused until the client logs in. AUTH is only offered after TLS unless
  ``auth_require_tls=False``.
* ``rcpt_replies`` / ``data_replies`` / ``mail_replies``  a reply per recipient address
  (a mapping, or a callable ``address -> reply | None``), e.g. ``"451 4.3.0 try later"``.
  ``data_replies`` is keyed by the message's (first) recipient. An entry that is a list
  is consumed one reply per attempt (``None`` = accept), to model "fails once, then works".
* ``drop_after=N``  after N messages accepted on one connection, the next MAIL or DATA
  (``drop_phase``) closes that connection without accepting the message; ``drops`` limits
  how many times this happens (default once). ``drop_reply="421 ..."`` sends that reply
  before closing, as servers do on shutdown; the default is an abrupt close.
* ``lose_reply``  a callable ``address -> bool``: when true, the message is accepted and
  kept, then the connection is closed before the 250 reaches the client (the "answer lost
  after DATA" case: delivered, but the sender cannot know).
* ``pipelining=True``  advertise PIPELINING (RFC 2920) in the EHLO reply.
* ``messages``  every accepted message, in order, as :class:`ReceivedMessage`;
  ``arrivals``  ``(recipient, time.time())`` of every accepted message, also when ``keep_data=False``
  (a soak compares them with the times other events were answered);
  ``connections``  how many SMTP connections were opened; ``commands`` every command
  verb seen, as ``(connection, VERB)``; ``auth_attempts`` the logins tried.

Only the loopback interface is ever used, and nothing leaves the process.
"""

from __future__ import annotations

import datetime as _dt
import email
import email.policy
import ipaddress
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

HOST = "127.0.0.1"
TEST_USERNAME = "newsletter-test"
TEST_PASSWORD = "correct-horse-battery-staple-9f3b"

Reply = Union[str, None, Sequence[Union[str, None]]]
Replies = Union[Mapping[str, Reply], Callable[[str], Union[str, None]], None]


# ---------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TLSFiles:
    """PEM files for a server certificate issued by a private, throwaway CA."""

    cert_file: Path   # server certificate (leaf), for the server
    key_file: Path    # its private key, for the server
    ca_file: Path     # the CA certificate, for the client's SMTP_CA_FILE

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def make_tls_files(directory: Path | str, *, common_name: str = "localhost",
                   ip: str = HOST, prefix: str = "") -> TLSFiles:
    """Write a fresh CA and a certificate for ``localhost``/``127.0.0.1`` signed by it.

    The keys are generated in the test (EC P-256: milliseconds) and are never reused.
    Call twice with different ``prefix`` to get a second CA the first server is not
    signed by (the "untrusted certificate" case).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    start, end = now - _dt.timedelta(minutes=5), now + _dt.timedelta(days=1)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"newsletter test CA {prefix}".strip())])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name),
                                                    x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    files = TLSFiles(directory / f"{prefix}server.crt", directory / f"{prefix}server.key",
                     directory / f"{prefix}ca.crt")
    files.cert_file.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    files.key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    files.ca_file.write_bytes(ca_cert.public_bytes(pem))
    return files


@lru_cache(maxsize=None)
def shared_tls_files(directory: str) -> TLSFiles:
    """:func:`make_tls_files` once per directory (e.g. a session-scoped tmp dir)."""
    return make_tls_files(directory)


# ---------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------
@dataclass
class ReceivedMessage:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    connection: int
    tls: bool
    login: str | None
    mail_options: list[str] = field(default_factory=list)

    def parse(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


class _Controller(Controller):
    """Controller on a free port (port=0), counting connections."""

    def __init__(self, owner: "SMTPTestServer", *args, **kwargs):
        self._owner = owner
        super().__init__(*args, **kwargs)

    def factory(self):
        smtp = super().factory()
        smtp._nl_connection = self._owner._new_connection()
        smtp._nl_accepted = 0
        return smtp

    def _trigger_server(self):
        # Learn the port the OS picked before aiosmtpd pokes the server.
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SMTPTestServer:
    """See the module docstring. Use as a context manager, or call start()/stop()."""

    def __init__(
        self,
        *,
        tls: TLSFiles | None = None,
        implicit_tls: bool = False,
        auth: bool = False,
        auth_require_tls: bool = True,
        username: str = TEST_USERNAME,
        password: str = TEST_PASSWORD,
        mail_replies: Replies = None,
        rcpt_replies: Replies = None,
        data_replies: Replies = None,
        drop_after: int | None = None,
        drop_phase: str = "DATA",
        drop_reply: str | None = None,
        drops: int = 1,
        pipelining: bool = False,
        lose_reply: Callable[[str], bool] | None = None,
        keep_data: bool = True,
        hostname: str = "mx.test.invalid",
    ):
        if implicit_tls and tls is None:
            raise ValueError("implicit_tls needs tls=make_tls_files(...)")
        if drop_phase not in ("MAIL", "DATA"):
            raise ValueError("drop_phase is MAIL or DATA")
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.auth = auth
        self.username, self.password = username, password
        self.mail_replies, self.rcpt_replies, self.data_replies = mail_replies, rcpt_replies, data_replies
        self.drop_after, self.drop_phase, self.drop_reply = drop_after, drop_phase, drop_reply
        self.drops_left = drops
        self.pipelining = pipelining
        self.lose_reply = lose_reply
        self.keep_data = keep_data
        self.messages: list[ReceivedMessage] = []
        self.commands: list[tuple[int, str]] = []
        self.auth_attempts: list[tuple[str, bool]] = []
        self.count = 0  # accepted messages, also when keep_data=False
        self.arrivals: list[tuple[str, float]] = []  # (first recipient, wall time accepted)
        self._connections = 0
        self._attempts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

        kwargs: dict = dict(hostname=HOST, port=0, server_hostname=hostname, ready_timeout=10,
                            data_size_limit=50 * 1024 * 1024)
        if tls is not None:
            if implicit_tls:
                kwargs["ssl_context"] = tls.server_context()
            else:
                kwargs["tls_context"] = tls.server_context()
        if auth:
            # aiosmtpd only knows about STARTTLS; an implicit-TLS session is encrypted too.
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=auth_require_tls and not implicit_tls)
        self.controller = _Controller(self, _Handler(self), **kwargs)

    # ---- lifecycle -----------------------------------------------------------------
    def start(self) -> "SMTPTestServer":
        self.controller.start()
        with self._lock:
            self._connections = 0   # forget aiosmtpd's own start-up probe
            self.commands.clear()
        return self

    def stop(self) -> None:
        if self.controller._thread is not None:
            self.controller.stop()

    def __enter__(self) -> "SMTPTestServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what the client needs -------------------------------------------------------
    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return self.controller.port

    @property
    def ca_file(self) -> Path | None:
        return self.tls.ca_file if self.tls else None

    def env(self, *, login: bool | None = None, **extra: str) -> dict[str, str]:
        """SMTP_* settings for :func:`newsletter.config.load_settings` to reach this server."""
        security = "ssl" if self.implicit_tls else ("starttls" if self.tls else "none")
        env = {"NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": self.host, "SMTP_PORT": str(self.port),
               "SMTP_SECURITY": security, "SMTP_TIMEOUT": "5"}
        if self.tls:
            env["SMTP_CA_FILE"] = str(self.tls.ca_file)
        if self.auth if login is None else login:
            env["SMTP_USERNAME"], env["SMTP_PASSWORD"] = self.username, self.password
        env.update(extra)
        return env

    # ---- what the test inspects ------------------------------------------------------
    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def recipients(self) -> list[str]:
        with self._lock:
            return [r for m in self.messages for r in m.rcpt_tos]

    def verbs(self, verb: str) -> int:
        with self._lock:
            return sum(1 for _, v in self.commands if v == verb.upper())

    # ---- internals -------------------------------------------------------------------
    def _new_connection(self) -> int:
        with self._lock:
            self._connections += 1
            return self._connections

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        ok = auth_data.login == self.username.encode() and auth_data.password == self.password.encode()
        with self._lock:
            self.auth_attempts.append((login, ok))
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def _reply(self, table: Replies, phase: str, address: str) -> str | None:
        if table is None:
            return None
        if callable(table):
            return table(address)
        entry = table.get(address.lower(), table.get(address))
        if entry is None or isinstance(entry, str):
            return entry
        with self._lock:  # a list: one reply per attempt, the last one repeats
            n = self._attempts.get((phase, address.lower()), 0)
            self._attempts[(phase, address.lower())] = n + 1
        return entry[min(n, len(entry) - 1)] if entry else None

    async def _maybe_drop(self, server: SMTP, phase: str) -> bool:
        if self.drop_after is None or self.drop_phase != phase:
            return False
        with self._lock:
            if self.drops_left <= 0 or server._nl_accepted < self.drop_after:
                return False
            self.drops_left -= 1
        if self.drop_reply:
            await server.push(self.drop_reply)
        server.transport.close()
        return True


class _Handler:
    def __init__(self, owner: SMTPTestServer):
        self.o = owner

    def _log(self, server: SMTP, verb: str) -> None:
        with self.o._lock:
            self.o.commands.append((server._nl_connection, verb))

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self._log(server, "EHLO")
        session.host_name = hostname
        if self.o.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        self._log(server, "HELO")
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_RSET(self, server, session, envelope):
        self._log(server, "RSET")
        return "250 OK"

    async def handle_NOOP(self, server, session, envelope, arg):
        self._log(server, "NOOP")
        return "250 OK"

    async def handle_QUIT(self, server, session, envelope):
        self._log(server, "QUIT")
        return "221 Bye"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self._log(server, "MAIL")
        if await self.o._maybe_drop(server, "MAIL"):
            return "421 4.4.2 closing connection"
        reply = self.o._reply(self.o.mail_replies, "MAIL", address)
        if reply and not reply.startswith("2"):
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self._log(server, "RCPT")
        reply = self.o._reply(self.o.rcpt_replies, "RCPT", address)
        if reply and not reply.startswith("2"):
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self._log(server, "DATA")
        if await self.o._maybe_drop(server, "DATA"):
            return "421 4.4.2 closing connection"
        first = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        reply = self.o._reply(self.o.data_replies, "DATA", first)
        if reply and not reply.startswith("2"):
            return reply
        auth_data = session.auth_data
        login = auth_data.login.decode("utf-8", "replace") if isinstance(auth_data, LoginPassword) else None
        with self.o._lock:
            self.o.count += 1
            self.o.arrivals.append((first, time.time()))
            if self.o.keep_data:
                self.o.messages.append(ReceivedMessage(
                    mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
                    data=bytes(envelope.original_content), connection=server._nl_connection,
                    tls=self.o.implicit_tls or session.ssl is not None, login=login,
                    mail_options=list(envelope.mail_options)))
            queue_id = f"Q{self.o.count:06d}"
        server._nl_accepted += 1
        if self.o.lose_reply is not None and self.o.lose_reply(first):
            server.transport.close()  # kept, but the 250 never reaches the client
        return f"250 2.0.0 Ok: queued as {queue_id}"
