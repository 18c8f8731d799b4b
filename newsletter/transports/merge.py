"""Server-side merge for batch APIs: one shared body, each reader's own values.

SendGrid (``substitutions``) and Mailgun (``recipient-variables``) can send one
body to up to 1,000 readers and substitute per-reader values into it. Our
rendered issue already marks every per-reader value with a placeholder
(:data:`newsletter.render.PLACEHOLDERS`), so a batch request carries the body
once with the provider's tags in place of the placeholders, and each reader's
values: the plain value for the text part, the HTML-escaped one for the HTML
part (two tags per placeholder, because one value cannot serve both).

A reader is batched only when that cannot change their message: no tag may
already occur in the body, subject or sender, and no value may contain a tag's
delimiter (a substituted value could otherwise be substituted again). A reader
who fails a check is sent alone, with the fully personalised body.
"""

from __future__ import annotations

import html as htmllib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Generic, Sequence, TypeVar

from newsletter.mime import PLACEHOLDERS, fill

if TYPE_CHECKING:
    from newsletter.message import OutgoingMessage, PreparedIssue

#: tag(part, key) -> the provider's tag for placeholder ``key`` in ``part`` ("text" or "html").
Tagger = Callable[[str, str], str]
PARTS = ("text", "html")
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class MergeBody:
    """The shared body of one prepared issue, with the provider's tags in place of placeholders."""

    text: str
    html: str
    usable: bool  # False when a tag already occurs where it would be substituted by mistake


def merge_body(prepared: "PreparedIssue", tag: Tagger) -> MergeBody:
    rendered, headers = prepared.rendered, prepared.headers
    tags = [tag(part, key) for part in PARTS for key in PLACEHOLDERS]
    fixed = (rendered.text, rendered.html, headers.subject, headers.from_, headers.reply_to)
    usable = not any(t in text for t in tags for text in fixed)
    text = fill(rendered.text, lambda key: tag("text", key))  # one pass: a tag is never scanned again
    html = fill(rendered.html, lambda key: tag("html", key))
    return MergeBody(text, html, usable)


class ByIdentity(Generic[K, V]):
    """``make(obj)``, computed once per object while it is held. Keyed by identity: prepared
    issues and messages are not hashable, and an equal copy is not the same send. The object
    is kept beside its value, so a recycled ``id`` never returns another object's value."""

    def __init__(self, make: Callable[[K], V], *, limit: int | None = None):
        self.make, self.limit = make, limit
        self._values: dict[int, tuple[K, V]] = {}

    def get(self, obj: K) -> V:
        cached = self._values.get(id(obj))
        if cached is None or cached[0] is not obj:
            if self.limit is not None and len(self._values) > self.limit:
                self._values.clear()
            cached = self._values[id(obj)] = (obj, self.make(obj))
        return cached[1]

    def clear(self) -> None:
        self._values.clear()


def merge_bodies(tag: Tagger) -> ByIdentity["PreparedIssue", MergeBody]:
    """The merge body of each prepared issue, made once per issue and tagger (a send holds one)."""
    return ByIdentity(lambda prepared: merge_body(prepared, tag), limit=8)


def merge_values(msg: "OutgoingMessage", tag: Tagger) -> dict[str, str]:
    """This reader's value for every tag: plain in the text part, HTML-escaped in the HTML part."""
    values = msg.placeholder_values
    out = {tag("text", key): value for key, value in values.items()}
    out.update({tag("html", key): htmllib.escape(value) for key, value in values.items()})
    return out


#: What one message adds to a request: (bytes of the request's shared part, bytes of its own part).
Sizer = Callable[["OutgoingMessage"], tuple[int, int]]


def merge_runs(messages: Sequence["OutgoingMessage"], limit: int,
               fits: Callable[["OutgoingMessage"], bool], size: Sizer | None = None,
               budget: int | None = None) -> list[Sequence["OutgoingMessage"]]:
    """Consecutive runs (order kept) of at most ``limit`` readers that can share one request:
    same issue, each address once, and (with ``size`` and ``budget``) at most ``budget`` bytes:
    the shared part once plus each reader's own part. A reader that does not ``fit`` goes alone."""
    out: list[Sequence["OutgoingMessage"]] = []
    run: list["OutgoingMessage"] = []
    seen: set[str] = set()
    used = 0
    for msg in messages:
        if not fits(msg):
            if run:
                out.append(run)
                run, seen = [], set()
            out.append([msg])
            continue
        address = msg.to_email.lower()
        shared, own = size(msg) if size is not None else (0, 0)
        full = budget is not None and run and used + own > budget
        if run and (len(run) >= limit or msg.prepared is not run[0].prepared or address in seen or full):
            out.append(run)
            run, seen = [], set()
        if not run:
            used = shared
        run.append(msg)
        seen.add(address)
        used += own
    if run:
        out.append(run)
    return out
