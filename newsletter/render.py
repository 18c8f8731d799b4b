"""Rendering: an issue becomes email HTML and plain text, once per issue.

issue → Markdown (markdown-it-py) → Jinja2 → MJML → mjml-python → premailer → HTML,
and from the same Markdown tokens, the plain text. The output keeps named
per-recipient placeholders (:data:`PLACEHOLDERS`) that the message builder
fills cheaply; nothing here knows about recipients or transports.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from newsletter.errors import InputError, NewsletterError
from newsletter.placeholders import PLACEHOLDERS
from newsletter.template_files import default_templates_dir

if TYPE_CHECKING:
    from newsletter.config import Settings
    from newsletter.editions import Editions
    from newsletter.issue import Issue



@dataclass(frozen=True)
class RenderedEmail:
    """One issue, rendered: everything the message builder needs, nothing per recipient."""

    slug: str
    number: int
    title: str
    subject: str
    preheader: str
    html: str
    text: str
    lang: str
    reply_to: str | None
    content_hash: str
    source: Path | None = None
    edition: str = ""  # "" for the main edition, else its language tag (see newsletter.editions)
    timings: dict[str, float] = field(default_factory=dict, compare=False, repr=False)


def content_hash(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def template_environment(templates_dir: Path, cache_dir: Path | None = None) -> jinja2.Environment:
    """Publication templates first, then the defaults shipped with the tool.

    With ``cache_dir``, compiled templates are kept between runs (Jinja's
    bytecode cache, checked against each template's mtime), which saves a fresh
    ``newsletter build`` process most of its template compile time.
    """
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir.is_dir():
        loaders.append(jinja2.FileSystemLoader(templates_dir))
    loaders.append(jinja2.FileSystemLoader(default_templates_dir()))
    return _with_gettext(jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=lambda name: not (name or "").endswith(".txt.j2"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=True,
        bytecode_cache=_bytecode_cache(cache_dir),
        extensions=["jinja2.ext.i18n"],
    ))


def _with_gettext(env: jinja2.Environment) -> jinja2.Environment:
    """``_()`` works in every template: English until a render installs a language's catalog."""
    from newsletter.textwidth import fill, width

    env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    env.filters["display_width"] = width  # columns: a CJK character takes two
    env.filters["fill_width"] = fill  # wrap by display width, CJK line-breaking rules kept
    return env


def _bytecode_cache(cache_dir: Path | None) -> jinja2.BytecodeCache | None:
    if cache_dir is None:
        return None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only checkout still builds, just without the cache
    return jinja2.FileSystemBytecodeCache(str(cache_dir))


def _template_error(exc: Exception, env: jinja2.Environment, name: str) -> InputError:
    """One line naming the template and line: the template is the editor's code, and whatever it
    raises (``{{ 1/0 }}``, an include of itself, a macro that calls itself) is theirs to fix."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return InputError(f"template error: {exc.message}", path=exc.filename or exc.name or name, line=exc.lineno)
    where, line = _template_frame(exc)
    if where is None:
        where = name
        try:
            _, filename, _ = env.loader.get_source(env, name)  # type: ignore[union-attr]
            where = filename or name
        except Exception:  # noqa: BLE001 - best effort only
            pass
    if isinstance(exc, RecursionError):
        message = "it includes itself, or a macro calls itself, without end"
    elif isinstance(exc, jinja2.TemplateError):
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}"
    return InputError(f"template error: {message}"[:500], path=where, line=line)


def _template_frame(exc: BaseException) -> tuple[str | None, int | None]:
    """The file and line of the innermost template frame (Jinja maps its frames to template lines)."""
    import traceback
    from collections import Counter

    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
    if not frames:
        return None, None
    if isinstance(exc, RecursionError):  # the include or call that recurses repeats on every level
        return Counter(frames).most_common(1)[0][0]
    return frames[-1]


class Renderer:
    """Holds the parsed templates so a warm process (the live preview) re-renders fast."""

    def __init__(self, settings: "Settings"):
        self.settings = settings
        self.cache_dir = settings.build_dir / ".cache"  # derived data kept between runs (see newsletter.disk_memo)
        self.env = template_environment(settings.templates_dir, self.cache_dir / "jinja")

    def render_template(self, name: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(name).render(context)
        except NewsletterError:
            raise
        except Exception as exc:  # noqa: BLE001 - any error of the template's own code (see _template_error)
            raise _template_error(exc, self.env, name) from None

    def render(self, issue: "Issue", *, test: bool = False, editions: "Editions | None" = None,
               edition: str = "", problems: "list[InputError] | None" = None) -> RenderedEmail:
        """``test`` renders a [TEST] copy, whose footer does not claim its recipient subscribed.
        With ``editions``, ``issue`` is its ``edition`` and links to the others. ``problems``
        collects what a build would refuse instead of raising (see ``parse_body``)."""
        from newsletter.content import parse_body
        from newsletter.inline import inline_css
        from newsletter.plaintext import to_plain_text

        timings: dict[str, float] = {}
        pub = self.settings.publication
        t = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal t
            now = time.perf_counter()
            timings[stage] = now - t
            t = now

        parsed = parse_body(issue.body, path=issue.path, first_line=issue.body_line, problems=problems)
        lap("markdown")
        web_url = f"{pub.base_url}/issues/{issue.slug}/" if pub.base_url else ""
        if edition:
            web_url += f"{edition}/" if web_url else ""
        context = {
            "pub": pub,
            "issue": issue,
            "blocks": [_markup_block(b) for b in parsed.blocks],
            "credits": issue.credits,
            "web_url": web_url,
            "reply_to": issue.reply_to or pub.reply_to_address,
            "placeholder": PLACEHOLDERS,
            "lang": issue.lang or pub.lang,
            "date_long": long_date(issue.date, issue.lang, pub.lang),
            "test_copy": test,
            **edition_context(self, issue, editions, edition),
        }
        mjml_source = self.render_template("email.mjml.j2", context)
        css = self.render_template("email.css.j2", context)
        lap("jinja")
        html = compile_mjml(mjml_source)
        lap("mjml")
        html = inline_css(html, css, self.cache_dir / "inline")
        lap("inline")
        from newsletter.i18n import translations

        links_label = translations(context["lang"], self.settings.root, self.cache_dir / "i18n").gettext("Links:")
        text = self.render_template("email.txt.j2", {**context, "body_text": to_plain_text(parsed.tokens,
                                                                                          links_label=links_label)})
        # No trailing spaces, except in the conventional "-- " signature separator.
        text = "\n".join(line.rstrip() for line in text.splitlines()).strip().replace("\n--\n", "\n-- \n") + "\n"
        lap("text")
        return RenderedEmail(
            slug=issue.slug,
            number=issue.number,
            title=issue.title,
            subject=issue.subject,
            preheader=issue.preheader,
            html=html,
            text=text,
            lang=context["lang"],
            reply_to=issue.reply_to,
            content_hash=content_hash(issue.subject, issue.preheader, html, text),
            source=issue.path,
            edition=edition,
            timings=timings,
        )


def edition_context(renderer: Renderer, issue: "Issue", editions: "Editions | None", edition: str) -> dict[str, Any]:
    """What the templates need for languages: gettext ``_`` in the issue's language, whether it is
    set in CJK (no italics, taller lines), and the links to the other editions."""
    from newsletter.editions import links_for
    from newsletter.i18n import translations
    from newsletter.lang import is_cjk

    settings = renderer.settings
    lang = issue.lang or settings.publication.lang
    renderer.env.install_gettext_translations(translations(lang, settings.root, renderer.cache_dir / "i18n"),  # type: ignore[attr-defined]
                                              newstyle=True)
    links = links_for(editions, edition, settings.publication.base_url, settings.root) if editions else []
    return {"cjk": is_cjk(lang), "edition_links": links, "edition": edition}


def long_date(date: Any, lang: str | None, main_lang: str) -> str:
    """"2 May 2025" in the publication's own language; in an edition's, as that language writes
    it (CLDR's long form through Babel: "2025年5月2日")."""
    if not lang or lang == main_lang or lang.startswith("en"):
        return f"{date.day} {date:%B %Y}"
    try:
        from babel.dates import format_date

        return format_date(date, "long", locale=lang.replace("-", "_"))
    except (ValueError, LookupError):  # a language CLDR does not know
        return f"{date.day} {date:%B %Y}"


def _markup_block(block: Any) -> Any:
    """Mark a block's HTML safe for the autoescaping template: markdown-it escaped it already."""
    from dataclasses import replace

    from markupsafe import Markup

    return replace(block, html=Markup(block.html))


def compile_mjml(source: str) -> str:
    import mjml

    try:
        return mjml.mjml2html(source)
    except Exception as exc:  # mrml raises a plain exception type with its parser message
        raise InputError(f"MJML error in email.mjml.j2 output: {exc}", path="templates/email.mjml.j2") from None


def render_issue(issue_or_path: "Issue | Path", settings: "Settings", renderer: Renderer | None = None,
                 *, test: bool = False, problems: "list[InputError] | None" = None) -> RenderedEmail:
    """Parse (if given a path) and render one issue (``test``: a [TEST] copy)."""
    from newsletter.issue import Issue, parse_issue

    t = time.perf_counter()
    issue = issue_or_path if isinstance(issue_or_path, Issue) else parse_issue(Path(issue_or_path))
    parse_time = time.perf_counter() - t
    rendered = (renderer or Renderer(settings)).render(issue, test=test, problems=problems)
    rendered.timings["parse"] = parse_time
    return rendered


def write_build(rendered: RenderedEmail, out_dir: Path, preview_html: str | None = None) -> Path:
    """Write ``email.html``, ``email.txt`` (and ``preview.html``) into ``out_dir/<slug>/``."""
    target = out_dir / rendered.slug / rendered.edition if rendered.edition else out_dir / rendered.slug
    target.mkdir(parents=True, exist_ok=True)
    (target / "email.html").write_text(rendered.html, encoding="utf-8")
    (target / "email.txt").write_text(rendered.text, encoding="utf-8")
    if preview_html is not None:
        (target / "preview.html").write_text(preview_html, encoding="utf-8")
    return target
