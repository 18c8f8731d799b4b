"""What a check reports: one :class:`Finding` per problem, printable as one line."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

LEVELS = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One problem. ``error`` blocks sending; ``warning`` and ``info`` only inform.

    ``code`` is a short stable id ("size.gmail-clip") for filtering and docs;
    ``path``/``line`` point at what the editor should change, where known.
    """

    level: str
    code: str
    message: str
    path: str | None = None
    line: int | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, not {self.level!r}")

    def format(self) -> str:
        """``path:line: level: message [code]``, leaving out what is unknown."""
        where = ""
        if self.path:
            where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        return f"{where}{self.level}: {self.message} [{self.code}]"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Errors first, then warnings, then notes; otherwise in the order the checks ran."""
    return sorted(findings, key=lambda f: LEVELS.index(f.level))
