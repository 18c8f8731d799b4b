"""The payload corpus (tests/data/webhooks, written from each provider's documentation):
every documented event type, per-attempt temporary failures, legacy formats and mixed
batches, posted to the real serve app signed or authenticated as each provider does it,
asserting the HTTP status and every reader's status afterwards (issue 22)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from tests.webhooks.kits import KITS, NOW, READERS, Keys, Signed, hmac_hex

CORPUS = Path(__file__).resolve().parent.parent / "data" / "webhooks"
PROVIDERS = ("postmark", "sendgrid", "mailgun", "resend", "brevo", "ses")


def cases() -> list:
    out = []
    for name in PROVIDERS:
        doc = json.loads((CORPUS / f"{name}.json").read_text(encoding="utf-8"))
        assert doc["provider"] == name
        for case in doc["cases"]:
            out.append(pytest.param(name, case, doc["sources"], id=f"{name}: {case['name']}"))
    return out


def sign(provider: str, keys: Keys, request: dict, ident: str) -> Signed:
    kit = KITS[provider](keys)
    if "form" in request:  # Mailgun's legacy webhooks: the signature fields among the form's
        stamp, token = str(int(NOW.timestamp())), hashlib.sha256(ident.encode()).hexdigest()[:50]
        fields = {**request["form"], "timestamp": stamp, "token": token,
                  "signature": hmac_hex(keys.mailgun, stamp + token)}
        if request.get("multipart"):
            prepared = requests.Request("POST", "http://x/", files={k: (None, v) for k, v in fields.items()}).prepare()
            return Signed(prepared.body, {"Content-Type": prepared.headers["Content-Type"]})
        return Signed(urlencode(fields).encode(), {"Content-Type": "application/x-www-form-urlencoded"})
    if "sns" in request:
        envelope = dict(request["sns"])
        if not isinstance(envelope.get("Message"), str):
            envelope["Message"] = json.dumps(envelope["Message"])
        return kit.sign(envelope, at=NOW)
    payload = request["json"]
    if provider == "mailgun":
        return kit.sign(payload, at=NOW, token=hashlib.sha256(ident.encode()).hexdigest()[:50])
    if provider == "resend":  # Svix: one message id per delivery of an event
        body, stamp, msg_id = json.dumps(payload).encode(), str(int(NOW.timestamp())), "msg_" + ident
        key = base64.b64decode(keys.resend.removeprefix("whsec_"))
        mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        return Signed(body, {"svix-id": msg_id, "svix-timestamp": stamp, "Content-Type": "application/json",
                             "svix-signature": "v1," + base64.b64encode(mac).decode()})
    return kit.sign(payload, at=NOW)


@pytest.mark.parametrize("provider, case, sources", cases())
def test_corpus(make_site, keys, sns, provider: str, case: dict[str, Any], sources: dict[str, str]):
    assert case["source"] in sources and sources[case["source"]].startswith("https://")  # cited
    site = make_site()
    for i, request in enumerate(case["requests"]):
        signed = sign(provider, keys, request, f"{provider}-{case['name']}-{i}".replace(" ", "-"))
        for _ in range(1 + request.get("repeat", 0)):  # "repeat": the very same bytes again (a lost answer)
            r = site.post(provider, signed.body, signed.headers)
            assert r.status_code == request.get("status", 200), (i, r.status_code, r.text)
    expected = {email: "active" for email in READERS}
    expected.update(case["expect"])
    assert site.statuses() == expected


def test_the_corpus_covers_every_provider_and_kind_of_case():
    names = {p: [c.values[1]["name"] for c in cases() if c.values[0] == p] for p in PROVIDERS}
    assert all(len(v) >= 6 for v in names.values()), names
    assert any("legacy" in n for n in names["mailgun"])
    assert all(any("batch" in n or "per message" in n or "attempt" in n for n in v) for v in names.values()), names
