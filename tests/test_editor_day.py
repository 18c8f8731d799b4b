"""Where an editor lost time (issue 19): what the commands say must be what happened."""

from __future__ import annotations

import signal

from tests.helpers import interrupted as _interrupted, run, subscribe_readers as _subscribe


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


def _serve_preview(settings, verbose: bool):
    import threading

    from newsletter.issue import find_issue
    from newsletter.preview import PreviewServer

    logs: list[str] = []
    server = PreviewServer(settings, find_issue(settings.issues_dir, "6"), log=logs.append, verbose=verbose)
    httpd = server.make_server(0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return server, httpd, logs


def _poll_and_edit(settings, server, httpd, logs) -> None:
    import time
    import urllib.request

    base = f"http://127.0.0.1:{httpd.server_port}"
    try:
        for _ in range(10):  # what the live page does every 300 ms
            urllib.request.urlopen(f"{base}/version", timeout=10).read()
        path = settings.issues_dir / "006-global-governance-of-ai.md"
        path.write_text(path.read_text(encoding="utf-8").replace("number: 6", "number: six"), encoding="utf-8")
        deadline = time.monotonic() + 20
        while not any(x.startswith("error: ") for x in logs) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.stop()
        httpd.shutdown()


def test_preview_logs_rebuilds_and_errors_but_not_its_polls(settings, caplog):
    caplog.set_level("DEBUG")
    server, httpd, logs = _serve_preview(settings, verbose=False)
    _poll_and_edit(settings, server, httpd, logs)
    assert logs[0].startswith("rebuilt 006-") and any(x.startswith("error: ") for x in logs), logs
    assert not any("/version" in x for x in logs)
    assert not any("/version" in r.getMessage() for r in caplog.records)


def test_preview_logs_requests_with_verbose(settings):
    server, httpd, logs = _serve_preview(settings, verbose=True)
    _poll_and_edit(settings, server, httpd, logs)
    assert sum(x == "GET /version 200" for x in logs) == 10, logs


def test_plain_text_numbers_notes_as_the_html_and_apart_from_links(tmp_path):
    import re

    import lxml.html

    from newsletter.config import load_settings
    from newsletter.render import render_issue
    from tests.editor_fixtures import make_publication

    body = ("See [the report](https://example.org/r) and [the data](https://example.org/d).[^a]\n\n"
            "Then a second claim.[^b] In ~~three~~ four parts.\n\n[^a]: A first note.\n[^b]: A second note.\n")
    root, path = make_publication(tmp_path, body)
    rendered = render_issue(path, load_settings(root, environ={}))
    text = rendered.text
    html_marks = [s.text_content() for s in lxml.html.document_fromstring(rendered.html).xpath("//sup")]
    text_marks = re.findall(r"\[\d+\]", text.split("Notes:")[0])
    assert text_marks == html_marks == ["[1]", "[2]"]
    notes = text.split("Notes:\n")[1]
    assert notes.startswith("[1] A first note.\n[2] A second note.")
    assert "the report [link\u00a01]" in text and "[link\u00a02] https://example.org/d" in text
    assert "[^" not in text and "~~" not in text and "In [struck out: three] four parts." in text


def test_a_link_marker_is_never_split_across_lines(tmp_path):
    from newsletter.config import load_settings
    from newsletter.render import render_issue
    from tests.editor_fixtures import make_publication

    words = " ".join(f"[word{i}](https://example.org/{i})" for i in range(40))
    root, path = make_publication(tmp_path, words + "\n")
    text = render_issue(path, load_settings(root, environ={})).text
    assert text.count("[link\u00a0") == 80 and "[link\n" not in text and "[link " not in text
