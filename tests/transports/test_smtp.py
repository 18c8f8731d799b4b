"""SMTPTransport against a real aiosmtpd server on 127.0.0.1 (no other network)."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import sys
from pathlib import Path

import pytest

from newsletter.config import Publication, load_settings
from newsletter.errors import ConfigError, TransportError
from newsletter.message import PreparedIssue, Recipient
from newsletter.render import RenderedEmail
from newsletter.transports import get_transport
from newsletter.transports.base import Status
from newsletter.mime import dot_stuff
from newsletter.transports.smtp import SMTPTransport, classify

try:
    from tests.smtp_server import TEST_PASSWORD, TEST_USERNAME, SMTPTestServer, make_tls_files
except ImportError:  # run from another directory: make the project root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.smtp_server import TEST_PASSWORD, TEST_USERNAME, SMTPTestServer, make_tls_files

pytestmark = [
    pytest.mark.timeout(30),
    # aiosmtpd warns when a test server offers AUTH without TLS; some tests need exactly that.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]

FROM = "news@example.org"
PUBLICATION = Publication(name="Test Weekly", from_email=FROM, base_url="https://news.example.org")


# ---- helpers ---------------------------------------------------------------------------
def prepared(slug: str = "007-test-issue") -> PreparedIssue:
    rendered = RenderedEmail(
        slug=slug, number=7, title="Test issue", subject="Issue 7: testing", preheader="",
        html="<html><body><p>Hello %%NAME%%,</p><p>Body text.</p>"
             '<p><a href="%%UNSUBSCRIBE_URL%%">Unsubscribe</a></p></body></html>\n',
        text="Hello %%NAME%%,\n\n.A line that starts with a dot\n\nUnsubscribe: %%UNSUBSCRIBE_URL%%\n",
        lang="en", reply_to=None, content_hash="c0ffee" * 8,
    )
    return PreparedIssue(rendered=rendered, publication=PUBLICATION, secret_key="k")


def messages(*emails: str, issue: PreparedIssue | None = None):
    issue = issue or prepared()
    return [issue.personalise(Recipient(email=e, name=f"Reader {i}", token=f"tok{i}"))
            for i, e in enumerate(emails)]


def addresses(n: int, prefix: str = "reader") -> list[str]:
    return [f"{prefix}{i}@example.com" for i in range(n)]


def transport(server: SMTPTestServer, root: Path, **env: str) -> SMTPTransport:
    settings = load_settings(root=root, environ={"NEWSLETTER_FROM": FROM, **server.env(**env)})
    t = get_transport(settings)
    assert isinstance(t, SMTPTransport)
    return t


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    """A second, unrelated CA: trusting it must not make the first server's certificate valid."""
    return make_tls_files(tmp_path_factory.mktemp("tls-other"), prefix="other-")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_secret_absent(text: str, password: str = TEST_PASSWORD, user: str = TEST_USERNAME) -> None:
    for form in (password, base64.b64encode(password.encode()).decode(),
                 base64.b64encode(f"\0{user}\0{password}".encode()).decode()):
        assert form not in text


# ---- delivery and message format ----------------------------------------------------------
def test_plain_delivery_results_and_headers(tmp_path):
    emails = addresses(3)
    msgs = messages(*emails)
    with SMTPTestServer() as server, transport(server, tmp_path, SMTP_SECURITY="none") as t:
        results = t.send(msgs)
        assert [r.recipient for r in results] == emails
        assert [r.status for r in results] == [Status.SENT] * 3
        assert [r.provider_id for r in results] == [m.message_id for m in msgs]
        assert all(r.error is None and not r.bounce for r in results)
    assert server.recipients() == emails
    for msg, got in zip(msgs, server.messages):
        assert got.mail_from == FROM
        assert got.rcpt_tos == [msg.to_email]
        assert not got.tls
        assert any(o.startswith("SIZE=") for o in got.mail_options)
        assert got.data == msg.as_bytes()
        parsed = got.parse()
        assert parsed["From"] == "Test Weekly <news@example.org>"
        assert parsed["To"].addresses[0].addr_spec == msg.to_email
        assert parsed["Subject"] == "Issue 7: testing"
        assert parsed["Message-ID"] == msg.message_id
        assert parsed["Date"]
        assert parsed["List-Id"]
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        token = f"tok{emails.index(msg.to_email)}"
        assert f"<https://news.example.org/unsubscribe/{token}>" in parsed["List-Unsubscribe"]
        assert parsed.get_content_type() == "multipart/alternative"
        text = parsed.get_body(("plain",)).get_content()
        html = parsed.get_body(("html",)).get_content()
        assert "%%" not in text + html
        assert f"https://news.example.org/unsubscribe/{token}" in text
        assert f'href="https://news.example.org/unsubscribe/{token}"' in html


def test_leading_dots_are_stuffed_and_restored(tmp_path):
    [msg] = messages("dot@example.com")
    assert b"\r\n.A line" in msg.as_bytes()  # precondition: the message really has such a line
    with SMTPTestServer() as server, transport(server, tmp_path, SMTP_SECURITY="none") as t:
        assert t.send([msg])[0].status is Status.SENT
    assert server.messages[0].data == msg.as_bytes()
    text = server.messages[0].parse().get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "\n.A line that starts with a dot\n" in text


@pytest.mark.parametrize("data", [
    b"", b".", b"..", b".\r\n", b"a\r\n.\r\n", b"a\r\n..b\r\n", b"a\n.b", b"a\r.b", b"\r\n.\r\n.x",
    b"no dots at all\r\n", b".start\r\nmid.dle\r\n.end", b"x" * 1000 + b"\r\n." * 50,
])
def test_dot_stuff_matches_smtplib(data):
    assert dot_stuff(data) == smtplib._quote_periods(data)


def test_envelope_sender_setting(tmp_path):
    with SMTPTestServer() as server, transport(server, tmp_path, SMTP_SECURITY="none",
                                               SMTP_ENVELOPE_FROM="bounces@example.org") as t:
        t.send(messages("a@example.com"))
    assert server.messages[0].mail_from == "bounces@example.org"
    assert server.messages[0].parse()["From"].addresses[0].addr_spec == FROM


# ---- TLS ---------------------------------------------------------------------------------
def test_starttls_with_private_ca(tmp_path, tls):
    with SMTPTestServer(tls=tls) as server, transport(server, tmp_path) as t:
        assert t.security == "starttls"
        assert [r.status for r in t.send(messages(*addresses(3)))] == [Status.SENT] * 3
    assert [m.tls for m in server.messages] == [True] * 3
    assert server.connections == 1


def test_implicit_tls(tmp_path, tls):
    with SMTPTestServer(tls=tls, implicit_tls=True, auth=True) as server, transport(server, tmp_path) as t:
        assert t.security == "ssl"
        assert t.send(messages("a@example.com"))[0].status is Status.SENT
    assert server.messages[0].login == TEST_USERNAME


@pytest.mark.parametrize("ca", ["other", "system"])
def test_untrusted_certificate_is_refused(tmp_path, tls, other_ca, ca):
    extra = {"SMTP_CA_FILE": str(other_ca.ca_file)} if ca == "other" else {"SMTP_CA_FILE": ""}
    with SMTPTestServer(tls=tls, auth=True) as server:
        t = transport(server, tmp_path, **extra)
        with pytest.raises(TransportError, match="certificate") as info:
            t.send(messages("a@example.com"))
        t.close()
        assert info.value.exit_code == 4
        assert server.messages == [] and server.auth_attempts == []
        assert server.verbs("MAIL") == 0
    assert_secret_absent(str(info.value))


def test_starttls_required_but_not_offered(tmp_path):
    # The server would even accept a plaintext login; the client must not offer one.
    with SMTPTestServer(auth=True, auth_require_tls=False) as server:
        env = server.env(SMTP_SECURITY="starttls", login=True)
        t = get_transport(load_settings(root=tmp_path, environ=env))
        with pytest.raises(TransportError, match="STARTTLS") as info:
            t.send(messages("a@example.com"))
        t.close()
        assert server.auth_attempts == [] and server.messages == []
    assert "\n" not in str(info.value)


def test_starttls_is_the_default(tmp_path):
    with SMTPTestServer() as server:
        env = server.env()
        del env["SMTP_SECURITY"]
        env["SMTP_PORT"] = str(server.port)
        t = get_transport(load_settings(root=tmp_path, environ=env))
        assert t.security == "starttls"
        with pytest.raises(TransportError, match="STARTTLS"):
            t.send(messages("a@example.com"))
        assert server.messages == []


# ---- AUTH --------------------------------------------------------------------------------
def test_auth_success(tmp_path, tls):
    with SMTPTestServer(tls=tls, auth=True) as server, transport(server, tmp_path) as t:
        assert t.send(messages("a@example.com"))[0].status is Status.SENT
    assert server.auth_attempts == [(TEST_USERNAME, True)]
    assert server.messages[0].login == TEST_USERNAME and server.messages[0].tls


def test_plaintext_auth_only_when_explicitly_chosen(tmp_path):
    with SMTPTestServer(auth=True, auth_require_tls=False) as server, \
            transport(server, tmp_path, SMTP_SECURITY="none") as t:
        assert t.send(messages("a@example.com"))[0].status is Status.SENT
    assert server.auth_attempts == [(TEST_USERNAME, True)]


def test_plaintext_login_to_a_host_that_is_not_loopback_is_refused_unless_opted_in(tmp_path):
    # 0.0.0.0 is not a loopback address, yet Linux connects it to this machine: the login would happen.
    with SMTPTestServer(auth=True, auth_require_tls=False) as server:
        env = server.env(SMTP_SECURITY="none", SMTP_HOST="0.0.0.0")
        with pytest.raises(ConfigError, match="SMTP_ALLOW_PLAINTEXT") as info:
            get_transport(load_settings(root=tmp_path, environ=env))
        assert info.value.exit_code == 3 and "\n" not in str(info.value)
        assert_secret_absent(str(info.value))
        with pytest.raises(ConfigError, match="not on or off"):
            get_transport(load_settings(root=tmp_path, environ={**env, "SMTP_ALLOW_PLAINTEXT": "maybe"}))
        assert server.auth_attempts == []
        with get_transport(load_settings(root=tmp_path, environ={**env, "SMTP_ALLOW_PLAINTEXT": "1"})) as t:
            assert t.send(messages("a@example.com"))[0].status is Status.SENT
        assert server.auth_attempts == [(TEST_USERNAME, True)]


def test_auth_failure_raises_without_the_password(tmp_path, tls):
    wrong = "Wr0ng-pa55word-that-must-not-leak"
    with SMTPTestServer(tls=tls, auth=True) as server:
        t = transport(server, tmp_path, SMTP_PASSWORD=wrong)
        with pytest.raises(TransportError) as info:
            t.send(messages("a@example.com", "b@example.com"))
        t.close()
        assert server.messages == []
        # smtplib tries each offered mechanism (PLAIN, then LOGIN) before giving up
        assert server.auth_attempts and all(a == (TEST_USERNAME, False) for a in server.auth_attempts)
    err = info.value
    assert err.exit_code == 4
    assert "535" in str(err) and TEST_USERNAME in str(err)
    assert "\n" not in str(err)
    for text in (str(err), repr(err), err.format_message(), repr(t)):
        assert_secret_absent(text, password=wrong)
    assert err.__cause__ is None and err.__suppress_context__


def test_server_requires_auth_but_no_credentials(tmp_path, tls):
    # 530 to MAIL FROM is about us, not the recipients: charged to nobody (the engine holds).
    with SMTPTestServer(tls=tls, auth=True) as server:
        t = transport(server, tmp_path, login=False)
        results = t.send(messages("a@example.com", "b@example.com"))
        assert all(r.about_sender and r.status is Status.FAILED_TEMPORARY and not r.bounce for r in results)
        assert "530" in results[0].error and [r.attempted for r in results] == [True, False]
        t.close()


def test_connection_refused(tmp_path):
    env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(free_port()), "SMTP_SECURITY": "none",
           "SMTP_TIMEOUT": "5", "SMTP_USERNAME": TEST_USERNAME, "SMTP_PASSWORD": TEST_PASSWORD}
    t = get_transport(load_settings(root=tmp_path, environ=env), "smtp")
    with pytest.raises(TransportError, match="refused") as info:
        t.send(messages("a@example.com"))
    assert_secret_absent(str(info.value))
    t.close()
    t.close()  # safe twice


# ---- per-recipient replies -----------------------------------------------------------------
@pytest.mark.parametrize("pipelining", [False, True], ids=["serial", "pipelined"])
def test_reply_codes_map_to_statuses(tmp_path, pipelining):
    rcpt = {
        "later@example.com": "451 4.3.0 try again later",
        "gone@example.com": "550 5.1.1 no such user here",
        "moved@example.com": "551 user not local",
        "badsyntax@example.com": "553 mailbox name not allowed",
        "full@example.com": "552 5.2.2 mailbox full",
        "disabled@example.com": "550 5.2.1 mailbox disabled",
    }
    data = {
        "spam@example.com": "550 5.7.1 message looks like spam",
        "slow@example.com": "451 4.7.1 greylisted, come back later",
        "lateuser@example.com": "550 5.1.1 recipient unknown",
    }
    expected = [
        ("ok1@example.com", Status.SENT, False),
        ("later@example.com", Status.FAILED_TEMPORARY, False),
        ("ok2@example.com", Status.SENT, False),
        ("gone@example.com", Status.FAILED_PERMANENT, True),
        ("moved@example.com", Status.FAILED_PERMANENT, True),
        ("badsyntax@example.com", Status.FAILED_PERMANENT, True),
        ("full@example.com", Status.FAILED_TEMPORARY, False),
        ("disabled@example.com", Status.FAILED_PERMANENT, True),
        ("spam@example.com", Status.FAILED_PERMANENT, False),
        ("slow@example.com", Status.FAILED_TEMPORARY, False),
        ("lateuser@example.com", Status.FAILED_PERMANENT, True),
        ("ok3@example.com", Status.SENT, False),
    ]
    msgs = messages(*(e for e, _, _ in expected))
    with SMTPTestServer(rcpt_replies=rcpt, data_replies=data, pipelining=pipelining) as server, \
            transport(server, tmp_path, SMTP_SECURITY="none") as t:
        results = t.send(msgs)
    assert [(r.recipient, r.status, r.bounce) for r in results] == expected
    for r in results:
        if r.status is Status.SENT:
            assert r.error is None and r.provider_id
        else:
            assert r.provider_id is None
            reply = rcpt.get(r.recipient) or data[r.recipient]
            assert reply.split()[0] in r.error and reply.split()[-1] in r.error
            assert r.error.startswith("RCPT" if r.recipient in rcpt else "DATA")
    assert server.recipients() == ["ok1@example.com", "ok2@example.com", "ok3@example.com"]
    # Nine refusals: the connection is renewed once, after ERROR_BUDGET (8), before a server slows it.
    assert server.connections == 2
    # Each failed RCPT left an open transaction: RSET before the next MAIL, never "nested MAIL".
    assert server.verbs("RSET") >= len(rcpt)


@pytest.mark.parametrize("phase,code,text,status,bounce", [
    ("RCPT", 250, "OK", Status.SENT, False),
    ("RCPT", 421, "closing", Status.FAILED_TEMPORARY, False),
    ("RCPT", 450, "4.2.1 mailbox busy", Status.FAILED_TEMPORARY, False),
    ("RCPT", 550, "5.1.1 no such user", Status.FAILED_PERMANENT, True),
    ("RCPT", 550, "no such user", Status.FAILED_PERMANENT, True),
    ("RCPT", 550, "5.7.1 relaying denied", Status.FAILED_PERMANENT, False),
    ("RCPT", 554, "transaction failed", Status.FAILED_PERMANENT, False),
    ("RCPT", 552, "too many recipients", Status.FAILED_TEMPORARY, False),
    ("DATA", 550, "rejected", Status.FAILED_PERMANENT, False),
    ("DATA", 554, "5.1.10 null MX", Status.FAILED_PERMANENT, True),
    ("DATA", 552, "5.3.4 message too big", Status.FAILED_PERMANENT, False),
])
def test_classify(phase, code, text, status, bounce):
    assert classify(phase, code, text.encode()) == (status, bounce)


def test_a_reply_with_terminal_escapes_reaches_us_as_plain_text(tmp_path):
    # A test send prints the transport's error as it is (README: control characters never appear).
    with SMTPTestServer(rcpt_replies={"odd@example.com": "550 5.1.1 no\x1b[2J such\x07 user"}) as server, \
            transport(server, tmp_path, SMTP_SECURITY="none") as t:
        (result,) = t.send(messages("odd@example.com"))
    assert result.status is Status.FAILED_PERMANENT and result.bounce
    assert "5.1.1 no" in result.error and "user" in result.error
    assert "\x1b" not in result.error and "\x07" not in result.error


@pytest.mark.parametrize("pipelining", [False, True], ids=["serial", "pipelined"])
def test_bad_addresses_fail_that_message_only(tmp_path, pipelining):
    bad_header = Recipient(email="evil@example.com\r\nBcc: x@example.com", token="t1")
    non_ascii = Recipient(email="jürgen@example.com", token="t2")
    ok = Recipient(email="ok@example.com", token="t3")
    issue = prepared()
    msgs = [issue.personalise(r) for r in (bad_header, non_ascii, ok)]
    with SMTPTestServer(pipelining=pipelining) as server, transport(server, tmp_path, SMTP_SECURITY="none") as t:
        results = t.send(msgs)
    assert [r.status for r in results] == [Status.FAILED_PERMANENT, Status.FAILED_PERMANENT, Status.SENT]
    assert server.recipients() == ["ok@example.com"]


@pytest.mark.parametrize("pipelining", [False, True], ids=["serial", "pipelined"])
def test_sender_refused_later_in_batch_does_not_raise(tmp_path, pipelining):
    state = {"n": 0}

    def mail_reply(address):
        state["n"] += 1
        return "553 5.7.1 sender no longer allowed" if state["n"] > 2 else None

    emails = addresses(5)
    with SMTPTestServer(mail_replies=mail_reply, pipelining=pipelining) as server, \
            transport(server, tmp_path, SMTP_SECURITY="none") as t:
        results = t.send(messages(*emails))
        assert [r.status for r in results] == [Status.SENT] * 2 + [Status.FAILED_TEMPORARY] * 3
        assert "sender" in results[2].error and "553" in results[2].error
        assert not any(r.bounce for r in results) and all(r.about_sender for r in results[2:])
        assert [r.about_sender for r in t.send(messages("later@example.com"))] == [True]
    assert server.recipients() == emails[:2]


@pytest.mark.parametrize("offered,setting,writes", [
    (False, "on", 4),   # MAIL, RCPT, DATA, message: four round trips
    (True, "on", 2),    # MAIL+RCPT+DATA together, then the message
    (True, "off", 4),
])
def test_pipelining_when_offered(tmp_path, monkeypatch, offered, setting, writes):
    sent: list[bytes] = []
    real_send = smtplib.SMTP.send

    def spy(self, s):
        sent.append(s if isinstance(s, bytes) else s.encode())
        return real_send(self, s)

    emails = addresses(5)
    with SMTPTestServer(pipelining=offered) as server, \
            transport(server, tmp_path, SMTP_SECURITY="none", SMTP_PIPELINING=setting) as t:
        t.send(messages("warm-up@example.com"))  # connect and EHLO outside the count
        monkeypatch.setattr(smtplib.SMTP, "send", spy)
        results = t.send(messages(*emails))
        monkeypatch.undo()
    assert [r.status for r in results] == [Status.SENT] * 5
    assert server.recipients() == ["warm-up@example.com", *emails]
    assert len(sent) == writes * len(emails)
    if writes == 2:
        assert sent[0].startswith(b"MAIL FROM:<news@example.org> SIZE=") and sent[0].endswith(b"\r\nDATA\r\n")


# ---- connections ---------------------------------------------------------------------------
def test_one_connection_for_many_messages_and_calls(tmp_path, tls):
    with SMTPTestServer(tls=tls, auth=True) as server:
        t = transport(server, tmp_path)
        assert server.connections == 0  # lazy: nothing until the first send
        for batch in range(4):
            results = t.send(messages(*addresses(10, prefix=f"b{batch}-")))
            assert all(r.status is Status.SENT for r in results)
        assert server.connections == 1 and t.connections == 1
        assert server.auth_attempts == [(TEST_USERNAME, True)]
        assert {m.connection for m in server.messages} == {1}
        assert len(server.messages) == 40
        t.close()
        assert server.verbs("QUIT") == 1
        t.close()
        t.send(messages("again@example.com"))  # after close, a new connection
        t.close()
        assert server.connections == 2


@pytest.mark.parametrize("pipelining", [False, True], ids=["serial", "pipelined"])
@pytest.mark.parametrize("phase,reply", [("DATA", None), ("MAIL", None), ("MAIL", "421 4.3.2 shutting down")])
def test_dropped_connection_mid_batch(tmp_path, phase, reply, pipelining):
    emails = addresses(10)
    with SMTPTestServer(drop_after=4, drop_phase=phase, drop_reply=reply, pipelining=pipelining) as server, \
            transport(server, tmp_path, SMTP_SECURITY="none") as t:
        results = t.send(messages(*emails))
    assert server.connections == 2
    if phase == "DATA" and reply is None:
        # Dropped after the whole message went out: the server might have queued it, so the
        # transport must not resend it itself; it reports it uncertain and goes on.
        assert [r.status for r in results] == [Status.SENT] * 4 + [Status.UNCERTAIN] + [Status.SENT] * 5
        assert "lost after the message was sent" in results[4].error
        assert server.recipients() == emails[:4] + emails[5:]
        assert [m.connection for m in server.messages] == [1] * 4 + [2] * 5
    else:
        assert [r.status for r in results] == [Status.SENT] * 10
        assert server.recipients() == emails  # everyone exactly once, in order
        assert [m.connection for m in server.messages] == [1] * 4 + [2] * 6


def test_dropped_twice_is_temporary_and_batch_continues(tmp_path):
    emails = addresses(3)
    with SMTPTestServer(drop_after=0, drops=2, drop_phase="MAIL") as server, \
            transport(server, tmp_path, SMTP_SECURITY="none") as t:
        results = t.send(messages(*emails))
    assert [r.status for r in results] == [Status.FAILED_TEMPORARY, Status.SENT, Status.SENT]
    assert "lost" in results[0].error
    assert server.recipients() == emails[1:]
    assert server.connections == 3


def test_dropped_between_send_calls(tmp_path):
    with SMTPTestServer(drop_after=2, drop_phase="MAIL") as server, \
            transport(server, tmp_path, SMTP_SECURITY="none") as t:
        assert [r.status for r in t.send(messages(*addresses(2)))] == [Status.SENT] * 2
        assert [r.status for r in t.send(messages(*addresses(2, "second")))] == [Status.SENT] * 2
    assert len(server.recipients()) == 4 and server.connections == 2


def test_reconnect_refused_mid_batch_reports_instead_of_raising(tmp_path, tls):
    emails = addresses(6)
    server = SMTPTestServer(tls=tls, auth=True, drop_after=3, drop_phase="MAIL")

    def rotate_password(address):  # the password changes while the first connection is open
        if address == emails[2]:
            server.password = "rotated"
        return None

    server.rcpt_replies = rotate_password
    with server, transport(server, tmp_path) as t:
        results = t.send(messages(*emails))
        assert [r.status for r in results] == [Status.SENT] * 3 + [Status.FAILED_TEMPORARY] * 3
        assert all("535" in r.error and r.about_sender for r in results[3:])  # the login: ours to fix
        with pytest.raises(TransportError, match="535"):
            t.send(messages("next@example.com"))
    assert server.recipients() == emails[:3]
    for r in results:
        assert_secret_absent(r.error or "")


# ---- settings ------------------------------------------------------------------------------
@pytest.mark.parametrize("security,port", [("starttls", 587), ("ssl", 465), ("none", 25), ("STARTTLS", 587)])
def test_default_ports(tmp_path, security, port):
    env = {"NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": "smtp.example.org", "SMTP_SECURITY": security}
    t = get_transport(load_settings(root=tmp_path, environ=env))
    assert (t.port, t.security, t.timeout) == (port, security.lower(), 30.0)
    assert t.envelope_from == "newsletter@example.org"  # the publication's From by default
    assert t.connections == 0


@pytest.mark.parametrize("env,match", [
    ({}, "SMTP_HOST"),
    ({"SMTP_HOST": "h", "SMTP_SECURITY": "tls-please"}, "SMTP_SECURITY"),
    ({"SMTP_HOST": "h", "SMTP_USERNAME": "u"}, "SMTP_PASSWORD"),
    ({"SMTP_HOST": "h", "SMTP_PORT": "smtp"}, "SMTP_PORT"),
    ({"SMTP_HOST": "h", "SMTP_PORT": "70000"}, "SMTP_PORT"),
    ({"SMTP_HOST": "h", "SMTP_PIPELINING": "maybe"}, "SMTP_PIPELINING"),
    ({"SMTP_HOST": "h", "SMTP_ENVELOPE_FROM": "no-at-sign"}, "SMTP_ENVELOPE_FROM"),
])
def test_bad_settings(tmp_path, env, match):
    with pytest.raises(ConfigError, match=match):
        get_transport(load_settings(root=tmp_path, environ={"NEWSLETTER_TRANSPORT": "smtp", **env}))


def test_password_is_never_shown(tmp_path):
    env = {"SMTP_HOST": "h", "SMTP_USERNAME": TEST_USERNAME, "SMTP_PASSWORD": TEST_PASSWORD}
    t = get_transport(load_settings(root=tmp_path, environ=env), "smtp")
    assert_secret_absent(repr(t) + repr(vars(t)))


def test_missing_ca_file_is_a_config_error(tmp_path):
    with SMTPTestServer() as server:
        t = transport(server, tmp_path, SMTP_SECURITY="starttls", SMTP_CA_FILE="missing-ca.pem")
        with pytest.raises(ConfigError, match="SMTP_CA_FILE"):
            t.send(messages("a@example.com"))


def test_verification_is_on(tmp_path, tls):
    t = SMTPTransport("127.0.0.1", 587, envelope_from=FROM, ca_file=str(tls.ca_file))
    ctx = t._context()
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname


# ---- checks before any reader is claimed (open) -------------------------------------------
@pytest.mark.parametrize("env, setting", [
    ({"SMTP_HELO_NAME": "mail.example.org\r\nRCPT TO:<x@evil.example>"}, "SMTP_HELO_NAME"),
    ({"SMTP_HELO_NAME": "bad name!"}, "SMTP_HELO_NAME"),
    ({"SMTP_SECURITY": "starttls", "SMTP_CA_FILE": "missing-ca.pem"}, "SMTP_CA_FILE"),
    ({"SMTP_USERNAME": "u", "SMTP_PASSWORD": TEST_PASSWORD + "\r"}, "SMTP_PASSWORD"),
    ({"SMTP_USERNAME": "u", "SMTP_PASSWORD": " " + TEST_PASSWORD}, "SMTP_PASSWORD"),
    ({"SMTP_USERNAME": "u", "SMTP_PASSWORD": "pässwörd-\u20ac"}, "SMTP_PASSWORD"),
], ids=["helo-crlf", "helo-junk", "ca-file", "password-cr", "password-space", "password-non-ascii"])
def test_open_refuses_bad_configuration_before_any_contact(tmp_path, env, setting):
    # The issue: these failed only after a batch was claimed, leaving it in 'sending'.
    with SMTPTestServer() as server:
        t = transport(server, tmp_path, SMTP_SECURITY="none", **env) if "SMTP_SECURITY" not in env \
            else transport(server, tmp_path, **env)
        with pytest.raises(ConfigError) as err:
            t.open()
        message = err.value.format_message()
        assert setting in message and "\n" not in message.strip()
        assert TEST_PASSWORD not in message and "evil" not in message
        assert server.connections == 0  # nobody was contacted


def test_open_accepts_good_names(tmp_path):
    for helo in ("mail.example.org", "localhost", "[192.0.2.1]", "[IPv6:2001:db8::1]"):
        SMTPTransport("127.0.0.1", 25, envelope_from=FROM, security="none", helo_name=helo).open()


# ---- rate limits are pacing signals ----------------------------------------------------------
def fake_clocked(server: SMTPTestServer, root: Path, **env: str) -> tuple[SMTPTransport, "FakeClock"]:
    from newsletter.clock import FakeClock

    clock = FakeClock()
    settings = load_settings(root=root, environ={"NEWSLETTER_FROM": FROM, **server.env(SMTP_SECURITY="none", **env)})
    return get_transport(settings, clock=clock), clock


def test_a_rate_limit_reply_is_waited_out_and_the_message_sent(tmp_path):
    emails = addresses(3)
    limited = {emails[1]: ["451 4.7.1 Too many messages, slow down", None]}
    with SMTPTestServer(rcpt_replies=limited) as server:
        t, clock = fake_clocked(server, tmp_path)
        with t:
            results = t.send(messages(*emails))
    assert [r.status for r in results] == [Status.SENT] * 3 and not any(r.rate_limited for r in results)
    assert server.recipients() == emails
    assert clock.monotonic() >= 1.0 and t.limiter.limited_count == 1


def test_a_persistent_rate_limit_is_reported_not_counted_as_a_failure(tmp_path):
    from newsletter.transports.ratelimit import RETRIES

    emails = addresses(3)
    with SMTPTestServer(rcpt_replies={emails[1]: "450 4.7.1 rate limit exceeded"}) as server:
        t, clock = fake_clocked(server, tmp_path)
        with t:
            results = t.send(messages(*emails))
    assert [r.status for r in results] == [Status.SENT] + [Status.FAILED_TEMPORARY] * 2
    assert [r.rate_limited for r in results] == [False, True, True]  # the engine defers, no attempt used
    assert results[1].retry_after and "rate limit" in results[1].error
    assert "not attempted" in results[2].error and not results[2].attempted and results[1].attempted
    assert server.verbs("RCPT") == 1 + RETRIES + 1
    assert server.recipients() == emails[:1]


def test_a_closing_421_too_many_is_paced_and_retried_on_a_new_connection(tmp_path):
    emails = addresses(4)
    with SMTPTestServer(drop_after=1, drop_phase="MAIL", drop_reply="421 4.7.0 Too many connections, slow down",
                        drops=2) as server:
        t, clock = fake_clocked(server, tmp_path)
        with t:
            results = t.send(messages(*emails))
    assert [r.status for r in results] == [Status.SENT] * 4
    assert server.recipients() == emails  # everyone exactly once
    assert t.limiter.limited_count == 2 and clock.monotonic() >= 2.0


def test_a_busy_greeting_is_not_a_broken_server(tmp_path):
    # "421 too many connections" before EHLO: slow down and try again, never "cannot use the server".
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    port = sock.getsockname()[1]
    greeted = []

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"421 4.7.0 mx.test too many connections, try later\r\n")
                greeted.append(1)

    import threading

    from newsletter.clock import FakeClock
    from newsletter.transports.ratelimit import RETRIES

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        t = SMTPTransport("127.0.0.1", port, envelope_from=FROM, security="none", timeout=5, clock=FakeClock())
        with t:
            results = t.send(messages(*addresses(2)))
    finally:
        sock.close()
        thread.join(timeout=5)
    assert [r.status for r in results] == [Status.FAILED_TEMPORARY] * 2
    assert all(r.rate_limited for r in results)
    assert len(greeted) == RETRIES + 1


def test_dropped_after_data_is_uncertain_once_never_a_second_transfer(tmp_path):
    # The issue: a server dropping the connection after DATA saw 15 transfers for 3 readers.
    emails = addresses(3)
    with SMTPTestServer(drop_after=0, drop_phase="DATA", drops=3) as server, \
            transport(server, tmp_path, SMTP_SECURITY="none") as t:
        results = t.send(messages(*emails))
    assert [r.status for r in results] == [Status.UNCERTAIN] * 3
    assert server.verbs("DATA") == 3  # one complete transfer per reader, never repeated here


# ---- issue 22: Postfix's error limits, a refused sender, TCP_NODELAY ---------------------------
@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_tcp_nodelay_is_set_on_the_smtp_socket(tmp_path, tls, security):
    # Without it the last small TLS record of each message waited on Nagle and the server's
    # delayed ACK: ~40 ms a message, 22 msg/s against Postfix over STARTTLS.
    with SMTPTestServer(tls=tls, implicit_tls=security == "ssl") as server, \
            transport(server, tmp_path, SMTP_SECURITY=security) as t:
        assert t.send(messages("a@example.com"))[0].status is Status.SENT
        assert t._smtp.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.parametrize("pipelining", [False, True], ids=["serial", "pipelined"])
def test_a_helo_rejection_is_about_the_sender_and_charges_nobody(tmp_path, pipelining):
    # Postfix with reject_non_fqdn_helo_hostname answers every RCPT so: it is our EHLO name.
    emails = addresses(4)
    helo = "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"
    with SMTPTestServer(rcpt_replies=lambda a: helo if a != emails[0] else None, pipelining=pipelining) as server, \
            transport(server, tmp_path, SMTP_SECURITY="none") as t:
        results = t.send(messages(*emails))
    assert results[0].status is Status.SENT
    assert all(r.about_sender and r.status is Status.FAILED_TEMPORARY and not r.bounce for r in results[1:])
    assert "Helo command rejected" in results[1].error and [r.attempted for r in results[1:]] == [True, False, False]
    assert server.verbs("RCPT") == 2  # the rest were not tried: each would be refused alike


def test_the_same_permanent_answer_for_readers_in_a_row_is_about_the_sender(tmp_path):
    from newsletter.smtp_status import SAME_ANSWER_RUN

    emails = addresses(SAME_ANSWER_RUN + 3)
    unknown = emails[1]
    policy = lambda a: ("550 5.1.1 no such user" if a == unknown else  # noqa: E731
                        None if a == emails[0] else f"550 5.7.1 message from <{FROM}> to <{a}> rejected by policy")
    with SMTPTestServer(data_replies=policy) as server, transport(server, tmp_path, SMTP_SECURITY="none") as t:
        results = t.send(messages(*emails))
    assert [r.status for r in results[:2]] == [Status.SENT, Status.FAILED_PERMANENT] and results[1].bounce
    run = results[2:2 + SAME_ANSWER_RUN]
    assert all(r.about_sender and "in a row" in r.error for r in run), [r.error for r in run]
    assert all(r.about_sender and not r.attempted for r in results[2 + SAME_ANSWER_RUN:])
    # Different answers (a hard bounce, then a policy refusal) start no run.
    with SMTPTestServer(data_replies={emails[1]: "550 5.7.1 rejected", emails[2]: "550 5.7.1 content refused"}) as s2, \
            transport(s2, tmp_path, SMTP_SECURITY="none") as t2:
        assert not any(r.about_sender for r in t2.send(messages(*emails[:4])))


def test_no_data_into_a_refused_transaction_once_refused_and_the_connection_is_renewed(tmp_path, monkeypatch):
    from newsletter.transports.smtp import ERROR_BUDGET

    writes: list[bytes] = []
    real_send = smtplib.SMTP.send
    monkeypatch.setattr(smtplib.SMTP, "send", lambda self, s: (writes.append(s), real_send(self, s))[1])
    emails = [f"unknown{i}@example.com" for i in range(ERROR_BUDGET + 2)] + addresses(2)
    with SMTPTestServer(rcpt_replies=lambda a: "550 5.1.1 no such user" if a.startswith("unknown") else None,
                        pipelining=True) as server, transport(server, tmp_path, SMTP_SECURITY="none") as t:
        results = t.send(messages(*emails))
    assert [r.bounce for r in results] == [True] * (ERROR_BUDGET + 2) + [False, False]
    assert server.recipients() == emails[-2:]
    # Only the first refusal on each connection had a DATA pipelined behind it (Postfix counts each
    # as one more error); after it, DATA waited for an accepted RCPT: 2 DATA for 10 refused readers.
    assert sum(w.endswith(b"DATA\r\n") for w in writes if isinstance(w, bytes)) == 2 + 2
    assert server.connections == 2  # renewed after ERROR_BUDGET refusals, before Postfix slows replies


def test_too_many_errors_is_a_reconnect_not_a_rate_limit_and_too_much_mail_is_one(tmp_path):
    emails = addresses(3)
    with SMTPTestServer(drop_after=1, drop_phase="MAIL", drop_reply="421 4.7.0 mx.example.org Error: too many errors",
                        ) as server:
        t, clock = fake_clocked(server, tmp_path)
        with t:
            results = t.send(messages(*emails))
    assert [r.status for r in results] == [Status.SENT] * 3 and server.recipients() == emails
    assert t.limiter.limited_count == 0 and clock.monotonic() == 0  # full speed on the new connection
    with SMTPTestServer(mail_replies={FROM: [None, "450 4.7.1 Error: too much mail from 127.0.0.1", None]}) as server:
        t, clock = fake_clocked(server, tmp_path)
        with t:
            results = t.send(messages(*emails))
    assert [r.status for r in results] == [Status.SENT] * 3 and t.limiter.limited_count == 1


def test_default_helo_name_is_this_hosts_fully_qualified_name(tmp_path):
    with SMTPTestServer() as server, transport(server, tmp_path, SMTP_SECURITY="none") as t:
        t.send(messages("a@example.com"))
        assert t._smtp.local_hostname == socket.getfqdn()
