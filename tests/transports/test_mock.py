"""The public MockTransport: what a publication's own tests use in place of a mail server."""

from __future__ import annotations

import pytest

from newsletter.delivery import DeliveryOptions, run_delivery
from newsletter.ledger import open_ledger, start_or_resume
from newsletter.transports.base import SendResult, Status
from newsletter.transports.mock import MockTransport, Received
from tests.helpers import add_subscribers, make_prepared


def test_it_accepts_records_and_answers_as_its_handler_says(db):
    emails = add_subscribers(db, 5)

    def handler(msg, key, call_no):
        if msg.to_email == emails[1]:
            return SendResult(msg.to_email, Status.FAILED_PERMANENT, error="550 no such user", bounce=True)
        return None

    mock = MockTransport(handler=handler)
    conn = open_ledger(db)
    prepared = make_prepared()
    did = start_or_resume(conn, prepared)
    report = run_delivery(conn, did, prepared, lambda: mock, options=DeliveryOptions(batch_size=2))
    conn.close()
    assert report.state == "done" and report.sent == 4 and report.failed == 1
    assert sorted(mock.received.counts()) == sorted(e for e in emails if e != emails[1])
    assert all(len(addresses) <= 2 for _, addresses in mock.received.calls)
    assert mock.received.messages[emails[0]].to_email == emails[0] and mock.closed


def test_a_dropped_call_delivers_none_of_its_messages():
    from tests.helpers import make_prepared
    from newsletter.message import Recipient

    prepared = make_prepared()
    mock = MockTransport(handler=lambda m, k, n: "drop")
    with pytest.raises(ConnectionResetError):
        mock.send([prepared.personalise(Recipient("a@example.org", token="t"))], "key-1")
    assert mock.received.counts() == {} and mock.received.calls == [("key-1", ["a@example.org"])]


def test_instances_can_share_one_record():
    shared = Received()
    assert MockTransport(shared).received is MockTransport(shared).received
    assert MockTransport.real is False and MockTransport.name == "mock"


def test_it_is_not_a_transport_a_publication_can_choose():
    from newsletter.errors import ConfigError
    from newsletter.transports import transport_class, transport_names

    assert "mock" not in transport_names()
    with pytest.raises(ConfigError):
        transport_class("mock")
