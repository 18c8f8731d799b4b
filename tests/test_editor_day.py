"""Where an editor lost time (issue 19): what the commands say must be what happened."""

from __future__ import annotations

import signal

from test_cli import run
from test_cli_sending import _interrupted, _subscribe


def test_test_send_through_the_dry_run_transport_says_where_it_was_written(publication_root):
    result = run(publication_root, "send", "6", "--test", "editor@example.org", "--skip-checks")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if "editor@example.org" in x)
    assert line.startswith("written to outbox/global-governance-of-ai/") and line.split()[2].endswith(".eml")
    assert (publication_root / line.split()[2]).is_file()
    assert "sent" not in line.replace("(not sent)", "")
    assert "nothing sent" in result.output


def test_ctrl_c_says_how_to_continue_once(publication_root):
    _subscribe(publication_root, 40)
    code, out, err, _ = _interrupted(publication_root, ["send", "6", "--yes", "--skip-checks"], signal.SIGINT)
    assert code == 130, out + err
    said = [x for x in (out + err).splitlines() if "continue" in x]
    assert len(said) == 1 and "`newsletter resume 6` will continue" in said[0], out + err


def test_status_says_why_a_delivery_is_paused_scrubbed(publication_root):
    from newsletter.ledger import open_ledger

    _subscribe(publication_root, 1)
    conn = open_ledger(publication_root / "newsletter.db")
    conn.execute("INSERT INTO deliveries(slug, content_hash, state, created_at, nonce, reason) VALUES('006-x', 'h', "
                 "'paused', '2030-01-01T00:00:00.000000Z', 'abc', 'could not start: login refused')")
    conn.execute("INSERT INTO ledger(delivery_id, subscriber_id, email, state, last_error, updated_at) VALUES(1, 1, "
                 "'reader0@example.org', 'pending', ?, '2030-01-01T00:00:01.000000Z')",
                 ("535 auth failed for key SG.leaky-key-0987",))
    conn.commit()
    conn.close()
    result = run(publication_root, "status", env={"SENDGRID_API_KEY": "SG.leaky-key-0987"})
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("#1 006-x: paused: "))
    assert "could not start: login refused" in line and "535 auth failed" in line
    assert "SG.leaky-key-0987" not in result.output


def test_unsubscribing_a_bounced_reader_says_it_stays_bounced(publication_root):
    from newsletter.store import SubscriberStore

    assert run(publication_root, "subscribers", "add", "gone@example.org").exit_code == 0
    with SubscriberStore.open(publication_root / "newsletter.db") as store:
        store.mark_bounced(store.get_by_email("gone@example.org").id, "5.1.1 no such user")
    result = run(publication_root, "subscribers", "unsubscribe", "gone@example.org")
    assert result.exit_code == 0
    assert "Unsubscribed" not in result.output and "stays bounced" in result.output
    listed = run(publication_root, "subscribers", "list", "--status", "bounced")
    assert "gone@example.org" in listed.output
    active = run(publication_root, "subscribers", "add", "here@example.org")
    assert active.exit_code == 0
    assert "Unsubscribed here@example.org." in run(publication_root, "subscribers", "unsubscribe",
                                                   "here@example.org").output
