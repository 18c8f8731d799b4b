"""``serve``'s several processes on one listening socket, so its requests use every core.

Python runs one thread of a process at a time, and ``serve`` answers requests on its loop's own
thread (:mod:`newsletter.web.inline`): one process keeps one core busy at most. So ``serve``
binds its socket, then starts ``NEWSLETTER_SERVE_PROCESSES - 1`` more processes of itself
that inherit the socket (its file descriptor, named in :data:`LISTEN_FDS`) and serve it too;
the kernel gives each new connection to one of them. The children are fresh interpreters
(``python -m newsletter … serve``), not forks: the parent already runs the signup mail's
thread, and a fork copies the locks other threads hold.

The parent watches its children. One that dies is started again, but not one that stopped
when asked (SIGTERM or SIGINT: a service stop or Ctrl-C reaches the parent too), nor one that dies at
once three times in a row (a configuration the parent has already checked, or a bug: the
parent serves on without it). When the parent ends, it stops its children; if it is killed,
the kernel ends them (``PR_SET_PDEATHSIG``).

Writes from the processes to one SQLite file wait in one line across them, see
:func:`newsletter.db.share_writer_line`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger("newsletter.web.server")

#: The environment variable that tells a child which inherited descriptors to serve.
LISTEN_FDS = "NEWSLETTER_SERVE_LISTEN_FDS"
PARENT = "NEWSLETTER_SERVE_PARENT"
#: A child that dies within this many seconds of its start counts as failing at start.
QUICK_DEATH_S = 5.0
QUICK_DEATHS = 3
#: How a child that was asked to stop ends: cleanly, or by the signal itself when it came during start-up.
ASKED_TO_STOP = (0, -signal.SIGTERM, -signal.SIGINT)


def inherited_sockets() -> list[socket.socket] | None:
    """The listening sockets a parent ``serve`` passed down, or None in a parent."""
    fds = os.environ.get(LISTEN_FDS)
    if not fds:
        return None
    return [socket.socket(fileno=int(fd)) for fd in fds.split(",")]


def child_command(root: Path, site: Path | None) -> list[str]:
    """How to start one more ``serve`` of this publication (it listens on the inherited socket)."""
    command = [sys.executable, "-m", "newsletter", "--root", str(root), "serve"]
    return command + (["--site", str(site)] if site is not None else [])


def die_with_parent() -> None:
    """Have the kernel end this child when its parent ends (Linux), and end now if it already has."""
    parent = int(os.environ.get(PARENT, "0"))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's stop() is all there is
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


class Children:
    """The other ``serve`` processes: started, restarted when one dies, stopped with the parent."""

    def __init__(self, command: Sequence[str], sockets: Sequence[socket.socket], count: int):
        self.command, self.count = list(command), count
        self.fds = [s.fileno() for s in sockets]
        self.procs: list[subprocess.Popen] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        for slot in range(self.count):
            threading.Thread(target=self._keep, args=(slot,), name=f"serve-child-{slot}", daemon=True).start()

    def _spawn(self) -> subprocess.Popen | None:
        """A new child, or None once stopping (checked under the lock :meth:`stop` takes, so none escapes it)."""
        env = dict(os.environ, **{LISTEN_FDS: ",".join(map(str, self.fds)), PARENT: str(os.getpid())})
        with self._lock:
            if self._stopping.is_set():
                return None
            proc = subprocess.Popen(self.command, env=env, pass_fds=self.fds, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL)
            self.procs.append(proc)
        return proc

    def _keep(self, slot: int) -> None:
        """Run one child, and another when it dies, until the parent stops."""
        quick = 0
        while True:
            started = time.monotonic()
            proc = self._spawn()
            if proc is None:
                return
            code = proc.wait()
            with self._lock:
                self.procs.remove(proc)
            if self._stopping.is_set() or code in ASKED_TO_STOP:
                return  # a service stop or Ctrl-C reaches every process, the parent too
            quick = quick + 1 if time.monotonic() - started < QUICK_DEATH_S else 0
            if quick >= QUICK_DEATHS:
                log.error("serve process %d exited at start %d times in a row (exit %s); not started again",
                          slot + 1, quick, code)
                return
            log.warning("serve process %d exited (exit %s); starting another", slot + 1, code)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every child to finish (SIGTERM, as a service stop does), then kill what is left."""
        self._stopping.set()
        with self._lock:
            procs = list(self.procs)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
