"""A fixture publication holding a short English test issue (#8) and its Chinese edition.

Both files are test data written for these tests (tests/fixtures/editions/README.md); the
repository's own issues/ is never read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from newsletter.config import Settings, load_settings
from tests.conftest import make_publication

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "editions"
MAIN = "008-bilingual-test.md"
ZH = "008-bilingual-test.zh-Hans.md"
SECRET = "editions-test-secret-0123456789"


def bilingual_publication(root: Path, *, base_url: str = "https://news.example.org") -> Path:
    """The fixture publication with issue #8 in English and Simplified Chinese."""
    make_publication(root)
    for name in (MAIN, ZH):
        shutil.copy(FIXTURES / name, root / "issues" / name)
    return root


def bilingual_settings(root: Path, **env: str) -> Settings:
    environ = {"NEWSLETTER_BASE_URL": "https://news.example.org", "NEWSLETTER_SECRET_KEY": SECRET, **env}
    return load_settings(root, environ=environ)


#: The readers the dry runs are made for: (address, language) and the edition each must get.
READERS = [("en@example.org", "en", ""), ("zh@example.org", "zh", "zh-Hans"),
           ("zhcn@example.org", "zh-CN", "zh-Hans"), ("fr@example.org", "fr", ""), ("none@example.org", None, ""),
           ("hans@example.org", "zh-Hans", "zh-Hans"), ("tw@example.org", "zh-TW", "")]
