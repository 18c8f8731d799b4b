"""Requests split by size as well as by count, within each provider's documented limits; a message
over a limit fails alone, for good, with the reason, and the rest of its batch is sent."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from newsletter.clock import FakeClock
from newsletter.message import PreparedIssue, Recipient
from newsletter.render import RenderedEmail
from newsletter.transports import get_transport
from newsletter.transports.base import Status
from newsletter.transports.http import MB
from tests.provider_emulator import PROVIDERS, ProviderEmulator, env
from tests.transports.conftest import PUBLICATION, RENDERED

START = datetime(2031, 3, 4, 9, 0, tzinfo=timezone.utc)
#: Documented limits, as each adapter's docstring cites them: (per request, per message).
DOCUMENTED = {"postmark": (50 * MB, 10 * MB), "sendgrid": (30 * MB, 30 * MB), "mailgun": (25 * MB, 25 * MB),
              "resend": (None, 40 * MB), "ses": (None, 40 * MB), "brevo": (20 * MB, 20 * MB)}


def issue(html_bytes: int) -> PreparedIssue:
    """An issue whose HTML is about ``html_bytes`` long, with the usual placeholders."""
    filler = "<p>" + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * (html_bytes // 57) + "</p>"
    rendered = RenderedEmail(**{**RENDERED.__dict__, "html": RENDERED.html + filler,
                                "text": RENDERED.text + "Lorem ipsum. " * (html_bytes // 52)})
    return PreparedIssue(rendered=rendered, publication=PUBLICATION, secret_key="k")


def readers(prepared: PreparedIssue, count: int, names: dict[int, str] | None = None) -> list:
    return [prepared.personalise(Recipient(f"reader{i}@example.com", (names or {}).get(i, f"Reader {i}"), f"t{i}"))
            for i in range(count)]


def send(provider: str, batch: list, make_settings, **limits: int | None) -> tuple[list, list[int], ProviderEmulator]:
    with ProviderEmulator(provider, FakeClock(START)) as api:
        transport = get_transport(make_settings(env(provider, api.url)), provider, clock=api.clock, concurrency=1)
        for name, value in limits.items():
            setattr(transport, name, value)
        try:
            results = transport.send(batch, idempotency_key="nl-abc-1-0")
        finally:
            transport.close()
    assert api.counters.bad == 0, api.counters.errors
    return results, [len(body) for *_, body in api.received], api


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_adapter_declares_its_documented_limits(provider, make_settings):
    transport = get_transport(make_settings(env(provider, "http://127.0.0.1:9")), provider)
    assert (transport.max_request_bytes, transport.max_message_bytes) == DOCUMENTED[provider]
    assert transport.size_limits_doc.startswith("https://")


def test_an_issue_near_postmarks_limit_is_split_under_50_mb(make_settings):
    # The issue's case: 84 KB of HTML (with its text part, ~118 KB a message), 500 readers in one
    # call, made one request of 58.9 MB. Now: as few requests as fit, none over 50 MB, all sent.
    batch = readers(issue(84_000), 500)
    results, sizes, _ = send("postmark", batch, make_settings)
    assert [r.status for r in results] == [Status.SENT] * 500
    assert len(sizes) == 2 and max(sizes) <= 50 * MB, sizes
    assert sum(sizes) > 50 * MB  # it really was over the limit as one request


@pytest.mark.parametrize("provider, limit", [("postmark", 400_000), ("sendgrid", 60_000), ("mailgun", 60_000)])
def test_batch_requests_stay_under_the_request_limit(provider, limit, make_settings):
    # SendGrid and Mailgun carry the body once a request and a few hundred bytes per reader.
    batch = readers(issue(20_000), 120)
    results, sizes, _ = send(provider, batch, make_settings, max_request_bytes=limit)
    assert [r.status for r in results] == [Status.SENT] * 120
    assert max(sizes) <= limit < sum(sizes), sizes
    assert len(sizes) < 120  # still batched, only split where the bytes require it


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_message_over_the_limit_fails_alone_and_the_rest_are_sent(provider, make_settings):
    # A reader whose name (substituted into the body) makes their message 300 KB, against a limit
    # of 200 KB: refused for good, with a reason naming the limit; the others go out.
    batch = readers(issue(5_000), 5, names={2: "Big " * 75_000})
    results, sizes, api = send(provider, batch, make_settings, max_message_bytes=200_000)
    assert [r.status for r in results] == [Status.SENT] * 2 + [Status.FAILED_PERMANENT] + [Status.SENT] * 2
    refused = results[2]
    assert not refused.bounce and refused.attempted
    assert f"over {provider}'s limit of 0.2 MB for a message" in refused.error
    assert "https://" in refused.error
    assert "reader2@example.com" not in {d.recipient for d in api.delivered}
    assert max(sizes) < 200_000


def test_postmark_refuses_a_body_over_its_5_mb_field_limit(make_settings):
    batch = readers(issue(5_200_000), 1)
    (result,), sizes, _ = send("postmark", batch, make_settings)
    assert result.status is Status.FAILED_PERMANENT and "HtmlBody" in result.error and not sizes


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_size_counted_is_never_less_than_the_bytes_sent(provider, make_settings):
    # The split relies on the count: for one reader alone, or a few sharing a request, the bytes
    # that arrive are at most what the adapter counted (an exact count for JSON, a bound for forms).
    batch = readers(issue(3_000), 4, names={1: "Müller, Bob", 2: "李 雷"})
    with ProviderEmulator(provider, FakeClock(START)) as api:
        transport = get_transport(make_settings(env(provider, api.url)), provider, clock=api.clock, concurrency=1)
        counted = [sum(transport.sizes(m)) for m in batch]
        shared = [transport.sizes(m)[0] for m in batch]
        transport.send(batch[:1])
        transport.send(batch)
        transport.close()
    sizes = [len(body) for *_, body in api.received]
    assert sizes[0] <= counted[0]
    if transport.per_request > 1:
        assert sizes[1] <= shared[0] + sum(c - s for c, s in zip(counted, shared))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_issue_over_the_limit_for_every_reader_is_the_senders_not_the_readers(provider, make_settings):
    """The same refusal for readers in a row (here: the issue itself is over the provider's limit) is
    about the sender: nobody is charged, and the engine holds the delivery (exit 9) for a smaller issue."""
    batch = readers(issue(5_000), 6)
    results, sizes, api = send(provider, batch, make_settings, max_message_bytes=2_000)
    assert all(r.status is Status.FAILED_TEMPORARY and r.about_sender for r in results), results
    assert "over" in results[-1].error and "readers in a row" in results[-1].error
    assert not api.delivered and not sizes
