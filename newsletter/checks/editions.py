"""Editions compared with their main edition, so a correction that reached one language and not
the other shows: a different number of sections, articles, footnotes, links or images; a link
that points somewhere else; an edition last changed before the main edition's last change (by
git, where the publication is a git repository). Warnings, each with the edition's file and line.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from markdown_it.token import Token

from newsletter.checks.context import CheckContext, walk
from newsletter.errors import NewsletterError
from newsletter.issue import Issue

GIT_TIMEOUT = 10.0
_KINDS = (("sections", "section"), ("articles", "article"), ("footnotes", "footnote"), ("links", "link"),
          ("images", "image"))


@dataclass
class Outline:
    """What an edition's structure is made of, each item with its file line."""

    items: dict[str, list[int]] = field(default_factory=lambda: {k: [] for _, k in _KINDS})
    links: list[tuple[str, int]] = field(default_factory=list)  # (href or src, line), in order


def outline(issue: Issue) -> Outline:
    from newsletter.content import parse_body

    tokens: Sequence[Token] = parse_body(issue.body, path=issue.path, first_line=issue.body_line).tokens
    out = Outline()
    for token, block in walk(tokens):
        line = issue.body_line + block.map[0] if block.map else issue.body_line
        kind = {"h2": "section", "h3": "article"}.get(token.tag) if token.type == "heading_open" else None
        kind = kind or {"footnote_open": "footnote", "link_open": "link", "image": "image"}.get(token.type)
        if kind is None:
            continue
        out.items[kind].append(line)
        if kind in ("link", "image"):
            out.links.append((str(token.attrGet("href") or token.attrGet("src") or ""), line))
    return out


def check_editions(ctx: CheckContext) -> None:
    """Compare the checked edition with the main one (or, checking the main one, each edition with it)."""
    from newsletter.editions import load_editions, resolve

    if ctx.issue is None:
        return
    main_path, tag = resolve(ctx.issue.path)
    try:
        editions = load_editions(main_path, ctx.settings.publication.lang)
    except NewsletterError as exc:
        ctx.add("warning", "editions.invalid", exc.message, path=exc.path, line=exc.line)
        return
    others = [(tag, editions.others[tag])] if tag else list(editions.others.items())
    if not others:
        return
    main = outline(editions.main)
    for other_tag, edition in others:
        try:
            _compare(ctx, main, outline(edition), edition, other_tag)
        except NewsletterError as exc:
            ctx.add("warning", "editions.invalid", exc.message, path=exc.path, line=exc.line)
        _compare_age(ctx, editions.main.path, edition.path, other_tag)


def _compare(ctx: CheckContext, main: Outline, other: Outline, edition: Issue, tag: str) -> None:
    for plural, kind in _KINDS:
        have, want = other.items[kind], main.items[kind]
        if len(have) != len(want):
            where = have[len(want)] if len(have) > len(want) else (have[-1] if have else edition.body_line)
            ctx.add("warning", "editions.structure",
                    f"the {tag} edition has {len(have)} {plural}, the main edition {len(want)}: "
                    "a change that reached one language only?", path=edition.path, line=where)
    if len(main.links) != len(other.links):
        missing = [u for u, _ in main.links if u not in {v for v, _ in other.links}]
        for url in missing[:5]:
            ctx.add("warning", "editions.link-missing", f"the {tag} edition has no link to {url}",
                    path=edition.path, line=edition.body_line)
        return
    for (want, _), (have, line) in zip(main.links, other.links):
        if want != have:
            ctx.add("warning", "editions.link-differs",
                    f"this link points to {have}, the main edition's to {want}", path=edition.path, line=line)


def _compare_age(ctx: CheckContext, main: Path, edition: Path, tag: str) -> None:
    """An edition whose last change predates the main edition's last change (git commits; an
    uncommitted change to the main edition counts as now)."""
    main_time, edition_time = last_change(main), last_change(edition)
    if main_time is None or edition_time is None or edition_time >= main_time:
        return
    ctx.add("warning", "editions.stale",
            f"the {tag} edition was last changed before the main edition's last change: "
            "a correction may not have reached it yet", path=edition, line=1)


def last_change(path: Path) -> float | None:
    """When ``path`` last changed by git: now if it has uncommitted changes, else its last commit's
    time; None outside a git repository (or without git)."""
    import time

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=path.parent, capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    if git("rev-parse", "--is-inside-work-tree") != "true":
        return None
    if git("status", "--porcelain", "--", path.name):
        return time.time()
    stamp = git("log", "-1", "--format=%ct", "--", path.name)
    return float(stamp) if stamp else None
