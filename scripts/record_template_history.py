"""Record the SHA-256 of every version of the shipped templates that git has ever held.

    .venv/bin/python scripts/record_template_history.py

Run it after changing a template in ``templates/`` and commit the result
(``newsletter/data/template-history.txt``); ``tests/test_template_files.py`` fails until
the current versions are recorded. With the history, ``newsletter templates list`` and
``check`` recognise a publication's copy that is an older shipped template nobody
edited (as dpkg does with a conffile), and can say it is safe to delete.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.template_files import HISTORY_FILE  # noqa: E402


def git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True).stdout


def versions(name: str) -> set[str]:
    """Digests of every committed version of templates/NAME, and of the working copy."""
    digests = {hashlib.sha256((REPO / "templates" / name).read_bytes()).hexdigest()}
    for commit in git("log", "--format=%H", "--", f"templates/{name}").decode().split():
        try:
            digests.add(hashlib.sha256(git("show", f"{commit}:templates/{name}")).hexdigest())
        except subprocess.CalledProcessError:  # the commit that deleted or renamed it
            continue
    return digests


def main() -> int:
    lines = sorted(f"{name} {digest}" for name in sorted(p.name for p in (REPO / "templates").glob("*.j2"))
                   for digest in versions(name))
    HISTORY_FILE.write_text("# name sha256: every version of the shipped templates (scripts/record_template_history.py)\n"
                            + "\n".join(lines) + "\n", encoding="utf-8")
    print(f"{HISTORY_FILE}: {len(lines)} versions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
