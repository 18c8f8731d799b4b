"""The tables of what comes in: signups and their outbox, replies and the messages the inbox has
seen, the inbox's place in each folder, and the nonces of webhook deliveries already handled.

Their migrations live here, not beside the code that uses them, because that code is heavy to load
(the IMAP client, the classifier, every webhook provider) and the one opener
(:func:`newsletter.schema.open_database`) migrates every component on every command, ``status``
included. Migrations are history: a step, once released, is never edited; a new one is appended.
"""

from __future__ import annotations

# signup (newsletter.signups)
SIGNUP: list[str] = [
    # v1: one row per counted event; ``key`` is an IP or a hashed address ('' for the global cap).
    """CREATE TABLE signup_events (
  scope TEXT NOT NULL CHECK (scope IN ('ip','address','global')),
  key TEXT NOT NULL,
  at REAL NOT NULL
);
CREATE INDEX signup_events_lookup ON signup_events(scope, key, at);
CREATE INDEX signup_events_age ON signup_events(at)""",
    # v2: the durable outbox of confirmation and welcome emails, written in the request's own
    # transaction, so a crash between "recorded" and "sent" delays an email but never drops it.
    """CREATE TABLE signup_outbox (
  id INTEGER PRIMARY KEY,
  subscriber_id INTEGER NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('confirm','welcome')),
  due_at REAL NOT NULL,
  lease_until REAL NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX signup_outbox_due ON signup_outbox(due_at)""",
    # v3: deferred, never dropped. A failing mail keeps its row (first failure, last error, and when it
    # was given up after the retry window), one row per reader and kind, which a new request re-arms.
    """ALTER TABLE signup_outbox ADD COLUMN first_failed_at REAL NOT NULL DEFAULT 0;
ALTER TABLE signup_outbox ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
ALTER TABLE signup_outbox ADD COLUMN gave_up_at REAL NOT NULL DEFAULT 0;
DELETE FROM signup_outbox WHERE id NOT IN (SELECT min(id) FROM signup_outbox GROUP BY subscriber_id, kind);
CREATE UNIQUE INDEX signup_outbox_one ON signup_outbox(subscriber_id, kind)""",
]


# replies (newsletter.replies, newsletter.feedback)
REPLIES: list[str] = [
    """CREATE TABLE inbox_messages (
  dedupe_key TEXT PRIMARY KEY,
  category TEXT NOT NULL,
  slug TEXT,
  received_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX inbox_messages_slug ON inbox_messages(slug, category);
CREATE TABLE replies (
  dedupe_key TEXT PRIMARY KEY REFERENCES inbox_messages(dedupe_key) ON DELETE CASCADE,
  slug TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '',
  masked_email TEXT NOT NULL DEFAULT '',
  sent_at TEXT NOT NULL,
  excerpt TEXT NOT NULL DEFAULT '',
  matched_by TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX replies_slug ON replies(slug, sent_at)""",
]


# webhook_nonces (newsletter.webhooks.replay)
WEBHOOK_NONCES: list[str] = [
    """CREATE TABLE webhook_nonces (
  nonce TEXT PRIMARY KEY,
  seen_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX webhook_nonces_seen ON webhook_nonces(seen_at)""",
    "ALTER TABLE webhook_nonces ADD COLUMN body_sha256 TEXT NOT NULL DEFAULT ''",
]


# inbox (newsletter.inbox)
INBOX: list[str] = [
    """CREATE TABLE inbox_state (
  account TEXT PRIMARY KEY,
  uidvalidity INTEGER NOT NULL,
  last_uid INTEGER NOT NULL
) WITHOUT ROWID""",
]
