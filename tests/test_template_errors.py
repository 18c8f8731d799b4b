"""A template's own errors are one line naming the template and its line, never a traceback;
the live preview shows them and rebuilds once the template is fixed.

``{{ 1/0 }}`` (ZeroDivisionError), an include of itself and a macro calling itself
(RecursionError) escaped the renderer as tracebacks, and killed the preview's watcher thread:
it stayed at version 1 with no error shown.
"""

from __future__ import annotations

import threading

import pytest

from tests.helpers import wait_until
import requests
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.issue import find_issue
from newsletter.preview import PreviewServer

ENV = {"NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": "test-secret"}
# (text appended to email.txt.j2, the line of the error counted from the end of the original, message)
BROKEN = [
    ("{{ 1/0 }}\n", 1, "ZeroDivisionError: division by zero"),
    ('{% include "email.txt.j2" %}\n', 1, "includes itself"),
    ("{% macro again(n) %}{{ again(n) }}{% endmacro %}{{ again(1) }}\n", 1, "a macro calls itself"),
    ("{{ [1, 2] | sum(start='x') }}\n", 1, "TypeError"),
    ("{{ {}['missing'] }}\n", None, "template error"),
    ("{{ \"x\".no_such() }}\n", None, "template error"),
    ('{{ "%d" % "x" }}\n', 1, "TypeError"),
]




@pytest.mark.parametrize("addition, line, needle", BROKEN)
def test_a_template_error_is_one_line_with_the_template_and_its_line(publication_root, addition, line, needle):
    template = publication_root / "templates" / "email.txt.j2"
    original = template.read_text(encoding="utf-8")
    template.write_text(original + addition, encoding="utf-8")
    result = CliRunner().invoke(cli, ["--root", str(publication_root), "build", "6"], env=ENV)
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert f"{template}" in lines[0] and needle in lines[0], lines[0]
    if line is not None:
        assert f"{template}:{original.count(chr(10)) + line}: " in lines[0], lines[0]


def test_the_preview_shows_a_template_error_and_rebuilds_once_it_is_fixed(settings):
    template = settings.templates_dir / "email.txt.j2"
    original = template.read_text(encoding="utf-8")
    logs: list[str] = []
    server = PreviewServer(settings, find_issue(settings.issues_dir, "6"), log=logs.append)
    httpd = server.make_server(0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_port}/version"
    try:
        first = requests.get(url, timeout=5).json()
        assert first["error"] == ""
        template.write_text(original + "{{ 1/0 }}\n", encoding="utf-8")
        assert wait_until(lambda: "division by zero" in requests.get(url, timeout=5).json()["error"])
        broken = requests.get(url, timeout=5).json()["version"]
        assert broken > first["version"]
        template.write_text(original + '{% include "email.txt.j2" %}\n', encoding="utf-8")
        assert wait_until(lambda: "includes itself" in requests.get(url, timeout=5).json()["error"])
        template.write_text(original, encoding="utf-8")
        assert wait_until(lambda: requests.get(url, timeout=5).json()["error"] == "")
        assert requests.get(url, timeout=5).json()["version"] > broken + 1
        assert any("division by zero" in line for line in logs) and logs[-1].startswith("rebuilt")
    finally:
        server.stop()
        httpd.shutdown()
