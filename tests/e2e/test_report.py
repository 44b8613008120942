"""``synth report``: an offline HTML page whose PNG plots exist, decode and are referenced by the page, and browsable
data pages checked in a real headless browser."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
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


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (README test setup: apt-get install -y chromium)")
    profile = tmp_path / "chromium-profile"
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120)


def test_data_pages_show_each_conversation_in_a_real_browser(default_run, tmp_path: Path) -> None:
    """The browsable data pages render offline in headless chromium: a task's conversation, tool calls and
    verdicts are in the DOM, and the index's filter (read from the URL hash) hides the other domains."""
    from synthagent.core.report import write_report

    out = tmp_path / "report"
    write_report(default_run.root, out)
    assert 'href="data/index.html"' in (out / "index.html").read_text()
    data = out / "data"
    index = (data / "index.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", index) and "@import" not in index
    pages = sorted(data.glob("traj-*.html"))
    trajectories = [json.loads(line) for line in (default_run.root / "trajectories.jsonl").read_text().splitlines()]
    assert len(pages) == len(trajectories)
    traj = next(t for t in trajectories if any(m.get("tool_calls") for m in t["messages"]))
    page = data / f"{traj['id']}.html"
    said = next(m["content"] for m in traj["messages"] if m["role"] == "assistant" and m["content"])
    call = next(c for m in traj["messages"] for c in m.get("tool_calls") or [])

    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert html.escape(said, quote=False) in dom.stdout and f"{call['name']}(" in dom.stdout
    assert "Hidden facts" in dom.stdout and 'class="pass"' in dom.stdout

    task = next(json.loads(line) for line in (default_run.root / "tasks.jsonl").read_text().splitlines()
                if json.loads(line)["id"] == traj["task_id"])
    dom = _chromium(["--dump-dom", data.as_uri() + f"/index.html#domain={task['domain']}&score=1"], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = re.findall(r"<tr ([^>]*)>", dom.stdout)
    assert len(rows) == len(trajectories)
    shown = [r for r in rows if "hidden" not in r.split('data-drop')[1]]
    assert shown and all(f'data-domain="{task["domain"]}"' in r for r in shown), shown[:3]
    assert len(shown) < len(rows) and f'{len(shown)} of {len(rows)} shown' in dom.stdout
    assert f'href="{traj["id"]}.html"' in dom.stdout

    shot = tmp_path / "page.png"
    result = _chromium([f"--screenshot={shot}", "--window-size=1100,1400", page.as_uri()], tmp_path)
    assert result.returncode == 0 and _decode(shot)[0] == 1100
