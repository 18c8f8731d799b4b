"""A delivery as the ledger stores it (:class:`Delivery`), the names every part of the ledger
shares (open states, the lease), and whether a delivery's lock is still held.

No ``from __future__ import annotations`` in this package: its records are NamedTuples (a frozen
dataclass costs a millisecond or two at import, and ``status`` imports them), and NamedTuple
compiles every string annotation it is given; real ones cost nothing.
"""

import sqlite3
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, NamedTuple

from newsletter.errors import InputError
from newsletter.processes import pid_alive
from newsletter.states import OPEN_DELIVERY_STATES, RowState, sql_list
from newsletter.timestamps import parse_timestamp, utcnow

if TYPE_CHECKING:  # only for types: `status` and the scheduler load no transport
    from newsletter.transports.base import Transport


OPEN_STATES = OPEN_DELIVERY_STATES
OPEN_SQL = sql_list(OPEN_STATES)
LEDGER_STATES: tuple[RowState, ...] = tuple(RowState)
#: A sender's lease on its delivery (NEWSLETTER_LEASE_SECONDS): a lock whose heartbeat is older
#: than this is another host's to take over. Every host must use the same value.
DEFAULT_LEASE = timedelta(seconds=60)
LOCK_STALE_AFTER = DEFAULT_LEASE  # the name before leases were configurable


def heartbeat_every(lease: timedelta) -> timedelta:
    """How often a holder renews its lease: three chances before it runs out."""
    return lease / 3


HEARTBEAT_EVERY = heartbeat_every(DEFAULT_LEASE)


TransportFactory = Callable[[], "Transport"]
Progress = Callable[[int, int, int, int], None]


class Delivery(NamedTuple):
    """One row of ``deliveries``, times parsed."""

    id: int
    slug: str
    issue_number: int | None
    content_hash: str
    subject: str
    state: str
    created_at: datetime | None
    send_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    frozen_at: datetime | None
    resume_at: datetime | None
    reason: str | None
    total: int
    test: bool
    transport: str | None
    lock_pid: int | None
    lock_host: str | None
    lock_heartbeat: datetime | None
    nonce: str = ""
    send_at_text: str | None = None  # as stored, to show a row whose time cannot be read

    @classmethod
    def from_row(cls, r: sqlite3.Row) -> "Delivery":
        t = parse_timestamp
        return cls(r["id"], r["slug"], r["issue_number"], r["content_hash"], r["subject"], r["state"],
                   t(r["created_at"]), t(r["send_at"]), t(r["started_at"]), t(r["finished_at"]), t(r["frozen_at"]),
                   t(r["resume_at"]), r["reason"], r["total"], bool(r["test"]), r["transport"], r["lock_pid"],
                   r["lock_host"], t(r["lock_heartbeat"]), r["nonce"] or "", r["send_at"])

    def idempotency_key(self, batch_no: int) -> str:
        """``nl-<nonce>-<delivery>-<batch>``: stable across retries of one batch, and unique
        across databases sharing one provider account (the random nonce)."""
        return f"nl-{self.nonce}-{self.id}-{batch_no}" if self.nonce else f"nl-{self.id}-{batch_no}"


def get_delivery(conn: sqlite3.Connection, delivery_id: int) -> Delivery:
    row = conn.execute("SELECT * FROM deliveries WHERE id=?", (int(delivery_id),)).fetchone()
    if row is None:
        raise InputError(f"no delivery #{delivery_id}")
    return Delivery.from_row(row)


def lock_is_live(d: Delivery, now: datetime | None = None, lease: timedelta = DEFAULT_LEASE) -> bool:
    """True if the delivery's lock belongs to a process that still looks alive: its lease is
    fresh, and (on this host, where we can look) its pid still runs."""
    if d.lock_pid is None and d.lock_heartbeat is None:
        return False
    now = now or utcnow()
    if d.lock_heartbeat is None or now - d.lock_heartbeat > lease:
        return False
    if d.lock_host == hostname() and not pid_alive(d.lock_pid):
        return False
    return True


def hostname() -> str:
    import socket  # here, not at the top: `status` should not load the network stack

    return socket.gethostname()
