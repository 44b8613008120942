"""``synth report``: an offline HTML page whose PNG plots exist, decode and are referenced by the page."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from PIL import Image


def _images(page: Path) -> list[str]:
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "the page must not reach the network"
    assert "<script" not in text and "@import" not in text and "url(" not in text
    return re.findall(r'<img src="([^"]+)"', text)


def _decode(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()  # decodes the whole image; a truncated file raises here
        return img.size


def test_report_of_the_default_run(default_run, synth, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = synth(["report", str(default_run.root), "--out", str(out)])
    assert result.returncode == 0, result.stderr
    page = out / "index.html"
    images = _images(page)
    assert set(images) == {"reward.png", "tool_calls.png", "turns.png", "mapping.png", "failures.png"}
    for name in images:
        width, height = _decode(out / name)
        assert width > 200 and height > 100
    text = page.read_text()
    summary = json.loads((default_run.root / "summary.json").read_text())
    assert f"<th>trajectories</th><td>{summary['trajectories']}</td>" in text
    assert f"<th>score_mean</th><td>{summary['score_mean']}</td>" in text
    assert "has not trained" in text and not (out / "learning_curves.png").exists()


def test_report_draws_learning_curves_when_the_run_trained(default_run, tmp_path: Path) -> None:
    from synthagent.core.report import read_training_metrics, write_report

    run = tmp_path / "trained"
    shutil.copytree(default_run.root, run, ignore=shutil.ignore_patterns("report"))
    metrics = run / "train" / "grpo" / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("".join(
        json.dumps({"step": s, "reward_mean": s / 10, "reward_std": 0.1, "loss": 1 / (s + 1),
                    "zero_variance_fraction": 0.5, "note": "text is ignored"}) + "\n" for s in range(12)
    ) + "not json\n")
    assert len(read_training_metrics(run)["grpo"]) == 12
    page = write_report(run)
    assert page == run / "report" / "index.html"
    assert "learning_curves.png" in _images(page)
    _decode(run / "report" / "learning_curves.png")
    assert "has not trained" not in page.read_text() and "reward_mean" in page.read_text()
