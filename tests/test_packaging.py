"""Packaging: the wheel carries every subpackage and the domain pack; imports stay light and clean."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build from a private copy of the sources: setuptools builds in-tree (build/), and two test workers
    building the same checkout at once collide there."""
    import shutil

    src = tmp_path_factory.mktemp("src") / "synthagent"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", "venv", "build", "dist", "*.egg-info", ".git", ".mypy-path",
                                                              "runs", "__pycache__", ".pytest_cache"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return next(out.glob("synthagent-*.whl"))


def test_wheel_contains_every_package_and_the_domain_pack(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("core", "plugins"):
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.relative_to(REPO).as_posix()
            assert f"synthagent/{rel}" in names, f"{rel} is missing from the wheel (list it in pyproject.toml)"
    domains = sorted((REPO / "plugins/generators/offline_domains/domains").glob("*.json"))
    assert len(domains) >= 8
    data = [*domains, *(REPO / "plugins").rglob("prompts/*.md"), *(REPO / "plugins").rglob("*.jsonl")]
    assert len(data) > len(domains)
    for d in data:
        rel = d.relative_to(REPO).as_posix()
        assert f"synthagent/{rel}" in names, f"package data {rel} is missing from the wheel"
    assert not any(n.startswith(("core/", "plugins/")) for n in names), "never ship top-level core/plugins"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[synthagent]" in text and "generators.offline_domains = synthagent.plugins.generators.offline_domains" in text


def test_wheel_installs_and_imports(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import synthagent.core.models, synthagent.plugins.generators.offline_domains as o, sys; "
            "print(synthagent.core.models.__file__); print(len(o.OfflineDomainsGenerator().domains))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr
    path, count = result.stdout.split()
    assert path.startswith(str(target)) and int(count) >= 8


def test_the_installed_package_imports_from_this_checkout() -> None:
    """The editable install (the README's) maps synthagent.core onto ./core."""
    import synthagent.core
    import synthagent.plugins

    assert Path(synthagent.core.__file__).resolve().parent == REPO / "core"
    assert Path(synthagent.plugins.__file__).resolve().parent == REPO / "plugins"


def test_cli_import_is_light() -> None:
    code = ("import sys, synthagent.core.cli; heavy = [m for m in ('torch', 'trl', 'ray', 'redis', 'vllm', 'langgraph', "
            "'transformers', 'datasets') if m in sys.modules]; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_core_imports_no_plugin_and_tests_never_import_top_level_folders() -> None:
    for path in (REPO / "core").rglob("*.py"):
        imports = re.findall(r"^\s*(?:from|import)\s+synthagent\.plugins", path.read_text(), re.M)
        assert not imports, f"{path} imports a plugin"
    bad = re.compile(r"^\s*(import|from)\s+(core|plugins)(\.|\s|$)", re.M)
    for path in list((REPO / "tests").rglob("*.py")) + list((REPO / "benchmarks").rglob("*.py")):
        assert not bad.search(path.read_text()), f"{path} imports the top-level core/plugins folder"


_PLUGIN = '''
from collections.abc import AsyncIterator

from synthagent.core.hookspecs import hookimpl
from synthagent.core.models import Task
from synthagent.core.protocols import GenerationContext, Register, TaskGenerator


class {cls}:
{body}


@hookimpl
def synth_register_task_generators(register: Register[TaskGenerator]) -> None:
    register("mine", {cls})
'''


def test_mypy_checks_a_plugins_registrations_under_the_documented_editable_install(tmp_path: Path) -> None:
    """docs/plugins.md ("Typed registration"): a plugin author's mypy sees synthagent's types after
    ``pip install -e . --config-settings editable_mode=strict`` (the default editable mode installs an import
    hook that mypy cannot follow: every synthagent import was 'not found' and nothing was checked)."""
    import shutil

    src = tmp_path / "synthagent"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", "venv", "build", "dist", "*.egg-info", ".git", ".mypy-path",
                                                              "runs", "__pycache__", ".pytest_cache", "docs", "tests"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    result = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "-e", str(src),
                             "--config-settings", "editable_mode=strict"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    good = tmp_path / "good_plugin.py"
    good.write_text(_PLUGIN.format(cls="Gen", body="    async def generate(self, ctx: GenerationContext) -> AsyncIterator[Task]:\n"
                                                  "        tasks: tuple[Task, ...] = ()\n        for task in tasks:\n            yield task"))
    bad = tmp_path / "bad_plugin.py"
    bad.write_text(_PLUGIN.format(cls="NotAGenerator", body="    def make(self) -> None: ..."))
    checks = {}
    for f in (good, bad):
        # mypy from this environment, resolving imports through the plugin author's venv (--python-executable):
        # the venv's base interpreter need not have mypy installed (CI's does not; the suite's venv does).
        checks[f.name] = subprocess.run([sys.executable, "-m", "mypy", "--python-executable", str(py), "--no-incremental",
                                         "--ignore-missing-imports", str(f)], capture_output=True, text=True,
                                        timeout=300, cwd=tmp_path)
    out = checks["bad_plugin.py"].stdout
    assert checks["bad_plugin.py"].returncode == 1 and 'incompatible type "type[NotAGenerator]"' in out, out
    assert checks["good_plugin.py"].returncode == 0, checks["good_plugin.py"].stdout


def test_the_projects_mypy_resolves_the_package_instead_of_any(tmp_path: Path) -> None:
    """Issue 25: CI's ``mypy`` (configured in pyproject.toml) sees ``synthagent.*`` through the .mypy-path
    mapping. Under the editable install with ``ignore_missing_imports`` every synthagent import used to be
    ``Any``, so a wrong type in a plugin passed; here the revealed type must be the real class, and a misuse
    of it must be an error."""
    probe = tmp_path / "probe.py"
    probe.write_text("from synthagent.core.models import Task\n"
                     "reveal_type(Task)\n"
                     "def f(t: Task) -> int:\n    return t.no_such_field\n")
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                             "--cache-dir", str(tmp_path / "cache"), str(probe)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    out = result.stdout
    assert 'Revealed type is "def' in out and "synthagent.core.models.Task" in out, out + result.stderr
    assert '"Task" has no attribute "no_such_field"' in out, out
    assert (REPO / ".mypy-path" / "synthagent" / "core").resolve() == (REPO / "core").resolve()
    assert (REPO / ".mypy-path" / "synthagent" / "plugins").resolve() == (REPO / "plugins").resolve()
