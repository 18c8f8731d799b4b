"""scrub: one line, bounded, and no part of a configured secret, wherever it stands."""

from __future__ import annotations

import pytest

from newsletter.errors import register_secrets, scrub

SECRET = "sk-test-Zq81kL0vN2bXc7Hd"


@pytest.fixture(autouse=True)
def secret():
    register_secrets([SECRET])


@pytest.mark.parametrize("before", [0, 1, 1990, 1998, 1999, 2000, 2001, 2002, 5000])
def test_a_secret_is_never_partly_kept_at_the_cut(before):
    # A hostile reply can pad whitespace (collapsed later) so the secret straddles the work bound.
    out = scrub(" " * before + SECRET + " tail", limit=500)
    for k in range(4, len(SECRET) + 1):
        assert SECRET[:k] not in out, (before, out[-40:])


def test_secrets_inside_the_bound_become_stars_and_the_rest_stays():
    assert scrub(f"401 bad key '{SECRET}' from\r\n\x1b[31mserver") == "401 bad key '***' from [31mserver"
    assert scrub("x" * 3000, limit=10) == "x" * 10
