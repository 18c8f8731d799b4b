"""`newsletter doctor` against a real DNS server on 127.0.0.1 serving the fixture zones:
the right verdict for every domain, the record that would fix it, exit 6 on a fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.config import load_settings
from newsletter.doctor import diagnose
from newsletter.dns_client import Lookup, make_resolver, resolver_address
from newsletter.errors import ConfigError
from tests.dns_fixtures import fixture_zone, p_value, pem, rsa_key, smtp_env
from tests.dns_server import LoopbackDNS


@pytest.fixture(scope="module")
def keys():
    return rsa_key(), rsa_key()


@pytest.fixture(scope="module")
def dns(keys):
    with LoopbackDNS(fixture_zone(*keys)) as server:
        yield server


@pytest.fixture
def key_file(tmp_path, keys) -> Path:
    path = tmp_path / "dkim.pem"
    path.write_bytes(pem(keys[0]))
    return path


def run(root: Path, env: dict[str, str], *args: str):
    return CliRunner().invoke(cli, ["--root", str(root), "doctor", *args], env=env, catch_exceptions=False)


def verdicts(root: Path, env: dict[str, str]) -> dict[str, set[str]]:
    result = run(root, env, "--format", "json")
    found: dict[str, set[str]] = {}
    for f in json.loads(result.output[:result.output.rindex("]") + 1]):
        found.setdefault(f["check"], set()).add(f["status"])
    return found


def test_good_domain_passes_every_check(publication_root, dns, key_file):
    env = smtp_env("good.example", dns.address, key_file)
    result = run(publication_root, env)
    assert result.exit_code == 0, result.output
    assert verdicts(publication_root, env) == {c: {"pass"} for c in ("spf", "dkim", "dmarc", "reply-to", "helo")}
    assert "relay.good.example → 192.0.2.10 → relay.good.example" in result.output


@pytest.mark.parametrize("domain, failing, fix", [
    ("nospf.example", "spf", 'nospf.example. TXT "v=spf1 ip4:192.0.2.11 ~all"'),
    ("plusall.example", "spf", 'plusall.example. TXT "v=spf1 ip4:192.0.2.12 ~all"'),
    ("lookups.example", "spf", "ip4:198.51.100.0/32"),
    ("badkey.example", "dkim", "news._domainkey.badkey.example. TXT \"v=DKIM1; k=rsa; p="),
    ("nodmarc.example", "dmarc", '_dmarc.nodmarc.example. TXT "v=DMARC1; p=none'),
    ("ptr.example", "helo", "18.2.0.192.in-addr.arpa. PTR relay.ptr.example."),
])
def test_each_broken_domain_fails_its_check_only(publication_root, dns, key_file, domain, failing, fix):
    env = smtp_env(domain, dns.address, key_file)
    result = run(publication_root, env)
    assert result.exit_code == 6, result.output
    assert fix in result.output
    got = verdicts(publication_root, env)
    assert got.pop(failing) == {"fail"}, result.output
    dependent = {"dmarc"} if failing in ("spf", "dkim") else set()  # DMARC may still pass through the other
    assert all(v == {"pass"} for k, v in got.items() if k not in dependent), got


def test_plus_all_and_lookup_count_are_named(publication_root, dns, key_file):
    assert "+all" in run(publication_root, smtp_env("plusall.example", dns.address, key_file)).output
    assert "needs 11 or more DNS lookups" in run(publication_root, smtp_env("lookups.example", dns.address, key_file)).output


def test_dkim_mismatch_prints_our_public_key(publication_root, dns, key_file, keys):
    result = run(publication_root, smtp_env("badkey.example", dns.address, key_file))
    assert "does not match NEWSLETTER_DKIM_KEY_FILE" in result.output
    assert f"p={p_value(keys[0])}" in result.output.replace("\n", "")


def test_dmarc_that_cannot_align(publication_root, dns, key_file):
    env = smtp_env("noalign.example", dns.address, key_file, NEWSLETTER_FROM="news@mail.noalign.example",
                   NEWSLETTER_DKIM_DOMAIN="noalign.example", SMTP_ENVELOPE_FROM="bounces@noalign.example",
                   NEWSLETTER_REPLY_TO="editors@noalign.example")
    result = run(publication_root, env)
    assert result.exit_code == 6
    got = verdicts(publication_root, env)
    assert got["dmarc"] == {"fail"} and got["spf"] == got["dkim"] == {"pass"}, got
    assert "adkim=s" in result.output and "aspf=s" in result.output
    assert '_dmarc.noalign.example. TXT "v=DMARC1; p=reject; adkim=r; aspf=r"' in result.output


def test_reply_to_domain_without_mx_or_address(publication_root, dns, key_file):
    env = smtp_env("good.example", dns.address, key_file, NEWSLETTER_REPLY_TO="editors@nomx.example")
    result = run(publication_root, env)
    assert result.exit_code == 6
    got = verdicts(publication_root, env)
    assert got.pop("reply-to") == {"fail"} and all(v == {"pass"} for v in got.values())
    assert "neither MX nor address records" in result.output


def test_provider_dkim_cnames_and_return_path(publication_root, dns):
    env = {"NEWSLETTER_TRANSPORT": "sendgrid", "NEWSLETTER_FROM": "news@sg.example", "NEWSLETTER_REPLY_TO": "e@sg.example",
           "NEWSLETTER_RETURN_PATH_DOMAIN": "em123.sg.example", "NEWSLETTER_RESOLVER": dns.address}
    result = run(publication_root, env)
    assert result.exit_code == 0, result.output
    assert verdicts(publication_root, env) == {c: {"pass"} for c in ("spf", "dkim", "dmarc", "reply-to")}
    env["NEWSLETTER_FROM"] = "news@sgbroken.example"
    env["NEWSLETTER_RETURN_PATH_DOMAIN"] = "em123.sgbroken.example"
    result = run(publication_root, env)
    assert result.exit_code == 6
    assert "s2._domainkey.sgbroken.example. CNAME" in result.output
    assert "em123.sgbroken.example" in result.output


def test_unreachable_resolver_says_so_in_one_line(publication_root, key_file):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # a port nobody answers on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        env = smtp_env("good.example", f"127.0.0.1:{port}", key_file, NEWSLETTER_DNS_TIMEOUT="0.3")
        result = CliRunner().invoke(cli, ["--root", str(publication_root), "doctor"], env=env)
    assert result.exit_code == 75, result.output
    assert result.output.count("\n") == 1 and "no answer from the DNS resolver 127.0.0.1" in result.output


@pytest.mark.parametrize("raw", ["localhost:53", "127.0.0.1:99999", "1.2.3.4:x", "[::1]:0", "a:b:c"])
def test_resolver_setting_is_checked(raw):
    with pytest.raises(ConfigError):
        resolver_address(raw)


def test_resolver_setting_forms():
    assert resolver_address("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert resolver_address("[::1]:53") == ("::1", 53)
    assert resolver_address("10.0.0.1") == ("10.0.0.1", 53)


def test_hostile_records_stay_bounded(publication_root, key_file):
    """Huge, looping and garbage records: one finding each, no traceback, bounded output."""
    zone = "\n".join([
        'loop.example. 300 IN TXT "v=spf1 include:loop.example -all"',
        'loop.example. 300 IN TXT "\x1b[31mred"',
        '_dmarc.loop.example. 300 IN TXT "v=DMARC1; p=maybe; adkim=x"',
        "news._domainkey.loop.example. 300 IN TXT \"v=DKIM1; p=!!notbase64!!\"",
        "relay.loop.example. 300 IN A 192.0.2.99",
    ]) + "\n"
    with LoopbackDNS(zone) as server:
        env = smtp_env("loop.example", server.address, key_file)
        settings = load_settings(publication_root, environ=env)
        report = diagnose(settings, Lookup(make_resolver(settings)))
        result = run(publication_root, env)
    assert result.exit_code == 6 and "Traceback" not in result.output
    assert "\x1b" not in result.output
    by = {f.check: f.status for f in report.findings}
    assert by["dmarc"] == "fail" and by["dkim"] == "fail" and by["helo"] == "fail"


def test_lookups_are_bounded_in_number_and_time(publication_root, dns, key_file):
    from newsletter.dns_client import MAX_QUERIES, DnsLookupFailed, DnsUnavailable

    settings = load_settings(publication_root, environ=smtp_env("good.example", dns.address, key_file))
    lookup = Lookup(make_resolver(settings))
    lookup.queries = MAX_QUERIES
    with pytest.raises(DnsLookupFailed, match="more than 300 DNS queries"):
        lookup.txt("good.example")
    now = [0.0]
    slow = Lookup(make_resolver(settings), clock=lambda: now[0])
    assert slow.txt("good.example")
    now[0] = 6 * 3 + 0.1  # six lookup timeouts (NEWSLETTER_DNS_TIMEOUT=3) spent in all
    with pytest.raises(DnsUnavailable, match="took longer than 18s"):
        slow.txt("good.example")


@pytest.mark.parametrize("transport, domain, extra, expect", [
    ("resend", "rs.example", {}, {"spf": {"pass"}, "dkim": {"pass"}, "dmarc": {"pass"}}),
    ("mailgun", "mgun.example", {"MAILGUN_DOMAIN": "mg.mgun.example"},
     {"spf": {"pass"}, "dkim": {"pass"}, "dmarc": {"pass"}}),
    ("ses", "ses.example", {"NEWSLETTER_DKIM_SELECTOR": "tok0,tok1,tok2"},
     {"spf": {"warn"}, "dkim": {"pass"}, "dmarc": {"pass"}}),
    ("ses", "ses.example", {"NEWSLETTER_DKIM_SELECTOR": "tok0,tok1,tok9"},
     {"spf": {"warn"}, "dkim": {"pass", "fail"}, "dmarc": {"fail"}}),
    ("postmark", "pm.example", {"NEWSLETTER_DKIM_SELECTOR": "20240101000000pm"},
     {"spf": {"pass"}, "dkim": {"pass"}, "dmarc": {"pass"}}),
    ("postmark", "pm.example", {}, {"spf": {"pass"}, "dkim": {"warn"}, "dmarc": {"pass"}}),
])
def test_each_provider_against_its_documented_records(publication_root, dns, transport, domain, extra, expect):
    env = {"NEWSLETTER_TRANSPORT": transport, "NEWSLETTER_FROM": f"news@{domain}",
           "NEWSLETTER_REPLY_TO": f"editors@{domain}", "NEWSLETTER_RESOLVER": dns.address, **extra}
    got = verdicts(publication_root, env)
    assert got.pop("reply-to") == {"pass"}
    assert got == expect


def test_hostile_spf_terms_are_findings_not_tracebacks(publication_root, key_file):
    long = "v=spf1 " + " ".join(f"ip4:198.51.100.{i % 250}" for i in range(400)) + " ~all"
    zone = "\n".join([
        'odd.example. 300 IN TXT "v=spf1 include: ip4:999.1.1.1 a/abc mx:/24 exists:%{i}.x ptr redirect= '
        'include:..bad.. ip4:192.0.2.40 -all"',
        "relay.odd.example. 300 IN A 192.0.2.40",
        "40.2.0.192.in-addr.arpa. 300 IN PTR relay.odd.example.",
        'big.example. 300 IN TXT ' + " ".join(f'"{long[i:i + 250]}"' for i in range(0, len(long), 250)),
        "relay.big.example. 300 IN A 192.0.2.41",
    ]) + "\n"
    with LoopbackDNS(zone) as server:
        for domain in ("odd.example", "big.example"):
            settings = load_settings(publication_root, environ=smtp_env(domain, server.address, key_file))
            report = diagnose(settings, Lookup(make_resolver(settings)))
            spf = report.of("spf")
            assert spf and all(len(f.found) <= 4096 for f in spf)
    assert any("not a valid DNS name" in f.message or "not an IP address" in f.message
               for f in diagnose(load_settings(publication_root, environ=smtp_env("odd.example", "127.0.0.1:9",
                                                                                  key_file)),
                                 _FakeLookup()).findings)


class _FakeLookup(Lookup):
    """The odd record without a server: what the walk makes of each hostile term."""

    def __init__(self) -> None:
        self.queries = 0

    def _ask(self, name: str, rdtype: str) -> list:
        raise AssertionError("not used")

    def txt(self, name: str) -> list[str]:
        if name == "odd.example":
            return ["v=spf1 include: ip4:999.1.1.1 a/abc ip4:192.0.2.40 -all"]
        return []

    def addresses(self, name: str) -> list[str]:
        return ["192.0.2.40"] if name.startswith("relay.") or name == "odd.example" else []

    def mx(self, name: str) -> list[tuple[int, str]]:
        return []

    def ptr(self, address: str) -> list[str]:
        return []

    def cname(self, name: str) -> str | None:
        return None
