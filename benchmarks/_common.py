"""Shared set-up for the benchmarks: the repo's publication and issue #6, rendered once."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

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


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Best wall time of ``repeats`` runs: the least disturbed by other load."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
