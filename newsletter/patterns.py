"""Regular expressions compiled on first use, not at import.

Each compile costs a fraction of a millisecond, and light commands (``status``,
``subscribers count``) import modules whose checks they never run. Modules keep the
pattern's text as a constant and call ``compiled(TEXT)`` where they match.
"""

from __future__ import annotations

import re
from functools import cache

# The one definition of a control character, in parts, so that the two policies below share it.
_C0_BUT_TAB_LF = "\\x00-\\x08\\x0b-\\x1f"
_DEL_C1_SEPARATORS = "\\x7f-\\x9f\\u2028\\u2029"  # DEL, C1, and the Unicode line and paragraph separators
_INVISIBLE = "\\u200b-\\u200f\\u202a-\\u202e\\u2066-\\u2069"  # zero-width and bidi controls

#: Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: never
#: part of one line of text (a setting, a header, a stored name, an error line).
CONTROL_CHARS = f"[\\t\\n{_C0_BUT_TAB_LF}{_DEL_C1_SEPARATORS}]"
#: The same less TAB and LF: never part of a text of many lines (an issue file, a front-matter
#: value before its line count is checked, a header value, where TAB is white space).
TEXT_CONTROL_CHARS = f"[{_C0_BUT_TAB_LF}{_DEL_C1_SEPARATORS}]"
#: Everything that must not reach a terminal from a stranger's text: the controls a text may not
#: hold, TAB, and the invisible characters that make shown text lie (bidi overrides, zero-width).
UNSHOWABLE_CHARS = f"[\\t{_C0_BUT_TAB_LF}{_DEL_C1_SEPARATORS}{_INVISIBLE}]"


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
