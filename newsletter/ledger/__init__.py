"""The delivery ledger: deliveries, one row per recipient, locks and status, split by who uses it.

* :mod:`~newsletter.ledger.schema`: the delivery tables' migrations and the write transaction;
* :mod:`~newsletter.ledger.records`: a delivery as stored, the open states, the lease;
* :mod:`~newsletter.ledger.engine`: a send's SQL (create or resume, lock, freeze, claim, record, finish);
* :mod:`~newsletter.ledger.deliveries`: whole deliveries for the editor and the scheduler;
* :mod:`~newsletter.ledger.reports`: read models for ``status`` and a run's report;
* :mod:`~newsletter.ledger.lookups`: what events, feedback and the archive ask about mail sent.

The database is opened, every component migrated, by :func:`newsletter.schema.open_database`.

Code imports from those modules. ``from newsletter.ledger import X`` still finds ``X`` in whichever
holds it, loading them only then, so that ``status`` (which imports only ``reports``) stays light;
``open_ledger`` and ``ensure_schema``, the names before the one opener, are that opener.
"""

import importlib
from typing import Any

_PARTS = ("schema", "records", "reports", "engine", "deliveries", "lookups")
_FORMER = {"open_ledger": "open_database", "ensure_schema": "migrate_all"}


def __getattr__(name: str) -> Any:
    if name in _FORMER:
        return getattr(importlib.import_module("newsletter.schema"), _FORMER[name])
    for part in _PARTS:
        module = importlib.import_module(f"{__name__}.{part}")
        if name in vars(module):
            return vars(module)[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
