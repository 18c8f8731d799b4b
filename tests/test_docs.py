"""Every shell block the docs mark runnable runs as written, in a fixture publication.

A block is runnable when the line before its opening fence is ``<!-- runnable -->``. Each
document's blocks run in order in one fresh publication (tmp dir: newsletter.toml and issue
#6, the shipped templates, the dry-run transport, loopback only), each block under
``bash -euo pipefail`` with the virtual environment's ``newsletter`` first on PATH, so a
later block may use what an earlier one made. Any non-zero exit fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = "<!-- runnable -->"
_BLOCK = re.compile(r"^" + re.escape(MARKER) + r"\n```(?:sh|bash|console)[^\n]*\n(.*?)^```", re.M | re.S)
ISSUE6 = REPO / "issues" / "006-global-governance-of-ai.md"


def runnable_blocks(text: str) -> list[str]:
    return _BLOCK.findall(text)


def _publication(tmp: Path) -> Path:
    root = tmp / "pub"
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "newsletter.toml", root / "newsletter.toml")
    shutil.copy(ISSUE6, root / "issues" / ISSUE6.name)
    return root


def _env(tmp: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not (k.startswith(("NEWSLETTER_", "SMTP_", "IMAP_"))
                                                         or k.endswith(("_API_KEY", "_API_URL")))}
    bindir = str(Path(sys.executable).parent)
    return {**keep, "PATH": f"{bindir}{os.pathsep}{keep.get('PATH', '')}", "HOME": str(tmp),
            "NEWSLETTER_TRANSPORT": "dryrun", "NEWSLETTER_SECRET_KEY": "docs-test-secret-key-0123456789",
            "NO_PROXY": "*", "http_proxy": "", "https_proxy": ""}


def test_the_marker_finds_blocks():
    text = f"x\n{MARKER}\n```sh\necho one\n```\n\n```sh\necho two\n```\n"
    assert runnable_blocks(text) == ["echo one\n"]


def test_some_docs_have_runnable_blocks():
    assert sum(len(runnable_blocks(p.read_text(encoding="utf-8"))) for p in DOCS) >= 5


@pytest.mark.parametrize("doc", [p for p in DOCS if runnable_blocks(p.read_text(encoding="utf-8"))],
                         ids=lambda p: p.name)
def test_runnable_commands_in_the_docs_run_as_written(doc, tmp_path):
    root = _publication(tmp_path)
    env = _env(tmp_path)
    for block in runnable_blocks(doc.read_text(encoding="utf-8")):
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=root, env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"{doc.name}: this block exited {proc.returncode}:\n{block}\n" \
                                     f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"


def test_the_readme_fits_on_a_few_screens_and_gives_exit_codes_once():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert readme.count("| 130 |") == 1 and "## Exit codes" in readme
    assert all("| 130 |" not in p.read_text(encoding="utf-8") for p in DOCS[1:])


def test_the_readme_keeps_the_two_set_up_commands_and_what_a_newcomer_must_know():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert ("python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/newsletter subscribers add "
            'reader@example.org --name "Sample Reader" && .venv/bin/newsletter send 6 --dry-run') in readme
    assert "bash .ci/run" in readme and ".venv/bin/python -m pytest" in readme
    for needed in (". .venv/bin/activate", "cp .env.example .env", "node", "npm", "chromium", "dovecot"):
        assert needed in readme, needed


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower-case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_between_the_docs_point_at_files_and_headings_that_exist_or_are_promised():
    promised = {"benchmarks.md", "deliverability.md", "editions.md"}  # written by their owners
    for doc in DOCS:
        for target, anchor in re.findall(r"\]\(([^)#:]+\.md)(?:#([^)]*))?\)", doc.read_text(encoding="utf-8")):
            path = (doc.parent / target).resolve()
            assert path.exists() or path.name in promised, f"{doc.name} links {target}"
            if anchor and path.exists():
                assert anchor in _anchors(path), f"{doc.name} links {target}#{anchor}"
