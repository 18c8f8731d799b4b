"""SpamAssassin scores the Chinese email as it scores the English one: at most 0.5 points.

Skipped where SpamAssassin is not installed (.ci/run installs Debian's); local tests only (-L)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from newsletter.editions import load_editions, render_editions
from newsletter.sendplan import dry_run_all, prepare_editions
from newsletter.store import SubscriberStore
from tests.editions_fixtures import MAIN, bilingual_publication, bilingual_settings

pytestmark = pytest.mark.skipif(shutil.which("spamassassin") is None, reason="SpamAssassin is not installed")


def spam_score(message: Path, home: Path) -> float:
    done = subprocess.run(["spamassassin", "-t", "-L"], input=message.read_bytes(), capture_output=True,
                          timeout=120, env={"HOME": str(home), "PATH": "/usr/bin:/bin"}, check=False)
    m = re.search(rb"Content analysis details:\s+\((-?[\d.]+) points", done.stdout)
    assert m, done.stdout[-500:] + done.stderr[-500:]
    return float(m.group(1))


def test_both_editions_score_at_most_half_a_point(tmp_path):
    settings = bilingual_settings(bilingual_publication(tmp_path / "pub"))
    with SubscriberStore.open(settings.db_path) as store:
        store.add("en@example.org", "Jane Doe", lang="en")
        store.add("zh@example.org", "张伟", lang="zh-CN")
    eds = load_editions(settings.issues_dir / MAIN, "en")
    prepared = prepare_editions(settings, eds, render_editions(eds, settings))
    assert dry_run_all(settings, prepared.rendered, prepared=prepared).editions == {"": 1, "zh-Hans": 1}
    outbox = settings.outbox / "bilingual-test"
    scores = {address: spam_score(next(outbox.glob(f"*-{address}.eml")), tmp_path)
              for address in ("en@example.org", "zh@example.org")}
    assert all(score <= 0.5 for score in scores.values()), scores
