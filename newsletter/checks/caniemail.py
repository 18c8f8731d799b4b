"""The caniemail.com support data: a pinned, trimmed snapshot shipped with the tool.

There is no network at check time, so the data lives in
``newsletter/data/caniemail/features.json`` (see SOURCE.md there). To refresh it::

    npm pack caniemail            # the npm package ships caniemail.com's api.json
    tar xzf caniemail-*.tgz
    python -m newsletter.checks.caniemail package/data/caniemail.json newsletter/data/caniemail/features.json

:func:`trim` keeps what the checks use: for each feature, how to recognise it in
HTML/CSS (``match``) and the newest tested support per platform of the four
client families we report on.
"""

from __future__ import annotations

import json
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data" / "caniemail" / "features.json"
FAMILIES = ("gmail", "outlook", "apple-mail", "yahoo")

# Titles that name several properties, or name them in prose (as caniemail writes them).
PROPERTY_TITLES = {
    "block-size & inline-size": ["block-size", "inline-size"],
    "border-inline & border-block": ["border-inline", "border-block"],
    "border-inline & border-block individual logical properties": [
        "border-block-end", "border-block-start", "border-inline-end", "border-inline-start"],
    "border-inline & border-block longhand properties": [
        "border-block-color", "border-block-style", "border-block-width",
        "border-inline-color", "border-inline-style", "border-inline-width"],
    "border-radius logical properties": [
        "border-end-end-radius", "border-end-start-radius", "border-start-end-radius", "border-start-start-radius"],
    "color-scheme CSS property": ["color-scheme"],
    "css column properties": [
        "column-count", "column-fill", "column-rule", "column-span", "column-width", "columns"],
    "grid-template-* properties": ["grid-template", "grid-template-areas", "grid-template-columns", "grid-template-rows"],
    "font shorthand": ["font"],
}
KEYWORD_TITLES = {
    "fit-content, min-content, max-content": ["fit-content", "max-content", "min-content"],
    "system-ui, ui-serif, ui-sans-serif, ui-rounded, ui-monospace": [
        "system-ui", "ui-monospace", "ui-rounded", "ui-sans-serif", "ui-serif"],
}
SPECIAL_HTML = {
    "html-anchor-links": {"link_prefix": "#"},
    "html-mailto-links": {"link_prefix": "mailto:"},
    "html-meta-color-scheme": {"element_attribute": ["meta", "name", "color-scheme"]},
    "html-srcset": {"attributes": ["srcset", "sizes"]},
    "html-image-maps": {"elements": ["map", "area"]},
    "html-svg": {"elements": ["svg"]},
    "html-address": {"elements": ["address"]},
    "html-lists": {"elements": ["ul", "ol", "dl"]},
    "html-h1-h6": {"elements": ["h1", "h2", "h3", "h4", "h5", "h6"]},
}
IMAGE_EXTENSIONS = {"image-jpg": ["jpg", "jpeg"], "image-tiff": ["tif", "tiff"], "image-heif": ["heif", "heic"]}
_IDENT_LIST = re.compile(r"^[a-z-]+(, [a-z-]+)*$")


def css_match(slug: str, title: str, keywords: str) -> dict[str, Any] | None:
    """How to recognise a CSS feature from its caniemail title; None for selectors and the like."""
    title = title.strip()
    if slug == "css-inert-attribute":
        return {"attributes": ["inert"]}
    if title.startswith("@"):
        return {"at_rule": title[1:].split()[0].split("(")[0], "media_features": re.findall(r"\(([-a-z]+)\)", title)}
    if title in PROPERTY_TITLES:
        return {"properties": PROPERTY_TITLES[title]}
    if title in KEYWORD_TITLES:
        return {"keywords": KEYWORD_TITLES[title]}
    if title == "!important keyword":
        return {"important": True}
    if title == "CSS Variables (Custom Properties)":
        return {"functions": ["var"]}
    if title == "CSS calc() function":
        return {"functions": ["calc"]}
    if title.startswith(":") or slug.startswith("css-selector") or slug.startswith("css-pseudo"):
        return None
    if "()" in title:
        return {"functions": re.findall(r"([a-z-]+)\(\)", title)}
    if m := re.fullmatch(r"([a-z-]+):\s*([a-z-]+)", title):
        return {"declaration": [m.group(1), m.group(2)]}
    if m := re.fullmatch(r"(%|[a-z]+) unit", title):
        return {"unit": m.group(1)} if m.group(1) != "initial" else {"keywords": ["initial"]}
    name = title.removesuffix(" property")
    if _IDENT_LIST.match(name):
        props = name.split(", ")
        longhands = [k.strip() for k in (keywords or "").split(",") if k.strip().startswith(props[0] + "-")]
        return {"properties": props + longhands}
    return None


def html_match(slug: str, title: str, keywords: str) -> dict[str, Any] | None:
    """How to recognise an HTML feature or image format; None for what every email has."""
    if slug in SPECIAL_HTML:
        return SPECIAL_HTML[slug]
    if slug.startswith("image-"):
        if slug == "image-base64":
            return {"src_prefix": "data:"}
        return {"extensions": IMAGE_EXTENSIONS.get(slug, [slug.removeprefix("image-")])}
    if slug == "html-semantics":
        return {"elements": [k.strip() for k in keywords.split(",")]}
    if m := re.fullmatch(r"<(\w+) (\w+)=\"(\w+)\"> element", title):
        return {"element_attribute": [m.group(1), m.group(2), m.group(3)]}
    if m := re.fullmatch(r"([\w-]+) attribute", title):
        return {"attributes": [m.group(1)]}
    if m := re.match(r"<(\w+)>", title):
        return {"elements": [m.group(1)]}
    return None  # HTML5 doctype, HTML comments: in every email, including the baseline


def latest_support(stats: dict[str, dict[str, str]]) -> dict[str, str]:
    """Platform → support letter (y, n, a partial, u unknown) of its newest test."""
    return {platform: list(versions.values())[-1].split()[0] for platform, versions in stats.items() if versions}


def trim(raw: dict[str, Any]) -> dict[str, Any]:
    """caniemail's api.json → the snapshot the checks read."""
    features = {}
    for f in raw["data"]:
        category = f.get("category")
        matcher = (css_match if category == "css" else html_match if category in ("html", "image") else None)
        match = matcher(f["slug"], f["title"], f.get("keywords") or "") if matcher else None
        if not match:
            continue
        features[f["slug"]] = {
            "title": f["title"].strip(), "url": f["url"], "match": match,
            "support": {family: latest_support(f["stats"][family]) for family in FAMILIES if family in f["stats"]},
        }
    nice = raw.get("nicenames", {})
    return {
        "api_version": raw.get("api_version"), "last_update_date": raw.get("last_update_date"),
        "families": {k: nice.get("family", {}).get(k, k) for k in FAMILIES},
        "platforms": nice.get("platform", {}),
        "features": features,
    }


def dumps(data: dict[str, Any]) -> str:
    """JSON with one feature per line: small, and a refresh reads as a readable diff."""
    head = {k: v for k, v in data.items() if k != "features"}
    lines = [json.dumps(head, sort_keys=True, ensure_ascii=False)[:-1] + ', "features": {']
    items = sorted(data["features"].items())
    lines += [f" {json.dumps(k)}: {json.dumps(v, sort_keys=True, ensure_ascii=False)}"
              + ("," if i < len(items) - 1 else "") for i, (k, v) in enumerate(items)]
    return "\n".join(lines) + "\n}}\n"


@lru_cache(maxsize=1)
def load(path: Path = DATA) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m newsletter.checks.caniemail CANIEMAIL_JSON OUT_JSON", file=sys.stderr)
        return 2
    data = trim(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    Path(argv[1]).write_text(dumps(data), encoding="utf-8")
    print(f"{len(data['features'])} features, data of {data['last_update_date']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
