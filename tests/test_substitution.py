"""Personalisation fills each placeholder once and never scans a filled-in value again (issue 16):
a reader named ``%%UNSUBSCRIBE_URL%%`` sees that text, not a link; and every path agrees: the
text and HTML parts, the SMTP bytes, the JSON bodies, a provider's batch body, the preview."""

from __future__ import annotations

import email
import json
from email import policy

import pytest

from newsletter.config import Publication
from newsletter.message import PreparedIssue, Recipient
from newsletter.mime import PLACEHOLDERS, fill, substitute
from newsletter.preview import SAMPLE_VALUES, fill_sample
from newsletter.render import RenderedEmail
from newsletter.transports import mailgun, sendgrid
from newsletter.transports.merge import merge_body

PUB = Publication(name="Subs", from_email="news@example.org", base_url="https://news.example.org")
#: Placeholders side by side, so a tag put in for one can meet the next one's text.
TEXT = "Hi %%NAME%%,\nyou are %%EMAIL%%.\nLeave: %%UNSUBSCRIBE_URL%%EMAIL%%\nEnd %%NAME%%NAME%%\n"
HTML = '<p>Hi %%NAME%%, you are %%EMAIL%%.</p><a href="%%UNSUBSCRIBE_URL%%">x</a>%%UNSUBSCRIBE_URL%%EMAIL%%'
HOSTILE = [f"{m} and {m.lower()}" for m in PLACEHOLDERS.values()] + ["%%NAME%%NAME%%", "%%%EMAIL%%%"]


def prepared() -> PreparedIssue:
    rendered = RenderedEmail(slug="subs", number=1, title="Subs", subject="Subs", preheader="", lang="en",
                             reply_to=None, content_hash="ab" * 32, html=HTML, text=TEXT)
    return PreparedIssue(rendered=rendered, publication=PUB, secret_key="k")


def single_pass(body: str, values: dict[str, str]) -> str:
    """The reference: markers found in the template only, by position, each replaced once."""
    out, i = [], 0
    markers = sorted(PLACEHOLDERS.items(), key=lambda kv: -len(kv[1]))
    while i < len(body):
        for key, marker in markers:
            if body.startswith(marker, i):
                out.append(values[key])
                i += len(marker)
                break
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


@pytest.mark.parametrize("name", HOSTILE)
def test_a_value_holding_a_placeholder_stays_literal_in_every_encoding(name):
    msg = prepared().personalise(Recipient("r@example.org", name, "tok"))
    values = msg.placeholder_values
    assert msg.text == single_pass(TEXT, values)
    parsed = email.message_from_bytes(msg.as_bytes(), policy=policy.default)
    text_part = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text_part == msg.text
    assert json.loads(b"".join(msg.text_json)) == msg.text
    assert json.loads(b"".join(msg.html_json)) == msg.html
    assert msg.text.count("https://news.example.org/unsubscribe/tok") == TEXT.count("%%UNSUBSCRIBE_URL%%")


@pytest.mark.parametrize("provider", [sendgrid, mailgun], ids=["sendgrid", "mailgun"])
def test_a_batch_body_puts_tags_exactly_where_the_placeholders_were(provider):
    """A tag the merge put in must not be taken for a placeholder by the next replacement
    (``%%UNSUBSCRIBE_URL%%EMAIL%%`` once became two tags with SendGrid's ``%%KEY:PART%%``)."""
    body = merge_body(prepared(), provider.tag)
    for part, template in (("text", TEXT), ("html", HTML)):
        expected = single_pass(template, {k: provider.tag(part, k) for k in PLACEHOLDERS})
        assert getattr(body, part) == expected


def test_the_preview_fills_in_one_pass():
    assert fill_sample(TEXT) == single_pass(TEXT, SAMPLE_VALUES)


def test_fill_and_substitute_agree_with_the_reference():
    values = {k: v for k, v in zip(PLACEHOLDERS, HOSTILE)}
    assert fill(TEXT, values.__getitem__) == single_pass(TEXT, values) == substitute(TEXT, values, escape=False)
