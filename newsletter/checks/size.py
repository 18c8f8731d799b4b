"""Size: Gmail clips HTML over ~102 KB behind a "[Message clipped] View entire message" link,
which also hides the footer's unsubscribe link and the postal address."""

from __future__ import annotations

from newsletter.checks.context import CheckContext

KB = 1024
CLIP_BYTES = 102 * KB  # Gmail's documented-by-practice limit on the HTML part
WARN_BYTES = 90 * KB  # headroom for personalisation and a provider's tracking rewrites


def check_size(ctx: CheckContext) -> None:
    size = len(ctx.rendered.html.encode("utf-8"))
    if size > CLIP_BYTES:
        ctx.add("error", "size.gmail-clip",
                f"the HTML is {size / KB:.1f} KB: Gmail clips anything over 102 KB, hiding the rest "
                "and the unsubscribe link; shorten the issue or split it")
    elif size > WARN_BYTES:
        ctx.add("warning", "size.gmail-clip",
                f"the HTML is {size / KB:.1f} KB, close to Gmail's 102 KB clipping limit")
    total = len(ctx.message_bytes)
    ctx.add("info", "size.message", f"HTML {size / KB:.1f} KB; whole message {total / KB:.1f} KB as sent")
