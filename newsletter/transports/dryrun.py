"""Dry-run transport: write every message to the outbox instead of sending it.

Each message becomes ``<outbox>/<slug>/<NNNNN>-<recipient>.eml`` holding exactly the
bytes an SMTP server would have received, so a dry run can be opened in any mail
client. ``summary.json`` in the same folder (count, recipients, total bytes,
subject, created time) is written on :meth:`close`.

A transport instance starts each issue folder afresh: files from an earlier dry run
(``NNNNN-*.eml`` and ``summary.json``, nothing else) are removed the first time the
folder is written to, unless ``append=True``, which continues the numbering and the
summary. This module never imports anything that talks to the network.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from newsletter.errors import InputError, TransportError
from newsletter.transports.base import SendResult, Status, Transport

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
    path: Path
    slug: str
    subject: str = ""
    created: str = field(default_factory=_now)
    count: int = 0
    total_bytes: int = 0
    recipients: list[str] = field(default_factory=list)
    last_number: int = 0
    dirty: bool = False

    def summary(self) -> dict[str, object]:
        return {
            "slug": self.slug,
            "subject": self.subject,
            "count": self.count,
            "total_bytes": self.total_bytes,
            "recipients": self.recipients,
            "created": self.created,
            "updated": _now(),
            "transport": "dryrun",
        }


class DryRunTransport(Transport):
    """Writes .eml files; never opens a socket."""

    name = "dryrun"
    real = False
    max_batch = 1000

    def __init__(self, outbox: Path | str, *, append: bool = False):
        self.outbox = Path(outbox)
        self.append = append
        self._folders: dict[str, _Folder] = {}

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
            except InputError as exc:  # e.g. a line break in this recipient's name or address
                results.append(SendResult(msg.to_email, Status.FAILED_PERMANENT, error=f"not sent: {exc.message}"))
                continue
            folder.last_number += 1
            filename = f"{folder.last_number:05d}-{safe_name(msg.to_email, 'recipient')}.eml"
            target = folder.path / filename
            if target.parent != folder.path:  # defence in depth; safe_name already forbids separators
                raise TransportError(f"refusing to write outside the outbox: {filename!r}")
            try:
                target.write_bytes(data)
            except OSError as exc:
                raise TransportError(f"cannot write the dry-run outbox: {exc.strerror or exc}",
                                     path=target) from None
            folder.count += 1
            folder.total_bytes += len(data)
            folder.recipients.append(msg.to_email)
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
        try:
            path.mkdir(parents=True, exist_ok=True)
            folder = _Folder(path=path, slug=slug)
            if self.append:
                self._resume(folder)
            else:
                self._clear(folder)
        except OSError as exc:
            raise TransportError(f"cannot prepare the dry-run outbox: {exc.strerror or exc}", path=path) from None
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
            folder.recipients = [str(r) for r in old.get("recipients") or []]
            folder.subject = str(old.get("subject") or "")

    def close(self) -> None:
        for folder in self._folders.values():
            if not folder.dirty:
                continue
            tmp = folder.path / (SUMMARY + ".tmp")
            tmp.write_text(json.dumps(folder.summary(), indent=2, ensure_ascii=False) + "\n", "utf-8")
            os.replace(tmp, folder.path / SUMMARY)
            folder.dirty = False
