"""Dry-run transport: write every message to the outbox instead of sending it.

Each message becomes ``<outbox>/<slug>/<NNNNN>-<recipient>.eml`` holding exactly the
bytes an SMTP server would have received, so a dry run can be opened in any mail
client. ``summary.json`` in the same folder (count, recipients, total bytes,
subject, created time) is written on :meth:`close`. The recipient list goes to an
anonymous temporary file as messages are written and is streamed into the summary,
so a dry run of 100k readers holds no more in memory than one of 10k.

A run starts each issue folder afresh: files from an earlier dry run (``NNNNN-*.eml``
and ``summary.json``, nothing else) are removed the first time the folder is written
to, unless ``append=True``, which continues the numbering and the summary. Several
instances open at once in one process (one per worker thread) share the folder:
one numbering, one summary, and none clears what another wrote. This module never
imports anything that talks to the network.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Sequence

from newsletter.errors import TransportError
from newsletter.transports.base import UNBUILDABLE, SendResult, Status, Transport, unbuildable

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.message import OutgoingMessage

SUMMARY = "summary.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")
_EML = re.compile(r"^(\d{5,})-.*\.eml$")
_MAX_NAME = 120


def safe_name(text: str, fallback: str) -> str:
    """A file-name-safe, single path component: no separators, no leading dots, bounded length."""
    name = _UNSAFE.sub("_", text).lstrip(".")
    name = name.replace("..", "_")[:_MAX_NAME].rstrip(".")
    return name or fallback


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class _Folder:
    """One issue folder's state, shared by every open transport writing to it."""

    path: Path
    slug: str
    dirname: str = field(init=False, repr=False)  # str(path), for per-message file names (see send)
    subject: str = ""
    created: str = field(default_factory=_now)
    count: int = 0
    total_bytes: int = 0
    last_number: int = 0
    dirty: bool = False
    users: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # One JSON string per line, in sending order: the summary's list, kept out of memory.
    recipients: IO[str] = field(default_factory=lambda: tempfile.TemporaryFile("w+", encoding="utf-8"), repr=False)

    def __post_init__(self) -> None:
        self.dirname = os.fspath(self.path)

    def add_recipient(self, email: str) -> None:
        self.recipients.write(json.dumps(email, ensure_ascii=False) + "\n")

    def write_summary(self) -> None:
        """summary.json, written beside and then renamed over the old one; the list is streamed."""
        head = {"slug": self.slug, "subject": self.subject, "count": self.count, "total_bytes": self.total_bytes,
                "created": self.created, "updated": _now(), "transport": "dryrun"}
        tmp = self.path / f"{SUMMARY}.{threading.get_ident()}.tmp"
        self.recipients.flush()
        self.recipients.seek(0)
        with tmp.open("w", encoding="utf-8") as out:
            out.write(json.dumps(head, indent=2, ensure_ascii=False)[:-2] + ',\n  "recipients": [')
            for i, line in enumerate(self.recipients):
                out.write(("," if i else "") + "\n    " + line.rstrip("\n"))
            out.write("\n  ]\n}\n")
        self.recipients.seek(0, os.SEEK_END)
        os.replace(tmp, self.path / SUMMARY)


# Folders open in this process. A delivery with concurrency > 1 builds one transport
# per worker thread; they must share numbering and the summary, and the second must
# not clear what the first already wrote.
_OPEN: dict[Path, _Folder] = {}
_OPEN_LOCK = threading.Lock()


class DryRunTransport(Transport):
    """Writes .eml files; never opens a socket. Thread-safe across instances."""

    name = "dryrun"
    real = False
    max_batch = 1000

    def __init__(self, outbox: Path | str, *, append: bool = False):
        self.outbox = Path(outbox)
        self.append = append
        self._folders: dict[str, _Folder] = {}
        self._seen: set[Path] = set()  # folders this instance started: never cleared twice

    @classmethod
    def from_settings(cls, settings: "Settings", **options: object) -> "DryRunTransport":
        kwargs: dict[str, object] = {"outbox": settings.outbox}
        kwargs.update(options)
        return cls(**kwargs)  # type: ignore[arg-type]

    def send(self, messages: Sequence["OutgoingMessage"], idempotency_key: str | None = None) -> list[SendResult]:
        results: list[SendResult] = []
        for msg in messages:
            folder = self._folder(msg)
            try:
                data = msg.as_bytes()
            except UNBUILDABLE as exc:
                results.append(unbuildable(msg, exc))
                continue
            with folder.lock:
                folder.last_number += 1
                number = folder.last_number
            filename = f"{number:05d}-{safe_name(msg.to_email, 'recipient')}.eml"
            if os.sep in filename or (os.altsep and os.altsep in filename):  # defence in depth; safe_name
                raise TransportError(f"refusing to write outside the outbox: {filename!r}")  # forbids them
            # A str path, never ``folder.path / filename``: pathlib (CPython 3.11) interns every
            # component, and the interpreter's table of interned strings never shrinks, so one
            # Path per reader made a dry run's peak memory step up with the list's size.
            target = os.path.join(folder.dirname, filename)
            try:
                with open(target, "wb") as out:
                    out.write(data)
            except OSError as exc:
                raise TransportError(f"cannot write the dry-run outbox: {exc.strerror or exc}",
                                     path=target) from None
            with folder.lock:
                folder.count += 1
                folder.total_bytes += len(data)
                folder.add_recipient(msg.to_email)
                folder.subject = msg.subject
                folder.dirty = True
            results.append(SendResult(msg.to_email, Status.SENT, provider_id=msg.message_id))
        return results

    def folder_for(self, slug: str) -> Path:
        """Where messages of the issue ``slug`` are written."""
        return self.outbox / safe_name(slug, "issue")

    def _folder(self, msg: "OutgoingMessage") -> _Folder:
        slug = msg.prepared.rendered.slug
        folder = self._folders.get(slug)
        if folder is not None:
            return folder
        path = self.folder_for(slug)
        with _OPEN_LOCK:
            try:
                path.mkdir(parents=True, exist_ok=True)
                key = path.resolve()
                folder = _OPEN.get(key)
                if folder is None:
                    folder = _Folder(path=path, slug=slug)
                    if self.append or key in self._seen:
                        self._resume(folder)
                    else:
                        self._clear(folder)
                    _OPEN[key] = folder
                self._seen.add(key)
            except OSError as exc:
                raise TransportError(f"cannot prepare the dry-run outbox: {exc.strerror or exc}",
                                     path=path) from None
            folder.users += 1
        self._folders[slug] = folder
        return folder

    @staticmethod
    def _clear(folder: _Folder) -> None:
        for entry in os.scandir(folder.path):
            if entry.is_file(follow_symlinks=False) and (entry.name == SUMMARY or _EML.match(entry.name)):
                os.unlink(entry.path)

    @staticmethod
    def _resume(folder: _Folder) -> None:
        numbers = [int(m.group(1)) for e in os.scandir(folder.path) if (m := _EML.match(e.name))]
        folder.last_number = max(numbers, default=0)
        summary_path = folder.path / SUMMARY
        try:
            old = json.loads(summary_path.read_text("utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(old, dict):
            folder.created = str(old.get("created") or folder.created)
            folder.count = int(old.get("count") or 0)
            folder.total_bytes = int(old.get("total_bytes") or 0)
            for r in old.get("recipients") or []:
                folder.add_recipient(str(r))
            folder.subject = str(old.get("subject") or "")

    def close(self) -> None:
        """Write each folder's summary.json (all instances' messages so far). Safe to call twice."""
        folders, self._folders = self._folders, {}
        for folder in folders.values():
            with folder.lock:
                if folder.dirty:
                    folder.write_summary()
                    folder.dirty = False
            with _OPEN_LOCK:
                folder.users -= 1
                if folder.users <= 0:
                    _OPEN.pop(folder.path.resolve(), None)
                    folder.recipients.close()
