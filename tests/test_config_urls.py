"""Header injection through configuration: every header-bound URL and address is checked at load."""

from __future__ import annotations

import pytest

from newsletter.config import load_settings
from newsletter.errors import ConfigError, HeaderInjectionError, InputError


@pytest.mark.parametrize("key, value", [
    ("NEWSLETTER_BASE_URL", "https://news.example.org\r\nBcc: victim@example.org"),
    ("NEWSLETTER_BASE_URL", "https://news.example.org\nX-Injected: 1"),
    ("NEWSLETTER_BASE_URL", "javascript:alert(1)"),
    ("NEWSLETTER_BASE_URL", "https://news.example.org/a>b"),
    ("NEWSLETTER_BASE_URL", "//news.example.org"),
    ("NEWSLETTER_BASE_URL", "https://user@news.example.org"),
    ("NEWSLETTER_BASE_URL", "https://news.example.org:99999"),
    ("NEWSLETTER_UNSUBSCRIBE_MAILTO", "unsub@example.org\r\nBcc: victim@example.org"),
    ("NEWSLETTER_UNSUBSCRIBE_MAILTO", "not an address"),
    ("NEWSLETTER_LOGO_URL", "https://cdn.example.org/logo.png\" onerror=\"x"),
    ("NEWSLETTER_REPLY_TO", "a@example.org\nX-Injected: 1"),
    ("NEWSLETTER_FROM", "Editor <a@example.org> <b@example.org>"),  # "Name <addr>" itself is accepted (issue 11, item 9)
    ("NEWSLETTER_FROM", "Editor <not an address>"),
    ("NEWSLETTER_NAME", "The Letter\r\nBcc: victim@example.org"),
    ("NEWSLETTER_LIST_ID", "news.example.org\u2028x"),
])
def test_bad_values_fail_at_load_naming_the_key(tmp_path, key, value):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={key: value})
    message = info.value.format_message()
    assert key in message and "\n" not in message and "\r" not in message


def test_bad_value_in_newsletter_toml_names_the_file(tmp_path):
    (tmp_path / "newsletter.toml").write_text('base_url = "https://x.example\\r\\nBcc: v@example.org"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={})
    assert "newsletter.toml" in info.value.format_message() and "base_url" in info.value.format_message()


def test_good_values_load(tmp_path):
    s = load_settings(tmp_path, environ={"NEWSLETTER_BASE_URL": "https://news.example.org/letters/",
                                         "NEWSLETTER_LOGO_URL": "https://cdn.example.org/logo.png?v=2",
                                         "NEWSLETTER_UNSUBSCRIBE_MAILTO": "unsub@example.org",
                                         "NEWSLETTER_FORM_ORIGINS": "https://www.example.org, http://localhost:8000"})
    assert s.publication.base_url == "https://news.example.org/letters"
    assert s.form_origins == ("https://www.example.org", "http://localhost:8000")


def test_form_origins_must_be_origins(tmp_path):
    s = load_settings(tmp_path, environ={"NEWSLETTER_FORM_ORIGINS": "https://www.example.org/page"})
    with pytest.raises(ConfigError, match="NEWSLETTER_FORM_ORIGINS"):
        s.form_origins


def test_list_unsubscribe_goes_through_the_header_check(tmp_path):
    """Even a value that slipped past config (built in code) cannot put a line break in the header."""
    from newsletter.config import Publication
    from newsletter.message import PreparedIssue
    from newsletter.render import RenderedEmail

    rendered = RenderedEmail(slug="x", number=1, title="T", subject="S", preheader="", html="<p>x</p>",
                             text="x", lang="en", reply_to=None, content_hash="h")
    pub = Publication(from_email="news@example.org", base_url="https://news.example.org")
    prepared = PreparedIssue(rendered, pub, "k")
    with pytest.raises(HeaderInjectionError):
        prepared.list_unsubscribe("tok\r\nBcc: victim@example.org")


ADDRESS_CORPUS = ["newsletter@chinaffairs.example", "a.b+c@Example.ORG", "sunchenghao@tsinghua.edu.cn", "a..b@x.org",
                  ".a@x.org", "a.@x.org", "a@-x.org", "a@x-.org", "a@x.123", "a@x", "a b@x.org", '"q"@x.org',
                  "a@bücher.example", "a@xn--bcher-kva.example", "a@localhost", "a@x.test", "a@x.invalid",
                  "x" * 64 + "@example.org", "x" * 65 + "@example.org", "a@" + "b" * 63 + ".org",
                  "a@" + "b" * 64 + ".org", "o'brien@example.ie", "a@b.c.d.e.f.g.h.i.example", "a@example.o"]


@pytest.mark.parametrize("address", ADDRESS_CORPUS)
def test_config_addresses_get_email_validators_decision_without_loading_it_for_plain_ones(address):
    """One address policy: settings get what every other address gets, email-validator's decision
    in its ASCII (xn--) form, plus RFC 5321's 64-octet local part, which email-validator 2 lets by;
    the start-up fast path changes nothing of it."""
    from email_validator import EmailNotValidError, validate_email

    from newsletter.addresses import validate_address
    from newsletter.config import check_address

    try:
        info = validate_email(address, check_deliverability=False, allow_smtputf8=False)
        expected = info.ascii_email or info.normalized
    except EmailNotValidError:
        expected = None
    if len(address.rpartition("@")[0].encode()) > 64:
        expected = None
    try:
        got = check_address("NEWSLETTER_FROM", address)
    except ConfigError:
        got = None
    assert got == expected
    try:
        assert validate_address(address) == expected
    except InputError:
        assert expected is None


def test_settings_repr_leaves_the_environment_and_its_secrets_out(tmp_path):
    settings = load_settings(tmp_path, environ={"POSTMARK_SERVER_TOKEN": "pm-token-1234567", "NEWSLETTER_NAME": "Letter"})
    shown = repr(settings)
    assert "pm-token-1234567" not in shown and "POSTMARK" not in shown
    assert shown.startswith("Settings(root=") and "name='Letter'" in shown  # the rest is still there to debug
