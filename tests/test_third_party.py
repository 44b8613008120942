"""The example third-party package: installed, it shows up in `synth plugins` and drives a run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "sdk_examples" / "third_party_generator"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip-install the example (its own pyproject, entry point) into a separate folder on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(EXAMPLE)],
                   check=True, capture_output=True, text=True, timeout=600)
    return target


def test_installed_package_shows_up_and_drives_a_run(installed: Path, synth, tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(installed)}
    rows = json.loads(synth(["plugins", "--json"], env=env).stdout)
    hello = [r for r in rows if r["name"] == "hello-cards"]
    assert hello == [{"kind": "generator", "name": "hello-cards", "plugin": "hello", "version": "0.3.0",
                      "description": "greeting-card orders (example third-party plugin)"}]
    result = synth(["run", "-q", "--out", str(tmp_path), "--name", "h", "--set", "generator=hello-cards",
                    "--tasks", "6"], env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "h/summary.json").read_text())
    assert summary["tasks"] == 6 and summary["domains"] == {"cards": 6} and summary["success_rate"] == 1.0
    manifest = json.loads((tmp_path / "h/manifest.json").read_text())
    assert manifest["implementations"]["generator"] == {"name": "hello-cards", "plugin": "hello", "version": "0.3.0"}


def test_autoload_can_be_turned_off(installed: Path, synth) -> None:
    env = {"PYTHONPATH": str(installed), "SYNTHAGENT_DISABLE_PLUGIN_AUTOLOAD": "1"}
    names = {r["name"] for r in json.loads(synth(["plugins", "--json"], env=env).stdout)}
    assert "hello-cards" not in names and "offline-domains" in names
    names = {r["name"] for r in json.loads(synth(["plugins", "--json", "--plugin", "hello"], env=env).stdout)}
    assert "hello-cards" in names  # an entry-point name works with --plugin


def test_plugin_module_path_works_without_installing(synth, tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(EXAMPLE / "src")}
    result = synth(["run", "-q", "--out", str(tmp_path), "--name", "m", "--plugin", "synth_hello.plugin",
                    "--set", "generator=hello-cards", "--tasks", "3"], env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "m/summary.json").read_text())["tasks"] == 3
