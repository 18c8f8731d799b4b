"""The command line: parse arguments, call one function, print the outcome.

Commands live by area (authoring, sending, subscribers, public, feedback) and are
loaded by name from :data:`LAZY_COMMANDS` on first use; each imports what it needs
inside its body, so ``status`` and ``subscribers`` start without loading the renderer. Errors are click's: :class:`NewsletterGroup` turns a
:class:`NewsletterError` into a :class:`CommandError` carrying its exit code, in
this one place, and click's standalone mode prints it and exits.
"""

from __future__ import annotations

import errno
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, NoReturn

import click

from newsletter import __version__
from newsletter.dburl import redact
from newsletter.errors import ConfigError, DatabaseLockedError, NewsletterError

if TYPE_CHECKING:
    import sqlite3

    from newsletter.config import Settings
    from newsletter.render import RenderedEmail


class CommandError(click.ClickException):
    """A failure the user can act on: one line on stderr and the exit code the error type chose."""

    def __init__(self, message: str, exit_code: int, *, prefix: str = "error: "):
        super().__init__(message)
        self.exit_code = exit_code
        self.prefix = prefix

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"{self.prefix}{self.format_message()}", err=True, file=file)


@contextmanager
def _click_errors(ctx: click.Context) -> Iterator[None]:
    """The one mapping from our exceptions to click's."""
    try:
        yield
    except NewsletterError as exc:
        raise CommandError(exc.format_message(), exc.exit_code) from exc
    except _sqlite_errors() as exc:  # raised from deep inside any command: name the file, keep one line
        err = database_error(exc, (ctx.obj or {}).get("settings"))
        raise CommandError(err.format_message(), err.exit_code) from exc
    except click.exceptions.Abort:
        raise CommandError("Aborted; nothing was sent.", 1, prefix="") from None
    except KeyboardInterrupt:
        raise CommandError("Interrupted.", 130, prefix="") from None  # outside a send
    except OSError as exc:  # a path the user gave cannot be read or written
        if exc.errno == errno.EPIPE:
            raise  # the reader of our output went away (`| head`): click exits 1 quietly
        where = f"{exc.filename}: " if exc.filename else ""
        raise CommandError(f"{where}{exc.strerror or exc}", 2) from exc


def _sqlite_errors() -> tuple[type[BaseException], ...]:
    """``sqlite3.Error`` once sqlite3 is loaded; before that, nothing (no SQLite error can have
    been raised). A command that never opens a database (`build`) does not load sqlite3."""
    sqlite3 = sys.modules.get("sqlite3")
    return (sqlite3.Error,) if sqlite3 is not None else ()


def database_error(exc: "sqlite3.Error", settings: "Settings | None") -> NewsletterError:
    """A locked database (another send, `serve` or the worker held it past the busy timeout)
    is worth retrying (exit 75); any other SQLite failure (read-only file, disk full or
    broken) is the set-up's (exit 3)."""
    where = settings.db_target if settings is not None else None
    where = redact(where) if isinstance(where, str) else where
    from newsletter.db import is_locked

    if is_locked(exc):
        return DatabaseLockedError("the database is locked by another process (a send, `newsletter serve` "
                                   "or the worker); try again in a moment", path=where)
    return ConfigError(f"database error: {exc}", path=where)


#: Every command, by name, as "module:object": a command's module is imported only when it
#: runs (or for --help), so `status` never loads the renderer. This map is the registration:
#: there is no other list to keep in step with it (click's documented lazy-group pattern).
LAZY_COMMANDS = {
    "init": "newsletter.cli.authoring:init",
    "new": "newsletter.cli.authoring:new",
    "build": "newsletter.cli.authoring:build",
    "preview": "newsletter.cli.authoring:preview",
    "check": "newsletter.cli.authoring:check",
    "archive": "newsletter.cli.authoring:archive",
    "templates": "newsletter.cli.authoring:templates",
    "send": "newsletter.cli.sending:send",
    "resume": "newsletter.cli.sending:resume",
    "status": "newsletter.cli.sending:status",
    "schedule": "newsletter.cli.sending:schedule",
    "dispatch": "newsletter.cli.sending:dispatch",
    "worker": "newsletter.cli.sending:worker",
    "subscribers": "newsletter.cli.subscribers:subscribers",
    "serve": "newsletter.cli.public:serve",
    "form-snippet": "newsletter.cli.public:form_snippet",
    "inbox": "newsletter.cli.feedback:inbox",
    "replies": "newsletter.cli.feedback:replies",
    "doctor": "newsletter.cli.doctor:doctor",
    "db": "newsletter.cli.database:db",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use from ``lazy_subcommands``
    (name → "module:object"), as in click's documentation on lazily loading subcommands."""

    def __init__(self, *args: Any, lazy_subcommands: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands and cmd_name not in self.commands:
            self.add_command(self._lazy_load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def _lazy_load(self, cmd_name: str) -> click.Command:
        import importlib

        module_name, _, attr = self.lazy_subcommands[cmd_name].partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy_subcommands[cmd_name]} is not a click command")
        return command


class NewsletterGroup(LazyGroup):
    """The root group: every command runs inside :func:`_click_errors`."""

    def invoke(self, ctx: click.Context) -> Any:
        with _click_errors(ctx):
            return super().invoke(ctx)


def settings_of(ctx: click.Context) -> "Settings":
    """The publication's settings, loaded once per invocation from --root."""
    from newsletter.config import load_settings

    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("root"))
    return obj["settings"]


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not out.is_terminal:
        out.width = 160  # piped or logged: don't squeeze tables into 80 columns
    return out


def issue_path(settings: "Settings", ref: str) -> Path:
    from newsletter.issue import find_issue

    return find_issue(settings.issues_dir, ref)


def render_ref(settings: "Settings", ref: str, lang: str | None = None) -> "RenderedEmail":
    """The issue ``ref`` names rendered: its main edition, or the edition ``lang`` (or an edition's
    file) names."""
    from newsletter.editions import load_editions, render_editions, resolve

    path, named = resolve(issue_path(settings, ref))
    editions = load_editions(path, settings.publication.lang)
    tag = editions.tag_of(lang or named or "")
    return render_editions(editions, settings, only=tag)[tag]


@click.group("newsletter", cls=NewsletterGroup, lazy_subcommands=LAZY_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Publication folder holding newsletter.toml, issues/ and templates/ (default: current folder).")
@click.version_option(__version__, prog_name="newsletter")
@click.pass_context
def cli(ctx: click.Context, root: Path | None) -> None:
    """Publish an email newsletter from Markdown issues kept in git.

    \b
    Typical flow:
      newsletter new "Title"          start the next issue in issues/
      newsletter preview 7            live preview at desktop and phone widths
      newsletter check 7              pre-flight checks before sending
      newsletter send 7 --test me@x   a [TEST] copy to named addresses only
      newsletter send 7 --dry-run     write every message as .eml, send nothing
      newsletter send 7               send to all active subscribers (resumable)

    Issues are named by number (7), slug or path. Configuration comes from
    newsletter.toml (public identity) and the environment or .env (secrets,
    transport); see .env.example.
    """
    ctx.ensure_object(dict)["root"] = root


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: click's standalone mode, one line per error, exit codes from the error types."""
    cli.main(args=argv, prog_name="newsletter")
    raise SystemExit(0)  # not reached: standalone mode always exits

