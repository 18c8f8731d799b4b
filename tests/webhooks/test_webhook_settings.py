"""The settings webhooks read, and the production fetcher's own refusals."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from newsletter.config import load_settings
from newsletter.errors import ConfigError
from newsletter.webhooks import fetch_https


def settings(env):
    return load_settings(Path("/nonexistent-root"), environ=env)


def test_soft_bounce_policy_defaults_and_overrides():
    assert settings({}).soft_bounce_policy.limit == 3
    assert settings({}).soft_bounce_policy.window == timedelta(days=30)
    policy = settings({"NEWSLETTER_SOFT_BOUNCE_LIMIT": "5", "NEWSLETTER_SOFT_BOUNCE_WINDOW": "14"}).soft_bounce_policy
    assert (policy.limit, policy.window) == (5, timedelta(days=14))


@pytest.mark.parametrize("env", [{"NEWSLETTER_SOFT_BOUNCE_LIMIT": "0"}, {"NEWSLETTER_SOFT_BOUNCE_LIMIT": "2.5"},
                                 {"NEWSLETTER_SOFT_BOUNCE_WINDOW": "soon"}])
def test_bad_soft_bounce_settings_are_one_line_config_errors(env):
    with pytest.raises(ConfigError) as err:
        settings(env).soft_bounce_policy
    assert "\n" not in str(err.value) and "NEWSLETTER_SOFT_BOUNCE" in str(err.value)


def test_topic_allow_list_takes_commas_and_spaces():
    env = {"SES_SNS_TOPIC_ARNS": " arn:aws:sns:eu-west-1:1:a,arn:aws:sns:eu-west-1:1:b  arn:aws:sns:eu-west-1:1:c,"}
    assert settings(env).ses_topic_arns == {f"arn:aws:sns:eu-west-1:1:{x}" for x in "abc"}
    assert settings({}).ses_topic_arns == frozenset()


@pytest.mark.parametrize("url", ["http://sns.eu-west-1.amazonaws.com/x.pem", "file:///etc/passwd", "ftp://x/y"])
def test_production_fetcher_refuses_anything_but_https(url):
    with pytest.raises(ValueError):
        fetch_https(url)
