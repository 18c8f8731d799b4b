"""A fixture publication in a tmp folder, for tests that must not depend on the repo's issues/.

``make_publication`` copies the repository's newsletter.toml (and nothing else), so the
shipped default templates are what renders, and writes one issue from the given body.
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TABLE = """\
| Jurisdiction | Instrument | Status | Year / 2016 |
| --- | --- | --- | --- |
| European Union | Artificial Intelligence Act, a risk-based regulation | In force | 2024 |
| United States | Executive Order on Safe, Secure, and Trustworthy AI | Revoked | 2023 |
| People’s Republic of China | Interim Measures for Generative AI Services | In force | 2023 |
| United Kingdom | [A pro-innovation approach](https://www.gov.uk/government/publications/ai-regulation-a-pro-innovation-approach/white-paper) | White paper | 2023 |
| United Nations | <https://www.un.org/sites/un2.un.org/files/governing_ai_for_humanity_final_report_en.pdf> | Report | 2024 |
"""

NEWCOMER_BODY = f"""\
Welcome to the seventh edition. This week: 孙成昊 and 张学玉 on trade.[^1]

## Trade and the Global South

![A chart of tariffs by year](https://example.org/chart.png){{width=560}}

{TABLE}
### 王缉思: “Trade Is Security”

The argument, in ~~three~~ four parts.[^2]

[^1]: Both at Tsinghua University.
[^2]: Published in Chinese in 2024.
"""


def write_issue(root: Path, body: str, *, number: int = 7, slug: str = "trade-and-the-global-south",
                extra: str = "", date: str = "2025-04-01") -> Path:
    path = root / "issues" / f"{number:03d}-{slug}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"---\nnumber: {number}\nseries: China Scholar Insights\ntitle: Trade and the Global South\n"
        f"date: {date}\nsubtitle: Chinese scholars on tariffs, supply chains and the developing world’s bargaining power.\n"
        "credits:\n  - role: Writers\n    people:\n      - {name: 孙成昊 SUN Chenghao, affiliation: 清华大学 Tsinghua University}\n"
        f"{extra}---\n\n{body}", encoding="utf-8")
    return path


def make_publication(tmp: Path, body: str = NEWCOMER_BODY, **issue: str) -> tuple[Path, Path]:
    """(root, issue path) of a one-issue publication under ``tmp``."""
    root = tmp / "pub"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "newsletter.toml", root / "newsletter.toml")
    return root, write_issue(root, body, **issue)
