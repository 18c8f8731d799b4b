"""Run every benchmark several times, as separate processes, and print the table of docs/benchmarks.md.

    benchmarks/run_all [--runs N] [--only bench_x,bench_y] [--write docs/benchmarks.md]

Each figure is the median over the runs (each run a fresh ``python benchmarks/bench_*.py``,
whose own figure is already a median of interleaved pairs), with the lowest and highest run
beside it. A target is "met" when every run meets it, "not reliably" when the median does and
some run does not, and "no" when the median misses. The header gives the date, the commit and
the load average before and after, since other work on the machine moves every figure.
``--write`` puts the table between the ``run_all`` markers of the given file; with ``--only`` it
replaces just the rows of the benchmarks that ran and keeps the others. Every row says when, at
which commit and at what load it was measured, so a table assembled over several runs stays honest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"
NUM = r"([\d,]+(?:\.\d+)?)"


class Row(NamedTuple):
    bench: str          # the script, e.g. bench_build.py
    label: str          # what is compared, for the table
    ours: str           # regexes with one group each ("" when the row has no such column)
    reference: str
    figure: str         # the ratio (or value) the target is about
    unit: str           # of ours/reference
    op: str             # "<=", ">=" or "" (no target: informational)
    target: float
    note: str = ""      # printed after the target


ROWS: tuple[Row, ...] = (
    Row("bench_build.py", "whole `newsletter build 6` process vs the mjml 5 CLI compiling the same MJML",
        r"Whole process `newsletter build 6`:\s+" + NUM + " s", r"Whole process `mjml` CLI \(compile only\): " + NUM + " s",
        r"ratio newsletter/mjml \(median of pairs\): " + NUM + "x", "s", "<=", 0.6),
    Row("bench_build.py", "warm rebuild (the live preview) vs mjml 4 + juice in a warm node, 7 interleaved pairs",
        r"Warm rebuild, Python [^:]*: " + NUM + " ms", r"Warm rebuild, node [^:]*: " + NUM + " ms",
        r"ratio python/node [^:]*:\s+" + NUM + "x", "ms", "<=", 0.5),
    Row("bench_message.py", "personalised messages vs `EmailMessage` per recipient",
        r"prepared substitution\s*:\s*" + NUM + " msg/s", r"EmailMessage per recipient\s*:\s*" + NUM + " msg/s",
        r"ratio \(median of pairs\)\s*:\s*" + NUM + "x", "msg/s", ">=", 20),
    Row("bench_smtp.py", "whole `newsletter send 6` over SMTP, 6,000 readers, vs raw `smtplib.sendmail` of pre-built bytes",
        r"\(b\) whole [^:]*:\s*" + NUM + " msg/s", r"\(a\) raw [^:]*:\s*" + NUM + " msg/s",
        r"ratio \(b\)/\(a\): " + NUM + "x", "msg/s", ">=", 1.5),
    Row("bench_postmark.py", "Postmark `/email/batch`, 2,000 readers, `PostmarkTransport.send` vs pre-built JSON over `http.client`",
        r"\(b\) PostmarkTransport[^:]*:\s*" + NUM + " msg/s", r"\(a\) pre-built [^:]*:\s*" + NUM + " msg/s",
        r"ratio \(b\)/\(a\): " + NUM + "x", "msg/s", ">=", 0.6),
    Row("bench_import.py", "`subscribers import`, 100k rows, vs csv + email-validator + one `executemany`",
        r"\(b\) newsletter.csvio.import_csv:\s*" + NUM + " rows/s", r"\(a\) reference loop [^:]*:\s*" + NUM + " rows/s",
        r"ratio \(b\)/\(a\): " + NUM + "x", "rows/s", ">=", 2),
    Row("bench_import.py", "import peak RSS, 100k vs 10k rows",
        r"rows: " + NUM + r" / [\d.]+ MB", r"rows: [\d.]+ / " + NUM + " MB", r"MB = " + NUM + "x", "MB", "<=", 1.2),
    Row("bench_dryrun.py", "`send --dry-run` peak RSS, 100k vs 10k readers",
        r"medians\): " + NUM + r" / [\d.]+ MB", r"medians\): [\d.]+ / " + NUM + " MB", r"MB = " + NUM + "x",
        "MB", "<=", 1.05),
    Row("bench_startup.py", "whole `newsletter status` process vs `python -c \"import sqlite3\"`",
        r"newsletter status\s+" + NUM + " ms wall", r"python -c 'import sqlite3'\s+" + NUM + " ms wall",
        r"newsletter status\s+[\d.]+ ms wall\s+[\d.]+ ms CPU\s+" + NUM + "x wall", "ms", "<=", 2,
        "`python -c \"import click, sqlite3\"` alone is ~1.9x: the floor of any click CLI"),
    Row("bench_counts.py", "`newsletter status`, 1M vs 10k readers",
        r"newsletter status\s+[\d.]+ ms at [\d,]+\s+" + NUM + " ms", r"newsletter status\s+" + NUM + " ms at",
        r"newsletter status\s+[^\n]*\s" + NUM + r"x \(target", "ms", "<=", 1.5),
    Row("bench_counts.py", "`newsletter subscribers count`, 1M vs 10k readers",
        r"newsletter subscribers count\s+[\d.]+ ms at [\d,]+\s+" + NUM + " ms", r"newsletter subscribers count\s+" + NUM + " ms at",
        r"newsletter subscribers count\s+[^\n]*\s" + NUM + r"x \(target", "ms", "<=", 1.5),
    Row("bench_delivery.py", "send with the durable ledger vs without (null transport), 10k readers",
        r"^\s*10,000\s+[\d,]+ \|\s+[\d,]+\s+" + NUM, r"^\s*10,000\s+[\d,]+ \|\s+" + NUM,
        r"^\s*10,000\s+[\d,]+ \|\s+[\d,]+\s+[\d,]+\s+" + NUM, "msg/s", ">=", 0.8),
    Row("bench_delivery.py", "send with the durable ledger vs without (null transport), 100k readers",
        r"^\s*100,000\s+[\d,]+ \|\s+[\d,]+\s+" + NUM, r"^\s*100,000\s+[\d,]+ \|\s+" + NUM,
        r"^\s*100,000\s+[\d,]+ \|\s+[\d,]+\s+[\d,]+\s+" + NUM, "msg/s", ">=", 0.8),
    Row("bench_delivery.py", "durable send peak RSS, 100k vs 10k readers", "", "",
        r"ledger peak RSS [\d,]+ vs [\d,]+: " + NUM + "x", "", "<=", 1.2),
    Row("bench_tokens.py", "opaque reader token vs the old `<id>.<HMAC>` token, per token",
        r"new " + NUM + " us", r"old " + NUM + " us", r"new/old " + NUM + "x", "µs", "", 0,
        "no target: the price of tokens that carry no readable id"),
    Row("bench_serve.py", "one-click POST through `serve`: throughput at 8 clients vs at 1",
        r"\| POST one-click \| [^|]*\| " + NUM + " req/s", r"\| POST one-click \| " + NUM + " req/s",
        r"POST one-click: throughput at 8 clients / at 1: " + NUM + "x", "req/s", ">=", 1),
    Row("bench_serve.py", "one-click POST through `serve`: throughput at 32 clients vs at 1",
        r"\| POST one-click \| [^|]*\| [^|]*\| " + NUM + " req/s", r"\| POST one-click \| " + NUM + " req/s",
        r"POST one-click: throughput at 32 clients / at 1: " + NUM + "x", "req/s", ">=", 1),
    Row("bench_serve.py", "one-click POST through `serve`: p99 at 8 clients (ms; reference: hello-world's p99)",
        r"POST one-click: p99 at 8 clients " + NUM + " ms", r"\| hello \| [^|]*\| [^|]*p99 " + NUM + " ms",
        r"POST one-click: p99 at 8 clients " + NUM + " ms", "ms", "<=", 20),
    Row("bench_serve.py", "Postmark webhook through `serve`: throughput at 8 clients vs at 1",
        r"\| Postmark webhook \| [^|]*\| " + NUM + " req/s", r"\| Postmark webhook \| " + NUM + " req/s",
        r"Postmark webhook: throughput at 8 clients / at 1: " + NUM + "x", "req/s", ">=", 1),
    Row("bench_serve.py", "Postmark webhook through `serve`: throughput at 32 clients vs at 1",
        r"\| Postmark webhook \| [^|]*\| [^|]*\| " + NUM + " req/s", r"\| Postmark webhook \| " + NUM + " req/s",
        r"Postmark webhook: throughput at 32 clients / at 1: " + NUM + "x", "req/s", ">=", 1),
    Row("bench_serve.py", "Postmark webhook through `serve`: p99 at 8 clients (ms; reference: hello-world's p99)",
        r"Postmark webhook: p99 at 8 clients " + NUM + " ms", r"\| hello \| [^|]*\| [^|]*p99 " + NUM + " ms",
        r"Postmark webhook: p99 at 8 clients " + NUM + " ms", "ms", "<=", 20),
    Row("bench_serve.py", "answered one-click POSTs and webhooks not found applied afterwards, over every round",
        "", "", r"writes answered but not applied: " + NUM, "writes", "<=", 0),
    Row("bench_serve.py", "one-click POST through `serve` vs hello-world on the same server (lowest of 1/8/32 clients)",
        "", "", r"\| POST one-click \|[^\n]*\| " + NUM + "–", "", "", 0, "no target: the price of the app itself"),
    Row("bench_soak.py", "multi-process soak on PostgreSQL, 3 runs in a row: readers lost",
        "", "", r"soak readers lost \(\d+ runs\): " + NUM, "readers", "<=", 0),
    Row("bench_soak.py", "multi-process soak on PostgreSQL, 3 runs in a row: readers mailed after their unsubscribe was answered",
        "", "", r"soak readers mailed after their unsubscribe was answered \(\d+ runs\): " + NUM, "readers", "<=", 0),
    Row("bench_soak.py", "duplicates per SIGKILL over SMTP, PostgreSQL (soak and crash runs), vs connections in flight",
        r"duplicates per SIGKILL, postgresql: max " + NUM, r"duplicates per SIGKILL, postgresql: max \d+ vs " + NUM,
        r"duplicates per SIGKILL, postgresql: [^\n]*ratio " + NUM + "x", "copies", "<=", 1),
    Row("bench_soak.py", "duplicates per SIGKILL over SMTP, SQLite (crash runs), vs connections in flight",
        r"duplicates per SIGKILL, sqlite: max " + NUM, r"duplicates per SIGKILL, sqlite: max \d+ vs " + NUM,
        r"duplicates per SIGKILL, sqlite: [^\n]*ratio " + NUM + "x", "copies", "<=", 1),
    Row("bench_soak.py", "takeover of a dead worker's readers (soak, worst of 30 kills), vs lease + 10 s",
        r"takeover of a dead worker's readers: worst " + NUM + " s", r"takeover [^\n]*vs lease \+ 10 = " + NUM + " s",
        r"takeover [^\n]*ratio " + NUM + "x", "s", "<=", 1),
    Row("bench_workers.py", "PostgreSQL: 3 `newsletter worker` processes on one delivery vs 1, relay at 20 ms per message "
        "(while all send)",
        r"3 workers:\s+" + NUM + " msg/s while all", r"1 worker :\s+" + NUM + " msg/s while all",
        r"while all send: 3 vs 1: " + NUM + "x", "msg/s", ">=", 2.5),
    Row("bench_workers.py", "PostgreSQL: 2 `newsletter worker` processes on one delivery vs 1 (while all send)",
        r"2 workers:\s+" + NUM + " msg/s while all", r"1 worker :\s+" + NUM + " msg/s while all",
        r"while all send: 2 vs 1: " + NUM + "x", "msg/s", "", 0, "no target (ideal 2×)"),
    Row("bench_workers.py", "PostgreSQL: 3 workers vs 1, whole delivery (due to last message: pick-up and last batch included)",
        r"3 workers:[^\n]*?\),\s+" + NUM + " msg/s due", r"1 worker :[^\n]*?\),\s+" + NUM + " msg/s due",
        r"whole delivery \(due to last message\): 2 vs 1: [\d.]+x, 3 vs 1: " + NUM + "x", "msg/s", "", 0,
        "no target: a short delivery pays each worker's pick-up and the last batch of 100"),
    Row("bench_pg_import.py", "`subscribers import`, 100k rows, whole process: PostgreSQL vs SQLite",
        r"PostgreSQL:\s+" + NUM + " rows/s", r"SQLite:\s+" + NUM + " rows/s",
        r"import PostgreSQL/SQLite rows/s \(median of pairs\): " + NUM + "x", "rows/s", "", 0,
        "no target: what PostgreSQL costs an import"),
    Row("bench_pg_counts.py", "PostgreSQL: `newsletter status`, 1M vs 10k ledger rows",
        r"postgresql newsletter status\s+[\d.]+ ms at [\d,]+\s+" + NUM + " ms",
        r"postgresql newsletter status\s+" + NUM + " ms at",
        r"postgresql newsletter status\s+[^\n]*\s" + NUM + r"x \(target", "ms", "<=", 1.5),
    Row("bench_pg_counts.py", "PostgreSQL: `newsletter subscribers count`, 1M vs 10k readers",
        r"postgresql newsletter subscribers count\s+[\d.]+ ms at [\d,]+\s+" + NUM + " ms",
        r"postgresql newsletter subscribers count\s+" + NUM + " ms at",
        r"postgresql newsletter subscribers count\s+[^\n]*\s" + NUM + r"x \(target", "ms", "<=", 1.5),
    Row("bench_pg_counts.py", "SQLite, same run: `newsletter status`, 1M vs 10k ledger rows",
        r"sqlite\s+newsletter status\s+[\d.]+ ms at [\d,]+\s+" + NUM + " ms", r"sqlite\s+newsletter status\s+" + NUM + " ms at",
        r"sqlite\s+newsletter status\s+[^\n]*\s" + NUM + r"x$", "ms", "", 0, "for comparison (bench_counts holds its target)"),
    Row("bench_pg_counts.py", "SQLite, same run: `newsletter subscribers count`, 1M vs 10k readers",
        r"sqlite\s+newsletter subscribers count\s+[\d.]+ ms at [\d,]+\s+" + NUM + " ms",
        r"sqlite\s+newsletter subscribers count\s+" + NUM + " ms at",
        r"sqlite\s+newsletter subscribers count\s+[^\n]*\s" + NUM + r"x$", "ms", "", 0, "for comparison"),
    Row("bench_serve_send.py", "PostgreSQL: one-click POST through `serve` during a send, p99 at 8 clients "
        "(ms; reference: the same with no send)",
        r"serve during a send: postgresql p99 " + NUM + r" ms \(idle [^)]*\), spool files 0 ",
        r"postgresql p99 [\d.]+ ms \(idle " + NUM + " ms",
        r"serve during a send: postgresql p99 " + NUM + r" ms \(idle [^)]*\), spool files 0 ", "ms", "<=", 100,
        "and no spool file"),
    Row("bench_serve_send.py", "hello-world on the same server right after, p99 at 8 clients (ms; reference: the same "
        "with no send): what the machine alone shows",
        r"hello-world's own p99 on this machine meanwhile " + NUM + " ms",
        r"hello-world's own p99 on this machine meanwhile [\d.]+ ms \(idle " + NUM + " ms",
        r"hello-world's own p99 on this machine meanwhile " + NUM + " ms", "ms", "", 0, "the machine's share"),
    Row("bench_serve_send.py", "SQLite: one-click POST through `serve` during a send, p99 at 8 clients (ms)",
        r"sqlite\s+sending\s+[\d,]+ req/s\s+p50\s+[\d.]+ ms\s+p99\s+" + NUM + " ms",
        r"sqlite\s+idle\s+[\d,]+ req/s\s+p50\s+[\d.]+ ms\s+p99\s+" + NUM + " ms",
        r"sqlite\s+sending\s+[\d,]+ req/s\s+p50\s+[\d.]+ ms\s+p99\s+" + NUM + " ms", "ms", "", 0,
        "for comparison: the spool is SQLite's way"),
    Row("bench_serve_send.py", "PostgreSQL: one-click unsubscribes per second through `serve` during a send vs with none",
        r"postgresql sending\s+" + NUM + " req/s", r"postgresql idle\s+" + NUM + " req/s",
        r"serve during a send: postgresql [\d.]+ req/s vs idle [\d.]+ req/s: " + NUM + "x", "req/s", "", 0, "no target"),
    Row("bench_serve_send.py", "SQLite: one-click unsubscribes per second through `serve` during a send vs with none",
        r"sqlite\s+sending\s+" + NUM + " req/s", r"sqlite\s+idle\s+" + NUM + " req/s",
        r"serve during a send: sqlite [\d.]+ req/s vs idle [\d.]+ req/s: " + NUM + "x", "req/s", "", 0, "no target"),
)

#: Benchmarks on simulated time (no noise): one run is the figure.
SIMULATED = {"bench_providers.py"}


def number(pattern: str, text: str) -> float | None:
    if not pattern:
        return None
    m = re.search(pattern, text, re.M)
    return float(m.group(1).replace(",", "")) if m else None


def run_bench(bench: str, log_dir: Path, i: int) -> str:
    print(f"  {bench} run {i} ...", file=sys.stderr, flush=True)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / bench)], capture_output=True, text=True, cwd=REPO,
                          timeout=3600)
    (log_dir / f"{bench}.{i}.txt").write_text(proc.stdout + "\n--- stderr\n" + proc.stderr, encoding="utf-8")
    print(f"    {time.perf_counter() - t:.0f} s, exit {proc.returncode}", file=sys.stderr, flush=True)
    return proc.stdout


def meets(op: str, value: float, target: float) -> bool:
    return value <= target if op == "<=" else value >= target


def fmt(v: float, unit: str) -> str:
    if unit in ("msg/s", "rows/s", "req/s") or v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}" if unit != "s" else f"{v:.2f}"


def cell(values: list[float], unit: str) -> str:
    if not values:
        return "—"
    med = statistics.median(values)
    spread = f" ({fmt(min(values), unit)}–{fmt(max(values), unit)})" if len(values) > 1 else ""
    return f"{fmt(med, unit)} {unit}{spread}".strip()


TABLE_HEAD = ["| benchmark | ours | reference | ratio: median (lowest–highest run) | target | met | measured |",
              "| --- | --- | --- | --- | --- | --- | --- |"]


def table(outputs: dict[str, list[str]], stamp: str) -> list[str]:
    """The rows of the benchmarks in ``outputs``, each ending with ``stamp`` (when, commit, load)."""
    lines = []
    for row in ROWS:
        runs = outputs.get(row.bench)
        if not runs:
            continue
        figs = [v for v in (number(row.figure, out) for out in runs) if v is not None]
        ours = [v for v in (number(row.ours, out) for out in runs) if v is not None]
        refs = [v for v in (number(row.reference, out) for out in runs) if v is not None]
        if not figs:
            lines.append(f"| {row.label} | — | — | not measured (see the run's log) | | **no** | {stamp} |")
            continue
        med = statistics.median(figs)
        unit = "ms" if row.figure == row.ours else (f" {row.unit}" if row.unit and not row.ours else "×")
        ratio = f"{med:.2f}{unit} ({min(figs):.2f}–{max(figs):.2f}, {len(figs)} runs)"
        if not row.op:
            target, met = "—", row.note or "—"
        else:
            target = f"{row.op} {row.target:g}{unit}" + (f"; {row.note}" if row.note else "")
            good = sum(meets(row.op, v, row.target) for v in figs)
            met = ("yes" if good == len(figs) else
                   f"**not reliably** ({good} of {len(figs)} runs)" if meets(row.op, med, row.target) else
                   f"**no** ({good} of {len(figs)} runs)")
        lines.append(f"| {row.label} | {cell(ours, row.unit)} | {cell(refs, row.unit)} | {ratio} | {target} | {met} | {stamp} |")
    return lines


def merged(new_rows: list[str], old_text: str) -> list[str]:
    """The table's rows in ROWS order: the new ones, and the old ones of benchmarks not run this time."""
    def by_label(lines: list[str]) -> dict[str, str]:
        return {line.split(" | ")[0][2:]: line for line in lines if line.startswith("| ") and " | " in line}

    new, old = by_label(new_rows), by_label(old_text.splitlines())
    m = re.search(r"Measured ([\d-]+ [\d:]+) \(UTC\), commit `(\w+)`.*?\(1/5/15 min\) ([\d.]+) .*? and ([\d.]+) ",
                  old_text, re.S)
    legacy = f"{m.group(1)}, `{m.group(2)}`, load {m.group(3)}→{m.group(4)}" if m else "earlier"
    old = {k: v if v.count(" | ") >= 6 else f"{v} {legacy} |" for k, v in old.items()}  # rows from before the stamp column
    out = [new.get(r.label) or old.get(r.label) for r in ROWS]
    return list(dict.fromkeys(line for line in out if line))


def providers_table(outputs: dict[str, list[str]]) -> list[str]:
    runs = outputs.get("bench_providers.py")
    if not runs:
        return []
    lines = ["", "Each HTTP provider, 10,000 readers, an emulator allowing 10 requests/s, **simulated time** "
                 "(one run: no noise):", "",
             "| provider | requests | ideal s | simulated s | ratio (target <= 1.3×) | 429s |", "| --- | --- | --- | --- | --- | --- |"]
    for m in re.finditer(r"^(\w+)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)", runs[0], re.M):
        lines.append("| " + " | ".join(m.groups()) + " |")
    return lines


def header(runs: int) -> list[str]:
    return [f"Each row: the median of {runs} separate runs of its benchmark, the lowest and highest run beside it, "
            f"and when it was measured (UTC), at which commit, with the load average (1 min) before and after, on "
            f"{os.cpu_count()} cores. Load slows both sides of a pair, but not always alike: the spread is part "
            "of the figure.", ""]


def stamp_of(started: dict[str, object], ended: dict[str, object]) -> str:
    return f"{started['date']}, `{started['commit']}`, load {started['load1']}→{ended['load1']}"


def snapshot() -> dict[str, object]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=REPO).stdout.strip()
    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "commit": commit + ("+changes" if dirty else ""),
            "load": " / ".join(f"{x:.1f}" for x in os.getloadavg()), "load1": f"{os.getloadavg()[0]:.1f}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated benchmark scripts (default: all)")
    parser.add_argument("--write", type=Path, help="replace the table between the run_all markers of this file")
    args = parser.parse_args(argv)
    benches = sorted({r.bench for r in ROWS} | SIMULATED)
    if args.only:
        wanted = {b if b.endswith(".py") else b + ".py" for b in args.only.split(",")}
        benches = [b for b in benches if b in wanted]
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"nl-run-all-{os.getpid()}"
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"logs of every run: {log_dir}", file=sys.stderr)
    started = snapshot()
    outputs: dict[str, list[str]] = {b: [] for b in benches}
    for i in range(1, max(1, args.runs) + 1):  # round-robin: a busy spell spreads over the benchmarks
        for bench in benches:
            if bench in SIMULATED and i > 1:
                continue
            outputs[bench].append(run_bench(bench, log_dir, i))
    rows = table(outputs, stamp_of(started, snapshot()))
    providers = providers_table(outputs)
    print("\n".join(header(args.runs) + TABLE_HEAD + rows + providers))
    if args.write:
        doc = args.write.read_text(encoding="utf-8")
        if BEGIN not in doc or END not in doc:
            sys.exit(f"{args.write} has no {BEGIN} … {END} markers")
        head, _, rest = doc.partition(BEGIN)
        old, _, tail = rest.partition(END)
        if args.only:
            rows = merged(rows, old)
            if not providers and "| provider |" in old:  # the simulated table, kept as it was
                providers = [""] + old[old.index("Each HTTP provider"):].strip().splitlines()
        text = "\n".join(header(args.runs) + TABLE_HEAD + rows + providers)
        args.write.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
