"""A non-editable install works like the editable one: templates and data ship as package data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_ships_templates_and_data_and_builds_an_issue(tmp_path):
    # Build from a clean copy: setuptools keeps build/lib between builds, so a module
    # deleted or turned into a package (cli.py → cli/) would otherwise ship again.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "node_modules", "*.egg-info", "__pycache__", "outbox", "site", "*.db*"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("newsletter-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (REPO / "templates").glob("*.j2"):
        assert f"newsletter/default_templates/{template.name}" in names
    assert "newsletter/data/init/newsletter.toml" in names and "newsletter/data/init/env.example" in names
    modules = {n for n in names if n.startswith("newsletter/") and n.endswith(".py")
               and not n.startswith("newsletter/default_templates/")}
    assert modules == {p.relative_to(REPO).as_posix() for p in (REPO / "newsletter").rglob("*.py")}  # e.g. newsletter/cli/

    # Install it beside (not over) the checkout and run it from a new publication.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # A fresh venv sees the wheel, then the test venv's dependencies as a plain path (so the
    # checkout's editable-install hook, a .pth file there, is not run).
    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir())
    (site / "zz_deps.pth").write_text(f"{target}\n{deps}\n")
    python = str(venv / "bin" / "python")
    env = {"PATH": "/usr/bin:/bin", "NEWSLETTER_TRANSPORT": "dryrun"}
    pub = tmp_path / "pub"

    def newsletter(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-m", "newsletter", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    where = subprocess.run([python, "-c", "import newsletter; print(newsletter.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60).stdout
    assert where.startswith(str(target)), where
    assert newsletter("init", str(pub)).returncode == 0
    assert not list((pub / "templates").glob("*.j2"))  # init copies none: the wheel's templates are used
    listed = newsletter("--root", str(pub), "templates", "list").stdout
    assert "email.mjml.j2\tdefault" in listed, listed
    result = newsletter("--root", str(pub), "build", "1")
    assert result.returncode == 0, result.stderr
    assert "Hello, world" in (pub / "build" / "hello-world" / "email.html").read_text(encoding="utf-8")


def test_plain_pytest_collects_the_tests_that_import_from_tests():
    """`pytest` (not only `python -m pytest`) finds the `tests` package: pyproject's pythonpath."""
    pytest_script = Path(sys.executable).parent / "pytest"
    result = subprocess.run([str(pytest_script), "--collect-only", "-q", "-p", "no:cacheprovider",
                             "tests/test_crash.py", "tests/test_render.py"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in result.stdout.lower()
