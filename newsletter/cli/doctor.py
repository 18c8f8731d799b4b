"""`newsletter doctor`: the sender's DNS against the configured transport (see newsletter.doctor)."""

from __future__ import annotations

import click

from newsletter.cli import cli, settings_of


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def doctor(ctx: click.Context, fmt: str) -> None:
    """Check the sender's DNS: SPF, DKIM, DMARC, the Reply-To domain and, for your own SMTP
    relay, forward and reverse DNS of its name.

    Each finding is pass, warn or fail, with the record found and the record that would
    fix it. Exits 6 on a fail, 75 when no DNS resolver answers (NEWSLETTER_RESOLVER sets one).
    """
    import json

    from newsletter.doctor import diagnose
    from newsletter.dns_client import Lookup, make_resolver
    from newsletter.errors import ChecksFailedError, scrub

    settings = settings_of(ctx)
    report = diagnose(settings, Lookup(make_resolver(settings)))
    if fmt == "json":
        click.echo(json.dumps([{k: scrub(v, 2000) for k, v in f.as_dict().items()} for f in report.findings],
                              indent=2, ensure_ascii=False))
    else:
        s = report.sender
        click.echo(f"Sender: {s.transport}, From {settings.publication.from_email}"
                   + (f", relay {s.relay_host}" if s.relay_host else "")
                   + (f", Return-Path domain {s.spf_domain}" if s.spf_domain else ""))
        for f in report.findings:
            click.echo(f"{f.status.upper():<5} {f.check:<9} {f.name}: {scrub(f.message, 1000)}")
            if f.found:
                click.echo(f"{'':16}found: {scrub(f.found, 1000)}")
            if f.fix:
                click.echo(f"{'':16}fix:   {scrub(f.fix, 1000)}")
        counts = {s: sum(f.status == s for f in report.findings) for s in ("pass", "warn", "fail")}
        click.echo(f"{counts['pass']} passed, {counts['warn']} warning(s), {counts['fail']} failed.")
    if report.failed:
        raise ChecksFailedError(f"{sum(f.status == 'fail' for f in report.findings)} sender check(s) failed; "
                                "each FAIL line shows the record that would fix it")
