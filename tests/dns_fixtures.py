"""Fixture zones for the sender checks: one test domain per verdict, served by tests/dns_server.py.

Test data, not the publication's: every domain is under the reserved ``.example`` TLD and every
address in 192.0.2.0/24 (TEST-NET-1). Each domain is complete (SPF, DKIM, DMARC, MX, relay with
forward and reverse DNS) except for the one thing its name says is wrong.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SELECTOR = "news"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def p_value(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def txt(name: str, value: str) -> str:
    """A TXT line; values over 255 bytes split into strings, as zone files must."""
    chunks = " ".join(f'"{value[i:i + 250]}"' for i in range(0, len(value), 250))
    return f"{name}. 300 IN TXT {chunks}"


def domain_zone(domain: str, index: int, key: rsa.RSAPrivateKey, *, spf: str | None = "default",
                dmarc: str | None = "v=DMARC1; p=quarantine; rua=mailto:dmarc@{d}", mx: bool = True,
                ptr: str | None = None) -> list[str]:
    """A complete sending domain: relay.<domain> at 192.0.2.<index>, its PTR, SPF, DKIM, DMARC, MX."""
    address = f"192.0.2.{index}"
    lines = [f"relay.{domain}. 300 IN A {address}",
             f"{index}.2.0.192.in-addr.arpa. 300 IN PTR {ptr or 'relay.' + domain}.",
             txt(f"{SELECTOR}._domainkey.{domain}", f"v=DKIM1; k=rsa; p={p_value(key)}"),
             f"{domain}. 300 IN A {address}"]
    if spf is not None:
        lines.append(txt(domain, f"v=spf1 ip4:{address} -all" if spf == "default" else spf))
    if dmarc is not None:
        lines.append(txt(f"_dmarc.{domain}", dmarc.format(d=domain)))
    if mx:
        lines.append(f"{domain}. 300 IN MX 10 relay.{domain}.")
    return lines


def fixture_zone(key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey) -> str:
    """Every fixture domain in one zone text. ``other_key`` is the wrong one for badkey.example."""
    chain = [txt("lookups.example", "v=spf1 " + " ".join(f"include:s{i}.lookups.example" for i in range(11))
                 + " ip4:192.0.2.13 -all")]
    chain += [txt(f"s{i}.lookups.example", f"v=spf1 ip4:198.51.100.{i} -all") for i in range(11)]
    lines = [
        *domain_zone("good.example", 10, key),
        *domain_zone("nospf.example", 11, key, spf=None),
        *domain_zone("plusall.example", 12, key, spf="v=spf1 ip4:192.0.2.12 +all"),
        *domain_zone("lookups.example", 13, key, spf=None), *chain,
        *domain_zone("badkey.example", 14, other_key),
        *domain_zone("nodmarc.example", 15, key, dmarc=None),
        # DKIM signs as noalign.example and bounces go there: strict alignment with mail.noalign.example fails
        *domain_zone("noalign.example", 16, key, dmarc="v=DMARC1; p=reject; adkim=s; aspf=s"),
        "mail.noalign.example. 300 IN A 192.0.2.16",
        *domain_zone("nomx.example", 17, key, mx=False),
        "nomx.example. 300 IN TXT \"no mail here\"",
        *domain_zone("ptr.example", 18, key, ptr="someone-else.example"),
        # a provider: SendGrid's documented CNAMEs, DMARC relaxed
        "s1._domainkey.sg.example. 300 IN CNAME s1.domainkey.u123.wl.sendgrid.net.",
        "s2._domainkey.sg.example. 300 IN CNAME s2.domainkey.u123.wl.sendgrid.net.",
        "em123.sg.example. 300 IN CNAME u123.wl.sendgrid.net.",
        txt("_dmarc.sg.example", "v=DMARC1; p=none"),
        "sg.example. 300 IN MX 10 mx.sg.example.",
        "s1._domainkey.sgbroken.example. 300 IN CNAME s1.domainkey.u123.wl.sendgrid.net.",
        txt("_dmarc.sgbroken.example", "v=DMARC1; p=none"),
        "sgbroken.example. 300 IN MX 10 mx.sg.example.",
        # Resend: DKIM TXT at resend._domainkey, Return-Path send.<domain> with Amazon SES's include
        txt("resend._domainkey.rs.example", "p=" + p_value(key)),
        txt("send.rs.example", "v=spf1 include:amazonses.com ~all"), txt("amazonses.com", "v=spf1 ip4:199.255.192.0/22 -all"),
        txt("_dmarc.rs.example", "v=DMARC1; p=quarantine"), "rs.example. 300 IN MX 10 mx.rs.example.",
        # Mailgun: the sending domain mg.mgun.example carries SPF and the DKIM key (selector pic)
        txt("mg.mgun.example", "v=spf1 include:mailgun.org ~all"), txt("mailgun.org", "v=spf1 ip4:198.61.254.0/23 -all"),
        txt("pic._domainkey.mg.mgun.example", "k=rsa; p=" + p_value(key)),
        txt("_dmarc.mgun.example", "v=DMARC1; p=none"), "mgun.example. 300 IN MX 10 mx.mgun.example.",
        # SES Easy DKIM tokens, no custom MAIL FROM; Postmark's dated selector and custom Return-Path
        *(f"tok{i}._domainkey.ses.example. 300 IN CNAME tok{i}.dkim.amazonses.com." for i in range(3)),
        txt("_dmarc.ses.example", "v=DMARC1; p=none"), "ses.example. 300 IN MX 10 mx.ses.example.",
        txt("20240101000000pm._domainkey.pm.example", "k=rsa; p=" + p_value(key)),
        "pm-bounces.pm.example. 300 IN CNAME pm.mtasv.net.",
        txt("_dmarc.pm.example", "v=DMARC1; p=none"), "pm.example. 300 IN MX 10 mx.pm.example.",
    ]
    # nomx.example's own A record must go: replies need MX or an address
    lines = [line for line in lines if not line.startswith("nomx.example. 300 IN A ")]
    return "\n".join(lines) + "\n"


def smtp_env(domain: str, resolver: str, key_file: Path, **extra: str) -> dict[str, str]:
    """Settings of a publication at ``domain`` sending through its own relay, signing itself."""
    return {"NEWSLETTER_TRANSPORT": "smtp", "SMTP_HOST": f"relay.{domain}", "NEWSLETTER_FROM": f"news@{domain}",
            "NEWSLETTER_DKIM_KEY_FILE": str(key_file), "NEWSLETTER_DKIM_SELECTOR": SELECTOR,
            "NEWSLETTER_REPLY_TO": f"editors@{domain}", "NEWSLETTER_RESOLVER": resolver,
            "NEWSLETTER_DNS_TIMEOUT": "3", **extra}
