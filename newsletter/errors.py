"""Typed errors, each carrying the exit code the CLI maps it to.

Modelled on click's exceptions: the code that knows what went wrong picks the
exit code, and the CLI prints ``format_message()`` as one line, never a traceback.
"""

from __future__ import annotations

from pathlib import Path


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
        return f"{where}{self.message}"

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


class DeliveryLockedError(NewsletterError):
    """Another live process already sends this delivery (exit 5)."""

    exit_code = 5


class ChecksFailedError(NewsletterError):
    """Pre-flight checks found errors (exit 6)."""

    exit_code = 6


class ContentChangedError(NewsletterError):
    """The issue changed after its delivery started; resuming would mix versions (exit 7)."""

    exit_code = 7
