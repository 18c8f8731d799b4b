"""Build cost for issue #6: per stage, whole process, and warm rebuild, beside npm mjml (+ juice).

Run: .venv/bin/python benchmarks/bench_build.py
The JavaScript side needs node; the script installs mjml and juice into
benchmarks/.node/ with npm on first use, and skips that comparison without node.

Targets: the whole `newsletter build` process ≤ 0.6× the time of the mjml 5 CLI
compiling the same MJML alone; a warm in-process rebuild (what the live preview
does) ≤ 0.5× mjml 4 compile + juice inline in a warm node process, median of
7 interleaved pairs. Each mjml major is installed in its own benchmarks/.node<major>/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ISSUE6, NEWSLETTER, REPO, interleaved, median, median_ratio, process_env, settings, timed

NODE_ROOT = Path(__file__).resolve().parent
ROUNDS = 11
WARM = 15  # renders per warm measurement
WARM_PAIRS = 7
CLI_MJML, WARM_MJML = 5, 4  # the mjml major each comparison is against
WHOLE_TARGET, WARM_TARGET = 0.6, 0.5
WARM_JS = r"""
const fs = require('fs');
const mjml = require('mjml');
const juice = require('juice');
const src = fs.readFileSync(process.argv[2], 'utf8');
const n = parseInt(process.argv[3], 10);
(async () => {
  const times = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    const out = await mjml(src, {validationLevel: 'skip'});  // mjml 5 is async; 4 returns the object
    juice(out.html, {preserveImportant: true});
    times.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({median: times[Math.floor(times.length / 2)]}));
})();
"""


def node_tools(major: int) -> Path | None:
    """benchmarks/.node<major>/ with mjml@<major> and juice, installed with npm on first use."""
    if not shutil.which("node") or not shutil.which("npm"):
        return None
    folder = NODE_ROOT / f".node{major}"
    if not (folder / "node_modules" / "mjml").exists() or not (folder / "node_modules" / "juice").exists():
        folder.mkdir(exist_ok=True)
        (folder / "package.json").write_text('{"name": "bench-node", "private": true}')
        print(f"installing mjml@{major} and juice with npm (once)...", file=sys.stderr)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", f"mjml@{major}", "juice"],
                       cwd=folder, check=True, timeout=600)
    return folder


def mjml_source() -> str:
    """The exact MJML the renderer compiles for issue #6."""
    import newsletter.render as render
    from newsletter.issue import parse_issue

    captured: list[str] = []
    original = render.compile_mjml
    render.compile_mjml = lambda src: (captured.append(src), original(src))[1]  # type: ignore[assignment]
    try:
        render.Renderer(settings()).render(parse_issue(ISSUE6))
    finally:
        render.compile_mjml = original  # type: ignore[assignment]
    return captured[0]


def run(cmd: list[str], **kw) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
                   env=process_env(), **kw)


def bytecode_cached() -> bool:
    """Whether the running install's CLI has a compiled .pyc (editable or not, package or module)."""
    import importlib.util

    import newsletter.cli as cli

    source = cli.__file__
    return bool(source) and Path(importlib.util.cache_from_source(source)).exists()


def main() -> None:
    from newsletter.issue import parse_issue
    from newsletter.render import Renderer, render_issue

    s = settings()
    cold = render_issue(ISSUE6, s).timings
    renderer = Renderer(s)
    samples: dict[str, list[float]] = {}
    for _ in range(WARM):
        for k, v in render_issue(ISSUE6, s, renderer).timings.items():
            samples.setdefault(k, []).append(v)
    print(f"Per-stage cost for issue #6 (ms): cold process first render / warm median of {WARM}")
    for stage in ("parse", "markdown", "jinja", "mjml", "inline", "text"):
        print(f"  {stage:<9} {cold[stage] * 1000:8.1f} {median(samples[stage]) * 1000:8.1f}")

    def warm_py() -> float:
        return median([timed(lambda: renderer.render(parse_issue(ISSUE6))) for _ in range(WARM)])

    newsletter_cmd = [NEWSLETTER, "--root", str(REPO), "build", "6"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        py_cmd = [*newsletter_cmd, "--out", str(out / "py")]
        run(py_cmd)  # untimed: writes the .pyc files a normal install already has
        tools, warm_tools = node_tools(CLI_MJML), node_tools(WARM_MJML)
        if tools is None or warm_tools is None:
            whole = median([timed(lambda: run(py_cmd)) for _ in range(ROUNDS)])
            print(f"\nWhole process `newsletter build 6`:  {whole:.3f} s (median of {ROUNDS})")
            print("node/npm not found: skipping the comparisons with npm mjml and juice")
            print(f"Warm in-process rebuild (Python):     {warm_py() * 1000:.1f} ms")
            return
        src = out / "issue6.mjml"
        src.write_text(mjml_source(), encoding="utf-8")
        mjml_cli = [str(tools / "node_modules" / ".bin" / "mjml"), str(src), "-o", str(out / "node.html")]
        # Interleaved pairs, so a busy moment of the machine costs both sides alike; medians.
        whole = interleaved(ROUNDS, {"py": lambda: timed(lambda: run(py_cmd)),
                                     "js": lambda: timed(lambda: run(mjml_cli))})
        cached = bytecode_cached()
        print(f"\nWhole process `newsletter build 6`:     {median(whole['py']):.3f} s (median of {ROUNDS}; "
              f"our bytecode {'cached' if cached else 'NOT cached: compiled on every run'})")
        print(f"Whole process `mjml` CLI (compile only): {median(whole['js']):.3f} s (median of {ROUNDS}; "
              f"mjml {CLI_MJML})")
        print(f"  ratio newsletter/mjml (median of pairs): {median_ratio(whole['py'], whole['js']):.2f}x  "
              f"(target <= {WHOLE_TARGET}x)")

        script = warm_tools / "warm.js"  # beside node_modules, so require() finds mjml and juice
        script.write_text(WARM_JS)

        def warm_js() -> float:
            res = subprocess.run(["node", str(script), str(src), str(WARM)], cwd=warm_tools, capture_output=True,
                                 text=True, check=True, timeout=300)
            return json.loads(res.stdout)["median"]

        warm = interleaved(WARM_PAIRS, {"py": warm_py, "js": warm_js})
        print(f"\nWarm rebuild, Python (parse+render+inline+text): {median(warm['py']) * 1000:.1f} ms "
              f"(median of {WARM_PAIRS} x {WARM})")
        print(f"Warm rebuild, node (mjml compile + juice inline): {median(warm['js']) * 1000:.1f} ms "
              f"(median of {WARM_PAIRS} x {WARM}; mjml {WARM_MJML})")
        print(f"  ratio python/node (median of pairs):            {median_ratio(warm['py'], warm['js']):.2f}x  "
              f"(target <= {WARM_TARGET}x)")


if __name__ == "__main__":
    main()
