"""The real MTA that `.ci/postfix` sets up: Debian's Postfix on 127.0.0.1 (STARTTLS with a CA
made at set-up, AUTH through Dovecot, delivery to one Maildir), for tests/transports/test_mta.py.

    from tests.mta import find_mta

    mta = find_mta()                 # skips outside CI when absent; fails under CI=true
    env = mta.env()                  # SMTP_* settings for load_settings / the CLI
    mta.wait_for(addresses)          # {address: [raw message bytes, ...]} once all arrived

``NEWSLETTER_TEST_MTA`` names the settings file (default: the one `.ci/postfix` writes).
Every test uses its own local parts (:meth:`PostfixMTA.addresses`), so tests and runs never
see each other's mail; Postfix's own ``Delivered-To`` header says whom a message was for.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Iterator

import pytest

DEFAULT_ENV_FILE = "/var/lib/newsletter-ci/mta/mta.env"
WAIT = 60.0  # seconds for Postfix to deliver what it accepted


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@dataclass
class PostfixMTA:
    host: str
    port: int
    rate_port: int
    rate_limit: int
    rate_unit: float
    helo_port: int
    ca_file: str
    username: str
    password: str
    domain: str
    maildir: Path
    lock_path: Path = Path("/tmp/newsletter-ci-mta.lock")

    def env(self, port: int | None = None, **extra: str) -> dict[str, str]:
        """SMTP_* settings for this server: STARTTLS (verified against the set-up's CA) and AUTH."""
        return {"NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": self.host, "SMTP_PORT": str(port or self.port),
                "SMTP_SECURITY": "starttls", "SMTP_CA_FILE": self.ca_file, "SMTP_USERNAME": self.username,
                "SMTP_PASSWORD": self.password, "SMTP_HELO_NAME": "ci.newsletter.test", "SMTP_TIMEOUT": "10",
                **extra}

    def addresses(self, n: int, prefix: str = "r") -> list[str]:
        """``n`` addresses no other test or run uses (a local part starting "unknown" is refused)."""
        tag = uuid.uuid4().hex[:10]
        return [f"{prefix}{tag}-{i:05d}@{self.domain}" for i in range(n)]

    def delivered(self, addresses: list[str]) -> dict[str, list[bytes]]:
        """The messages in the Maildir for each of ``addresses`` (by Postfix's Delivered-To)."""
        wanted = {a.lower() for a in addresses}
        out: dict[str, list[bytes]] = {a.lower(): [] for a in addresses}
        for sub in ("new", "cur"):
            folder = self.maildir / sub
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                try:
                    raw = path.read_bytes()
                except FileNotFoundError:  # moved from new/ to cur/ meanwhile
                    continue
                to = (BytesHeaderParser().parsebytes(raw).get("Delivered-To") or "").strip().lower()
                if to in wanted:
                    out[to].append(raw)
        return out

    def wait_for(self, addresses: list[str], *, at_least: int = 1) -> dict[str, list[bytes]]:
        """Poll the Maildir until every address has ``at_least`` messages (bounded by :data:`WAIT`),
        then give Postfix a moment to show any duplicate."""
        deadline = time.monotonic() + WAIT
        while True:
            got = self.delivered(addresses)
            if all(len(v) >= at_least for v in got.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.flush()
        return self.delivered(addresses)

    def flush(self) -> None:
        """Wait (bounded) until Postfix's queue is empty: everything accepted is delivered."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            out = subprocess.run(["postqueue", "-j"], capture_output=True, text=True, timeout=30).stdout
            if not out.strip():
                return
            time.sleep(0.2)

    @contextmanager
    def exclusive(self) -> Iterator["PostfixMTA"]:
        """One test at a time on this machine's Postfix (several checkouts may run their suites
        at once, and one test stops Postfix): an exclusive lock beside the settings file."""
        with open(self.lock_path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def postfix(self, action: str) -> None:
        """``postfix stop`` / ``start`` (as root, as `.ci/postfix` does)."""
        subprocess.run(["postfix", action], check=True, capture_output=True, timeout=60)
        if action == "start":
            deadline = time.monotonic() + 30
            while not _listening(self.host, self.port):
                assert time.monotonic() < deadline, "Postfix did not listen again within 30 s"
                time.sleep(0.1)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def find_mta() -> PostfixMTA:
    """The MTA `.ci/postfix` set up; outside CI a missing one skips, under CI=true it fails."""
    path = Path(os.environ.get("NEWSLETTER_TEST_MTA") or DEFAULT_ENV_FILE)
    problem = None
    values: dict[str, str] = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            name, sep, value = line.partition("=")
            if sep:
                values[name.strip()] = value.strip()
    except OSError as exc:
        problem = f"no MTA settings at {path} ({exc.strerror}); run `sudo .ci/postfix`"
    if problem is None:
        try:
            mta = PostfixMTA(
                host=values["MTA_HOST"], port=int(values["MTA_PORT"]), rate_port=int(values["MTA_RATE_PORT"]),
                rate_limit=int(values["MTA_RATE_LIMIT"]), rate_unit=float(values["MTA_RATE_UNIT"]),
                helo_port=int(values["MTA_HELO_PORT"]), ca_file=values["MTA_CA_FILE"],
                username=values["MTA_USERNAME"],
                password=Path(values["MTA_PASSWORD_FILE"]).read_text(encoding="utf-8").strip(),
                domain=values["MTA_DOMAIN"], maildir=Path(values["MTA_MAILDIR"]))
        except (KeyError, ValueError, OSError) as exc:
            problem = f"MTA settings at {path} are incomplete or unreadable ({exc}); run `sudo .ci/postfix`"
    if problem is None and not _listening(mta.host, mta.port):
        problem = f"Postfix is not listening on {mta.host}:{mta.port}; run `sudo .ci/postfix`"
    if problem is not None:
        if _in_ci():
            pytest.fail(f"CI=true but the real MTA is missing: {problem}", pytrace=False)
        pytest.skip(problem)
    return mta
