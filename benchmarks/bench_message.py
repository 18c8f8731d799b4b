"""Personalisation: prepared-bytes substitution vs an EmailMessage built per recipient.

Run: .venv/bin/python benchmarks/bench_message.py [--messages N]
Both sides produce the same message (tests/test_message.py holds them equal);
this measures them side by side in one run and prints the ratio (target ≥ 20×).
"""

from __future__ import annotations

import argparse

from _common import interleaved, median, median_ratio, recipients, rendered6, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1000)
    args = parser.parse_args()

    from newsletter.message import PreparedIssue, build_email_message

    rendered = rendered6()
    people = recipients(args.messages)
    prepared = PreparedIssue(rendered=rendered, publication=_publication(), secret_key="bench")
    prepared.personalise(people[0]).as_bytes()  # prepare once (QP-encode the parts), as a real send does

    runs = interleaved(3, {
        "slow": lambda: timed(lambda: [build_email_message(prepared, r).as_bytes() for r in people]),
        "fast": lambda: timed(lambda: [prepared.personalise(r).as_bytes() for r in people]),
    })
    n = len(people)
    print(f"issue #6: HTML {len(rendered.html.encode()) / 1024:.1f} KB, {n} recipients, "
          "medians of 3 interleaved rounds")
    print(f"EmailMessage per recipient : {n / median(runs['slow']):10.0f} msg/s")
    print(f"prepared substitution      : {n / median(runs['fast']):10.0f} msg/s")
    print(f"ratio (median of pairs)    : {median_ratio(runs['slow'], runs['fast']):10.1f}x  (target >= 20x)")


def _publication():
    from _common import settings

    return settings().publication


if __name__ == "__main__":
    main()
