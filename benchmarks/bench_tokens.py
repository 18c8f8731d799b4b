"""Reader tokens: the opaque format (encrypted id + keyed BLAKE2b tag) against the old
``<id>.<HMAC>`` one, side by side in one run, and both against building the message itself.

    python benchmarks/bench_tokens.py
"""

from __future__ import annotations

from _common import median, recipients, rendered6, settings, timed

N = 20_000


def median_of(rounds: int, fn) -> float:  # noqa: ANN001
    """The median wall time of ``rounds`` calls (never the best: see the benchmarks' README)."""
    return median([timed(fn) for _ in range(rounds)])


def main() -> None:
    from newsletter.message import PreparedIssue
    from newsletter.tokens import _legacy_token, make_token, verify_token

    secret = "k" * 32
    new = median_of(5, lambda: [make_token(secret, i, "reader@example.org") for i in range(1, N + 1)])
    old = median_of(5, lambda: [_legacy_token(secret, i, "reader@example.org") for i in range(1, N + 1)])
    token = make_token(secret, 12345, "reader@example.org")
    verify = median_of(5, lambda: [verify_token(secret, token, "reader@example.org") for _ in range(N)])
    prepared = PreparedIssue(rendered6(), settings().publication, secret)
    people = recipients(2_000)
    build = median_of(3, lambda: [prepared.personalise(r).as_bytes() for r in people]) / len(people) * N
    print(f"{N} tokens: new {new * 1e6 / N:.1f} us, old {old * 1e6 / N:.1f} us each (new/old {new / old:.2f}x); "
          f"verify {verify * 1e6 / N:.1f} us; token share of a personalised message: {new / (new + build):.1%}")


if __name__ == "__main__":
    main()
