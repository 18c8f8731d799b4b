"""Start-up: a command loads only its own area of the CLI (timings live in benchmarks/bench_startup.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from newsletter.cli import AREAS, COMMAND_AREAS, cli


def test_every_command_is_mapped_to_the_area_that_defines_it():
    commands = {name: cli.get_command(None, name) for name in cli.list_commands(None)}  # loads every area
    assert commands, "no commands registered"
    for name, command in commands.items():
        module = command.callback.__module__ if command.callback else ""
        assert COMMAND_AREAS.get(name) and module == f"newsletter.cli.{COMMAND_AREAS[name]}", (name, module)
    assert set(COMMAND_AREAS.values()) <= set(AREAS)


@pytest.mark.parametrize("args, loaded", [(["status"], {"sending"}), (["subscribers", "count"], {"subscribers"}),
                                          (["--help"], set(AREAS))])
def test_a_command_imports_only_its_area(publication_root, args, loaded):
    code = ("import sys\nfrom newsletter.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    print('EXIT', exc.code)\n"
            "print('AREAS', sorted(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith('newsletter.cli.')))\n"
            "print('SOCKET', 'socket' in sys.modules)\n"
            "print('DATACLASSES', 'dataclasses' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, "--root", str(publication_root), *args],
                            capture_output=True, text=True, cwd=publication_root, timeout=60)
    assert "EXIT 0" in result.stdout, result.stderr
    assert f"AREAS {sorted(loaded)}" in result.stdout, result.stdout
    if args == ["status"]:
        assert "SOCKET False" in result.stdout  # the ledger loads the network stack only to check a lock
        assert "DATACLASSES False" in result.stdout  # its records are NamedTuples: a dataclass costs 1-2 ms


@pytest.mark.parametrize("module", ["newsletter.errors", "newsletter.addresses", "newsletter.config",
                                    "newsletter.store", "newsletter.ledger", "newsletter.events"])
def test_modules_on_the_status_path_compile_no_pattern_at_import(module):
    """Their patterns stay text until first used (newsletter.patterns.compiled): `status` runs none."""
    import importlib
    import re

    compiled = [name for name, value in vars(importlib.import_module(module)).items() if isinstance(value, re.Pattern)]
    assert compiled == []


def test_opening_an_up_to_date_database_does_not_wait_for_a_writer(tmp_path):
    """`status` during a long import (one write transaction) answers at once."""
    import sqlite3

    from newsletter.ledger import delivery_status, open_ledger

    db = tmp_path / "news.db"
    open_ledger(db).close()  # create and migrate
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # holds the write lock, as an import does
    try:
        conn = open_ledger(db)  # before the fix: "database is locked" after the busy timeout
        assert delivery_status(conn) == []
        conn.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_status_rate_counts_only_finished_readers(tmp_path):
    """Counts and the last finished time come from one pass over the ledger (start-up time):
    a pending row touched later must not stretch the rate, nor a row without a time break it."""
    from newsletter.ledger import delivery_status, open_ledger

    conn = open_ledger(tmp_path / "news.db")
    t0 = "2025-01-01T00:00:00.000000Z"
    conn.execute("WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 4) INSERT INTO "
                 "subscribers(email, name, status, created_at, changed_at) SELECT 'r' || i || '@example.org', '', "
                 "'active', ?, ? FROM c", (t0, t0))
    conn.execute("INSERT INTO deliveries(id, slug, content_hash, state, created_at, started_at, total) "
                 "VALUES(1, 'hello', 'x', 'running', ?, ?, 4)", (t0, t0))
    rows = [(1, "sent", "2025-01-01T00:00:10.000000Z"), (2, "failed-permanent", "2025-01-01T00:00:20.000000Z"),
            (3, "skipped", None), (4, "pending", "2025-01-01T00:05:00.000000Z")]
    conn.executemany("INSERT INTO ledger(delivery_id, subscriber_id, email, state, updated_at) "
                     "VALUES(1, ?, 'r@example.org', ?, ?)", rows)
    [st] = delivery_status(conn)
    assert (st.total, st.sent, st.failed, st.skipped, st.remaining) == (4, 1, 1, 1, 1)
    assert st.rate == 3 / 20  # three finished within the 20 s to the last finished row
    assert st.eta_seconds == 1 / st.rate
    conn.close()


def test_the_control_character_shortcut_agrees_with_the_pattern():
    """has_control_chars answers printable ASCII without the regex: it must answer as the regex does."""
    import re

    from newsletter.patterns import CONTROL_CHARS, has_control_chars

    pattern = re.compile(CONTROL_CHARS)
    for code in [*range(0x3000), 0xFEFF, 0x1F600]:
        for text in (chr(code), f"news{chr(code)}letter", f"é{chr(code)}"):
            assert has_control_chars(text) == bool(pattern.search(text)), (hex(code), text)
    assert not has_control_chars("")
