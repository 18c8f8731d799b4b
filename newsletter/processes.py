"""Whether a process on this machine is still alive (for locks and files named after a pid)."""

from __future__ import annotations

import os


def pid_alive(pid: int | None) -> bool:
    """True unless ``pid`` is certainly gone (no such process, or a zombie)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed but not yet reaped child still answers kill(0): a zombie is dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True
