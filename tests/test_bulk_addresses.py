"""The import's fast address path decides exactly as email-validator (via normalise_email) does."""

from __future__ import annotations

import random

import pytest

from newsletter.bulk_addresses import AddressValidator
from newsletter.errors import InputError
from newsletter.addresses import normalise_email

CORPUS = [
    # plain, and the same domains again so the cache answers
    "ana@example.org", "Ana.Lopez@Example.ORG", "bo+tag@example.org", "o'hara@example.org",
    "=1+2@example.org", "-dash@example.org", "x@sub.example.org", "a_b@example.org", "{x}@example.org",
    "a!#$%&'*+/=?^_`{|}~-@example.org", "  padded@example.org  ", "\tpadded@example.org",
    # local parts email-validator treats specially
    '"quoted"@example.org', '"a b"@example.org', '"a\\"b"@example.org', "a..b@example.org", ".a@example.org",
    "a.@example.org", "a@@example.org", "@example.org", "example.org", "a b@example.org", "a(comment)@example.org",
    "ü@example.org", "josé@example.org", "李雷@example.org", "a\u200b@example.org", "a\x00@example.org",
    "a\r\nBcc: x@example.org", "a@example.org\n", "",
    # domains
    "a@bücher.example", "a@xn--bcher-kva.example", "a@XN--BCHER-KVA.EXAMPLE", "a@xn--ls8h.la", "a@xn--.example",
    "a@example.org.", "a@example..org", "a@-example.org", "a@example-.org", "a@exa_mple.org", "a@localhost",
    "a@example", "a@x.test", "a@x.local", "a@x.invalid", "a@x.onion", "a@1.2.3.4", "a@[1.2.3.4]",
    "a@[IPv6:::1]", "a@x.123", "a@123.org", "a@ex\u00e1mple.org", "a@EXAMPLE.org", "a@example.org>",
    "a@exam ple.org", "a@ＥＸＡＭＰＬＥ.org", "a@example.org,b@example.org",
    # lengths around the limits
    "x" * 64 + "@example.org", "x" * 65 + "@example.org", "x" * 60 + "@example.org", "x" * 61 + "@example.org",
    "a@" + ".".join(["d" * 63] * 3) + ".org", "a@" + ".".join(["d" * 63] * 4) + ".org",
    "a@" + "d" * 64 + ".org", "x" * 64 + "@" + ".".join(["d" * 60] * 3) + ".org",
    "b@" + ".".join(["d" * 49] * 4) + ".org", "x" * 40 + "@" + ".".join(["d" * 49] * 4) + ".org",
    "y" * 60 + "@" + "e" * 63 + "." + "f" * 63 + ".org", "z@" + "e" * 63 + "." + "f" * 63 + ".org",
    "a@" + "ü" * 20 + ".example", "b@" + "ü" * 60 + ".example",
]


def authority(raw: str) -> tuple[str, str]:
    try:
        return "ok", normalise_email(raw)
    except InputError as exc:
        return "error", str(exc)


def fast(validator: AddressValidator, raw: str) -> tuple[str, str]:
    try:
        return "ok", validator.normalise(raw)
    except InputError as exc:
        return "error", str(exc)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_decisions_and_messages_as_the_authority(seed):
    corpus = CORPUS * 2  # the second time round, most domains are cached
    random.Random(seed).shuffle(corpus)
    validator = AddressValidator()
    for raw in corpus:
        assert fast(validator, raw) == authority(raw), raw
    assert validator.fast > 0 and validator.slow > 0


def test_cached_domains_take_the_fast_path_and_idn_never_does():
    validator = AddressValidator()
    assert validator.normalise("first@Example.ORG") == "first@example.org"
    assert validator.normalise("second@Example.ORG") == "second@example.org"
    assert (validator.fast, validator.slow) == (1, 1)
    for local in ("a", "b", "c"):
        assert validator.normalise(f"{local}@bücher.example") == f"{local}@xn--bcher-kva.example"
    assert validator.slow == 4
    # an unusual local part on a cached domain still goes to the authority
    with pytest.raises(InputError, match="two periods"):
        validator.normalise("a..b@Example.ORG")
    assert validator.slow == 5
