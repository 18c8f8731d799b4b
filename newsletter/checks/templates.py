"""Template copies a publication holds without having changed them."""

from __future__ import annotations

from newsletter.checks.context import CheckContext
from newsletter.template_files import OLD, SAME, template_states


def check_template_copies(ctx: CheckContext) -> None:
    """A copy nobody edited freezes the publication on that version of the template: fixes
    shipped later (fonts, dark mode, client quirks) never reach its readers."""
    folder = ctx.settings.templates_dir
    for name, state in template_states(folder):
        if state == OLD:
            ctx.add("warning", "templates.old-copy",
                    f"an unedited copy of the {name} an earlier version shipped: the current one has fixes it "
                    f"lacks; delete it to use them (`newsletter templates diff {name}` shows them)",
                    path=folder / name)
        elif state == SAME:
            ctx.add("info", "templates.unedited-copy",
                    f"the same as the shipped {name}: delete it so that later fixes to it reach this publication",
                    path=folder / name)
