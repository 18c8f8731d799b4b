"""Email-client support: the HTML and CSS *the editor* added that Gmail, Outlook,
Apple Mail or Yahoo do not (fully) support, per the caniemail.com data.

What MJML and the shipped templates produce is deliberate (MSO conditionals,
``@media`` rules with table fallbacks) and not the editor's to fix, so each
finding is a difference from a baseline:

* template additions: this issue rendered with the publication's templates,
  minus the same issue rendered with the shipped default templates;
* content additions: the HTML the Markdown body produced, minus a render of
  this issue *without* its body through the default templates.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import lxml.html

from newsletter.checks import caniemail
from newsletter.checks.context import CheckContext
from newsletter.checks.css import Declaration, declarations, parse_stylesheet

_HEX = re.compile(r"#[0-9a-fA-F]{3,8}\b")
_LIST_KEYS = ("properties", "functions", "keywords", "elements", "attributes", "extensions")
_UNIT = re.compile(r"(?<![\w.-])-?(?:\d+(?:\.\d*)?|\.\d+)(%|[a-z]+\b)")  # one way to split the digits


@dataclass(frozen=True)
class Use:
    """One feature seen in HTML: what showed it, and how to find it in a source file."""

    slug: str
    evidence: str
    needle: str  # text to search the templates for
    tag: str | None = None
    url: str | None = None


class FeatureIndex:
    """caniemail features keyed by what recognises them in markup."""

    def __init__(self, features: dict[str, Any]):
        self.features = features
        self.by: dict[str, dict[Any, list[str]]] = {}
        for slug, feature in features.items():
            for key, value in feature["match"].items():
                if key == "media_features":
                    continue
                values = value if key in _LIST_KEYS else [tuple(value) if isinstance(value, list) else value]
                for one in values:
                    self.by.setdefault(key, {}).setdefault(one, []).append(slug)

    def slugs(self, key: str, value: Any) -> list[str]:
        return self.by.get(key, {}).get(value, [])

    # ---- CSS ------------------------------------------------------------------------
    def css_uses(self, decls: tuple[Declaration, ...]) -> Iterator[Use]:
        for d in decls:
            shown = f"{d.prop}: {d.value}"
            for slug in self.slugs("properties", d.prop) + self.slugs("declaration", (d.prop, d.value.lower())):
                yield Use(slug, shown, d.prop)
            if d.important:
                yield from (Use(slug, shown + " !important", "!important") for slug in self.slugs("important", True))
            value = _HEX.sub(" ", d.value.lower())
            for name in re.findall(r"([a-z-]+)\(", value):
                yield from (Use(slug, shown, name + "(") for slug in self.slugs("functions", name))
            for word in re.findall(r"[a-z][a-z-]*", value):
                yield from (Use(slug, shown, word) for slug in self.slugs("keywords", word))
            for unit in _UNIT.findall(value):
                yield from (Use(slug, shown, unit) for slug in self.slugs("unit", unit))

    def at_rule_uses(self, prelude: str) -> Iterator[Use]:
        name = prelude[1:].split()[0].split("(")[0].lower() if len(prelude) > 1 else ""
        for slug in self.slugs("at_rule", name):
            wanted = self.features[slug]["match"].get("media_features", [])
            if not wanted or any(f"({w}" in prelude.replace(" ", "") for w in wanted):
                yield Use(slug, prelude, prelude.split("{")[0])

    # ---- HTML -----------------------------------------------------------------------
    def element_uses(self, element: lxml.html.HtmlElement) -> Iterator[Use]:
        tag = element.tag
        yield from (Use(slug, f"<{tag}>", f"<{tag}", tag=tag) for slug in self.slugs("elements", tag))
        for attr, value in element.attrib.items():
            yield from (Use(slug, f"{attr}=", attr, tag=tag) for slug in self.slugs("attributes", attr))
            yield from (Use(slug, f'<{tag} {attr}="{value}">', value, tag=tag)
                        for slug in self.slugs("element_attribute", (tag, attr, value)))
        url = element.get("href") if tag == "a" else element.get("src") if tag == "img" else None
        if url:
            yield from self._url_uses(tag, url)
        yield from self.css_uses(declarations(element.get("style", "")))

    def _url_uses(self, tag: str, url: str) -> Iterator[Use]:
        for prefix, slugs in self.by.get("link_prefix" if tag == "a" else "src_prefix", {}).items():
            if url.startswith(prefix):
                yield from (Use(slug, url, url, tag=tag, url=url) for slug in slugs)
        if tag == "img":
            ext = url.split("?")[0].split("#")[0].rpartition(".")[2].lower()
            yield from (Use(slug, url, url, tag=tag, url=url) for slug in self.slugs("extensions", ext))

    def uses(self, root: lxml.html.HtmlElement) -> dict[str, Use]:
        """Every feature used in ``root``, with its first evidence."""
        found: dict[str, Use] = {}
        for element in root.iter():
            if not isinstance(element.tag, str):
                continue
            for use in self.element_uses(element):
                found.setdefault(use.slug, use)
            if element.tag == "style":
                rules, at_rules = parse_stylesheet(element.text or "")
                for prelude in at_rules:
                    for use in self.at_rule_uses(prelude):
                        found.setdefault(use.slug, use)
                for rule in rules:
                    for use in self.css_uses(rule.declarations):
                        found.setdefault(use.slug, use)
        return found


def unsupported_in(feature: dict[str, Any], names: dict[str, Any]) -> str:
    """"Outlook (Windows, Windows Mail); Yahoo! Mail (iOS)": where the newest test says "not supported"."""
    gaps = []
    for family, platforms in feature["support"].items():
        where = [names["platforms"].get(p, p) for p, s in platforms.items() if s == "n"]
        if where:
            gaps.append(f"{names['families'].get(family, family)} ({', '.join(where)})")
    return "; ".join(gaps)


class SupportCheck:
    """Renders the baselines and reports what the editor's templates and content add."""

    def __init__(self, ctx: CheckContext):
        self.ctx = ctx
        self.data = caniemail.load()
        self.index = FeatureIndex(self.data["features"])

    def _render(self, *, default_templates: bool, empty_body: bool) -> lxml.html.HtmlElement:
        from newsletter.render import Renderer, template_environment
        from newsletter.template_files import default_templates_dir

        renderer = Renderer(self.ctx.settings)
        if default_templates:
            renderer.env = template_environment(default_templates_dir())
        issue = self.ctx.issue
        assert issue is not None
        if empty_body:
            issue = dataclasses.replace(issue, body="Text.\n", credits=())
        return lxml.html.document_fromstring(renderer.render(issue).html.encode("utf-8"))

    @cached_property
    def changed_templates(self) -> list[Path]:
        """Publication templates that differ from (or are not among) the shipped defaults."""
        from newsletter.template_files import DEFAULT, SAME, template_states

        mine = self.ctx.settings.templates_dir
        return [mine / name for name, state in template_states(mine) if state not in (DEFAULT, SAME)]

    def template_additions(self) -> dict[str, Use]:
        if not self.changed_templates:
            return {}
        theirs = self.index.uses(self.ctx.doc)
        ours = self.index.uses(self._render(default_templates=True, empty_body=False))
        return {slug: use for slug, use in theirs.items() if slug not in ours}

    def content_additions(self) -> dict[str, Use]:
        from newsletter.content import parse_body

        issue = self.ctx.issue
        assert issue is not None
        html = "".join(b.html for b in parse_body(issue.body, path=issue.path, first_line=issue.body_line).blocks)
        body = lxml.html.fragment_fromstring(html or "<p></p>", create_parent="div")
        baseline = self.index.uses(self._render(default_templates=True, empty_body=True))
        return {slug: use for slug, use in self.index.uses(body).items() if slug not in baseline}

    def _template_location(self, needle: str) -> tuple[Path | None, int | None]:
        for path in self.changed_templates:
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if needle and needle in line:
                    return path, n
        return (self.changed_templates[0] if self.changed_templates else None), None

    def report(self, use: Use, *, in_template: bool) -> None:
        """Warn about a feature some of the four families do not support; partial support is
        left out, since caniemail marks most everyday features (lists, margins) partial."""
        feature = self.data["features"][use.slug]
        unsupported = unsupported_in(feature, self.data)
        if not unsupported:
            return
        if in_template:
            path, line = self._template_location(use.needle)
        else:
            src = self.ctx.source
            path, line = None, (src.urls.get(use.url) if use.url else None) or src.tags.get(use.tag or "")
        what = f"{feature['title']} ({use.evidence})" if use.evidence != feature["title"] else feature["title"]
        self.ctx.add("warning", f"support.{use.slug}",
                     f"{what} is not supported by {unsupported}; see {feature['url']}", line=line, path=path)


def check_client_support(ctx: CheckContext) -> None:
    if ctx.issue is None:
        return
    check = SupportCheck(ctx)
    template = check.template_additions()
    for use in template.values():
        check.report(use, in_template=True)
    for slug, use in check.content_additions().items():
        if slug not in template:
            check.report(use, in_template=False)
