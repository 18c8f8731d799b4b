"""The reply-to inbox over IMAP: read each new message once, by UID, and hand it on.

Stdlib :mod:`imaplib` is enough for the six commands this needs (LOGIN, STARTTLS,
EXAMINE or SELECT, UID SEARCH, UID FETCH, UID MOVE) and adds no dependency.

* **Once.** The last UID handled (with the folder's UIDVALIDITY) is kept in SQLite
  and advanced only *after* a message was handled, never on fetch; a crash in
  between reads that message again, and the handler's dedupe by content (a hash of the
  bytes read, :func:`newsletter.classify.content_key`) makes that harmless. A changed
  UIDVALIDITY starts the folder over, equally harmless. Never by Message-ID: anyone can
  send a second, different message reusing one, and it must still be read.
* **Read-only by default.** The folder is opened with EXAMINE and bodies fetched
  with ``BODY.PEEK``, so not even ``\\Seen`` changes. ``move_to`` files handled
  mail into another folder with UID MOVE (RFC 6851); nothing is ever deleted.
* **Bounded.** A message is never loaded whole: its size is fetched with the first
  :data:`MAX_FETCH` bytes, which hold every header, a DSN's status part and a
  reply's text. Every socket operation has a timeout.
"""

from __future__ import annotations

import imaplib
import re
import sqlite3
import ssl
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from newsletter.classify import classify
from newsletter.config import Settings
from newsletter.db import is_locked
from newsletter.errors import ConfigError, DatabaseLockedError, NewsletterError, TransportError, scrub
from newsletter.feedback import Applier, Handled
from newsletter import inbox_state
from newsletter.hosts import is_loopback

MAX_FETCH = 256 * 1024
SEARCH_WINDOW = 20_000  # UIDs per UID SEARCH: at most ~140 KB of answer
SECURITIES = ("tls", "starttls", "none")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_FOLDER_OK = re.compile(r"^[\x20-\x7e]{1,200}$")


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int
    username: str
    password: str
    security: str
    folder: str
    ca_file: str
    timeout: float

    @property
    def account(self) -> str:
        """The key the checkpoint is kept under: which server, user and folder."""
        return f"{self.username}@{self.host}:{self.port}/{self.folder}"

    @classmethod
    def from_settings(cls, settings: Settings) -> "ImapConfig":
        host = settings.require("IMAP_HOST", "to read the reply-to inbox")
        security = settings.get("IMAP_SECURITY", "tls").lower()
        if security not in SECURITIES:
            raise ConfigError(f"IMAP_SECURITY={security!r}; expected one of {', '.join(SECURITIES)}")
        if security == "none" and not is_loopback(host) and not settings.flag("IMAP_ALLOW_PLAINTEXT"):
            raise ConfigError(f"IMAP_SECURITY=none would send IMAP_PASSWORD to {host[:80]!r} unencrypted; it is "
                              "allowed only for 127.0.0.1, ::1 or localhost (use tls or starttls, or set "
                              "IMAP_ALLOW_PLAINTEXT=1 if the network in between is yours)")
        port = settings.integer("IMAP_PORT", 993 if security == "tls" else 143, minimum=1)
        if port > 65535:
            raise ConfigError(f"IMAP_PORT={port} is not a port")
        folder = _folder(settings.get("IMAP_FOLDER", "INBOX"), "IMAP_FOLDER")
        return cls(host, port, settings.require("IMAP_USERNAME", "to log in to the reply-to inbox"),
                   str(settings.secret("IMAP_PASSWORD") or ""), security, folder,
                   settings.get("IMAP_CA_FILE"), settings.number("IMAP_TIMEOUT", 30.0, minimum=1) or 30.0)


def configured(settings: Settings) -> bool:
    return bool(settings.get("IMAP_HOST"))


def _folder(name: str, what: str) -> str:
    if not _FOLDER_OK.match(name) or '"' in name or "\\" in name:
        raise ConfigError(f"{what} {name[:60]!r}: only printable ASCII folder names without quotes are supported")
    return name


def _quoted(folder: str) -> str:
    return '"' + folder + '"'


def _check(typ: str, data: list, what: str) -> list:
    if typ != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        raise TransportError(f"IMAP {what} failed: {scrub(detail, 200)}")
    return data


def _refused(cfg: ImapConfig, exc: BaseException) -> TransportError:
    msg = exc.args[0] if exc.args and isinstance(exc.args[0], (str, bytes)) else exc
    text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
    return TransportError(f"IMAP {cfg.host}:{cfg.port} ({cfg.security}): {scrub(text, 200)}")


@contextmanager
def connect(cfg: ImapConfig) -> Iterator[imaplib.IMAP4]:
    """A logged-in connection, closed on exit. Refusals are :class:`TransportError` (exit 4),
    never with the password in them."""
    try:
        context = ssl.create_default_context(cafile=cfg.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"IMAP_CA_FILE: cannot use {cfg.ca_file}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if cfg.security == "tls":
            imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(cfg.host, cfg.port, ssl_context=context, timeout=cfg.timeout)
        else:
            imap = imaplib.IMAP4(cfg.host, cfg.port, timeout=cfg.timeout)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise _refused(cfg, exc) from None
    try:
        try:
            if cfg.security == "starttls":
                imap.starttls(context)
            imap.login(cfg.username, cfg.password)
        except UnicodeEncodeError:
            raise ConfigError("IMAP_USERNAME and IMAP_PASSWORD must be ASCII (IMAP LOGIN)") from None
        except (OSError, imaplib.IMAP4.error) as exc:
            raise _refused(cfg, exc) from None
        yield imap
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass  # logout() closes the socket whatever the server says


# ---- reading ----------------------------------------------------------------------------------
def _open_folder(imap: imaplib.IMAP4, cfg: ImapConfig, writable: bool) -> tuple[int, int | None]:
    """EXAMINE (or SELECT) the folder; its UIDVALIDITY and UIDNEXT (None if not told)."""
    _check(*imap.select(_quoted(cfg.folder), readonly=not writable), f"opening folder {cfg.folder!r}")
    numbers = []
    for code in ("UIDVALIDITY", "UIDNEXT"):
        _, data = imap.response(code)
        try:
            numbers.append(int(data[0]))
        except (TypeError, ValueError, IndexError):
            numbers.append(None)
    if numbers[0] is None:
        raise TransportError(f"IMAP folder {cfg.folder!r} reported no UIDVALIDITY")
    return numbers[0], numbers[1]


def _new_uids(imap: imaplib.IMAP4, last: int, uidnext: int | None) -> Iterator[int]:
    """UIDs above ``last``, ascending, searched in windows so that no answer outgrows
    imaplib's 1 MB line limit however large the backlog."""
    start = last + 1
    while uidnext is None or start < uidnext:
        end = "*" if uidnext is None else str(min(start + SEARCH_WINDOW, uidnext) - 1)
        data = _check(*imap.uid("SEARCH", f"UID {start}:{end}"), "UID SEARCH")
        uids = {int(u) for chunk in data if chunk for u in chunk.split() if u.isdigit()}
        yield from sorted(u for u in uids if u > last)  # "N:*" also names the last message when N is past it
        if uidnext is None:
            return
        start += SEARCH_WINDOW


def _fetch(imap: imaplib.IMAP4, uid: int) -> tuple[bytes, int] | None:
    """The first MAX_FETCH bytes of a message and its full size; None when it is gone."""
    data = _check(*imap.uid("FETCH", str(uid), f"(RFC822.SIZE BODY.PEEK[]<0.{MAX_FETCH}>)"), "UID FETCH")
    raw, meta = None, b""
    for item in data:
        if isinstance(item, tuple):
            meta += item[0]
            raw = item[1] if raw is None else raw
        elif isinstance(item, bytes):
            meta += item
    if raw is None:
        return None
    m = _SIZE.search(meta)
    return raw, int(m.group(1)) if m else len(raw)


def _move(imap: imaplib.IMAP4, uid: int, folder: str) -> None:
    _check(*imap.uid("MOVE", str(uid), _quoted(folder)), f"UID MOVE to {folder!r}")


GONE = Handled("other", "removed from the folder before it could be read", "skipped")


@dataclass(frozen=True)
class Result:
    uid: int
    handled: Handled

    def line(self) -> str:
        return f"{self.uid:>6}  {self.handled.line()}"


def read_inbox(cfg: ImapConfig, conn: sqlite3.Connection, handle: Callable[[bytes, int], Handled], *,
               move_to: str | None = None, on_result: Callable[[Result], None] | None = None,
               stop: threading.Event | None = None) -> list[Result]:
    """Handle every message not handled before, oldest first; the checkpoint follows each one."""
    if move_to is not None:
        move_to = _folder(move_to, "--move-processed")
    results: list[Result] = []
    with connect(cfg) as imap:
        if move_to is not None and b"MOVE" not in b" ".join(_check(*imap.capability(), "CAPABILITY")).upper():
            raise TransportError(f"IMAP server {cfg.host} has no MOVE (RFC 6851); --move-processed needs it")
        uidvalidity, uidnext = _open_folder(imap, cfg, writable=move_to is not None)
        last = inbox_state.checkpoint(conn, cfg.account, uidvalidity)
        try:
            for uid in _new_uids(imap, last, uidnext):
                if stop is not None and stop.is_set():
                    break
                fetched = _fetch(imap, uid)
                handled = handle(*fetched) if fetched is not None else GONE
                result = Result(uid, handled)
                results.append(result)
                if on_result is not None:
                    on_result(result)
                if move_to is not None and fetched is not None:
                    _move(imap, uid, move_to)
                inbox_state.advance(conn, cfg.account, uidvalidity, uid)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise TransportError(f"IMAP {cfg.host}: connection lost after {len(results)} message(s): "
                                 f"{scrub(exc, 200)}") from None
    return results


def handler(applier: Applier) -> Callable[[bytes, int], Handled]:
    """Classify and apply; a message only partly read says so in its reason."""

    def handle(raw: bytes, size: int) -> Handled:
        return applier.apply(classify(raw, truncated_from=size if size > len(raw) else None))

    return handle


def check_inbox(settings: Settings, *, move_to: str | None = None, on_result: Callable[[Result], None] | None = None,
                stop: threading.Event | None = None) -> list[Result]:
    """Read the configured inbox once into the configured database."""
    from newsletter.unsubscribe_spool import open_store

    cfg = ImapConfig.from_settings(settings)
    policy = settings.soft_bounce_policy
    try:
        with open_store(settings) as store:  # spooled unsubscribes first, as for every reader of the list
            applier = Applier(store, secret_key=str(settings.secret_key),
                              sender_domain=settings.publication.sender_domain, policy=policy)
            return read_inbox(cfg, store.conn, handler(applier), move_to=move_to, on_result=on_result, stop=stop)
    except sqlite3.Error as exc:  # e.g. locked past the busy timeout: the checkpoint stayed before this message
        error = DatabaseLockedError if is_locked(exc) else NewsletterError
        from newsletter.dburl import redact

        raise error(f"database {redact(str(settings.db_target))}: {exc}; messages not handled yet are read "
                    "next time") from None


def poll_inbox(settings: Settings, stop: threading.Event, interval: float,
               on_result: Callable[[Result], None], on_error: Callable[[Exception], None]) -> None:
    """Check the inbox every ``interval`` seconds until ``stop`` is set (the worker's loop).

    A failure (server down, login refused) is reported and tried again next time.
    """
    while not stop.is_set():
        try:
            check_inbox(settings, on_result=on_result, stop=stop)
        except (NewsletterError, sqlite3.Error, OSError) as exc:  # the send loop beside us keeps going
            on_error(exc)
        if stop.wait(interval):
            return


def start_inbox_polling(settings: Settings, stop: threading.Event, on_result: Callable[[Result], None],
                        on_error: Callable[[Exception], None]) -> float | None:
    """For ``worker``: with IMAP configured, read the inbox every ``NEWSLETTER_INBOX_POLL``
    minutes (default 15; 0 turns it off) in a thread beside the send loop, until ``stop``.
    Returns the interval in minutes, or None when the inbox is not polled."""
    minutes = settings.number("NEWSLETTER_INBOX_POLL", 15.0) or 0
    if not configured(settings) or minutes <= 0:
        return None
    threading.Thread(target=poll_inbox, name="inbox", daemon=True, kwargs=dict(
        settings=settings, stop=stop, interval=minutes * 60, on_result=on_result, on_error=on_error)).start()
    return minutes
