"""Public-facing commands: serve (one-click unsubscribe and the web archive)."""

from __future__ import annotations

from pathlib import Path

import click

from newsletter.cli import cli, settings_of


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (keep 127.0.0.1 behind a proxy).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--site", type=click.Path(file_okay=False, path_type=Path),
              help="Also serve a built web archive (newsletter archive) from this folder.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, site: Path | None) -> None:
    """Serve one-click unsubscribe (RFC 8058) and, optionally, the web archive.

    In production run it behind a TLS reverse proxy, or under a WSGI server
    with `newsletter.web:create_app()`.
    """
    from newsletter.web import make_app, serve as run

    settings = settings_of(ctx)
    if not settings.has_secret_key:
        from newsletter.errors import ConfigError

        raise ConfigError("NEWSLETTER_SECRET_KEY is not set: no unsubscribe link from a real send would verify")
    click.echo(f"Serving on http://{host}:{port}/ (Ctrl-C to stop)")
    run(make_app(settings, site_dir=site), host=host, port=port)
