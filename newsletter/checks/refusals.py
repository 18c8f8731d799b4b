"""What stops a build, as findings: `check` lists every such problem in one run.

A build stops at the first thing it refuses (a front-matter error, an image without
alt text, raw HTML), which is right for `send` and wrong for an editor fixing an
issue: they would fix one line, run `check` again, and find the next. Here each
refusal becomes an ``error`` finding, the issue is rendered anyway where it can be,
and the ordinary checks run over that rendering.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from newsletter.checks.context import display_path
from newsletter.checks.findings import Finding
from newsletter.config import Settings
from newsletter.errors import InputError, NewsletterError
from newsletter.issue import REQUIRED, Issue, parse_issue

#: Valid values put in for a missing required field, so the fields after it are checked too.
STAND_INS = {"number": "0", "title": "stand-in", "date": "2000-01-01"}
MAX_ROUNDS = 40  # each round removes one field: bounded work for a hostile file
_TOP_KEY = re.compile(r"^[A-Za-z_][\w-]*\s*:")


def as_finding(root: Path, exc: NewsletterError, code: str, path: Path | None = None) -> Finding:
    """One refusal as an ``error`` finding, pointing where the exception points."""
    return Finding("error", code, exc.message, display_path(root, path or exc.path), exc.line)


def front_matter_problems(path: Path) -> tuple[Issue | None, list[InputError]]:
    """The parsed issue, or every front-matter problem that can be told apart.

    The parser stops at its first error; after each, the field it names is blanked
    (lines keep their numbers) or a missing required one given a stand-in, and the
    file is parsed again, until it parses or an error cannot be set aside."""
    try:
        return parse_issue(path), []
    except InputError as exc:
        first = exc
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError):
        return None, [first]
    if not _is_mapping(text):
        return None, [first]  # a YAML syntax error is not one field's: what follows it means nothing
    problems = [first]
    with tempfile.TemporaryDirectory(prefix="newsletter-check-") as tmp:
        copy = Path(tmp) / path.name  # the same name: the slug and number come from it
        lines: list[str] | None = text.split("\n")
        added: set[str] = set()
        for _ in range(MAX_ROUNDS):
            lines = _set_aside(lines, problems[-1], added) if lines is not None else None
            if lines is None:
                break
            copy.write_text("\n".join(lines), encoding="utf-8")
            try:
                parse_issue(copy)
                break
            except InputError as exc:
                exc.path = path
                if (exc.message, exc.line) == (problems[-1].message, problems[-1].line):
                    break
                problems.append(exc)
    return None, problems


def _is_mapping(text: str) -> bool:
    """The front matter parses as a YAML mapping (so its fields can be set aside one by one)."""
    import yaml

    lines = text.split("\n")
    end = _front_matter_end(lines)
    if end is None:
        return False
    try:
        return isinstance(yaml.compose("\n".join(lines[1:end]), Loader=yaml.SafeLoader), yaml.MappingNode)
    except (yaml.YAMLError, RecursionError, ValueError):
        return False


def _front_matter_end(lines: list[str]) -> int | None:
    """Index of the closing '---' line, if the front matter is closed."""
    if not lines or lines[0].strip() != "---":
        return None
    return next((i for i, line in enumerate(lines[1:], start=1) if line.strip() in ("---", "...")), None)


def _set_aside(lines: list[str], exc: InputError, added: set[str]) -> list[str] | None:
    """``lines`` without the field ``exc`` is about (or with a stand-in for a missing one);
    None when the problem is not one field's."""
    end = _front_matter_end(lines)
    if end is None:
        return None
    missing = next((k for k in REQUIRED if "missing" in exc.message and f"'{k}'" in exc.message), None)
    if missing is not None:
        if missing in added:
            return None
        added.add(missing)
        return [*lines[:end], f"{missing}: {STAND_INS[missing]}", *lines[end:]]
    if exc.line is None or not 2 <= exc.line <= end:
        return None
    start = next((i for i in range(exc.line - 1, 0, -1) if _TOP_KEY.match(lines[i])), None)
    if start is None:
        return None
    key = lines[start].split(":", 1)[0].strip()
    stop = next((i for i in range(start + 1, end) if _TOP_KEY.match(lines[i])), end)
    if key in REQUIRED:
        added.add(key)
        return [*lines[:start], *[""] * (stop - start - 1), f"{key}: {STAND_INS[key]}", *lines[stop:]]
    return [*lines[:start], *[""] * (stop - start), *lines[stop:]]


def body_problems_of(path: Path) -> list[InputError]:
    """What the body of an issue whose front matter failed would have refused."""
    from newsletter.content import body_problems, parser

    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeError):
        return []
    end = _front_matter_end(lines)
    if end is None:
        return []
    body = "\n".join(lines[end + 1:])
    env: dict = {}
    return body_problems(parser().parse(body, env), body, path=path, first_line=end + 2, env=env)


def refusals_and_rendering(settings: Settings, path: Path):  # type: ignore[no-untyped-def]
    """(findings for everything a build would refuse, the rendering to check further or None)."""
    from newsletter.render import render_issue

    root = settings.root
    issue, problems = front_matter_problems(path)
    if issue is None:
        found = [as_finding(root, p, "issue.invalid", path) for p in problems]
        return found + [as_finding(root, p, "issue.refused", path) for p in body_problems_of(path)], None
    body: list[InputError] = []
    try:
        rendered = render_issue(issue, settings, problems=body)
    except NewsletterError as exc:
        rendered, body = None, [*body, exc]
    return [as_finding(root, p, "issue.refused") for p in body], rendered
