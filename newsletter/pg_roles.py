"""The least-privilege role for a web host on PostgreSQL: what `serve` needs, nothing more.

`serve` faces the internet, so its database role can do only what unsubscribe, signup,
webhooks and their bookkeeping need: read and change readers, record feedback events and
webhook nonces, queue signup mail. It cannot read the ledger's error texts or any delivery
beyond the columns that tie a provider's event to a reader, cannot change the ledger or a
delivery (so it cannot start, stop or alter a send), and cannot create or drop tables (the
schema is migrated by a worker or the editor's CLI, under the owner's role).
"""

from __future__ import annotations

#: (privileges, table) granted to the web role. Column lists limit what it can read.
WEB_GRANTS: tuple[tuple[str, str], ...] = (
    ("SELECT", "schema_migrations"),
    ("SELECT, INSERT, UPDATE, DELETE", "subscribers"),
    ("SELECT, UPDATE", "subscriber_counts"),  # kept by the subscribers' triggers, which run as the writer
    ("SELECT, DELETE", "subscriber_former_addresses"),  # a reader's erasure takes them along (a trigger)
    ("SELECT, INSERT, DELETE", "signup_events"),
    ("SELECT, INSERT, UPDATE, DELETE", "signup_outbox"),
    ("SELECT, INSERT, UPDATE", "feedback_events"),
    ("SELECT, INSERT, DELETE", "webhook_nonces"),
    # The ledger and deliveries: only the columns that tie an event to its reader and delivery.
    ("SELECT (delivery_id, subscriber_id, email, state, provider_id)", "ledger"),
    ("SELECT (id, slug, subject, test, state, frozen_at)", "deliveries"),
)


def web_role_sql(role: str, database: str) -> list[str]:
    """The statements (for the database owner to run) that make ``role`` a web host's role."""
    if not role.replace("_", "").isalnum() or not database.replace("_", "").replace("-", "").isalnum():
        raise ValueError("role and database names: letters, digits, _ and - only")
    out = [f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"',
           f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"',
           f'GRANT USAGE ON SCHEMA public TO "{role}"']
    out += [f'GRANT {privileges} ON "{table}" TO "{role}"' for privileges, table in WEB_GRANTS]
    out += [f'GRANT USAGE ON SEQUENCE {sequence} TO "{role}"'
            for sequence in ("subscribers_id_seq", "signup_outbox_id_seq")]
    return out
