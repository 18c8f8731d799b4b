"""`newsletter serve` refuses what it cannot serve with at start, in one line, exit 3 (issue 16):
a host it cannot listen on, and a form origin that is not an origin."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("NEWSLETTER_", "SMTP_"))}


def serve(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "newsletter.toml").write_text('name = "X"\nfrom_email = "news@example.org"\n'
                                              'base_url = "https://news.example.org"\n')
    return subprocess.run([sys.executable, "-m", "newsletter", "--root", str(tmp_path), "serve", "--port", "0", *args],
                          env={**ENV, "NEWSLETTER_SECRET_KEY": "s" * 32, **env}, capture_output=True, text=True,
                          timeout=20)


@pytest.mark.parametrize("host", ["not_a_host", "", "999.1.1.1", "-x"])
def test_a_host_that_cannot_be_listened_on_is_one_line(tmp_path, host):
    result = serve(tmp_path, "--host", host)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "cannot listen on" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("origins", ["javascript:x", "https://ok.example, data:text/html,x", "ftp://x.example"])
def test_a_bad_form_origin_is_refused_at_start(tmp_path, origins):
    result = serve(tmp_path, NEWSLETTER_FORM_ORIGINS=origins)
    assert result.returncode == 3, result.stderr
    assert "NEWSLETTER_FORM_ORIGINS" in result.stderr and "Traceback" not in result.stderr
