"""A throwaway PostgreSQL cluster for the tests: loopback only, in a temporary folder,
run by an unprivileged user (PostgreSQL refuses to run as root).

Debian's ``postgresql`` package puts the server under ``/usr/lib/postgresql/<major>/bin``,
not on PATH; ``.ci/run`` installs it. Where it is missing, tests that need it are skipped
on a developer's machine and FAIL under CI (``CI=true``): a silently skipped backend is a
backend nobody tests.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

#: Who runs the server when the tests run as root: a dedicated account (.ci/run makes it),
#: else ``nobody``, which every Debian has.
SERVER_USERS = ("newsletter-pg", "nobody")
SUPERUSER = "newsletter"
START_TIMEOUT_S = 60


class ClusterUnavailable(RuntimeError):
    """PostgreSQL's server programs are not installed (or will not start) here."""


def server_bindir() -> Path:
    """The newest installed major version's bin/ holding initdb and pg_ctl."""
    root = Path("/usr/lib/postgresql")
    majors = sorted((p for p in root.glob("*") if (p / "bin" / "initdb").exists()),
                    key=lambda p: int(p.name) if p.name.isdigit() else 0) if root.is_dir() else []
    if majors:
        return majors[-1] / "bin"
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    raise ClusterUnavailable("PostgreSQL server programs not found (apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as() -> list[str]:
    """The command prefix that drops root to an unprivileged account (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    for name in SERVER_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"]
    raise ClusterUnavailable(f"no unprivileged account to run PostgreSQL ({', '.join(SERVER_USERS)})")


@dataclass
class Cluster:
    """A running cluster: the superuser's password is only in :attr:`password` and the URLs."""

    folder: Path
    port: int
    password: str
    bindir: Path
    prefix: list[str]

    def url(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{quote(user)}:{quote(secret, safe='')}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"),
                        "-m", "immediate", "-w", "stop"], capture_output=True, timeout=START_TIMEOUT_S)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_cluster() -> Cluster:
    """initdb and start a cluster on a free loopback port; password auth over TCP."""
    bindir = server_bindir()
    prefix = _run_as()
    folder = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
    password = secrets.token_urlsafe(16)
    (folder / "pw").write_text(password)
    if prefix:
        account = pwd.getpwnam(prefix[2])
        os.chown(folder, account.pw_uid, account.pw_gid)
        os.chown(folder / "pw", account.pw_uid, account.pw_gid)
    port = _free_port()
    data = folder / "data"
    steps = [
        [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--pwfile", str(folder / "pw"),
         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
        [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-t", str(START_TIMEOUT_S),
         "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200", "start"],
    ]
    for step in steps:
        done = subprocess.run([*prefix, *step], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = (folder / "log").read_text(errors="replace") if (folder / "log").exists() else ""
            shutil.rmtree(folder, ignore_errors=True)
            raise ClusterUnavailable(f"{Path(step[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}"
                                     f"\n{log[-2000:]}")
    (folder / "pw").unlink()
    return Cluster(folder, port, password, bindir, prefix)
