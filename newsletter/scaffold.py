"""`newsletter init` and `newsletter new`: start a publication, start the next issue."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

from newsletter.errors import InputError
from newsletter.issue import CONTROL_CHAR, FILENAME_RE, MAX_LENGTH, list_issues, parse_issue, slugs_in

INIT_DATA = Path(__file__).resolve().parent / "data" / "init"
#: The body `newsletter new` writes; `check` flags any of its lines still in an issue.
NEW_ISSUE_BODY = Path(__file__).resolve().parent / "data" / "new-issue.md"


def slugify(title: str, max_words: int = 8) -> str:
    words = re.findall(r"[a-z0-9]+", title.lower())
    return "-".join(words[:max_words]) or "issue"


def init_publication(target: Path) -> list[Path]:
    """Write a sample newsletter.toml, .env.example, a first issue, a ``templates/`` folder that
    explains how to change a template, and a .gitignore that keeps ``.env`` (the secret key) and
    ``newsletter.db`` (subscribers) out of git.

    No template is copied: the shipped ones are used until an editor copies one to change it
    (``newsletter templates copy``), so later fixes to them reach this publication."""
    target.mkdir(parents=True, exist_ok=True)
    if (target / "newsletter.toml").exists():
        raise InputError("already a publication (newsletter.toml exists); nothing changed", path=target)
    created: list[Path] = []
    (target / "templates").mkdir(exist_ok=True)
    (target / "issues").mkdir(exist_ok=True)
    for src, dst in ((INIT_DATA / "templates-README.md", target / "templates" / "README.md"),
                     (INIT_DATA / "newsletter.toml", target / "newsletter.toml"),
                     (INIT_DATA / "env.example", target / ".env.example"),
                     (INIT_DATA / "001-hello-world.md", target / "issues" / "001-hello-world.md")):
        shutil.copyfile(src, dst)
        created.append(dst)
    created.extend(_gitignore(target))
    return created


def _gitignore(target: Path) -> list[Path]:
    """Write .gitignore, or add the lines it lacks to an existing one; returns it when changed."""
    path = target / ".gitignore"
    wanted = (INIT_DATA / "gitignore").read_text(encoding="utf-8")
    try:
        have = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        present = {line.strip() for line in have.splitlines()}
        missing = [line for line in wanted.splitlines() if line.strip() and not line.startswith("#")
                   and line.strip() not in present]
        if not have:
            path.write_text(wanted, encoding="utf-8")
        elif missing:
            with path.open("a", encoding="utf-8") as fh:
                fh.write(("" if have.endswith("\n") else "\n") + "# Added by `newsletter init`:\n"
                         + "\n".join(missing) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write .gitignore: {exc.strerror}; add .env and newsletter.db to it yourself",
                         path=path) from None
    return [path] if not have or missing else []


def new_issue(issues_dir: Path, title: str, today: dt.date | None = None) -> Path:
    """Scaffold the next numbered issue file; refuses to overwrite."""
    title = title.strip()
    if not title or len(title.splitlines()) > 1 or CONTROL_CHAR.search(title):
        raise InputError("the title must be one non-empty line without control characters")
    if len(title) > MAX_LENGTH["title"]:
        raise InputError(f"the title is {len(title)} characters long; the limit is {MAX_LENGTH['title']}")
    issues_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group("number")) for p in list_issues(issues_dir) if (m := FILENAME_RE.match(p.name))]
    number = max(numbers, default=0) + 1
    slug = slugify(title)
    if slug in slugs_in(issues_dir):  # a second "Trade" issue must not share the first one's web page
        slug = f"{slug}-{number}"
    path = issues_dir / f"{number:03d}-{slug}.md"
    if path.exists():
        raise InputError("already exists", path=path)
    date = (today or dt.date.today()).isoformat()
    path.write_text(
        f'---\nnumber: {number}\n{_yaml_line("title", title)}date: {date}\nstatus: draft\nsubtitle: ""\n---\n\n'
        + NEW_ISSUE_BODY.read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    try:
        parse_issue(path)  # what `new` writes, the build must read: never leave a file it refuses
    except InputError as exc:
        path.unlink()
        raise InputError(f"nothing written: {exc.message}") from None
    return path


def scaffold_lines() -> list[str]:
    """The lines `new` (and `init`, in its sample issue) write into an issue's body that an
    editor must replace: read from the files they copy, so the list cannot fall behind them.
    Lines of fewer than three words ("## A section") are left out: an editor may write those."""
    sample = (INIT_DATA / "001-hello-world.md").read_text(encoding="utf-8").split("\n---\n", 1)[-1]
    lines = [*NEW_ISSUE_BODY.read_text(encoding="utf-8").splitlines(), *sample.splitlines()]
    return [line.strip() for line in lines if len(line.split()) >= 3]


def _yaml_line(key: str, value: str) -> str:
    """One ``key: value`` line, quoted and escaped by the YAML library (a title may hold any of
    ``:"'\\#``), so the file always parses back to the same text."""
    import yaml

    return yaml.safe_dump({key: value}, allow_unicode=True, width=1_000_000, sort_keys=False)
