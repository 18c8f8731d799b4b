"""Publish an email newsletter from Markdown issues kept in git.

Data flows one way: issue file → :mod:`newsletter.issue` → :mod:`newsletter.render`
→ :mod:`newsletter.message` → :mod:`newsletter.transports`. The subscriber store,
delivery ledger and scheduler drive that flow; the CLI only wires it together.
"""

__version__ = "0.1.0"
