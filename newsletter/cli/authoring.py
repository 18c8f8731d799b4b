"""Authoring commands: init, new, build, preview, check, archive."""

from __future__ import annotations

from pathlib import Path

import click

from newsletter.cli import cli, issue_path, render_ref, settings_of
from newsletter.errors import InputError


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Start a new publication in DIRECTORY: newsletter.toml, .env.example, a first issue.

    Templates are not copied: the shipped ones are used until you copy one to change it
    (`newsletter templates copy NAME`)."""
    from newsletter.scaffold import init_publication

    created = init_publication(directory)
    click.echo(f"Created {len(created)} files in {directory}. Next: cd {directory} && newsletter preview 1")


@cli.group()
def templates() -> None:
    """See and change which templates the publication overrides.

    templates/ holds only the templates the publication changes; every other one is the
    template shipped with newsletter, so its fixes arrive with each upgrade. Copy one to
    change it; after an upgrade, `diff` shows what the shipped version now does differently.
    """


@templates.command("list")
@click.pass_context
def templates_list(ctx: click.Context) -> None:
    """Each template and where it comes from: default, customised, a copy, or the publication's own."""
    from newsletter.template_files import template_states

    for name, state in template_states(settings_of(ctx).templates_dir):
        click.echo(f"{name}\t{state}")


@templates.command("copy")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="Replace the publication's copy with the shipped template.")
@click.pass_context
def templates_copy(ctx: click.Context, names: tuple[str, ...], force: bool) -> None:
    """Copy shipped templates (e.g. email.css.j2) into templates/, to change them there."""
    from newsletter.template_files import copy_template

    for name in names:
        click.echo(f"Copied {copy_template(settings_of(ctx).templates_dir, name, force=force)}")


@templates.command("diff")
@click.argument("name")
@click.pass_context
def templates_diff(ctx: click.Context, name: str) -> None:
    """What the publication's copy of NAME changes from the shipped template (a unified diff)."""
    from newsletter.template_files import template_diff

    templates_dir = settings_of(ctx).templates_dir
    diff = template_diff(templates_dir, name)
    if diff:
        click.echo(diff, nl=False)
    elif not (templates_dir / name).is_file():
        click.echo(f"{name}: not in templates/; the shipped template is used", err=True)


@cli.command()
@click.argument("title")
@click.option("--lang", metavar="TAG",
              help="Start the TAG edition (e.g. zh-Hans) of issue TITLE (a number or slug) instead.")
@click.pass_context
def new(ctx: click.Context, title: str, lang: str | None) -> None:
    """Scaffold the next numbered issue file with TITLE (or, with --lang, an edition of an issue)."""
    settings = settings_of(ctx)
    if lang is not None:
        from newsletter.editions import new_edition, resolve

        path = new_edition(resolve(issue_path(settings, title))[0], lang, settings.publication.lang)
        click.echo(f"Created {path} (a draft: translate it, then set 'status: ready')")
        return
    from newsletter.scaffold import new_issue

    path = new_issue(settings.issues_dir, title)
    click.echo(f"Created {path}")


@cli.command()
@click.argument("issues", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write to DIR/<slug>/ instead of build/<slug>/.")
@click.option("--lang", metavar="TAG", help="Build only the TAG edition (default: every edition).")
@click.pass_context
def build(ctx: click.Context, issues: tuple[str, ...], out: Path | None, lang: str | None) -> None:
    """Render ISSUES (default: all), every edition, to email.html, email.txt and preview.html.

    Markdown → Jinja2 → MJML → mjml-python → premailer, and a plain-text part
    from the same source. Output goes to build/<slug>/ (or --out DIR/<slug>/), and an
    edition's to build/<slug>/<tag>/.
    """
    from newsletter.editions import load_editions, render_editions, resolve
    from newsletter.issue import list_issues, refuse_shared_slug
    from newsletter.preview import preview_page
    from newsletter.render import Renderer, write_build

    settings = settings_of(ctx)
    if not issues:
        refuse_shared_slug(settings.issues_dir)
    paths = [issue_path(settings, ref) for ref in issues] or list_issues(settings.issues_dir)
    if not paths:
        raise InputError(f"no issue files in {settings.issues_dir}")
    renderer = Renderer(settings)
    pub = settings.publication
    for path in paths:
        editions = load_editions(resolve(path)[0], pub.lang)
        only = None if lang is None else editions.tag_of(lang)
        for tag, rendered in render_editions(editions, settings, renderer, only=only).items():
            target = write_build(rendered, out or settings.build_dir,
                                 preview_page(rendered, pub.from_name or pub.name))
            size = len(rendered.html.encode("utf-8"))
            name = rendered.source.name if rendered.source else path.name
            click.echo(f"Built {name} → {target}/ (HTML {size / 1024:.1f} KB, text {len(rendered.text) / 1024:.1f} KB)")


@cli.command()
@click.argument("issue")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1 (0 picks a free one).")
@click.option("--no-open", is_flag=True, help="Do not open a browser.")
@click.option("--screenshot", "screenshot_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Instead of serving, write PNGs at 375 and 800 px, light and dark, to DIR.")
@click.option("--lang", metavar="TAG", help="Preview the TAG edition (default: the main one).")
@click.pass_context
def preview(ctx: click.Context, issue: str, port: int, no_open: bool, screenshot_dir: Path | None,
            lang: str | None) -> None:
    """Live preview of ISSUE at desktop and phone widths, with the plain text beside them.

    Serves on 127.0.0.1 only, rebuilds within a second when the issue or a
    template changes, and shows render errors on the page.
    """
    settings = settings_of(ctx)
    path = issue_path(settings, issue)
    if lang is not None:
        from newsletter.editions import MAIN, edition_path, load_editions, resolve

        editions = load_editions(resolve(path)[0], settings.publication.lang)
        tag = editions.tag_of(lang)
        path = editions.main.path if tag == MAIN else edition_path(editions.main.path, tag)
    if screenshot_dir is not None:
        from newsletter.screenshots import take_screenshots

        for png in take_screenshots(render_ref(settings, str(path)), screenshot_dir):
            click.echo(f"Wrote {png}")
        return
    from newsletter.preview import PreviewServer

    server = PreviewServer(settings, path, log=lambda m: click.echo(m, err=True))
    try:
        server.serve(port=port, open_browser=not no_open, ready=lambda m: click.echo(m))
    except KeyboardInterrupt:
        pass


@cli.command()
@click.argument("issue")
@click.option("--online", is_flag=True, help="Also fetch every external link (HEAD/GET) and report broken ones.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--lang", metavar="TAG", help="Check the TAG edition (default: the main one, compared with the others).")
@click.pass_context
def check(ctx: click.Context, issue: str, online: bool, fmt: str, lang: str | None) -> None:
    """Pre-flight checks for ISSUE: size and clipping, links, images, accessibility,
    client support, deliverability headers, the plain text and, with a real transport,
    the sender's DNS (as `newsletter doctor`); then bulk-sender readiness.

    One line per finding (error / warning / info) with file:line where it applies.
    Exits non-zero on any error; `send` and `schedule` run these first.
    """
    import json

    from newsletter.checks import run_checks
    from newsletter.errors import ChecksFailedError

    from newsletter.checks.context import CheckContext
    from newsletter.checks.findings import sort_findings
    from newsletter.checks.sender import check_sender

    settings = settings_of(ctx)
    rendered = render_ref(settings, issue, lang)
    sender = check_sender(settings, CheckContext(settings, rendered).message)
    findings = sort_findings(run_checks(settings, rendered, online=online) + sender.findings)
    if fmt == "json":
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2, ensure_ascii=False))
    else:
        for f in findings:
            click.echo(f.format())
        click.echo("Bulk-sender readiness (Gmail, Yahoo, Outlook.com):")
        for r in sender.readiness:
            click.echo(f"  {r.status:<7} {r.name}: {r.detail} [{r.source}]")
    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    if fmt == "text":
        click.echo(f"{errors} error(s), {warnings} warning(s), {len(findings) - errors - warnings} note(s).")
    if errors:
        raise ChecksFailedError(f"{errors} pre-flight error(s)")


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("site"), show_default=True,
              help="Folder for the static site.")
@click.pass_context
def archive(ctx: click.Context, out: Path) -> None:
    """Build the public web archive: index, one page per issue, Atom and JSON feeds, sitemap.

    Deploy the folder to any static host; set NEWSLETTER_BASE_URL so the emails'
    "read in your browser" links point at it.
    """
    from newsletter.archive import build_archive

    settings = settings_of(ctx)
    target = out if out.is_absolute() else settings.root / out
    written = build_archive(settings, target)
    click.echo(f"Wrote {len(written)} files to {target}/")
