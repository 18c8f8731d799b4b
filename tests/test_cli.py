"""The CLI end to end, in-process through click's CliRunner (and a few real subprocesses)."""

from __future__ import annotations

import email
import subprocess
import sys
from email import policy
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli

REPO = Path(__file__).resolve().parent.parent


BASE_ENV = {"NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": "test-secret"}


def run(root: Path, *args: str, env: dict | None = None, input: str | None = None):
    return CliRunner().invoke(cli, ["--root", str(root), *args], env={**BASE_ENV, **(env or {})}, input=input)


def test_build_writes_three_files(publication_root):
    result = run(publication_root, "build", "6")
    assert result.exit_code == 0, result.output
    out = publication_root / "build" / "global-governance-of-ai"
    assert sorted(p.name for p in out.iterdir()) == ["email.html", "email.txt", "preview.html"]
    assert "Welcome to the sixth edition" in (out / "email.txt").read_text(encoding="utf-8")
    preview = (out / "preview.html").read_text(encoding="utf-8")
    assert 'id="desktop"' in preview and 'id="phone"' in preview and 'id="text"' in preview


def test_build_out_dir(publication_root, tmp_path):
    result = run(publication_root, "build", "6", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0
    assert (tmp_path / "o" / "global-governance-of-ai" / "email.html").exists()


@pytest.mark.parametrize("front, needle", [
    ("number: 7\ndate: 2025-04-01", "007-bad.md:1: missing required field 'title'"),
    ("number: 7\ntitle: T\ndate: someday", "007-bad.md:4: 'date' must be a date"),
])
def test_bad_issue_is_one_line_exit_2(publication_root, front, needle):
    (publication_root / "issues" / "007-bad.md").write_text(f"---\n{front}\n---\n\nBody\n", encoding="utf-8")
    result = run(publication_root, "build", "7")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.output


def test_non_utf8_issue_exit_2(publication_root):
    (publication_root / "issues" / "007-bad.md").write_bytes(b"---\nnumber: 7\ntitle: Caf\xe9\ndate: 2025-01-01\n---\n\nx\n")
    result = run(publication_root, "build", "7")
    assert result.exit_code == 2 and "not UTF-8" in result.output and "Traceback" not in result.output


def test_broken_template_exit_2(publication_root):
    (publication_root / "templates" / "email.mjml.j2").write_text("{{ nope(", encoding="utf-8")
    result = run(publication_root, "build", "6")
    assert result.exit_code == 2 and "email.mjml.j2:1: template error" in result.output


def test_new_scaffolds_next_issue(publication_root):
    result = run(publication_root, "new", "Trade and the Global South")
    assert result.exit_code == 0, result.output
    path = publication_root / "issues" / "007-trade-and-the-global-south.md"
    assert path.exists()
    assert run(publication_root, "build", "7").exit_code == 0


def test_init_creates_a_working_publication(tmp_path):
    target = tmp_path / "weekly"
    assert run(tmp_path, "init", str(target)).exit_code == 0
    assert (target / "templates" / "README.md").exists() and (target / ".env.example").exists()
    assert not list((target / "templates").glob("*.j2"))  # the shipped templates are used until copied
    result = run(target, "build", "1")
    assert result.exit_code == 0, result.output
    assert "My Newsletter" in (target / "build" / "hello-world" / "email.html").read_text(encoding="utf-8")
    again = run(tmp_path, "init", str(target))
    assert again.exit_code == 2 and "already a publication" in again.output


def test_env_example_shipped_with_init_matches_repo():
    assert (REPO / ".env.example").read_text() == (REPO / "newsletter" / "data" / "init" / "env.example").read_text()


def test_dry_run_send_writes_eml_that_round_trips(publication_root):
    csv = publication_root / "subs.csv"
    csv.write_text("email,name\nreader1@example.org,Reader One\nreader2@example.org,Zoë\n", encoding="utf-8")
    assert run(publication_root, "subscribers", "import", str(csv)).exit_code == 0
    result = run(publication_root, "send", "6", "--dry-run", "--skip-checks",
                 env={"NEWSLETTER_BASE_URL": "https://chinaffairs.example"})
    assert result.exit_code == 0, result.output
    assert "2 message(s)" in result.output and "Nothing was sent" in result.output
    outbox = publication_root / "outbox" / "global-governance-of-ai"
    emls = sorted(outbox.glob("*.eml"))
    assert len(emls) == 2
    built = (publication_root / "build" / "global-governance-of-ai" / "email.html").read_text(encoding="utf-8")
    for path in emls:
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        to = msg["To"].addresses[0].addr_spec
        html = msg.get_body(("html",)).get_content().replace("\r\n", "\n")
        token = msg["List-Unsubscribe"].split("/unsubscribe/")[1].split(">")[0]
        expected = (built.replace("%%UNSUBSCRIBE_URL%%", f"https://chinaffairs.example/unsubscribe/{token}")
                    .replace("%%EMAIL%%", to))
        assert html == expected
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # A dry run never touches the ledger: a later real send still owes everyone.
    from newsletter.ledger import delivery_status, open_ledger

    assert delivery_status(open_ledger(publication_root / "newsletter.db")) == []


def test_test_send_goes_only_to_named_addresses(publication_root):
    csv = publication_root / "subs.csv"
    csv.write_text("email\nsubscriber@example.org\n", encoding="utf-8")
    run(publication_root, "subscribers", "import", str(csv))
    result = run(publication_root, "send", "6", "--test", "editor@example.org", "--test", "second@example.org",
                 "--skip-checks")
    assert result.exit_code == 0, result.output
    emls = sorted((publication_root / "outbox" / "global-governance-of-ai").glob("*.eml"))
    tos = sorted(email.message_from_bytes(p.read_bytes(), policy=policy.default)["To"] for p in emls)
    assert tos == ["editor@example.org", "second@example.org"]
    subject = email.message_from_bytes(emls[0].read_bytes(), policy=policy.default)["Subject"]
    assert subject.startswith("[TEST] #6 China Scholar Insights")


def test_test_send_refuses_injection_and_bad_addresses(publication_root):
    result = run(publication_root, "send", "6", "--test", "a@example.org\r\nBcc: b@example.org", "--skip-checks")
    assert result.exit_code == 2 and "line break" in result.output
    result = run(publication_root, "send", "6", "--test", "not-an-address", "--skip-checks")
    assert result.exit_code == 2 and "invalid --test address" in result.output
    assert not (publication_root / "outbox").exists()


def test_real_send_without_yes_and_without_a_terminal_refuses(publication_root):
    result = run(publication_root, "send", "6", "--test", "a@example.org", "--skip-checks",
                 env={"NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "9",
                      "SMTP_SECURITY": "none"})
    assert result.exit_code == 2 and "--yes" in result.output


def test_unknown_transport_is_a_config_error(publication_root):
    result = run(publication_root, "send", "6", "--test", "a@example.org", "--skip-checks",
                 env={"NEWSLETTER_TRANSPORT": "carrier-pigeon"})
    assert result.exit_code == 3 and "carrier-pigeon" in result.output


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)


HEAVY = ("premailer", "cssutils", "mjml", "markdown_it", "jinja2", "requests", "rich.progress", "email_validator")


@pytest.mark.parametrize("args", [["--help"], ["subscribers", "--help"], ["send", "--help"],
                                  ["subscribers", "count"], ["status"]])
def test_light_commands_do_not_import_the_renderer(publication_root, args):
    code = ("import sys\nfrom newsletter.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    print('EXIT', exc.code)\n"
            f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code, "--root", str(publication_root), *args],
                            capture_output=True, text=True, cwd=publication_root, timeout=60)
    assert "EXIT 0" in result.stdout and "HEAVY []" in result.stdout, (args, result.stdout, result.stderr)
    if args == ["status"]:  # it did open the database and answer
        assert "No deliveries yet." in result.stdout and (publication_root / "newsletter.db").exists()


def test_help_explains_commands():
    out = _python("from newsletter.cli import main\nmain(['send', '--help'])").stdout
    for words in ("--dry-run", "--test", "--yes", "resume", "ledger"):
        assert words in out


def test_real_send_through_smtp_resumes_without_duplicates(publication_root, tmp_path):
    from tests.smtp_server import SMTPTestServer, make_tls_files

    csv = publication_root / "subs.csv"
    csv.write_text("email,name\n" + "".join(f"reader{i}@example.org,Reader {i}\n" for i in range(12)), encoding="utf-8")
    assert run(publication_root, "subscribers", "import", str(csv)).exit_code == 0
    run(publication_root, "subscribers", "unsubscribe", "reader3@example.org")
    with SMTPTestServer(tls=make_tls_files(tmp_path)) as server:
        env = {**server.env(), "NEWSLETTER_BASE_URL": "https://chinaffairs.example", "NEWSLETTER_BATCH_SIZE": "5"}
        first = run(publication_root, "send", "6", "--yes", "--skip-checks", env=env)
        assert first.exit_code == 0, first.output
        assert "11 sent" in first.output
        again = run(publication_root, "send", "6", "--yes", "--skip-checks", env=env)
        assert again.exit_code == 0, again.output
        received = sorted(server.recipients())
    assert received == sorted(f"reader{i}@example.org" for i in range(12) if i != 3)  # once each, none twice
    msg = server.messages[0].parse()
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    status = run(publication_root, "status", "6")
    assert status.exit_code == 0 and "done" in status.output


def test_secrets_never_reach_output_or_outbox(publication_root):
    secrets = {"SMTP_PASSWORD": "hunter2-smtp", "POSTMARK_SERVER_TOKEN": "pm-secret-token",
               "NEWSLETTER_SECRET_KEY": "signing-secret-value"}
    csv = publication_root / "subs.csv"
    csv.write_text("email\nreader@example.org\n", encoding="utf-8")
    run(publication_root, "subscribers", "import", str(csv), env=secrets)
    outputs = [run(publication_root, *args, env=secrets).output for args in
               (["--help"], ["send", "--help"], ["send", "6", "--dry-run", "--skip-checks"], ["check", "6"])]
    files = [p.read_bytes() for p in (publication_root / "outbox").rglob("*") if p.is_file()]
    for value in secrets.values():
        assert all(value not in out for out in outputs)
        assert all(value.encode() not in data for data in files)


def test_reply_to_gets_the_full_address_check_before_anything_is_sent(publication_root):
    path = publication_root / "issues" / "006-global-governance-of-ai.md"
    path.write_text(path.read_text(encoding="utf-8").replace("reply_to: sunchenghao@tsinghua.edu.cn",
                                                             "reply_to: editors@-bad-.org"), encoding="utf-8")
    # One address policy: the front matter's reply_to gets the full check at parse time, so even
    # `build` refuses it with its line (a plain address still needs no email-validator import).
    assert run(publication_root, "build", "6").exit_code == 2
    result = run(publication_root, "send", "6", "--test", "editor@example.org", "--skip-checks")
    assert result.exit_code == 2 and "'reply_to' is not a valid address" in result.output
    assert "006-global-governance-of-ai.md:" in result.output
    assert not (publication_root / "outbox").exists()


def test_mailto_unsubscribe_token_can_be_applied(publication_root):
    from newsletter.store import SubscriberStore
    from newsletter.tokens import make_token

    assert run(publication_root, "subscribers", "add", "reader@example.org").exit_code == 0
    sub = SubscriberStore.open(publication_root / "newsletter.db").get_by_email("reader@example.org")
    forged = run(publication_root, "subscribers", "unsubscribe", make_token("other-key", sub.id, sub.email))
    assert forged.exit_code == 2 and "valid unsubscribe token" in forged.output
    good = run(publication_root, "subscribers", "unsubscribe", make_token("test-secret", sub.id, sub.email))
    assert good.exit_code == 0 and "Unsubscribed reader@example.org" in good.output
    assert SubscriberStore.open(publication_root / "newsletter.db").get(sub.id).status == "unsubscribed"


@pytest.mark.parametrize("args, env, code, needle", [
    (["send", "6", "--yes", "--skip-checks"], {"NEWSLETTER_TRANSPORT": "null"}, 3, "sends nothing"),
    (["dispatch"], {"NEWSLETTER_TRANSPORT": "dryrun"}, 3, "sends nothing"),
    (["serve", "--port", "8999"], {"NEWSLETTER_SECRET_KEY": ""}, 3, "NEWSLETTER_SECRET_KEY"),
    (["subscribers", "count"], {"NEWSLETTER_BATCH_SIZE": "inf"}, 0, ""),
    (["send", "6", "--yes", "--skip-checks"], {"NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1",
                                               "SMTP_SECURITY": "none", "NEWSLETTER_BATCH_SIZE": "inf"}, 3, "not a usable number"),
    (["subscribers", "remove", "nobody@example.org"], {}, 2, "no subscriber nobody@example.org"),
    (["subscribers", "export", "--out", "/nonexistent-dir/x.csv"], {}, 2, "/nonexistent-dir/x.csv"),
])
def test_user_errors_are_one_line(publication_root, args, env, code, needle):
    result = run(publication_root, *args, env=env)
    assert result.exit_code == code, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_resume_never_starts_a_new_delivery(publication_root):
    run(publication_root, "subscribers", "add", "reader@example.org")
    result = run(publication_root, "resume", "6", "--yes",
                 env={"NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_SECURITY": "none"})
    assert result.exit_code == 2 and "no unfinished delivery" in result.output


def test_bad_database_and_root_are_one_line(publication_root, tmp_path):
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not sqlite" * 100)
    result = run(publication_root, "subscribers", "count", env={"NEWSLETTER_DB": str(bad)})
    assert result.exit_code == 3 and "not a usable newsletter database" in result.output
    missing = CliRunner().invoke(cli, ["--root", str(tmp_path / "nope"), "subscribers", "count"])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_errors_map_to_click_exceptions_with_our_exit_codes():
    import click

    from newsletter import errors
    from newsletter.cli import NewsletterGroup

    cases = [
        (errors.InputError("bad row", path="subs.csv", line=3), 2, "error: subs.csv:3: bad row"),
        (errors.ConfigError("no key"), 3, "error: no key"),
        (errors.TransportError("refused"), 4, "error: refused"),
        (errors.DeliveryLockedError("locked"), 5, "error: locked"),
        (errors.ChecksFailedError("2 errors"), 6, "error: 2 errors"),
        (errors.ContentChangedError("changed"), 7, "error: changed"),
        (click.exceptions.Abort(), 1, "Aborted; nothing was sent."),
        (KeyboardInterrupt(), 130, "Interrupted."),
        (PermissionError(13, "Permission denied", "/srv/x.csv"), 2, "error: /srv/x.csv: Permission denied"),
    ]
    for exc, code, line in cases:
        group = NewsletterGroup("newsletter")

        @group.command("boom")
        def boom(exc=exc):
            raise exc

        result = CliRunner().invoke(group, ["boom"])
        assert result.exit_code == code, (exc, result.output)
        assert result.output.strip() == line and "Traceback" not in result.output


def test_output_piped_into_a_reader_that_stops_early_is_a_quiet_exit_1(publication_root):
    csv = publication_root / "subs.csv"
    csv.write_text("email\n" + "".join(f"reader{i}@example.org\n" for i in range(1000)), encoding="utf-8")
    assert run(publication_root, "subscribers", "import", str(csv)).exit_code == 0
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "--root", str(publication_root), "subscribers", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=publication_root)
    proc.stdout.close()  # like `| head` exiting: ~30 KB of output meets a closed pipe
    stderr = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 1 and "error" not in stderr and "Traceback" not in stderr, stderr
