"""Typed errors, each carrying the exit code the CLI maps it to.

Modelled on click's exceptions: the code that knows what went wrong picks the
exit code, and the CLI prints ``format_message()`` as one line, never a traceback.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Iterable

from newsletter.patterns import CONTROL_CHARS, compiled

# ---------------------------------------------------------------------------------------
# Scrubbing: every error text that is stored or printed passes through scrub()
# ---------------------------------------------------------------------------------------
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_MIN_SECRET = 4  # shorter values would blank out ordinary words


def register_secrets(values: Iterable[str]) -> None:
    """Remember configured secrets (API keys, passwords, the signing key) so that
    :func:`scrub` removes them wherever an error mentions them. Also registers each
    value stripped of the stray spaces and CR a hand-edited ``.env`` leaves behind."""
    with _SECRETS_LOCK:
        for value in values:
            for v in (str(value), str(value).strip()):
                if len(v) >= _MIN_SECRET:
                    _SECRETS.add(v)


def scrub(text: object, limit: int = 500) -> str:
    """One line, at most ``limit`` characters, without configured secrets or control characters.

    Exception texts quote whatever raised them: a header with an API key in it, a
    server reply with terminal escapes. Nothing reaches the ledger or the terminal unscrubbed.
    """
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    out = _without_secrets("" if text is None else str(text), secrets, cut=limit * 4)
    out = compiled(CONTROL_CHARS + "+").sub(" ", out)
    return " ".join(out.split())[:limit]


#: A run that looks like a credential or an encoding of one: 16 or more characters of a token
#: alphabet (base64, base64url, hex, an upper- or lower-cased key), or 8 or more that mix letters
#: and digits (the halves of a key split by a space). Dots end a run, so a domain stays readable.
_TOKEN_RUN = (r"[A-Za-z0-9+/=_-]{16,}"
              r"|(?=[A-Za-z0-9+/=_-]*[0-9])(?=[A-Za-z0-9+/=_-]*[A-Za-z])[A-Za-z0-9+/=_-]{8,}")


def mask_tokens(text: str) -> str:
    """``text`` with every token-like run replaced by ``***``. A provider that echoes a key
    base64- or hex-encoded, re-cased or split defeats :func:`scrub`, which knows only the literal
    secrets; what a provider says is stored only through this (bounded input: scrub first)."""
    return compiled(_TOKEN_RUN).sub("***", text)


def _without_secrets(text: str, secrets: list[str], cut: int) -> str:
    """The first ``cut`` characters of ``text`` (bounded work for a hostile reply) with every
    secret replaced by ``***``. A secret the cut would split is replaced whole, and nothing
    from past the cut is kept, so no part of a secret survives at the edge."""
    if not secrets:
        return text[:cut]
    pieces, pos = [], 0
    for match in compiled("|".join(map(re.escape, secrets))).finditer(text, 0, cut + len(secrets[0])):
        if match.start() >= cut:
            break
        pieces += [text[pos:match.start()], "***"]
        pos = match.end()
    pieces.append(text[pos:max(pos, cut)])
    return "".join(pieces)



class NewsletterError(Exception):
    """Base class: a failure the user can act on, printed as one line."""

    exit_code = 1

    def __init__(self, message: str, *, path: Path | str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line

    def format_message(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        return scrub(f"{where}{self.message}", limit=2000)

    def __str__(self) -> str:
        return self.format_message()


class InputError(NewsletterError):
    """Bad user input: an issue file, template, CSV row or argument (exit 2)."""

    exit_code = 2


class ConfigError(NewsletterError):
    """Missing or invalid configuration (exit 3)."""

    exit_code = 3


class HeaderInjectionError(InputError):
    """A header value carried CR, LF or another control character."""


class TransportError(NewsletterError):
    """The transport could not be used at all, e.g. the server refused the login (exit 4)."""

    exit_code = 4


class TransportUnavailableError(TransportError):
    """The server could not be reached or dropped the connection (refused, timed out). Before
    anyone was contacted it is exit 4 like any transport error; once the transport has worked
    in a run, the delivery engine treats it as a temporary failure and retries on its schedule."""


class DeliveryLockedError(NewsletterError):
    """Another live process already sends this delivery (exit 5)."""

    exit_code = 5


class ChecksFailedError(NewsletterError):
    """Pre-flight checks found errors (exit 6)."""

    exit_code = 6


class ContentChangedError(NewsletterError):
    """The issue changed after its delivery started; resuming would mix versions (exit 7)."""

    exit_code = 7


class DatabaseLockedError(NewsletterError):
    """The SQLite database stayed locked by another process past the busy timeout (exit 75,
    sysexits' EX_TEMPFAIL: try again later, as a mail system would)."""

    exit_code = 75


class SendDeferredError(NewsletterError):
    """Readers are left for a later retry (the provider is down, a window of 4xx);
    ``newsletter worker`` or ``resume`` continues (exit 8)."""

    exit_code = 8


class SendHeldError(NewsletterError):
    """A scheduled delivery was held, not sent: too late, changed since it was scheduled, or
    unreadable. Nobody was mailed; the editor decides (exit 9)."""

    exit_code = 9


class SendInterruptedError(NewsletterError):
    """The editor stopped a send (Ctrl-C, SIGTERM) with readers still pending (exit 130,
    the shell's code for an interrupt)."""

    exit_code = 130
