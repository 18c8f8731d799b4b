"""Shared set-up for the benchmarks: the repo's publication and issue #6, rendered once."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
ISSUE6 = REPO / "issues" / "006-global-governance-of-ai.md"


def settings(environ: dict[str, str] | None = None):
    from newsletter.config import load_settings

    return load_settings(REPO, environ=environ if environ is not None else {"NEWSLETTER_BASE_URL": "https://chinaffairs.example"})


def rendered6(environ: dict[str, str] | None = None):
    from newsletter.render import render_issue

    return render_issue(ISSUE6, settings(environ))


def recipients(n: int):
    from newsletter.message import Recipient
    from newsletter.tokens import make_token

    return [Recipient(f"reader{i}@example.org", f"Reader {i}", make_token("bench", i, f"reader{i}@example.org"), i)
            for i in range(1, n + 1)]


def start_sink(script: str, what: str) -> tuple[subprocess.Popen, int]:
    """Start ``script --serve`` (a loopback server in its own process) and read its port.

    It stops when its stdin is closed: ``proc.stdin.close(); proc.wait()``.
    """
    proc = subprocess.Popen([sys.executable, script, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise SystemExit(f"the {what} did not start")
    return proc, int(line)


def seed_subscribers(db: Path | str, n: int, *, unsubscribe_every: int = 0) -> None:
    """A database of n generated readers (reader0000001@example.org …), filled in SQL, no Python list.

    With ``unsubscribe_every`` k, every k-th reader is unsubscribed. ``db`` is a SQLite path or a
    ``postgresql://`` URL (the same rows, from ``generate_series``).
    """
    from newsletter.db import backend
    from newsletter.schema import open_database

    conn = open_database(db)
    sqlite = backend(conn) == "sqlite"
    numbers = ("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?) " if sqlite else
               "WITH c(i) AS (SELECT generate_series(1, ?::bigint)) ")
    fmt = "printf('reader%07d@example.org', i), printf('Reader %d', i)" if sqlite else \
        "'reader' || lpad(i::text, 7, '0') || '@example.org', 'Reader ' || i"
    conn.execute("BEGIN")
    conn.execute(
        numbers + "INSERT INTO subscribers(email, name, status, created_at, changed_at) "
        f"SELECT {fmt}, "
        "CASE WHEN ? > 0 AND i % ? = 0 THEN 'unsubscribed' ELSE 'active' END, "
        "'2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z' FROM c",
        (n, unsubscribe_every, unsubscribe_every or 1))
    conn.execute("COMMIT")
    conn.close()


def timed(fn: Callable[[], object]) -> float:
    """Wall time of one call."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(rounds: int, contestants: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run the contestants in turn, ``rounds`` times, alternating who goes first.

    Each callable returns its own measurement. Interleaving puts every contestant
    through the same spells of machine load; report the medians, never the best.
    """
    names = list(contestants)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        for name in (names if i % 2 == 0 else names[::-1]):
            out[name].append(contestants[name]())
    return out


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """The median of the pairs' ratios: each pair shared the machine's load at that moment."""
    return statistics.median(a / b for a, b in zip(numerators, denominators))


def process_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for measured child processes: ours, with bytecode caching allowed.

    ``pip install`` compiles every module to .pyc, and Python reuses them; a
    ``PYTHONDONTWRITEBYTECODE`` inherited from a CI or sandbox shell would make each
    child compile all our sources again, measuring the compiler instead of the program.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra or {})
    return env


class Run(NamedTuple):
    wall: float  # seconds, exec to exit
    cpu: float  # user + system seconds of the process: less disturbed by other load than wall time
    peak_mb: float  # peak RSS
    stdout: str


def run_process(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """One whole process, measured; exits when it fails.

    CPU time and peak RSS are the child's own, from ``wait4`` on that process alone.
    ``env`` defaults to :func:`process_env`; pass one built with it.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=process_env() if env is None else env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read().decode(errors='replace')[-2000:]}")
        return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read().decode(errors="replace"))


NEWSLETTER = str(Path(sys.executable).parent / "newsletter")


@contextlib.contextmanager
def initialised_publication(prefix: str) -> Iterator[tuple[Path, Path]]:
    """A temporary directory with a publication made by ``newsletter init`` in ``pub/``.

    Yields ``(tmp, root)``; the directory is removed afterwards.
    """
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        root = tmp / "pub"
        run_process([NEWSLETTER, "init", str(root)])
        yield tmp, root
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
