"""Regular expressions compiled on first use, not at import.

Each compile costs a fraction of a millisecond, and light commands (``status``,
``subscribers count``) import modules whose checks they never run. Modules keep the
pattern's text as a constant and call ``compiled(TEXT)`` where they match.
"""

from __future__ import annotations

import re
from functools import cache

#: Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: never
#: part of one line of text.
CONTROL_CHARS = r"[\x00-\x1f\x7f-\x9f\u2028\u2029]"


@cache
def compiled(pattern: str) -> re.Pattern[str]:
    """``re.compile(pattern)``, once per process."""
    return re.compile(pattern)


def has_control_chars(text: str) -> bool:
    """Whether ``text`` holds one of :data:`CONTROL_CHARS`. Printable ASCII, which every
    configuration value usually is, is answered without compiling the pattern (the priciest
    one to compile: it spans past U+00FF)."""
    if text.isascii() and text.isprintable():
        return False
    return compiled(CONTROL_CHARS).search(text) is not None
