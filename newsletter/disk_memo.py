"""Small memos kept on disk between processes (build/.cache/), for derived data that a fresh
`newsletter build` would otherwise recompute: parsed CSS, compiled message catalogs.

Each table is one JSON file named by its kind and by a version string that names everything
its values depend on (the libraries that compute them), so an upgrade starts a new file
instead of trusting old answers. Values are computed by the real code on a miss and only
reused for the same key: a memo never changes what a build writes, only how often the work
is done. A missing, unreadable or read-only folder costs speed, never correctness.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from pathlib import Path
from typing import Any


class DiskMemo:
    """A key → JSON value table, loaded on first use and written back by :meth:`save`."""

    def __init__(self, folder: Path | None, kind: str, version: str, *, limit: int = 4096):
        tag = hashlib.sha256(version.encode("utf-8")).hexdigest()[:16]
        self.path = folder / f"{kind}-{tag}.json" if folder is not None else None
        self.limit = limit  # past this many entries the table starts afresh: it cannot grow without end
        self._table: dict[str, Any] | None = None
        self._dirty = False
        self._lock = threading.RLock()  # the live preview may rebuild in several threads

    def _entries(self) -> dict[str, Any]:
        with self._lock:
            if self._table is None:
                self._table = self._load()
            return self._table

    def _load(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # missing or damaged: computed again
        return loaded if isinstance(loaded, dict) else {}

    def get(self, key: str, shape: type | tuple[type, ...] = object) -> Any:
        """The stored value, or None (also when it is not of ``shape``: the file was edited by hand)."""
        value = self._entries().get(key)
        return value if isinstance(value, shape) else None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            table = self._entries()
            if len(table) >= self.limit:
                table.clear()
            table[key] = value
            self._dirty = True

    def save(self) -> None:
        """Write the table if it changed."""
        if not self._dirty or self.path is None:
            return
        with self._lock:
            self._dirty = False
            try:
                data = json.dumps(self._entries(), ensure_ascii=False).encode("utf-8")
            except ValueError:  # a value JSON cannot hold (a lone surrogate): not kept
                return
        _write_atomically(self.path, data)


def read_blob(folder: Path | None, name: str) -> bytes | None:
    """A file kept by :func:`write_blob` (its name must say everything its bytes depend on), or None."""
    if folder is None:
        return None
    try:
        return (folder / name).read_bytes()
    except OSError:
        return None


def write_blob(folder: Path | None, name: str, data: bytes) -> None:
    if folder is not None:
        _write_atomically(folder / name, data)


def _write_atomically(path: Path, data: bytes) -> None:
    """A reader sees the old file or the new one, never half of one; failing to write is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError:
        pass  # a read-only checkout still builds, just without the memo


def package_version(name: str) -> str:
    """The installed version of package ``name`` (import name), without importing it.

    Read from the name of its ``.dist-info`` folder beside it (what pip writes), plus the
    size and time of its ``__init__``, so a reinstall or an edited checkout is a new version
    too. ``importlib.metadata`` would answer the same but costs more than it saves here."""
    spec = importlib.util.find_spec(name)
    origin = spec.origin if spec is not None else None
    if not origin:
        return f"{name} (not found)"
    source = Path(origin)
    site = source.parent.parent
    wanted = name.lower().replace("-", "_")
    try:
        dist = sorted(e.name for e in os.scandir(site) if e.name.endswith(".dist-info")
                      and e.name.lower().replace("-", "_").startswith(wanted + "_"))
        stat = source.stat()
    except OSError:
        return f"{name} {origin}"
    return f"{name} {'|'.join(dist)} {origin} {stat.st_size} {stat.st_mtime_ns}"
