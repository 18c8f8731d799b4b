"""What the editors' feedback digest needs from the inbox, and nothing more.

Per message: its class and the issue it concerns (for the count by class). Per
reader reply: the reader's name, a masked address, the date and the first lines
of their own text. No full bodies, no headers, no unmasked addresses of people
who are not subscribers. ``forget(older_than)`` is the retention control.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from newsletter.classify import Category
from newsletter.ledger.schema import transaction
from newsletter.store import stamp




@dataclass(frozen=True)
class Reply:
    name: str
    masked_email: str
    date: str
    excerpt: str
    matched_by: str


def seen(conn: sqlite3.Connection, dedupe_key: str) -> bool:
    return conn.execute("SELECT 1 FROM inbox_messages WHERE dedupe_key=?", (dedupe_key,)).fetchone() is not None


def record(conn: sqlite3.Connection, dedupe_key: str, category: str, slug: str | None, now: datetime,
           reply: Reply | None = None) -> bool:
    """Record one message (and its reply, if any) once; False when it was recorded before."""
    with transaction(conn):
        cur = conn.execute("INSERT INTO inbox_messages(dedupe_key, category, slug, received_at) "
                           "VALUES(?,?,?,?) ON CONFLICT DO NOTHING", (dedupe_key, category, slug, stamp(now)))
        new = cur.rowcount == 1
        if new and reply is not None and slug:
            conn.execute("INSERT INTO replies(dedupe_key, slug, name, masked_email, sent_at, excerpt, matched_by)"
                         " VALUES(?,?,?,?,?,?,?)", (dedupe_key, slug, reply.name, reply.masked_email,
                                                   reply.date, reply.excerpt, reply.matched_by))
    return new


@dataclass(frozen=True)
class Digest:
    slug: str
    title: str
    counts: dict[str, int]
    replies: list[Reply]


def digest(conn: sqlite3.Connection, slug: str, title: str = "") -> Digest:
    """The replies to one issue, oldest first, and how many messages of each class concern it."""
    counts = {c.value: 0 for c in Category}
    for category, n in conn.execute("SELECT category, COUNT(*) FROM inbox_messages WHERE slug=? GROUP BY category",
                                    (slug,)):
        counts[category] = n
    rows = conn.execute("SELECT name, masked_email, sent_at, excerpt, matched_by FROM replies WHERE slug=? "
                        "ORDER BY sent_at, dedupe_key", (slug,)).fetchall()
    return Digest(slug, title, counts, [Reply(*tuple(r)) for r in rows])


def forget(conn: sqlite3.Connection, older_than: timedelta, now: datetime | None = None) -> int:
    """Delete replies and message records received more than ``older_than`` ago; returns how many.

    Forgotten messages are not read again: the inbox checkpoint is by UID, not by this table.
    """
    cutoff = stamp((now or datetime.now(timezone.utc)) - older_than)
    with transaction(conn):
        conn.execute("DELETE FROM replies WHERE dedupe_key IN "
                     "(SELECT dedupe_key FROM inbox_messages WHERE received_at < ?)", (cutoff,))
        n = conn.execute("DELETE FROM inbox_messages WHERE received_at < ?", (cutoff,)).rowcount
    return n


# ---- formats --------------------------------------------------------------------------------
def _counts_line(d: Digest) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.counts.items())


def as_text(d: Digest) -> str:
    head = f"Replies to {d.title or d.slug} ({len(d.replies)})"
    out = [head, "=" * len(head), _counts_line(d), ""]
    for r in d.replies:
        out.append(f"{r.date[:16].replace('T', ' ')} UTC  {r.name or '(no name)'} <{r.masked_email}>")
        out.extend("    " + line for line in (r.excerpt or "(no text)").splitlines())
        out.append("")
    if not d.replies:
        out.append("No replies yet.")
    return "\n".join(out).rstrip() + "\n"


def _md(text: str) -> str:
    """Escape what Markdown would read as markup in a reader's text."""
    for ch in "\\`*_[]<>#|":
        text = text.replace(ch, "\\" + ch)
    return text


def as_markdown(d: Digest) -> str:
    out = [f"# Replies to {_md(d.title or d.slug)}", "", "| class | messages |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in d.counts.items()]
    out.append("")
    for r in d.replies:
        out.append(f"## {_md(r.name or '(no name)')} ({_md(r.masked_email)}), {r.date[:10]}")
        out.append("")
        out.extend("> " + _md(line) for line in (r.excerpt or "(no text)").splitlines())
        out.append("")
    if not d.replies:
        out.append("No replies yet.")
    return "\n".join(out).rstrip() + "\n"


def as_json(d: Digest) -> str:
    return json.dumps({"issue": d.slug, "title": d.title, "counts": d.counts,
                       "replies": [asdict(r) for r in d.replies]}, indent=2, ensure_ascii=False) + "\n"


FORMATS = {"text": as_text, "markdown": as_markdown, "json": as_json}
