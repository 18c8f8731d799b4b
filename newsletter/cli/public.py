"""Public-facing commands: serve (unsubscribe, signup, the web archive) and form-snippet."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from newsletter.cli import settings_of


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (keep 127.0.0.1 behind a proxy).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port, printed at start).")
@click.option("--site", type=click.Path(file_okay=False, path_type=Path),
              help="Also serve a built web archive (newsletter archive) from this folder.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, site: Path | None) -> None:
    """Serve one-click unsubscribe (RFC 8058), signup with double opt-in and, optionally,
    the web archive, on waitress (a production WSGI server). Put a TLS proxy in front.

    Or run `newsletter.web:create_app()` under another WSGI server.
    """
    from newsletter.dburl import redact
    from newsletter.errors import ConfigError
    from newsletter.web import make_app
    from newsletter.web.prefork import child_command
    from newsletter.web.server import ServerLimits, serve as run

    settings = settings_of(ctx)
    if not settings.has_secret_key:
        raise ConfigError("NEWSLETTER_SECRET_KEY is not set: no unsubscribe link from a real send would verify")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = make_app(settings, site_dir=site)
    where = redact(str(settings.db_target))  # which database this replica writes to, its password hidden
    try:
        run(app, host=host, port=port, limits=ServerLimits.from_settings(settings),
            ready=lambda line: click.echo(f"{line}; database {where}"), spawn=child_command(settings.root, site))
    except OSError as exc:  # the port is taken, or the address cannot be bound
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@click.command("form-snippet")
@click.pass_context
def form_snippet(ctx: click.Context) -> None:
    """Print an HTML signup form to paste into the publication's own website.

    It posts to BASE_URL/subscribe; add the site's origin to NEWSLETTER_FORM_ORIGINS.
    """
    from newsletter.web.snippet import form_snippet as snippet

    click.echo(snippet(settings_of(ctx)), nl=False)
