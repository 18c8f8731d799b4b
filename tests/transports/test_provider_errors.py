"""What is kept of a provider's error: HTTP status, the provider's code, its message with every
token-like run masked. A provider that echoes the API key base64- or hex-encoded, re-cased or
split with a space must not get any of those forms into the ledger (issue 16)."""

from __future__ import annotations

import base64
import json

import pytest

from newsletter.errors import TransportError
from newsletter.transports import get_transport
from newsletter.transports.base import Status
from tests.provider_emulator import PROVIDERS, env

#: A key shaped like the providers' (random letters and digits: a masking rule can tell a token from
#: a word, not a word-like key from a word).
KEY = "re_9Fq2LmZ8vT4kW1pXy7Bn3Hc6Jd5s"

#: The forms of the key a careless provider might echo.
FORMS = {
    "base64": base64.b64encode(KEY.encode()).decode(),
    "base64url": base64.urlsafe_b64encode(KEY.encode()).decode().rstrip("="),
    "hex": KEY.encode().hex(),
    "upper": KEY.upper(),
    "lower": KEY.lower(),
    **{f"split at {i}": f"{KEY[:i]} {KEY[i:]}" for i in (1, 4, 7, 8, 11, 16, 23, len(KEY) - 8, len(KEY) - 2)},
}


def leaks(text: str) -> list[str]:
    """Every form of the key, or run of 8 characters of it in any case, found in ``text``."""
    low = text.lower()
    found = [name for name, form in FORMS.items() if form.lower() in low and " " not in form]
    found += [KEY[i:i + 8] for i in range(len(KEY) - 7) if KEY[i:i + 8].lower() in low]
    for encoded in (FORMS["base64"], FORMS["hex"]):
        found += [encoded[i:i + 12] for i in range(len(encoded) - 11) if encoded[i:i + 12].lower() in low]
    return found


def transport(provider: str, url: str, make_settings):
    settings = {name: KEY if name.endswith(("_KEY", "_TOKEN")) and "ACCESS_KEY_ID" not in name else value
                for name, value in env(provider, url).items()}
    return get_transport(make_settings(settings), provider, concurrency=1)


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_refusal_echoing_the_key_in_any_form_keeps_none_of_it(provider, form, fake_api, make_messages,
                                                              make_settings):
    echo = f"Invalid request for key {FORMS[form]} (check it)"
    fake_api.handler = lambda req: (400, {"message": echo, "code": "invalid_parameter"}, {})
    with transport(provider, fake_api.url, make_settings) as t:
        (result,) = t.send(make_messages(1))
    assert result.status is Status.FAILED_PERMANENT
    code = "" if provider in ("postmark", "ses") else "invalid_parameter: "  # they carry codes elsewhere
    assert result.error.startswith(f"{provider}: HTTP 400: {code}Invalid request for key ")
    if not form.startswith("split"):  # a split leaves a piece under 8 characters readable
        assert result.error == f"{provider}: HTTP 400: {code}Invalid request for key *** (check it)"
    assert not leaks(result.error), (result.error, leaks(result.error))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_refused_login_echoing_the_key_encoded_keeps_none_of_it(provider, fake_api, make_messages, make_settings):
    fake_api.handler = lambda req: (401, {"message": f"bad key {FORMS['base64']} / {FORMS['split at 8']}"}, {})
    with transport(provider, fake_api.url, make_settings) as t, pytest.raises(TransportError) as caught:
        t.send(make_messages(1))
    assert "HTTP 401" in str(caught.value) and not leaks(str(caught.value))


def test_the_record_is_bounded_and_a_code_that_is_not_an_identifier_is_dropped(fake_api, make_messages,
                                                                              make_settings):
    fake_api.handler = lambda req: (422, {"code": FORMS["hex"], "message": "x " * 5000}, {})
    with transport("brevo", fake_api.url, make_settings) as t:
        (result,) = t.send(make_messages(1))
    assert result.error.startswith("brevo: HTTP 422: x x") and len(result.error) <= 300
    assert not leaks(result.error)


def test_per_message_errors_in_a_batch_reply_are_masked_too(fake_api, make_messages, make_settings):
    # Postmark answers 200 with one entry per message; Resend (permissive) lists errors by index.
    fake_api.handler = lambda req: (200, [{"ErrorCode": 300, "Message": f"Invalid 'To' ({FORMS['hex']})"}], {})
    with transport("postmark", fake_api.url, make_settings) as t:
        (result,) = t.send(make_messages(1))
    assert result.status is Status.FAILED_PERMANENT and "ErrorCode 300" in result.error
    assert not leaks(result.error)
    fake_api.handler = lambda req: (200, {"data": [], "errors": [{"index": 0, "message": FORMS["upper"]}]}, {})
    with transport("resend", fake_api.url, make_settings) as t:
        (result,) = t.send(make_messages(1))
    assert result.status is Status.FAILED_PERMANENT and not leaks(result.error)


def test_ordinary_provider_words_stay_readable(fake_api, make_messages, make_settings):
    fake_api.handler = lambda req: (400, {"errors": [{"field": "from.email", "message": "The from email does not "
                                                                                      "contain a valid address."}]}, {})
    with transport("sendgrid", fake_api.url, make_settings) as t:
        (result,) = t.send(make_messages(1))
    assert result.error == "sendgrid: HTTP 400: The from email does not contain a valid address."
    assert json.dumps(result.error)
