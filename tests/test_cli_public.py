"""`form-snippet`, `subscribers list --status pending`, and configuration header injection at the CLI."""

from __future__ import annotations

import subprocess
import sys

import lxml.html

from newsletter.clock import FakeClock
from newsletter.signups import Signups
from newsletter.store import SubscriberStore
from tests.helpers import run


def test_form_snippet_posts_to_the_public_server(publication_root):
    result = run(publication_root, "form-snippet", env={"NEWSLETTER_BASE_URL": "https://news.example.org"})
    assert result.exit_code == 0, result.output
    form = lxml.html.fromstring(result.output).xpath("//form")[0]
    assert form.get("action") == "https://news.example.org/subscribe" and form.get("method") == "post"
    names = {i.get("name") for i in form.xpath(".//input")}
    assert names == {"email", "name", "website"}  # no stamp: a static page cannot carry one
    assert all(form.xpath(f".//label[@for='{i.get('id')}']") for i in form.xpath(".//input"))


def test_form_snippet_needs_a_base_url(publication_root):
    result = run(publication_root, "form-snippet", env={"NEWSLETTER_BASE_URL": ""})
    assert result.exit_code == 3 and "base_url" in result.output


def test_list_pending(publication_root):
    store = SubscriberStore.open(publication_root / "newsletter.db")
    store.add("active@example.org")
    Signups(store, clock=FakeClock()).request("waiting@example.org", ip="192.0.2.1", source="t", consent="c")
    store.close()
    result = run(publication_root, "subscribers", "list", "--status", "pending")
    assert result.exit_code == 0 and result.output.split() == ["waiting@example.org", "pending"]


def test_crlf_in_base_url_stops_check_with_one_line_naming_the_key(publication_root):
    env = {"NEWSLETTER_BASE_URL": "https://news.example.org\r\nBcc: victim@example.org",
           "NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": "k", "PATH": "/usr/bin:/bin"}
    for args in (["check", "6"], ["send", "6", "--dry-run"]):
        result = subprocess.run([sys.executable, "-m", "newsletter", "--root", str(publication_root), *args],
                                env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 3, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "NEWSLETTER_BASE_URL" in lines[0] and "Traceback" not in result.stderr
        assert not (publication_root / "outbox").exists()
