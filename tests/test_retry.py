"""Issue 19: the retry policy lives in one module, newsletter/retry.py; nothing else defines it."""

from __future__ import annotations

import re
from pathlib import Path

from newsletter import outcome, pacing, retry
from newsletter.config import load_settings
from newsletter.delivery import DeliveryOptions
from newsletter.transports import ratelimit

PACKAGE = Path(retry.__file__).resolve().parent
POLICY = ("BACKOFF_BASE", "BACKOFF_FACTOR", "BACKOFF_CAP", "DEFAULT_RETRY_WINDOW", "RATE_LIMIT_WAIT",
          "UNCERTAIN_RESENDS", "DEFAULT_MAX_WAIT", "MAX_PAUSE", "DEFAULT_PAUSE", "IN_SEND_RETRIES", "RETRIES")


def test_no_other_module_defines_a_number_of_the_retry_policy():
    defined = re.compile(rf"^(?:{'|'.join(POLICY)})\s*(?::[^=]*)?=\s*[0-9(]", re.MULTILINE)
    elsewhere = [f"{p.relative_to(PACKAGE)}: {m.group(0)}" for p in PACKAGE.rglob("*.py") if p.name != "retry.py"
                 for m in defined.finditer(p.read_text(encoding="utf-8"))]
    assert elsewhere == []
    assert "def backoff_delay" not in (PACKAGE / "pacing.py").read_text(encoding="utf-8")


def test_the_old_names_are_the_policy_itself():
    assert pacing.backoff_delay is retry.backoff_delay and outcome.Policy is retry.RetryPolicy
    assert (outcome.DEFAULT_RETRY_WINDOW, outcome.UNCERTAIN_RESENDS) == (retry.DEFAULT_RETRY_WINDOW,
                                                                         retry.UNCERTAIN_RESENDS)
    assert ratelimit.RETRIES == retry.IN_SEND_RETRIES
    assert ratelimit.RateLimiter().max_pause == retry.MAX_PAUSE


def test_the_settings_are_read_in_one_place(tmp_path):
    settings = load_settings(tmp_path, environ={"NEWSLETTER_RETRY_WINDOW": "2", "NEWSLETTER_FOREGROUND_WAIT": "7"})
    assert retry.settings(settings) == {"retry_window": 7200.0, "max_wait": 7.0}
    options = DeliveryOptions.from_settings(settings)
    assert (options.retry_window, options.max_wait) == (7200.0, 7.0)
    assert options.policy == retry.RetryPolicy(retry_window=7200.0)
    # An explicit override still wins over the settings.
    assert DeliveryOptions.from_settings(settings, max_wait=0.0).max_wait == 0.0
