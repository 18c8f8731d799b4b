"""Start-up: commands load lazily by name, and light ones stay within the budgets of benchmarks/bench_startup.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

import click

from newsletter.cli import LAZY_COMMANDS, LazyGroup, cli

AREAS = sorted({target.split(':')[0].rsplit('.', 1)[1] for target in LAZY_COMMANDS.values()})


def test_every_lazy_command_loads_under_its_own_name():
    for name in LAZY_COMMANDS:
        command = cli.get_command(None, name)
        assert isinstance(command, click.Command) and command.name == name, name
    assert cli.list_commands(None) == sorted(LAZY_COMMANDS)


def test_a_lazy_group_says_which_entry_is_not_a_command():
    group = LazyGroup(lazy_subcommands={"x": "newsletter.errors:scrub"})
    with pytest.raises(TypeError, match="newsletter.errors:scrub"):
        group.get_command(None, "x")


@pytest.mark.parametrize("args, loaded", [(["status"], {"sending"}), (["subscribers", "count"], {"subscribers"}),
                                          (["--help"], set(AREAS))])
def test_a_command_imports_only_its_area(publication_root, args, loaded):
    code = ("import sys\nfrom newsletter.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    print('EXIT', exc.code)\n"
            "print('AREAS', sorted(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith('newsletter.cli.')))\n")
    result = subprocess.run([sys.executable, "-c", code, "--root", str(publication_root), *args],
                            capture_output=True, text=True, cwd=publication_root, timeout=60)
    assert "EXIT 0" in result.stdout, result.stderr
    assert f"AREAS {sorted(loaded)}" in result.stdout, result.stdout


def test_light_commands_start_within_the_budgets_of_bench_startup():
    """What start-up costs, not how it is achieved: each light command's CPU time against
    `python -c "import click, sqlite3"` (the floor of any click CLI), interleaved, median of
    the pairs, within the budgets benchmarks/bench_startup.py states (the better of two
    measurements when the first is over). CPU time, not wall time, so a busy machine does not
    fail it; loading the renderer or rich would."""
    import importlib
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        startup = importlib.import_module("bench_startup")
        ratios = startup.cpu_ratios(startup.measure(rounds=7))
        if any(r > startup.BUDGETS[name] for name, r in ratios.items()):  # a busy spell: measure once more
            again = startup.cpu_ratios(startup.measure(rounds=7))
            ratios = {name: min(r, again[name]) for name, r in ratios.items()}
    finally:
        sys.path.remove(str(bench))
    over = {name: round(r, 2) for name, r in ratios.items() if r > startup.BUDGETS[name]}
    assert set(ratios) == set(startup.BUDGETS) and over == {}, ratios


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


def test_the_engine_holds_no_display_code():
    """Times and deferral lines as an editor reads them are the CLI's (cli/formatting.py):
    the engine deals in datetimes and reports, and nothing reaches back down for words."""
    import newsletter.delivery
    import newsletter.schedule
    from newsletter.cli import formatting

    for name in ("describe_deferral", "local_time", "offset_label", "display_time"):
        assert callable(getattr(formatting, name))
        assert not hasattr(newsletter.delivery, name) and not hasattr(newsletter.schedule, name), name
