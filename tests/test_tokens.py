"""Reader tokens: opaque, strict, purpose-bound; old tokens until the documented cut-off."""

from __future__ import annotations

import random
import string
from datetime import datetime, timedelta, timezone

import pytest

from newsletter.tokens import (CONFIRM, LEGACY_CUTOFF, TOKEN_LENGTH, _legacy_token, make_token,
                               token_subscriber_id, verified_subscriber_id, verify_token)

SECRET = "s3cret-key-for-tokens"


def test_round_trip_and_shape():
    for sid in (1, 2, 3, 999, 2**40, 2**63 - 1):
        token = make_token(SECRET, sid, "a@example.org")
        assert len(token) == TOKEN_LENGTH and set(token) <= set(string.ascii_letters + string.digits + "-_")
        assert token_subscriber_id(SECRET, token) == sid
        assert verify_token(SECRET, token, "A@example.org")  # addresses compare case-insensitively
        assert not verify_token(SECRET, token, "b@example.org")
        assert not verify_token("other-secret", token, "a@example.org")


def test_tokens_do_not_reveal_sequential_ids():
    tokens = [make_token(SECRET, sid, "same@example.org") for sid in range(1, 201)]
    # The id part (first 8 bytes) of consecutive ids shares no common prefix pattern, and no
    # token starts with the id in any base.
    prefixes = {t[:4] for t in tokens}
    assert len(prefixes) > 190
    assert not any(t.startswith(("1.", "2.", "3.")) for t in tokens)
    # Without the key, the id cannot be read back.
    assert [token_subscriber_id("wrong", t) for t in tokens[:20]] != list(range(1, 21))


def test_purposes_do_not_mix():
    unsub = make_token(SECRET, 5, "a@example.org")
    confirm = make_token(SECRET, 5, "a@example.org", CONFIRM)
    assert unsub != confirm
    assert verify_token(SECRET, confirm, "a@example.org", CONFIRM)
    assert not verify_token(SECRET, confirm, "a@example.org")
    assert not verify_token(SECRET, unsub, "a@example.org", CONFIRM)


@pytest.mark.parametrize("sid", [0, -1, 2**63])
def test_make_token_refuses_ids_out_of_range(sid):
    with pytest.raises(ValueError):
        make_token(SECRET, sid, "a@example.org")


def test_legacy_tokens_until_the_cutoff():
    old = _legacy_token(SECRET, 7, "a@example.org")
    assert old.startswith("7.")
    before, after = LEGACY_CUTOFF - timedelta(days=1), LEGACY_CUTOFF + timedelta(seconds=1)
    assert token_subscriber_id(SECRET, old, now=before) == 7
    assert verify_token(SECRET, old, "a@example.org", now=before)
    assert not verify_token(SECRET, old, "a@example.org", CONFIRM, now=before)
    assert token_subscriber_id(SECRET, old, now=after) is None
    assert not verify_token(SECRET, old, "a@example.org", now=after)


HOSTILE = [
    "", ".", "-1.AAAAAAAAAAAAAAAAAAAAAA", "-1.x", "0.AAAAAAAAAAAAAAAAAAAAAA", "+1.AAAAAAAAAAAAAAAAAAAAAA",
    " 1.AAAAAAAAAAAAAAAAAAAAAA", "1 .AAAAAAAAAAAAAAAAAAAAAA", "0x1.AAAAAAAAAAAAAAAAAAAAAA", "1_0.AAAAAAAAAAAAAAAAAAAAAA",
    "zzzzzzzzzzzzz.AAAAAAAAAAAAAAAAAAAAAA", "1.AAAAAAAAAAAAAAAAAAAAAA=", "1..AAAAAAAAAAAAAAAAAAAAAA",
    "１.AAAAAAAAAAAAAAAAAAAAAA", "A" * 31, "A" * 33, "A" * 31 + "=", "A" * 31 + "\n", "A" * 31 + "é",
    "A" * 10_000, "9" * 10_000 + ".x", "1." + "A" * 21, "1\x00.AAAAAAAAAAAAAAAAAAAAAA", "Ａ" * 32,
]


@pytest.mark.parametrize("token", HOSTILE)
def test_hostile_tokens_are_rejected_by_shape(token):
    now = LEGACY_CUTOFF - timedelta(days=1)
    assert token_subscriber_id(SECRET, token, now=now) is None
    assert not verify_token(SECRET, token, "a@example.org", now=now)
    assert verified_subscriber_id(SECRET, token, lambda i: "a@example.org", now=now) is None


def test_thousands_of_random_tokens_never_verify():
    rng = random.Random(1234)
    alphabet = string.printable + "éü中\u2028\u0000=.-_"
    emails = {}
    for _ in range(5000):
        n = rng.choice([1, 10, 22, 31, 32, 33, 35, 100])
        token = "".join(rng.choice(alphabet) for _ in range(n))
        sid = token_subscriber_id(SECRET, token, now=datetime(2026, 1, 1, tzinfo=timezone.utc))
        assert sid is None or 0 < sid < 2**63
        assert verified_subscriber_id(SECRET, token, lambda i: emails.get(i, "a@example.org")) is None
    # Random printable text is almost never token-shaped; well-shaped random tokens reach the tag check.
    shaped = string.ascii_letters + string.digits + "-_"
    decoded = 0
    for _ in range(2000):
        token = "".join(rng.choice(shaped) for _ in range(TOKEN_LENGTH))
        decoded += token_subscriber_id(SECRET, token) is not None
        assert verified_subscriber_id(SECRET, token, lambda i: "a@example.org") is None
    assert decoded > 1000  # about half of all 64-bit values are in range: the tag, not the shape, refused them


def test_token_from_request_takes_the_words_in_any_case_and_only_token_shapes():
    from newsletter.tokens import token_from_request

    token = make_token(SECRET, 42, "a@example.org")
    for text in (token, f"  unsubscribe {token} ", f"UNSUBSCRIBE {token}",
                 f"mailto:leave@example.org?subject=Unsubscribe%20{token}"):
        assert token_from_request(text) == token
    legacy = "1a." + "b" * 22
    assert token_from_request(f"unsubscribe {legacy}") == legacy
    for text in ("unsubscribe 0a." + "b" * 22, "unsubscribe 1A." + "b" * 22, "unsubscribe " + token[:-1],
                 f"unsubscribe {token} please", "x" * 601):
        assert token_from_request(text) is None
