"""Start-up: a command loads only its own area of the CLI (timings live in benchmarks/bench_startup.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import newsletter.cli as cli_package
from newsletter.cli import AREAS, COMMAND_AREAS, cli


def test_every_command_is_mapped_to_the_area_that_defines_it():
    commands = {name: cli.get_command(None, name) for name in cli.list_commands(None)}  # loads every area
    assert commands, "no commands registered"
    for name, command in commands.items():
        module = command.callback.__module__ if command.callback else ""
        assert COMMAND_AREAS.get(name) and module == f"newsletter.cli.{COMMAND_AREAS[name]}", (name, module)
    assert set(COMMAND_AREAS.values()) <= set(AREAS)
    assert cli_package  # the package itself stays importable as before


@pytest.mark.parametrize("args, loaded", [(["status"], {"sending"}), (["subscribers", "count"], {"subscribers"}),
                                          (["--help"], set(AREAS))])
def test_a_command_imports_only_its_area(publication_root, args, loaded):
    code = ("import sys\nfrom newsletter.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    print('EXIT', exc.code)\n"
            "print('AREAS', sorted(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith('newsletter.cli.')))\n"
            "print('SOCKET', 'socket' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, "--root", str(publication_root), *args],
                            capture_output=True, text=True, cwd=publication_root, timeout=60)
    assert "EXIT 0" in result.stdout, result.stderr
    assert f"AREAS {sorted(loaded)}" in result.stdout, result.stdout
    if args == ["status"]:
        assert "SOCKET False" in result.stdout  # the ledger loads the network stack only to check a lock


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
