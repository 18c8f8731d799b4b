"""Issue files: Markdown with YAML front matter, parsed and validated into an :class:`Issue`.

Every problem is reported as an :class:`~newsletter.errors.InputError` naming the
file and, where known, the line, so an editor can fix it without a traceback.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from newsletter.errors import InputError

REQUIRED = ("number", "title", "date")
OPTIONAL = ("series", "subtitle", "preheader", "slug", "reply_to", "send_at", "credits", "credits_title", "lang",
            "status")
#: ``draft``: never archived or sent until it is ``ready`` (``newsletter new`` writes drafts). A file
#: without the field predates it and was published as it stood, so it counts as ready.
STATUSES = ("draft", "ready")
FILENAME_RE = re.compile(r"^(?P<number>\d{3,})-(?P<slug>[a-z0-9]+(?:-[a-z0-9]+)*)\.md$")
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
ADDRESS_SHAPE = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\.]+(?:\.[^@\s<>(),;:\"\[\]\\.]+)+$")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader (libyaml's when present) that leaves dates as text, so a bad
    date gets our message, not a crash."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
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
        """Consecutive people sharing an affiliation share a line: "A, B, and C, Tsinghua University"."""
        out: list[str] = []
        run: list[Person] = []
        for person in self.people + (Person("\0"),):
            if run and person.affiliation != run[-1].affiliation:
                names = join_names([p.name for p in run])
                out.append(f"{names}, {run[-1].affiliation}" if run[-1].affiliation else names)
                run = []
            run.append(person)
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
            line = next((n for n, text in enumerate(self.source_text.split("\n")[:self.body_line], start=1)
                         if text.startswith("status:")), None)
            raise InputError(f"issue {self.number} is a draft: set 'status: ready' to {action} it "
                             "(a --test copy or a --dry-run works on drafts)", path=self.path, line=line)

    @property
    def subject(self) -> str:
        return self.display_title

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


def _field_lines(node: yaml.Node | None) -> dict[str, int]:
    """Map each top-level key to its 1-based line within the front matter."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def _text(path: Path, data: dict[str, Any], key: str, line: int | None) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise _fail(path, f"'{key}' must be text, not {type(value).__name__}", line)
    value = str(value).strip()
    if "\n" in value or "\r" in value:
        raise _fail(path, f"'{key}' must be a single line", line)
    return value


def _date(path: Path, value: Any, line: int | None) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise _fail(path, f"'date' must be a date like 2025-03-10, not {value!r}", line)


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
    return value


def _credits(path: Path, value: Any, line: int | None) -> tuple[CreditGroup, ...]:
    if value in (None, ""):
        return ()
    if not isinstance(value, list):
        raise _fail(path, "'credits' must be a list of {role, people}", line)
    groups = []
    for group in value:
        if not isinstance(group, dict) or not isinstance(group.get("role"), str) or not isinstance(group.get("people"), list):
            raise _fail(path, "each credits entry needs 'role' (text) and 'people' (a list)", line)
        people = []
        for p in group["people"]:
            if isinstance(p, str):
                people.append(Person(p.strip()))
            elif isinstance(p, dict) and isinstance(p.get("name"), str):
                people.append(Person(p["name"].strip(), str(p.get("affiliation") or "").strip()))
            else:
                raise _fail(path, f"credits person must be a name or {{name, affiliation}}, not {p!r}", line)
        groups.append(CreditGroup(group["role"].strip(), tuple(people)))
    return tuple(groups)


def parse_issue(path: Path) -> Issue:
    """Read and validate one issue file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(path, f"cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _fail(path, "not UTF-8: save the file as UTF-8", line) from None
    text = text.replace("\r\n", "\n")
    front, body, body_line = _split_front_matter(path, text)
    try:
        node = yaml.compose(front, Loader=_Loader)
        data = _Loader(front).construct_document(node) if node is not None else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 2 if mark else None
        raise _fail(path, f"front matter is not valid YAML: {exc.problem or exc}", line) from None
    if not isinstance(data, dict):
        raise _fail(path, "front matter must be a mapping of 'key: value' lines", 2)
    lines = {k: v + 1 for k, v in _field_lines(node).items()}  # +1 for the opening '---'

    unknown = [k for k in data if k not in REQUIRED + OPTIONAL]
    if unknown:
        raise _fail(path, f"unknown field '{unknown[0]}' (known: {', '.join(REQUIRED + OPTIONAL)})", lines.get(unknown[0]))
    for key in REQUIRED:
        if data.get(key) in (None, ""):
            raise _fail(path, f"missing required field '{key}'", 1)

    number = data["number"]
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise _fail(path, f"'number' must be a whole number, not {number!r}", lines.get("number"))

    m = FILENAME_RE.match(path.name)
    slug = _text(path, data, "slug", lines.get("slug")) or (m.group("slug") if m else path.stem)
    if not SLUG_RE.match(slug):
        raise _fail(path, f"slug {slug!r} must be lower-case words joined by hyphens", lines.get("slug"))

    reply_to = _text(path, data, "reply_to", lines.get("reply_to")) or None
    if reply_to and not ADDRESS_SHAPE.match(reply_to):
        # The shape only: email-validator's full check (40 ms to import) runs when a
        # message is prepared, so `build` and the live preview stay quick.
        raise _fail(path, f"'reply_to' is not a valid address: {reply_to!r}", lines.get("reply_to"))

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
        credits=_credits(path, data.get("credits"), lines.get("credits")),
        credits_title=_text(path, data, "credits_title", lines.get("credits_title")),
        lang=_text(path, data, "lang", lines.get("lang")) or None,
        status=status,
        source_text=text,
    )


def find_issue(issues_dir: Path, ref: str) -> Path:
    """Resolve an issue reference: a path, a number ("6", "006") or a slug."""
    candidate = Path(ref)
    if candidate.suffix == ".md" and candidate.exists():
        return candidate
    files = sorted(issues_dir.glob("*.md"))
    for f in files:
        m = FILENAME_RE.match(f.name)
        if ref == f.stem or (m and (ref == m.group("slug") or (ref.isdigit() and int(ref) == int(m.group("number"))))):
            return f
    raise InputError(f"no issue {ref!r} in {issues_dir} (try a number, a slug or a path)")


def list_issues(issues_dir: Path) -> list[Path]:
    return sorted(p for p in issues_dir.glob("*.md") if FILENAME_RE.match(p.name))
