"""Everything the checks share, computed once: the parsed issue, the HTML tree, and
a map from what appears in the output back to lines of the issue file."""

from __future__ import annotations

import email
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import lxml.html
from markdown_it.token import Token

from newsletter.checks.findings import Finding
from newsletter.config import Settings
from newsletter.errors import NewsletterError
from newsletter.editions import parse_any
from newsletter.issue import Issue
from newsletter.render import RenderedEmail


def walk(tokens: Sequence[Token]) -> Iterator[tuple[Token, Token]]:
    """Each token with the block token that carries its line map (itself, or its inline parent)."""
    for token in tokens:
        yield token, token
        for child in token.children or ():
            yield child, token


@dataclass
class SourceMap:
    """First file line of each URL and tag in the Markdown body, and the file's lines."""

    lines: list[str]
    urls: dict[str, int] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, issue: Issue, tokens: Sequence[Token]) -> "SourceMap":
        smap = cls(issue.source_text.split("\n"))
        pending: list[str] = []  # the footnotes' <section> has no line of its own: use its first note's
        for token, block in walk(tokens):
            if token.type == "footnote_block_open":
                pending = ["section"]
            if not block.map:
                continue
            line = issue.body_line + block.map[0]
            for tag in pending:
                smap.tags.setdefault(tag, line)
            pending = []
            if token.type == "footnote_ref":
                smap.urls.setdefault(f"#fn{token.meta['id'] + 1}", line)
            for attr in ("href", "src"):
                value = token.attrGet(attr)
                if isinstance(value, str):
                    smap.urls.setdefault(value, line)
            if token.tag:
                smap.tags.setdefault(token.tag, line)
        return smap

    def line_of_text(self, needle: str) -> int | None:
        """First file line containing ``needle`` (front matter included)."""
        return next((n for n, text in enumerate(self.lines, start=1) if needle in text), None)


class CheckContext:
    """One run of the checks over one rendered issue; checks report through :meth:`add`."""

    def __init__(self, settings: Settings, rendered: RenderedEmail, *, online: bool = False):
        self.settings = settings
        self.rendered = rendered
        self.online = online
        self.findings: list[Finding] = []
        self.issue: Issue | None = None
        if rendered.source is not None:
            try:
                self.issue = parse_any(rendered.source, settings.publication.lang)  # an edition inherits
            except NewsletterError as exc:
                self.add("error", "issue.invalid", exc.message, line=exc.line)

    # ---- reporting -----------------------------------------------------------------
    def display(self, path: Path | str | None) -> str | None:
        """A path relative to the publication root when it is inside it (shorter lines)."""
        if path is None:
            return None
        path = Path(path)
        try:
            return str(path.resolve().relative_to(self.settings.root))
        except ValueError:
            return str(path)

    def add(self, level: str, code: str, message: str, *, line: int | None = None,
            path: Path | str | None = None) -> None:
        """Report one finding; ``path`` defaults to the issue file."""
        where = self.display(path if path is not None else self.rendered.source)
        self.findings.append(Finding(level, code, message, where, line))

    # ---- shared views --------------------------------------------------------------
    @cached_property
    def doc(self) -> lxml.html.HtmlElement:
        return lxml.html.document_fromstring(self.rendered.html.encode("utf-8"))

    @cached_property
    def tokens(self) -> Sequence[Token]:
        if self.issue is None:
            return ()
        from newsletter.content import parse_body

        return parse_body(self.issue.body, path=self.issue.path, first_line=self.issue.body_line).tokens

    @cached_property
    def source(self) -> SourceMap:
        if self.issue is None:
            return SourceMap([])
        return SourceMap.build(self.issue, self.tokens)

    def body_line(self, block: Token) -> int | None:
        if self.issue is None or not block.map:
            return None
        return self.issue.body_line + block.map[0]

    @cached_property
    def visible_elements(self) -> list[lxml.html.HtmlElement]:
        """The elements a reader can see (no head or styles, nothing hidden like the preheader)."""
        from newsletter.checks.html import content_elements

        return list(content_elements(self.doc))

    @cached_property
    def visible_text(self) -> str:
        """The HTML's readable text, whitespace squashed."""
        from newsletter.checks.html import own_text, squash

        return squash(" ".join(own_text(e) for e in self.visible_elements))

    @cached_property
    def message_bytes(self) -> bytes:
        """One recipient's full message, exactly as the sender would build it."""
        from newsletter.message import PreparedIssue, Recipient

        prepared = PreparedIssue(self.rendered, self.settings.publication, secret_key=str(self.settings.secret_key))
        return prepared.personalise(Recipient("check@example.org", token="0.x")).as_bytes()

    @cached_property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.message_bytes, policy=policy.default)  # type: ignore[return-value]
