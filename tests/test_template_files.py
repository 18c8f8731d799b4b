"""A publication holds only the templates it changes; the shipped ones fill in the rest."""

from __future__ import annotations

from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.scaffold import init_publication
from newsletter.template_files import default_templates_dir


def run(root, *args):
    return CliRunner().invoke(cli, ["--root", str(root), *args])


def states(root) -> dict[str, str]:
    result = run(root, "templates", "list")
    assert result.exit_code == 0, result.output
    return dict(line.split("\t") for line in result.output.splitlines())


def test_a_new_publication_follows_the_shipped_templates_until_it_copies_one(tmp_path):
    root = tmp_path / "weekly"
    init_publication(root)
    shipped = sorted(p.name for p in default_templates_dir().glob("*.j2"))
    assert "email.mjml.j2" in shipped
    assert states(root) == {name: "default" for name in shipped}

    copied = run(root, "templates", "copy", "email.css.j2")
    assert copied.exit_code == 0, copied.output
    mine = root / "templates" / "email.css.j2"
    assert mine.read_bytes() == (default_templates_dir() / "email.css.j2").read_bytes()
    assert states(root)["email.css.j2"] == "copy, same as the default"
    assert run(root, "templates", "diff", "email.css.j2").output == ""

    mine.write_text(mine.read_text(encoding="utf-8") + ".nl-text p { color: #123456; }\n", encoding="utf-8")
    assert states(root)["email.css.j2"] == "customised"
    diff = run(root, "templates", "diff", "email.css.j2").output
    assert diff.startswith("--- shipped/email.css.j2\n+++ templates/email.css.j2\n")
    assert "+.nl-text p { color: #123456; }" in diff
    built = run(root, "build", "1")
    assert built.exit_code == 0, built.output
    assert "#123456" in (root / "build" / "hello-world" / "email.html").read_text(encoding="utf-8")


def test_copy_refuses_to_overwrite_and_to_take_a_path(tmp_path):
    root = tmp_path / "weekly"
    init_publication(root)
    assert run(root, "templates", "copy", "web.css.j2").exit_code == 0
    (root / "templates" / "web.css.j2").write_text("/* edited */\n", encoding="utf-8")
    again = run(root, "templates", "copy", "web.css.j2")
    assert again.exit_code == 2 and "--force" in again.output and len(again.output.splitlines()) == 1
    assert (root / "templates" / "web.css.j2").read_text(encoding="utf-8") == "/* edited */\n"
    assert run(root, "templates", "copy", "--force", "web.css.j2").exit_code == 0
    assert (root / "templates" / "web.css.j2").read_bytes() == (default_templates_dir() / "web.css.j2").read_bytes()
    for hostile in ("../newsletter.toml", "/etc/passwd", "email.css.j2/../../x", ""):
        refused = run(root, "templates", "copy", hostile)
        assert refused.exit_code == 2 and "no shipped template" in refused.output, (hostile, refused.output)
    assert not (tmp_path / "x").exists()


def test_a_template_only_the_publication_has_is_its_own(tmp_path):
    root = tmp_path / "weekly"
    init_publication(root)
    (root / "templates" / "sidebar.html.j2").write_text("<aside></aside>\n", encoding="utf-8")
    assert states(root)["sidebar.html.j2"] == "own"
    missing = run(root, "templates", "diff", "web.css.j2")
    assert missing.exit_code == 0 and "shipped template is used" in missing.output


def test_every_shipped_template_version_is_recorded():
    """Changing a template means running scripts/record_template_history.py (and committing it),
    so that publications holding today's version as an unedited copy are recognised later."""
    import hashlib

    from newsletter.template_files import shipped_versions

    shipped = sorted(default_templates_dir().glob("*.j2"))
    assert len(shipped) >= 3, shipped  # an empty or misplaced folder must not pass as "all recorded"
    for path in shipped:
        assert (path.name, hashlib.sha256(path.read_bytes()).hexdigest()) in shipped_versions(), path.name


def test_an_unedited_copy_of_an_older_shipped_template_is_recognised_and_checked(tmp_path, monkeypatch):
    import hashlib

    import newsletter.template_files as template_files
    from newsletter.checks import run_checks
    from newsletter.config import load_settings
    from newsletter.render import render_issue

    root = tmp_path / "weekly"
    init_publication(root)
    old = ".nl-text p { margin: 0 0 14px; }\n"  # stands for what an earlier version shipped
    history = tmp_path / "history.txt"
    history.write_text(f"# test\nemail.css.j2 {hashlib.sha256(old.encode()).hexdigest()}\n", encoding="utf-8")
    monkeypatch.setattr(template_files, "HISTORY_FILE", history)
    template_files.shipped_versions.cache_clear()
    try:
        (root / "templates" / "email.css.j2").write_text(old, encoding="utf-8")
        assert run(root, "templates", "copy", "web.css.j2").exit_code == 0
        shipped_text = (default_templates_dir() / "email.txt.j2").read_text(encoding="utf-8")
        (root / "templates" / "email.txt.j2").write_text(shipped_text + "\nThe editors\n", encoding="utf-8")
        got = states(root)
        assert (got["email.css.j2"], got["web.css.j2"], got["email.txt.j2"]) == (
            "copy of an older default", "copy, same as the default", "customised")

        settings = load_settings(root, environ={})
        findings = run_checks(settings, render_issue(root / "issues" / "001-hello-world.md", settings))
        about = {(f.code, f.level, f.path) for f in findings if f.code.startswith("templates.")}
        assert about == {("templates.old-copy", "warning", "templates/email.css.j2"),
                         ("templates.unedited-copy", "info", "templates/web.css.j2")}
    finally:
        template_files.shipped_versions.cache_clear()


def test_the_tools_own_checkout_overrides_nothing():
    """This repository is also a publication whose templates/ is the shipped folder."""
    from newsletter.template_files import template_states

    assert {state for _, state in template_states(default_templates_dir())} == {"default"}
