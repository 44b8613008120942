"""What a newcomer sees: the plugin table, quiet runs, file modes, the README's file list, stage clocks."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from synthagent.core.cli import _Progress
from synthagent.core.store import write_text_atomic

REPO = Path(__file__).resolve().parents[2]


def test_plugins_table_keeps_bracketed_extras(synth) -> None:
    """rich would read ``[vllm]`` as markup and print "(extra synthagent, GPU)"; descriptions are escaped."""
    result = synth(["plugins"], env={"COLUMNS": "400"})
    assert result.returncode == 0, result.stderr
    assert "synthagent[vllm]" in result.stdout
    assert "synthagent, GPU" not in result.stdout


def test_quiet_run_prints_only_the_run_directory(synth, tmp_path: Path) -> None:
    result = synth(["run", "-q", "--tasks", "3", "--out", str(tmp_path), "--name", "q"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'q'}\n"


def test_run_files_follow_the_umask_and_the_readme_lists_them(synth, tmp_path: Path) -> None:
    result = synth(["run", "-q", "--tasks", "3", "--out", str(tmp_path), "--name", "m"])
    assert result.returncode == 0, result.stderr
    root = tmp_path / "m"
    mask = os.umask(0o022)
    os.umask(mask)
    readme = (REPO / "README.md").read_text()
    paths = [root, *sorted(root.rglob("*"))]
    assert {"manifest.json", "summary.json", "sft.jsonl", "rl.jsonl", "run.log"} <= {p.name for p in paths}
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        want = (0o777 if path.is_dir() else 0o666) & ~mask
        assert mode == want, f"{path.relative_to(tmp_path)} has mode {oct(mode)}, not {oct(want)}"
        if path.is_file():
            assert f"`{path.relative_to(root)}`" in readme, f"README's file list omits {path.relative_to(root)}"
    assert "`report/`" in readme


def test_write_text_atomic_respects_a_stricter_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    assert (tmp_path / "a.json").read_text() == "{}\n"


def test_a_stage_bar_clock_starts_when_the_previous_stage_ended() -> None:
    """The rubric stage first reports after its demonstrations: its clock must include them."""
    progress = _Progress(quiet=False)
    with progress:
        progress.update("simulate", 1, 1)
        time.sleep(0.5)  # the rubric stage plays demonstrations before its first report
        progress.update("rubric", 0, 2)
        progress.update("rubric", 2, 2)
        tasks = {t.description: t for t in progress._progress.tasks}
    assert tasks["rubric"].finished_time is not None and tasks["rubric"].finished_time >= 0.45
    assert tasks["simulate"].finished_time is not None and tasks["simulate"].finished_time < 0.45
