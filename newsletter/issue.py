"""Issue files: Markdown with YAML front matter, parsed and validated into an :class:`Issue`.

Every problem is reported as an :class:`~newsletter.errors.InputError` naming the
file and, where known, the line, so an editor can fix it without a traceback.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from newsletter.addresses import ENCODED_WORD, validate_address
from newsletter.grammar import SLUG, calendar_date, is_language_tag, is_slug
from newsletter.patterns import TEXT_CONTROL_CHARS, compiled
from newsletter.errors import InputError

REQUIRED = ("number", "title", "date")
OPTIONAL = ("series", "subtitle", "preheader", "slug", "reply_to", "send_at", "credits", "credits_title", "lang",
            "status")
#: ``draft``: never archived or sent until it is ``ready`` (``newsletter new`` writes drafts). A file
#: without the field predates it and was published as it stood, so it counts as ready.
STATUSES = ("draft", "ready")
FILENAME_RE = re.compile(r"^(?P<number>\d{3,})-(?P<slug>[a-z0-9]+(?:-[a-z0-9]+)*)\.md$")
SLUG_RE = re.compile(rf"^{SLUG}$")

# Documented limits (README, "The issue file"). A Subject over ~80 characters is cut in
# every inbox; a 2,000-character title is a paste accident, not a title.
MAX_LENGTH = {"title": 200, "series": 80, "subtitle": 300, "preheader": 300, "credits_title": 200,
              "slug": 80, "lang": 35, "reply_to": 254, "role": 100, "name": 200, "affiliation": 200}
# Markdown longer than this is far past Gmail's ~102 KB clip, and markdown-it's time grows with it.
MAX_FILE_BYTES = 128 * 1024
# Fields that end up in the Subject header, where mail clients decode =?charset?q?…?= words.
HEADER_FIELDS = ("title", "series")
# Controls a text may not hold (TAB and LF may; CRLF is normalised first): patterns.TEXT_CONTROL_CHARS.
CONTROL_CHAR = re.compile(TEXT_CONTROL_CHARS)
CREDIT_KEYS = ("role", "people")
PERSON_KEYS = ("name", "affiliation")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader (libyaml's when present) that keeps every plain scalar as the text written.

    YAML 1.1 reads ``12:30`` as 750, ``007`` as 7, ``1.10`` as 1.1 and ``no`` as False; a title or a
    name must never change like that, and no front-matter field is a float or a boolean. So only
    merge keys (``<<``) are resolved implicitly; ``number``, ``date`` and ``send_at`` are parsed from
    their text by their own grammars (a bad date gets our message, not a crash)."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag == "tag:yaml.org,2002:merge"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True)
class Person:
    name: str
    affiliation: str = ""


@dataclass(frozen=True)
class CreditGroup:
    """A role ("Writers", "Editors") and its people, in the order the editor gave."""

    role: str
    people: tuple[Person, ...]

    def lines(self) -> list[str]:
        """Consecutive people sharing an affiliation share a line: "A, B, and C, Tsinghua University".

        People given as plain names (no affiliation) share one line of names.
        """
        out: list[str] = []
        for affiliation, run in itertools.groupby(self.people, key=lambda p: p.affiliation):
            names = join_names([p.name for p in run])
            out.append(f"{names}, {affiliation}" if affiliation else names)
        return out


def join_names(names: list[str]) -> str:
    """English list with the serial comma: "A", "A and B", "A, B, and C"."""
    if len(names) <= 2:
        return " and ".join(names)
    return ", ".join(names[:-1]) + ", and " + names[-1]


@dataclass(frozen=True)
class Issue:
    """A validated issue. ``body_line`` is the file line where the Markdown body starts."""

    path: Path
    number: int
    title: str
    date: dt.date
    slug: str
    body: str
    body_line: int
    series: str = ""
    subtitle: str = ""
    preheader: str = ""
    reply_to: str | None = None
    send_at: dt.datetime | None = None
    credits: tuple[CreditGroup, ...] = ()
    credits_title: str = ""
    lang: str | None = None
    status: str = "ready"
    source_text: str = field(default="", repr=False)
    #: The file line of each top-level front-matter key, from the YAML parse.
    field_lines: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def display_title(self) -> str:
        """The full heading: "#6 China Scholar Insights: The Global Governance of …"."""
        if self.series:
            return f"#{self.number} {self.series}: {self.title}"
        return f"#{self.number} {self.title}"

    @property
    def is_draft(self) -> bool:
        return self.status == "draft"

    def require_ready(self, action: str) -> None:
        """Refuse to ``action`` (send, schedule) a draft: one line naming the file."""
        if self.is_draft:
            raise InputError(f"issue {self.number} is a draft: set 'status: ready' to {action} it "
                             "(a --test copy or a --dry-run works on drafts)", path=self.path,
                             line=self.field_line("status"))

    @property
    def subject(self) -> str:
        return self.display_title

    def field_line(self, key: str) -> int | None:
        """The file line of a top-level front-matter key, or None when the key is not given."""
        return self.field_lines.get(key)

    @property
    def writers(self) -> list[Person]:
        return [p for g in self.credits if g.role.lower().startswith("writer") for p in g.people]


def _fail(path: Path, message: str, line: int | None = None) -> InputError:
    return InputError(message, path=path, line=line)


def _split_front_matter(path: Path, text: str) -> tuple[str, str, int]:
    lines = text.split("\n")
    if not lines or lines[0].strip() != "---":
        raise _fail(path, "missing YAML front matter: the file must start with a '---' line", 1)
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            return "\n".join(lines[1:i]), "\n".join(lines[i + 1:]), i + 2
    raise _fail(path, "front matter is not closed: add a '---' line after it", 1)


def _line(node: yaml.Node) -> int:
    """The file line of a front-matter node (its marks count from the line after '---')."""
    return node.start_mark.line + 2


def _field_lines(node: yaml.Node | None) -> dict[str, int]:
    """Map each top-level key to its file line."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: _line(k) for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def _refuse_duplicate_keys(path: Path, node: yaml.Node | None) -> None:
    """YAML keeps the last of two equal keys without a word; an editor loses the first value."""
    stack = [node] if node is not None else []
    visited: set[int] = set()  # an alias shares its anchor's node: walk each once (no "billion laughs")
    while stack:
        current = stack.pop()
        if id(current) in visited:
            continue
        visited.add(id(current))
        if isinstance(current, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        raise _fail(path, f"'{key.value}' is given twice (first on line {seen[key.value]}); "
                                          "keep one", _line(key))
                    seen[key.value] = _line(key)
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def _refuse_control_characters(path: Path, text: str) -> None:
    """Control characters break MJML far from their cause; name the line instead."""
    m = CONTROL_CHAR.search(text)
    if m:
        line = text.count("\n", 0, m.start()) + 1
        raise _fail(path, f"control character U+{ord(m.group()):04X} in the text: delete it", line)


def _text(path: Path, data: dict[str, Any], key: str, line: int | None) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if isinstance(value, (int, float, dt.date)):  # only an explicit tag (!!int 0x10) makes one now
        raise _fail(path, f'write "{value}" in quotes: \'{key}\' is text', line)
    if not isinstance(value, str):
        raise _fail(path, f"'{key}' must be text, not {type(value).__name__}", line)
    value = value.strip()
    if len(value.splitlines()) > 1:
        raise _fail(path, f"'{key}' must be a single line", line)
    control = CONTROL_CHAR.search(value)  # a YAML escape ("\e", "\x00") gets past the scan of the file
    if control:
        raise _fail(path, f"control character U+{ord(control.group()):04X} in '{key}': delete it", line)
    limit = MAX_LENGTH.get(key, MAX_LENGTH["title"])
    if len(value) > limit:
        raise _fail(path, f"'{key}' is {len(value)} characters long; the limit is {limit}", line)
    word = compiled(ENCODED_WORD).search(value) if key in HEADER_FIELDS else None
    if word:
        raise _fail(path, f"'{key}' contains an RFC 2047 encoded-word ({word.group()[:40]}), "
                          "which mail clients would decode in the Subject; write the text itself", line)
    return value


def _date(path: Path, value: Any, line: int | None) -> dt.date:
    date = calendar_date(value.strip()) if isinstance(value, str) else None
    if date is None:
        raise _fail(path, f"'date' must be a date like 2025-03-10, not {value!r}"[:200], line)
    return date


def _number(path: Path, value: Any, line: int | None) -> int:
    """The issue number as written in decimal (YAML 1.1 read ``010`` as 8 and ``1_0`` as 10)."""
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 6:
        raise _fail(path, f"'number' must be a whole number like 7, not {value!r}"[:200], line)
    return int(value)


def _send_at(path: Path, value: Any, line: int | None) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise _fail(path, f"'send_at' must be an ISO date-time like 2025-03-10T09:00+08:00, not {value!r}", line) from None
    if not isinstance(value, dt.datetime):
        raise _fail(path, f"'send_at' must be a date-time with a timezone, not {value!r}", line)
    if value.tzinfo is None:
        raise _fail(path, "'send_at' needs a timezone, e.g. 2025-03-10T09:00+08:00", line)
    try:
        value.astimezone(dt.timezone.utc)  # 9999-12-31T23:59-23:59 is past the last UTC instant
    except OverflowError:
        raise _fail(path, f"'send_at' {value.isoformat()} is out of range", line) from None
    return value


def _value_node(node: yaml.Node | None, key: str) -> yaml.Node | None:
    """The value node of ``key`` in a mapping node (for the lines of nested entries)."""
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
    return None


def _refuse_unknown(path: Path, node: yaml.Node, known: tuple[str, ...], what: str) -> None:
    for key, line in _field_lines(node).items():
        if key not in known:
            raise _fail(path, f"unknown field '{key}' in {what} (known: {', '.join(known)})", line)


def _person(path: Path, value: Any, node: yaml.Node) -> Person:
    """A person: a plain name, or {name, affiliation}."""
    if isinstance(value, str):
        value = {"name": value}
    elif not isinstance(value, dict):
        raise _fail(path, f"a credits person must be a name or {{name, affiliation}}, not {value!r}"[:200], _line(node))
    else:
        _refuse_unknown(path, node, PERSON_KEYS, "a credits person")
    lines = _field_lines(node) or {"name": _line(node)}
    name = _text(path, value, "name", lines.get("name", _line(node)))
    if not name:
        raise _fail(path, "a credits person needs a 'name'", _line(node))
    return Person(name, _text(path, value, "affiliation", lines.get("affiliation", _line(node))))


def _credits(path: Path, value: Any, node: yaml.Node | None, line: int | None) -> tuple[CreditGroup, ...]:
    if value in (None, ""):
        return ()
    if not isinstance(value, list) or not isinstance(node, yaml.SequenceNode):
        raise _fail(path, "'credits' must be a list of {role, people}", line)
    groups = []
    for group, group_node in zip(value, node.value):
        if not isinstance(group, dict) or not isinstance(group.get("role"), str) or not isinstance(group.get("people"), list):
            raise _fail(path, "each credits entry needs 'role' (text) and 'people' (a list)", _line(group_node))
        _refuse_unknown(path, group_node, CREDIT_KEYS, "a credits entry")
        lines = _field_lines(group_node)
        people_node = _value_node(group_node, "people")
        if not isinstance(people_node, yaml.SequenceNode):
            raise _fail(path, "'people' must be a list of names or {name, affiliation}", _line(group_node))
        people = tuple(_person(path, p, n) for p, n in zip(group["people"], people_node.value))
        groups.append(CreditGroup(_text(path, group, "role", lines.get("role")), people))
    return tuple(groups)


def _read_text(path: Path) -> str:
    """The file as text with LF line ends; too big, not UTF-8 or holding control characters is refused."""
    if path.exists() and not path.is_file():  # a FIFO (or a symlink to one) would block the read
        raise _fail(path, "not a regular file")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _fail(path, f"cannot read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise _fail(path, f"the file passes {MAX_FILE_BYTES // 1024} KB, the limit for an issue, on this line "
                          "(Gmail clips an email at about 102 KB anyway)", raw[:MAX_FILE_BYTES].count(b"\n") + 1)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _fail(path, "not UTF-8: save the file as UTF-8", line) from None
    text = text.replace("\r\n", "\n")
    _refuse_control_characters(path, text)
    return text


def _reply_to(path: Path, value: str, line: int | None) -> str | None:
    """The address in its one normalised form (:func:`newsletter.addresses.validate_address`)."""
    if not value:
        return None
    try:
        return validate_address(value, "reply_to")
    except InputError as exc:
        raise _fail(path, f"'reply_to' is not a valid address ({exc.message})", line) from None


def _front_matter(path: Path, front: str) -> tuple[dict[str, Any], yaml.Node | None]:
    """The front matter as data, with its node tree for line numbers; duplicate keys refused."""
    try:
        node = yaml.compose(front, Loader=_Loader)
        _refuse_duplicate_keys(path, node)
        data = _Loader(front).construct_document(node) if node is not None else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 2 if mark else None
        raise _fail(path, f"front matter is not valid YAML: {exc.problem or exc}", line) from None
    except yaml.reader.ReaderError as exc:  # a character YAML refuses (U+FFFE…): a position, no mark
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise _fail(path, f"front matter is not valid YAML: character U+{char:04X} is not allowed",
                    front.count("\n", 0, exc.position) + 2) from None
    except yaml.YAMLError as exc:
        raise _fail(path, f"front matter is not valid YAML: {str(exc).splitlines()[0] if str(exc) else exc!r}",
                    2) from None
    except RecursionError:
        raise _fail(path, "front matter is nested too deeply", 2) from None
    if not isinstance(data, dict):
        raise _fail(path, "front matter must be a mapping of 'key: value' lines", 2)
    return data, node


def _as_written(value: Any) -> Any:
    """An inherited value in the form the file would hold it (the loader keeps scalars as text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def parse_issue(path: Path, inherit: dict[str, Any] | None = None) -> Issue:
    """Read and validate one issue file. ``inherit``: values for fields the file leaves out
    (an edition takes its date, send time and status from the main edition; see editions.py)."""
    path = Path(path)
    text = _read_text(path)
    front, body, body_line = _split_front_matter(path, text)
    data, node = _front_matter(path, front)
    data = {**{k: _as_written(v) for k, v in (inherit or {}).items()}, **data}
    lines = _field_lines(node)

    unknown = [k for k in data if k not in REQUIRED + OPTIONAL]
    if unknown:
        raise _fail(path, f"unknown field '{unknown[0]}' (known: {', '.join(REQUIRED + OPTIONAL)})", lines.get(unknown[0]))
    for key in REQUIRED:
        if data.get(key) in (None, ""):
            raise _fail(path, f"missing required field '{key}'", 1)

    number = _number(path, data["number"], lines.get("number"))

    m = FILENAME_RE.match(path.name)
    slug = _text(path, data, "slug", lines.get("slug")) or (m.group("slug") if m else path.stem)
    if not is_slug(slug):
        raise _fail(path, f"slug {slug!r} must be lower-case words joined by hyphens", lines.get("slug"))

    reply_to = _reply_to(path, _text(path, data, "reply_to", lines.get("reply_to")), lines.get("reply_to"))
    lang = _text(path, data, "lang", lines.get("lang")) or None
    if lang is not None and not is_language_tag(lang):
        raise _fail(path, f"'lang' {lang!r} is not a BCP 47 language tag like en, en-GB or zh-Hans", lines.get("lang"))

    subtitle = _text(path, data, "subtitle", lines.get("subtitle"))
    status = (_text(path, data, "status", lines.get("status")) or "ready").lower()
    if status not in STATUSES:
        raise _fail(path, f"'status' must be draft or ready, not {status!r}", lines.get("status"))
    if not body.strip():
        raise _fail(path, "the issue has no body after the front matter", body_line)
    return Issue(
        path=path,
        number=number,
        title=_text(path, data, "title", lines.get("title")),
        date=_date(path, data["date"], lines.get("date")),
        slug=slug,
        body=body,
        body_line=body_line,
        series=_text(path, data, "series", lines.get("series")),
        subtitle=subtitle,
        preheader=_text(path, data, "preheader", lines.get("preheader")) or subtitle,
        reply_to=reply_to,
        send_at=_send_at(path, data.get("send_at"), lines.get("send_at")),
        credits=_credits(path, data.get("credits"), _value_node(node, "credits"), lines.get("credits")),
        credits_title=_text(path, data, "credits_title", lines.get("credits_title")),
        lang=lang,
        status=status,
        source_text=text,
        field_lines=lines,
    )


def find_issue(issues_dir: Path, ref: str) -> Path:
    """Resolve an issue reference: a path, a number ("6", "006") or a slug.

    An issue whose slug another file in ``issues_dir`` also has is refused here, before
    anything is built into (or sent from) the folder and web address they would share.
    """
    candidate = Path(ref)
    if candidate.suffix == ".md" and candidate.exists():
        refuse_shared_slug(issues_dir, candidate)
        return candidate
    files = sorted(issues_dir.glob("*.md"))
    for f in files:
        m = FILENAME_RE.match(f.name)
        if ref == f.stem or (m and (ref == m.group("slug") or (ref.isdigit() and int(ref) == int(m.group("number"))))):
            refuse_shared_slug(issues_dir, f)
            return f
    raise InputError(f"no issue {ref!r} in {issues_dir} (try a number, a slug or a path)")


def list_issues(issues_dir: Path) -> list[Path]:
    return sorted(p for p in issues_dir.glob("*.md") if FILENAME_RE.match(p.name))


def parsed_issues(paths: Iterable[Path]) -> Iterator[Issue]:
    """The issues among ``paths`` that parse; a broken file is reported by its own build."""
    for path in paths:
        try:
            yield parse_issue(path)
        except InputError:
            continue


def slugs_in(issues_dir: Path) -> set[str]:
    """The slugs the issues in ``issues_dir`` use (for `new` to pick one that is free)."""
    return {issue.slug for issue in parsed_issues(list_issues(issues_dir))} if issues_dir.is_dir() else set()


def refuse_shared_slug(issues_dir: Path, path: Path | None = None) -> None:
    """Two issues with one slug would build into one folder and share one web page: refuse.

    With ``path``, that issue is compared with the others that could have its slug (only
    those are parsed: a broken draft elsewhere neither slows nor stops it); without it,
    every issue in the folder with those before it.
    """
    paths = list_issues(issues_dir) if issues_dir.is_dir() else []
    if path is not None:
        target = next(parsed_issues([path]), None)
        if target is None:
            return  # the issue itself does not parse: its build says why
        others = [p for p in paths if p.resolve() != path.resolve() and _could_have_slug(p, target.slug)]
        clash = next((i.path for i in parsed_issues(others) if i.slug == target.slug), None)
        if clash is not None:
            raise _shared_slug(target, clash)
        return
    issues = list(parsed_issues(paths))
    owners: dict[str, Path] = {}
    for issue in issues:
        first = owners.setdefault(issue.slug, issue.path)
        if first != issue.path:
            raise _shared_slug(issue, first)


def _could_have_slug(path: Path, slug: str) -> bool:
    """Whether the issue in ``path`` could have ``slug``, judged without parsing it: by its file
    name, or because its text could set it as its ``slug`` (both spelt out, or behind a YAML escape or
    a number's other spellings)."""
    m = FILENAME_RE.match(path.name)
    if (m.group("slug") if m else path.stem) == slug:
        return True
    if not path.is_file():
        return False  # not a file to read (a FIFO would block): it has no slug, and its own build says why
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError:
        return False  # unreadable: it has no slug, and its own build says why
    # A plain scalar is kept as written (see _Loader); only a quoted one's escapes can spell it otherwise.
    return b"\\" in raw or (b"slug" in raw and slug.encode() in raw)


def _shared_slug(issue: Issue, other: Path) -> InputError:
    return InputError(f"slug '{issue.slug}' is also the slug of {other.name}; both would build into one "
                      "folder and one web page: give one of them another 'slug'",
                      path=issue.path, line=issue.field_line("slug") or 1)
