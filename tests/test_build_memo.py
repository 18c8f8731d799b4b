"""A cold `newsletter build` is cheap because what it derives from CSS and catalogs is kept in
build/.cache/ (newsletter/disk_memo.py, premailer_memo.py, i18n.py): these tests hold that the
memos change how often the work is done, never what a build writes, and that a build whose
caches are warm loads none of the libraries it no longer needs."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter.disk_memo import DiskMemo, package_version

#: What inline.py did before the memos: premailer as shipped (cssutils, cssselect, its own
#: float alignment), run in a process that never imported newsletter.
REFERENCE_INLINE = r"""
import json, logging, re, sys
from premailer import Premailer
html, css = json.load(sys.stdin)
ignore = ' data-premailer="ignore"'
html = re.sub(r"<style(?=[\s>])", "<style" + ignore, html, flags=re.IGNORECASE)
out = Premailer(html, css_text=css, strip_important=False, keep_style_tags=False, remove_classes=False,
                disable_validation=True, disable_basic_attributes=["width", "height"], allow_network=False,
                exclude_pseudoclasses=True, cssutils_logging_level=logging.CRITICAL, disable_link_rewrites=True,
                cache_css_parsing=True).transform(pretty_print=False).replace(ignore, "")
out = re.sub(r"^\s*<!doctype[^>]*>\s*", "", out, count=1, flags=re.IGNORECASE)
sys.stdout.write("<!doctype html>" + out.rstrip("\n") + "\n")
"""

#: A document and sheet with what the memos must get right: images floated by a rule, by their
#: own style (any case, with !important) or not at all; inline styles that win; !important;
#: a pseudo-class premailer leaves out, a filter one it keeps; an @media rule left in the head.
DOC = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><style type="text/css">#outlook a { padding:0; }</style></head>
<body><div class="a" style="color:red"><p class="b">one</p><p class="b">two</p>
<img class="f" src="f.png" alt="f" style="border:0"><img src="g.png" alt="g" style="float: left !important; width:100%">
<img src="h.png" alt="h" style="FLOAT:Right"><img src="i.png" alt="i" style="display:block">
<a href="#x" class="l">link</a><table class="t"><tr><td bgcolor="#fff">cell</td></tr></table></div></body></html>
"""
SHEET = """.a { color: blue; margin: 0 auto; }
.b:first-child { font-weight: bold }
.f { float: right; }
a.l:hover { color: green }
div > p.b { line-height: 1.5 !important; background-color: #abc }
.t td { text-align: center; vertical-align: top; background-color: transparent }
@media only screen and (max-width: 480px) { .a { width: 100% !important } .b { font-size: 18px !important } }
"""


def reference_inline(html: str, css: str) -> str:
    result = subprocess.run([sys.executable, "-c", REFERENCE_INLINE], input=json.dumps([html, css]),
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


@pytest.fixture
def issue6_inline_input(settings) -> tuple[str, str]:
    """The HTML and CSS the renderer hands to inline_css for issue #6."""
    import newsletter.inline as inline
    from newsletter.render import render_issue

    seen: list[tuple[str, str]] = []
    original = inline.inline_css
    inline.inline_css = lambda html, css, cache_dir=None: (seen.append((html, css)), original(html, css, cache_dir))[1]
    try:
        render_issue(settings.issues_dir / "006-global-governance-of-ai.md", settings)
    finally:
        inline.inline_css = original
    return seen[0]


def fresh_memos() -> None:
    """Forget the memos this process holds, so the next call reads them from disk."""
    from newsletter.premailer_memo import Memos

    Memos._by_folder.clear()


@pytest.mark.parametrize("which", ["handmade", "issue6"])
def test_inlining_with_cold_warm_and_damaged_memos_equals_premailer_as_shipped(tmp_path, which, request):
    from newsletter.inline import inline_css

    html, css = (DOC, SHEET) if which == "handmade" else request.getfixturevalue("issue6_inline_input")
    expected = reference_inline(html, css)
    assert "<style" in expected and "!important" in expected
    if which == "handmade":
        assert expected.count('align="right"') == 1 and expected.count('align="left"') == 1  # "Right" is not "right"
    cache = tmp_path / "inline"
    fresh_memos()
    assert inline_css(html, css, cache) == expected  # cold: every answer computed
    files = {p.name.split("-")[0] for p in cache.glob("*.json")}
    assert files == {"declarations", "rules", "selectors"} | ({"floats"} if "<img" in html else set())
    fresh_memos()
    assert inline_css(html, css, cache) == expected  # warm: every answer read from disk
    for memo in cache.glob("*.json"):
        entries = json.loads(memo.read_text(encoding="utf-8"))
        memo.write_text(json.dumps({key: 5 for key in entries}), encoding="utf-8")
    fresh_memos()
    assert inline_css(html, css, cache) == expected  # edited by hand: every entry computed again
    for memo in cache.glob("*.json"):
        memo.write_text("{not json", encoding="utf-8")
    fresh_memos()
    assert inline_css(html, css, cache) == expected  # damaged: computed again
    fresh_memos()
    assert inline_css(html, css, None) == expected  # no folder: in memory only


def test_a_read_only_cache_folder_costs_speed_not_the_build(tmp_path):
    from newsletter.inline import inline_css

    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    fresh_memos()
    assert inline_css(DOC, SHEET, blocked / "inline") == reference_inline(DOC, SHEET)


def test_a_memo_is_kept_per_version_and_bounded(tmp_path):
    one, other = DiskMemo(tmp_path, "t", "lib 1.0"), DiskMemo(tmp_path, "t", "lib 1.1")
    one.put("k", [1, 2])
    one.save()
    assert DiskMemo(tmp_path, "t", "lib 1.0").get("k") == [1, 2]
    assert other.get("k") is None and one.path != other.path  # an upgrade never reads old answers
    small = DiskMemo(tmp_path, "s", "v", limit=3)
    for i in range(7):
        small.put(str(i), i)
    assert len(small._entries()) <= 3 and small.get("6") == 6


def test_package_versions_are_read_without_importing_the_package():
    before = set(sys.modules)
    version = package_version("cssselect")
    assert "cssselect" in version and ".dist-info" in version
    assert "cssselect" in before or "cssselect" not in sys.modules
    assert package_version("no_such_package_here").endswith("(not found)")


def test_a_warm_build_loads_none_of_what_it_no_longer_needs(publication_root):
    """The start-up gain, held by what is imported rather than by a clock: with its caches warm,
    `build` loads neither cssutils nor cssselect (CSS), Babel (catalogs, language matching),
    the email package (MIME) nor sqlite3 (no database), and still writes the same files."""
    code = ("import sys\nfrom newsletter.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    print('EXIT', exc.code)\n"
            "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & "
            "{'cssutils', 'cssselect', 'babel', 'email', 'sqlite3', 'requests'}))\n")
    outputs = []
    for out in ("cold", "warm"):
        result = subprocess.run([sys.executable, "-c", code, "--root", str(publication_root), "build", "6",
                                 "--out", str(publication_root / out)], capture_output=True, text=True,
                                cwd=publication_root, timeout=120)
        assert "EXIT 0" in result.stdout, result.stderr
        outputs.append(result.stdout)
    assert "LOADED []" in outputs[1], outputs[1]
    assert "LOADED []" not in outputs[0]  # the first build computed (the check can fail)
    cold, warm = (sorted(p.relative_to(publication_root / d) for p in (publication_root / d).rglob("*")
                         if p.is_file()) for d in ("cold", "warm"))
    assert cold == warm and len(cold) >= 3
    for rel in cold:
        assert (publication_root / "cold" / rel).read_bytes() == (publication_root / "warm" / rel).read_bytes()


def _po(messages: dict[str, str]) -> str:
    head = 'msgid ""\nmsgstr ""\n"Language: zh_Hans\\n"\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
    return head + "".join(f'msgid "{k}"\nmsgstr "{v}"\n\n' for k, v in messages.items())


def test_compiled_catalogs_translate_as_babel_does(tmp_path):
    """Every shipped string, in every shipped language, as the catalogs read with Babel give it,
    whether compiled now or read back from the cache."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    from babel.support import Translations

    from newsletter import i18n

    for po in sorted(i18n.SHIPPED.glob("*/LC_MESSAGES/newsletter.po")):
        locale = po.parent.parent.name
        with po.open("rb") as fh:
            catalog = read_po(fh, locale=locale, domain=i18n.DOMAIN)
        buf = io.BytesIO()
        write_mo(buf, catalog)
        buf.seek(0)
        reference = Translations(buf, domain=i18n.DOMAIN)
        ids = [m.id for m in catalog if m.id and isinstance(m.id, str)] + ["not in any catalog"]
        for attempt in ("cold", "warm"):
            i18n._translations.cache_clear()
            ours = i18n.translations(locale.replace("_", "-"), None, tmp_path)
            assert [ours.gettext(m) for m in ids] == [reference.gettext(m) for m in ids], (locale, attempt)
        assert len(ids) > 1 or locale == "en"
    assert len(list(tmp_path.glob("catalog-*.mo"))) >= 2


def test_an_edited_publication_catalog_is_compiled_again(tmp_path):
    from newsletter import i18n

    catalog = tmp_path / "locale" / "zh_Hans" / "LC_MESSAGES" / "newsletter.po"
    catalog.parent.mkdir(parents=True)
    cache = tmp_path / "cache"
    for wording in ("网页版", "在线阅读"):
        catalog.write_text(_po({"Read this issue in your browser": wording}), encoding="utf-8")
        i18n._translations.cache_clear()
        assert i18n.translations("zh-Hans", tmp_path, cache).gettext("Read this issue in your browser") == wording
    i18n._translations.cache_clear()


TAGS = ["en", "en-US", "en-GB", "EN", "zh", "zh-CN", "zh-TW", "zh-Hans", "zh-Hant", "zh-Hans-CN", "zh_Hant_HK",
        "pt", "pt-BR", "pt-PT", "sr-Latn", "sr-Cyrl", "sr", "yue", "ja", "ko-KR", "de-CH", "not a tag", ""]


def reference_match(reader, candidates):
    """lang.match as it was: every tag filled out with CLDR's likely subtags first."""
    from newsletter.errors import InputError
    from newsletter.lang import maximize

    if not reader:
        return None
    try:
        want = maximize(reader)
    except InputError:
        return None
    best = None
    for tag in candidates:
        try:
            have = maximize(tag)
        except InputError:
            continue
        if have[:2] != want[:2]:
            continue
        score = 1 if have[2] == want[2] else 0
        if best is None or score > best[0]:
            best = (score, tag)
    return best[1] if best else None


def test_matching_without_babel_answers_as_cldr_matching_does():
    from newsletter.errors import InputError
    from newsletter.lang import is_cjk, match, maximize

    for reader in TAGS:
        for size in (1, 2, 3):
            for candidates in itertools.permutations([t for t in TAGS if t][:14], size):
                assert match(reader, candidates) == reference_match(reader, candidates), (reader, candidates)
    for tag in TAGS:
        try:
            expected = maximize(tag)[0] in ("zh", "ja", "ko", "yue", "wuu", "hak", "nan")
        except InputError:
            expected = False
        assert is_cjk(tag) == (bool(tag) and expected), tag
    assert match("zh-TW", ["zh-Hans", "zh-Hant"]) == "zh-Hant"  # the table still decides scripts
