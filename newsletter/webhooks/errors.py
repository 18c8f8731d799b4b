"""The one exception every webhook step raises to refuse a request."""

from __future__ import annotations


class Refused(Exception):
    """The request is not accepted: ``status`` (4xx, or 503 when we could not check) and a
    one-line reason that never contains a secret."""

    def __init__(self, status: int, reason: str, *, retry_after: int | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
