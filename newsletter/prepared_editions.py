"""One delivery, every edition: the prepared editions of an issue, and which one each reader gets.

Each edition is rendered and prepared once (:class:`~newsletter.message.PreparedIssue`); a
reader's message is then that edition personalised, as cheaply as a one-language issue. The
delivery records the edition in the reader's ledger row when the list is frozen, so a resume
after a crash sends each reader the same edition again.

The delivery's content hash covers every edition sent: changing one language of a delivery
under way is refused like changing the issue (an issue with one edition keeps its old hash).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from newsletter.message import OutgoingMessage, PreparedIssue
    from newsletter.render import RenderedEmail

MAIN = ""  # as newsletter.editions.MAIN (not imported: the delivery engine stays light)


def _no_other_edition(lang: str | None) -> str:
    return MAIN


@dataclass
class PreparedEditions:
    """The main edition and the others (tag → prepared), and the rule giving a reader's edition."""

    main: "PreparedIssue"
    others: dict[str, "PreparedIssue"] = field(default_factory=dict)
    edition_for: Callable[[str | None], str] = _no_other_edition
    rendered: "RenderedEmail" = field(init=False)

    def __post_init__(self) -> None:
        hashes = [self.main.rendered.content_hash,
                  *(f"{tag}:{p.rendered.content_hash}" for tag, p in sorted(self.others.items()))]
        if len(hashes) == 1:
            combined = hashes[0]
        else:
            from newsletter.render import content_hash

            combined = content_hash(*hashes)
        self.rendered = replace(self.main.rendered, content_hash=combined)

    @property
    def secret_key(self) -> str:
        return self.main.secret_key

    @property
    def test(self) -> bool:
        return self.main.test

    @property
    def tags(self) -> list[str]:
        return [MAIN, *self.others]

    def prepared(self, edition: str) -> "PreparedIssue":
        """The prepared edition ``edition``; the main one for a tag no longer sent (e.g. set back to draft)."""
        return self.others.get(edition, self.main)

    def for_subscriber(self, subscriber_id: int, email: str, name: str = "", edition: str = MAIN) -> "OutgoingMessage":
        return self.prepared(edition).for_subscriber(subscriber_id, email, name)

    def for_reader(self, subscriber_id: int, email: str, name: str, lang: str | None) -> "OutgoingMessage":
        """A reader's message in the edition their language gets (a dry run, which has no ledger)."""
        return self.for_subscriber(subscriber_id, email, name, self.edition_for(lang))


def as_editions(prepared: "PreparedIssue | PreparedEditions") -> PreparedEditions:
    """A one-language issue as a set of editions (the main one alone), so one send path serves both."""
    return prepared if isinstance(prepared, PreparedEditions) else PreparedEditions(prepared)
