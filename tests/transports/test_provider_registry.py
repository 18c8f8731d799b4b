"""Adding an HTTP provider is adding its module (issue 19): the registry finds it by name, its
settings (``<NAME>_API_KEY``, ``<NAME>_API_URL``) and the scrubbing of its key follow from the
name, and the shared send sequence does the rest. Nothing else in the package lists providers."""

from __future__ import annotations

import sys
import textwrap

import pytest

import newsletter.transports as transports
from newsletter.errors import ConfigError
from newsletter.transports import get_transport, transport_class, transport_names
from newsletter.transports.base import Status

ACME = '''
"""Acme Mail: POST /v1/send, one message a request (a provider made up for this test)."""
from newsletter.transports.http import HTTPTransport, Payload, mailbox


class AcmeTransport(HTTPTransport):
    name = "acme"
    default_api_url = "https://api.acme.invalid"
    path = "/v1/send"
    auth_header = ("Authorization", "Bearer {key}")

    def message_payload(self, m, idempotency_key):
        return Payload(json={"to": mailbox(m.recipient.name, m.to_email), "subject": m.subject,
                             "html": self.bodies(m)[0]})

    def provider_id(self, response):
        return response.json()["id"]
'''


@pytest.fixture
def acme(tmp_path, monkeypatch):
    (tmp_path / "acme.py").write_text(textwrap.dedent(ACME))
    monkeypatch.setattr(transports, "__path__", [*transports.__path__, str(tmp_path)])
    yield
    sys.modules.pop("newsletter.transports.acme", None)


def test_every_provider_module_is_found_by_name_and_nothing_else_is():
    assert transport_names() == ["brevo", "dryrun", "mailgun", "null", "postmark", "resend", "sendgrid", "ses",
                                 "smtp"]
    for name in transport_names():
        assert transport_class(name).name == name


@pytest.mark.parametrize("name", ["http", "base", "merge", "ratelimit", "../config", "Postmark ", ""])
def test_a_name_that_is_not_a_transport_is_refused_with_the_list(name, make_settings):
    with pytest.raises(ConfigError, match="is not one of: brevo, dryrun"):
        get_transport(make_settings({"NEWSLETTER_TRANSPORT": name}), name or "nothing")


def test_a_new_provider_is_one_module(acme, fake_api, make_settings, make_messages):
    assert "acme" in transport_names()
    key = "acme-7Hq2Lx9Vb4Nm1Kp8"
    fake_api.handler = lambda req: (200, {"id": "acme-1"}, {}) if req.headers["Authorization"] == f"Bearer {key}" \
        else (401, {"message": f"bad key {key}"}, {})
    settings = make_settings({"NEWSLETTER_TRANSPORT": "acme", "ACME_API_KEY": key, "ACME_API_URL": fake_api.url})
    with get_transport(settings) as transport:
        (result,) = transport.send(make_messages(1))
    assert (result.status, result.provider_id) == (Status.SENT, "acme-1")
    assert fake_api.requests[0].path == "/v1/send"
    assert key in settings.secret_values()  # scrubbed from every stored or printed error
    with pytest.raises(ConfigError, match="ACME_API_KEY"):
        get_transport(make_settings({"NEWSLETTER_TRANSPORT": "acme"}))
