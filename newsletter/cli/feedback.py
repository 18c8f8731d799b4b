"""Reader feedback commands (inbox, replies) register here; none yet."""

from __future__ import annotations

from newsletter.cli import cli  # noqa: F401  (commands here use @cli.command())
