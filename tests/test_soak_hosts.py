"""The multi-process soak on PostgreSQL of issue 17 (the machinery is tests/soak.py): 3 `newsletter
worker` processes, each as its own host, and 1 `newsletter serve` as the least-privilege web role;
3,000 readers; an SMTP server on loopback answering one message in ten with a 4xx and dropping
connections; 10 SIGKILLs of random workers, a replacement started each time; 500 one-click
unsubscribes through serve meanwhile; a 15 s lease.

It must end with every reader sent exactly once or skipped because they had unsubscribed first;
nobody mailed after serve answered their unsubscribe; a second copy only for a message in flight
at a kill (at most the killed worker's connections per kill); each dead worker's readers taken
over within lease + 10 s; and `newsletter status` saying done.
"""

from __future__ import annotations

import pytest

from tests.soak import SoakPlan, run_soak


@pytest.mark.timeout(420)
def test_three_workers_and_serve_on_postgresql_survive_ten_sigkills(publication_root, pg_url, pg_web_url, tmp_path):
    plan = SoakPlan()
    result = run_soak(publication_root, pg_url, pg_web_url, tmp_path / "logs", plan)
    print("\n".join(result.lines()))
    assert result.problems() == []
    # The run really was the issue's: every kill happened, serve answered the unsubscribes, the
    # server refused some messages, and some readers were skipped for having unsubscribed first.
    assert result.kills == plan.kills and result.answered == plan.unsubscribes
    assert result.answered_before_done >= plan.unsubscribes // 2, "most unsubscribes came during the send"
    assert result.four_xx >= plan.readers * plan.temp_fail / 2
    assert 0 < result.skipped <= plan.unsubscribes
    assert result.states.get("sent", 0) + result.skipped == plan.readers
