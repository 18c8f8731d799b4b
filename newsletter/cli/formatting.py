"""How the CLI shows times and deferrals to an editor.

Display only: the engine (delivery, schedule) deals in UTC datetimes and reports; these
turn them into the words and local times a person reads. Kept light (datetime only), so
`status` and `schedule list` can use them without loading the engine.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any


def describe_deferral(report: Any, ref: str) -> str:
    """The one line a deferred send ends with, its time in this machine's zone:
    "N readers deferred (reason); next retry at 14:05 (+08:00); `newsletter worker` or
    `newsletter resume 6` will continue"."""
    reason = report.note or (report.reasons[0][0] if report.reasons else "waiting for a retry")
    when = local_time(report.next_retry) if report.next_retry is not None else "soon"
    return (f"{report.pending} readers deferred ({reason}); next retry at {when}; "
            f"`newsletter worker` or `newsletter resume {ref}` will continue")


def local_time(when: datetime) -> str:
    """A time in this machine's zone, as an editor reads it: "14:05 (+08:00)", with the date
    when it is not today."""
    local = when.astimezone()
    day = "" if local.date() == datetime.now(local.tzinfo).date() else local.strftime("%Y-%m-%d ")
    return f"{day}{local:%H:%M} ({offset_label(local)})"


def offset_label(local: datetime) -> str:
    """An aware time's UTC offset as people write it: "+08:00" (as %z gives it when it has seconds)."""
    offset = local.strftime("%z")
    return f"{offset[:3]}:{offset[3:]}" if len(offset) == 5 else offset


def display_time(when: datetime | None, zone: tzinfo | None = None) -> str:
    """A stored (UTC) send time as the editor wrote it: in ``zone`` (the offset of the issue's
    ``send_at``, else this machine's), with UTC beside it, e.g. "2025-03-10 09:00 +08:00 (01:00 UTC)"."""
    if when is None:
        return "-"
    utc = when.astimezone(timezone.utc)
    local = utc.astimezone(zone) if zone is not None else utc.astimezone()
    shown = f"{local:%Y-%m-%d %H:%M} {offset_label(local)}"
    if local.utcoffset() == timedelta(0):
        return f"{shown} (UTC)"
    same_day = utc.date() == local.date()
    return f"{shown} ({utc:%H:%M} UTC)" if same_day else f"{shown} ({utc:%Y-%m-%d %H:%M} UTC)"
