"""``synth report RUN``: an HTML page with PNG plots and the summary table of a run directory, and browsable
pages of the data (``data/``: every task's instruction, hidden facts, conversation and rubric verdicts,
filterable by domain, score and drop reason; see :func:`write_data_pages`).

The page (``index.html``) and its images are written side by side (default ``RUN/report/``); the HTML refers
to the images by relative file name only, so it opens offline in any browser and can be copied as a folder.
Plots: reward distribution, tool calls per trajectory, turns per trajectory, mapping-store hit rate, failures
and drops by reason, and learning curves when the run trained (``RUN/train/*/metrics.jsonl``: every numeric key
against ``step``). matplotlib (``synthagent[plots]``) is imported only here, with its non-interactive ``Agg``
canvas: no display needed.
"""

from __future__ import annotations

import html
import json
import statistics
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synthagent.core.errors import UsageError

__all__ = ["write_report", "write_data_pages", "PLOTS", "read_training_metrics", "write_eval_report", "EVAL_PLOTS"]

#: The image files a report holds (learning_curves.png only when the run trained).
PLOTS = ("reward.png", "tool_calls.png", "turns.png", "mapping.png", "failures.png", "learning_curves.png")


def read_training_metrics(run: Path) -> dict[str, list[dict[str, float]]]:
    """``RUN/train/<name>/metrics.jsonl`` files: name -> rows of numeric values (non-numeric keys dropped,
    unreadable lines skipped), in file order."""
    out: dict[str, list[dict[str, float]]] = {}
    for path in sorted(run.glob("train/*/metrics.jsonl")):
        rows = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                row = {k: float(v) for k, v in data.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
                if row:
                    rows.append(row)
        if rows:
            out[path.parent.name] = rows
    return out


def _figure(width: float = 6.0, height: float = 3.6) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes, color="#555")
    ax.set_xticks([])
    ax.set_yticks([])


def _hist(path: Path, values: list[float], title: str, xlabel: str, *, integer: bool, empty: str) -> None:
    fig = _figure()
    ax = fig.add_subplot()
    if values:
        bins: Any
        if integer:
            lo, hi = int(min(values)), int(max(values))
            bins = [b - 0.5 for b in range(lo, hi + 2)]
        else:
            bins = 20
        ax.hist(values, bins=bins, color="#3b6ea5", edgecolor="white")
        if integer:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("count")
        ax.set_xlabel(xlabel)
        title += f" (n={len(values)}, mean {statistics.fmean(values):.3g})"
    else:
        _note(ax, empty)
    ax.set_title(title)
    fig.savefig(path)


def _barh(path: Path, counts: Mapping[str, int], title: str, empty: str) -> None:
    items = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: kv[1])
    fig = _figure(7.0, max(2.4, 0.32 * len(items) + 1.2))
    ax = fig.add_subplot()
    if items:
        ax.barh([k for k, _ in items], [v for _, v in items], color="#c0504d")
        for i, (_, v) in enumerate(items):
            ax.text(v, i, f" {v}", va="center", fontsize=8)
        ax.set_xlabel("count")
    else:
        _note(ax, empty)
    ax.set_title(title)
    fig.savefig(path)


def _mapping(path: Path, stats: Mapping[str, Mapping[str, int]]) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    rows = {kind: (int(s.get("hits", 0)), int(s.get("misses", 0))) for kind, s in stats.items()
            if kind in ("tools", "mapping") and (s.get("hits", 0) or s.get("misses", 0))}
    if rows:
        kinds = list(rows)
        hits = [rows[k][0] for k in kinds]
        misses = [rows[k][1] for k in kinds]
        ax.bar(kinds, hits, label="hits", color="#4f9a5b")
        ax.bar(kinds, misses, bottom=hits, label="misses", color="#d9a441")
        for i in range(len(kinds)):
            total = hits[i] + misses[i]
            ax.text(i, total, f"{hits[i] / total:.1%} hits", ha="center", va="bottom")
        ax.set_ylabel("lookups")
        ax.legend()
        note = ", ".join(f"{k}: {rows[k][0] / sum(rows[k]):.1%}" for k in kinds)
    else:
        note = "no mapping-store lookups in this run (tools executed for real, e.g. the sqlite simulator)"
        _note(ax, note)
    ax.set_title("Mapping store hit rate")
    fig.savefig(path)
    return note


def _learning_curves(path: Path, metrics: Mapping[str, list[dict[str, float]]]) -> list[str]:
    keys = sorted({k for rows in metrics.values() for row in rows for k in row if k != "step"})
    cols = min(3, max(1, len(keys)))
    nrows = -(-len(keys) // cols)
    fig = _figure(4.2 * cols, 3.0 * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for i, key in enumerate(keys):
        ax = axes[i // cols][i % cols]
        for name, rows in metrics.items():
            points = [(row.get("step", float(j)), row[key]) for j, row in enumerate(rows) if key in row]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=name, linewidth=1.2)
        ax.set_title(key)
        ax.set_xlabel("step")
        if len(metrics) > 1:
            ax.legend(fontsize=7)
    for j in range(len(keys), nrows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.savefig(path)
    return keys


def _cell(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return "-" if value is None else str(value)


def write_report(run: Path, out: Path | None = None) -> Path:
    """Write ``index.html`` and its PNG plots for run directory ``run`` into ``out`` (default ``run/report``);
    return the page's path.

    :raises UsageError: ``run`` is not a run directory, or matplotlib is missing.
    """
    from synthagent.core.models import Score, Task, Trajectory
    from synthagent.core.summary import summarize
    from synthagent.core.store import RunStore

    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageError("synth report draws with matplotlib: pip install 'synthagent[plots]'") from exc
    store = RunStore.open(run, readonly=True)
    try:
        summary = summarize(store)
        tasks: list[Task] = store.tasks.load()
        trajectories: list[Trajectory] = store.trajectories.load()
        scores: list[Score] = store.scores.load()
        rubrics = store.rubrics.load()
        manifest = store.manifest
    finally:
        store.close()
    out = out or run / "report"
    out.mkdir(parents=True, exist_ok=True)
    rejected: dict[str, str] = {}
    rejected_file = run / "exports" / "sft_rejected.jsonl"
    if rejected_file.is_file():
        for line in rejected_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
                reason = str(row.get("reason") or "rejected")
                if reason == "task_dropped" and row.get("detail"):  # say why the task was dropped, not only that
                    reason = f"task_dropped: {str(row['detail']).split(':')[0].strip()}"
                rejected[str(row["trajectory_id"])] = reason
            except (ValueError, KeyError, TypeError):
                continue
    write_data_pages(out / "data", tasks, trajectories, scores, rubrics, rejected, title=run.name)

    rewards = [s.total for s in scores if s.status == "ok" and s.total is not None]
    _hist(out / "reward.png", rewards, "Reward distribution", "score (total)", integer=False,
          empty="no scores in this run")
    _hist(out / "tool_calls.png", [float(sum(len(m.tool_calls) for m in t.messages)) for t in trajectories],
          "Tool calls per trajectory", "tool calls", integer=True, empty="no trajectories in this run")
    _hist(out / "turns.png", [float(t.turns) for t in trajectories], "Turns per trajectory", "agent turns",
          integer=True, empty="no trajectories in this run")
    mapping_note = _mapping(out / "mapping.png", summary.get("stats", {}))
    failures: Counter[str] = Counter()
    for t in trajectories:
        if t.termination not in ("user_stop", "final_answer"):
            failures[f"termination: {t.termination}"] += 1
        if t.error:
            failures[f"infra error: {t.error.split(':', 1)[0]}"] += 1
    for s in scores:
        if s.status != "ok":
            failures[f"score: {s.status}"] += 1
    redrawn = summary.get("redrawn") or {}
    for reason, count in (summary.get("dropped") or {}).items():
        if reason.startswith("funnel:") or reason == "kept":
            continue
        label = "redrawn at generation" if reason in redrawn else "dropped at generation"
        failures[f"{label}: {reason}"] += int(count)
    for checker, count in (summary.get("criteria_failed") or {}).items():
        failures[f"criterion failed: {checker}"] += int(count)
    if summary.get("tool_errors"):
        failures["tool error observations"] += int(summary["tool_errors"])
    if summary.get("malformed_tool_calls"):
        failures["malformed tool calls"] += int(summary["malformed_tool_calls"])
    _barh(out / "failures.png", failures, "Failures and drops by reason", "no failures or drops in this run")
    metrics = read_training_metrics(run)
    curves = out / "learning_curves.png"
    if metrics:
        curve_keys = _learning_curves(curves, metrics)
    else:
        curves.unlink(missing_ok=True)
        curve_keys = []

    esc = html.escape
    rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(_cell(v))}</td></tr>" for k, v in summary.items())
    fun = summary.get("funnel") or {}
    funnel_rows = f"<tr><th>slots</th><td>{esc(str(fun.get('slots', 0)))}</td></tr>" + "".join(
        f"<tr><th>dropped: {esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in (fun.get("dropped") or {}).items()
    ) + f"<tr><th>kept (exported)</th><td>{esc(str(fun.get('kept', 0)))}</td></tr>" + "".join(
        f"<tr><th>drop reason: {esc(k)}</th><td>{esc(str(v))}</td></tr>"
        for k, v in (summary.get("drop_reasons") or {}).items()
    ) + "".join(
        f"<tr><th>redrawn at generation (no slot lost): {esc(k)}</th><td>{esc(str(v))}</td></tr>"
        for k, v in (summary.get("redrawn") or {}).items()
    ) + "".join(
        f"<tr><th>tasks succeeded / {esc(of)}</th><td>{esc(str(r.get('rate')))} "
        f"({esc(str(r.get('succeeded')))}/{esc(str(r.get('of')))})</td></tr>"
        for of, r in (summary.get("success") or {}).items()
    ) + "".join(
        f"<tr><th>model requests: {esc(name)}</th><td>{f['requests']} requests, {f['faults']} faults, "
        f"{f['retries']} retries, {f['gave_up']} gave up</td></tr>"
        for name, f in (summary.get("requests") or {}).items())
    figures = [
        ("reward.png", "Reward distribution", f"{len(rewards)} scored trajectories"),
        ("tool_calls.png", "Tool calls per trajectory", f"mean {summary.get('tool_calls_per_task')} per task"),
        ("turns.png", "Turns per trajectory", ""),
        ("mapping.png", "Mapping store hit rate", mapping_note),
        ("failures.png", "Failures and drops by reason", f"{sum(failures.values())} in all"),
    ]
    if metrics:
        figures.append(("learning_curves.png", "Learning curves",
                        f"runs: {', '.join(metrics)}; metrics: {', '.join(curve_keys)}"))
    blocks = "".join(
        f'<figure><img src="{name}" alt="{esc(title)}"><figcaption><b>{esc(title)}</b>'
        f"{' &middot; ' + esc(caption) if caption else ''}</figcaption></figure>"
        for name, title, caption in figures
    )
    if not metrics:
        blocks += ('<p class="note"><b>Learning curves:</b> this run has not trained (no '
                   "<code>train/*/metrics.jsonl</code> in the run directory), so there is no learning-curve plot.</p>")
    config = json.dumps(manifest.get("config", {}), indent=1, sort_keys=True)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>synthagent report: {esc(run.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; font-size: 90%; }}
th {{ background: #f3f3f3; white-space: nowrap; }}
figure {{ display: inline-block; margin: 0 1em 1.5em 0; vertical-align: top; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
.note {{ color: #555; }}
pre {{ background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 85%; }}
</style></head><body>
<h1>synthagent run <code>{esc(run.name)}</code></h1>
<p class="note">{len(tasks)} tasks, {len(trajectories)} trajectories, {len(scores)} scores; seed
{esc(str(manifest.get("seed")))}; created {esc(str(manifest.get("created", "?")))}; synthagent
{esc(str(manifest.get("synthagent", "?")))}.</p>
<p><a href="data/index.html">Browse the data</a>: every task with its instruction, hidden facts, conversation
and the rubric's verdict per criterion, filterable by domain, score and drop reason.</p>
<h2>Funnel</h2>
<p class="note">Where every generation slot ended: kept, or dropped at a named stage and for a named reason;
task success over the kept tasks and over every slot.</p>
<table id="funnel">{funnel_rows}</table>
<h2>Summary</h2>
<table>{rows}</table>
<h2>Plots</h2>
{blocks}
<h2>Configuration</h2>
<pre>{esc(config)}</pre>
</body></html>
"""
    page_path = out / "index.html"
    page_path.write_text(page, encoding="utf-8")
    return page_path


_DATA_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; padding: 0 1em; max-width: 1100px; color: #222;
       line-height: 1.4; }
table { border-collapse: collapse; margin-bottom: 1.5em; width: 100%; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; font-size: 90%; }
th { background: #f3f3f3; }
.msg { border-left: 4px solid #bbb; margin: .6em 0; padding: .3em .8em; background: #fafafa; }
.msg .role { font-weight: bold; font-size: 80%; text-transform: uppercase; color: #555; }
.user { border-color: #3b6ea5; } .assistant { border-color: #4f9a5b; } .tool { border-color: #d9a441; }
.system { border-color: #999; color: #555; font-size: 85%; }
pre { background: #f3f3f3; padding: .5em; overflow-x: auto; white-space: pre-wrap; font-size: 85%; margin: .3em 0; }
.pass { color: #2d7a3a; font-weight: bold; } .fail { color: #b3261e; font-weight: bold; }
.filters label { margin-right: 1.2em; } .note { color: #555; }
nav a { margin-right: 1em; }
"""

# Reads the filters from the URL hash (#domain=banking&score=lt1&drop=kept), hides the rows that do not match,
# writes the filters back to the hash on change: links to a filtered view work offline, no server needed.
_DATA_SCRIPT = """
(function () {
  var names = ["domain", "score", "drop"];
  function scoreMatch(want, value) {
    if (!want) return true;
    if (value === "") return want === "none";
    var v = parseFloat(value);
    return (want === "1" && v >= 1) || (want === "lt1" && v < 1) || (want === "lt05" && v < 0.5);
  }
  function apply() {
    var want = {};
    names.forEach(function (n) { want[n] = document.getElementById("f-" + n).value; });
    var shown = 0, rows = document.querySelectorAll("#tasks tbody tr");
    rows.forEach(function (row) {
      var ok = (!want.domain || row.dataset.domain === want.domain) && scoreMatch(want.score, row.dataset.score)
        && (!want.drop || row.dataset.drop === want.drop);
      row.hidden = !ok;
      if (ok) shown++;
    });
    document.getElementById("shown").textContent = shown + " of " + rows.length + " shown";
    var hash = names.filter(function (n) { return want[n]; }).map(function (n) {
      return n + "=" + encodeURIComponent(want[n]); }).join("&");
    if (("#" + hash) !== location.hash && !(hash === "" && location.hash === "")) {
      history.replaceState(null, "", "#" + hash);
    }
  }
  function load() {
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var p = kv.split("="), el = document.getElementById("f-" + p[0]);
      if (el && p.length === 2) el.value = decodeURIComponent(p[1]);
    });
    apply();
  }
  names.forEach(function (n) { document.getElementById("f-" + n).addEventListener("change", apply); });
  window.addEventListener("hashchange", load);
  load();
})();
"""


def _fmt_score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _message_html(m: Any, esc: Any) -> str:
    name = " &middot; " + esc(m.name) if m.name else ""
    parts = [f'<div class="msg {esc(m.role)}"><div class="role">{esc(m.role)}{name}</div>']
    if m.content:
        body = m.content
        if m.role == "tool":
            try:
                body = json.dumps(json.loads(body), indent=1, ensure_ascii=False)
            except ValueError:
                pass
            parts.append(f"<pre>{esc(body)}</pre>")
        else:
            parts.append(f'<div class="text">{esc(body)}</div>')
    for call in m.tool_calls:
        args = json.dumps(call.arguments, ensure_ascii=False, sort_keys=True)
        parts.append(f'<pre class="call">&#8594; {esc(call.name)}({esc(args)})</pre>')
    parts.append("</div>")
    return "".join(parts)


def write_data_pages(out: Path, tasks: list[Any], trajectories: list[Any], scores: list[Any], rubrics: list[Any],
                     rejected: Mapping[str, str], title: str = "") -> Path:
    """Write browsable pages of a run's data into ``out`` and return the path of their index.

    One page per trajectory (``out/<trajectory id>.html``): the task's visible instruction and facts, its
    hidden facts, the conversation with tool calls and results, and the rubric's verdict per criterion (from
    the score's breakdown). The index (``out/index.html``) lists every trajectory with its domain, score,
    drop reason (``rejected``: trajectory id -> the SFT export's rejection reason; absent means kept), first
    request and final message, filterable by domain, score and drop reason by a small inline script that also
    reads the filters from the URL hash (``#domain=banking&score=lt1&drop=kept``). Plain static HTML: no
    server and no network reference.
    """
    esc = html.escape
    out.mkdir(parents=True, exist_ok=True)
    task_by_id = {t.id: t for t in tasks}
    score_by_traj = {s.trajectory_id: s for s in scores}
    criteria = {r.id: {c.id: c for c in r.criteria} for r in rubrics}
    ordered = sorted(trajectories, key=lambda t: (task_by_id[t.task_id].domain if t.task_id in task_by_id else "",
                                                  t.task_id, t.sample))
    rows = []
    names = [f"{t.id}.html" for t in ordered]
    for i, traj in enumerate(ordered):
        task = task_by_id.get(traj.task_id)
        score = score_by_traj.get(traj.id)
        drop = rejected.get(traj.id, "kept")
        domain = task.domain if task else "?"
        total = score.total if score is not None else None
        first = next((m.content for m in traj.messages if m.role == "user" and m.content), "")
        last = next((m.content for m in reversed(traj.messages) if m.role == "assistant" and m.content), "")
        rows.append(
            f'<tr data-domain="{esc(domain)}" data-score="{"" if total is None else total}" data-drop="{esc(drop)}">'
            f'<td><a href="{esc(names[i])}">{esc(traj.task_id)}</a></td><td>{esc(domain)}</td>'
            f"<td>{_fmt_score(total)}</td><td>{esc(drop)}</td><td>{esc(first)}</td><td>{esc(last)}</td></tr>")
        facts = "".join(f"<tr><td>{esc(f.name)}</td><td>{esc(str(f.value))}</td><td>{esc(f.description)}</td>"
                        f"<td>{esc(', '.join(f.keywords))}</td></tr>"
                        for f in (task.user_context if task else ()))
        visible = "".join(f"<li>{esc(f.name)}: {esc(str(f.value))}</li>" for f in (task.visible_facts if task else ()))
        verdicts = ""
        if score is not None:
            crit = criteria.get(score.rubric_id, {})
            verdicts = "".join(
                f'<tr><td>{esc(r.criterion_id)}</td><td>{esc(r.kind)}</td>'
                f'<td>{esc(crit[r.criterion_id].description) if r.criterion_id in crit else ""}</td>'
                f'<td class="{"pass" if r.passed else "fail"}">{"pass" if r.passed else "FAIL"}</td>'
                f"<td>{r.score:.3g}</td><td>{esc(r.evidence)}</td></tr>" for r in score.breakdown)
        verdict = (esc(score.status) + (", success" if score.success else "")) if score else "not scored"
        nav = ['<a href="index.html">all tasks</a>']
        if i:
            nav.append(f'<a href="{esc(names[i - 1])}">&larr; previous</a>')
        if i + 1 < len(ordered):
            nav.append(f'<a href="{esc(names[i + 1])}">next &rarr;</a>')
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(traj.task_id)} ({esc(domain)})</title>
<style>{_DATA_STYLE}</style></head><body>
<nav>{''.join(nav)}</nav>
<h1>{esc(traj.task_id)} <small class="note">{esc(domain)}</small></h1>
<p>Score <b>{_fmt_score(total)}</b> ({verdict}); drop reason: <b>{esc(drop)}</b>; trajectory
<code>{esc(traj.id)}</code>, policy {esc(traj.policy)}, sample {traj.sample}, {traj.turns} turns, ended by
{esc(traj.termination)}{" (" + esc(traj.error) + ")" if traj.error else ""}.</p>
<h2>Instruction (what the agent sees)</h2><p class="instruction">{esc(task.instruction if task else "")}</p>
{"<p>Stated in the instruction:</p><ul>" + visible + "</ul>" if visible else ""}
<h2>Hidden facts (only the user simulator knows)</h2>
{"<table><tr><th>fact</th><th>value</th><th>description</th><th>keywords</th></tr>" + facts + "</table>"
        if facts else '<p class="note">none</p>'}
<h2>Conversation</h2>
<div id="conversation">{''.join(_message_html(m, esc) for m in traj.messages)}</div>
<h2>Rubric verdict per criterion</h2>
{"<table><tr><th>criterion</th><th>kind</th><th>description</th><th>verdict</th><th>score</th><th>evidence</th></tr>"
        + verdicts + "</table>" if verdicts else '<p class="note">no criteria scored</p>'}
</body></html>
"""
        (out / names[i]).write_text(page, encoding="utf-8")

    def options(values: list[str]) -> str:
        return "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)

    domains = sorted({task_by_id[t.task_id].domain for t in ordered if t.task_id in task_by_id})
    drops = sorted({rejected.get(t.id, "kept") for t in ordered})
    index = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>synthagent data: {esc(title)}</title>
<style>{_DATA_STYLE}</style></head><body>
<nav><a href="../index.html">&larr; report</a></nav>
<h1>Data of run <code>{esc(title)}</code></h1>
<p class="note">Every trajectory with its task; open one to read the instruction, the hidden facts, the
conversation with tool calls and results, and the rubric's verdict per criterion. Filters are kept in the
address (e.g. <code>#domain=banking&amp;score=lt1</code>).</p>
<div class="filters">
<label>domain <select id="f-domain"><option value="">all</option>{options(domains)}</select></label>
<label>score <select id="f-score"><option value="">all</option><option value="1">1.0</option>
<option value="lt1">below 1</option><option value="lt05">below 0.5</option><option value="none">not scored</option>
</select></label>
<label>drop reason <select id="f-drop"><option value="">all</option>{options(drops)}</select></label>
<span id="shown" class="note">{len(rows)} shown</span>
</div>
<table id="tasks"><thead><tr><th>task</th><th>domain</th><th>score</th><th>drop reason</th><th>request</th>
<th>final message</th></tr></thead><tbody>
{''.join(rows)}
</tbody></table>
<script>{_DATA_SCRIPT}</script>
</body></html>
"""
    path = out / "index.html"
    path.write_text(index, encoding="utf-8")
    return path


#: The image files an eval report holds.
EVAL_PLOTS = ("success.png", "pass_k.png", "eval_failures.png")


def write_eval_report(eval_dir: Path, out: Path | None = None) -> Path:
    """Write ``index.html`` for an eval directory (``synth eval``): success bars with their 95% Wilson
    intervals (overall and per domain, the independent success beside the rubric success), pass^k against k,
    failures by kind, and the results table; return the page's path.

    :raises UsageError: not an eval directory (no ``results.json``), or matplotlib is missing.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageError("synth report draws with matplotlib: pip install 'synthagent[plots]'") from exc
    path = eval_dir / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{str(eval_dir)!r} is not a finished eval directory (results.json unreadable: {exc}); "
                         "run or resume `synth eval`") from exc
    out = out or eval_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = [("all (state + answer)" if results.get("success_mode") == "state" else "all (checker)", results["success"]),
            ("all (rubric success)", results["rubric"]["success"])]
    rows += [(f"domain {d}", r) for d, r in results.get("by_domain", {}).items()]
    fig = _figure(7.0, max(2.6, 0.35 * len(rows) + 1.2))
    ax = fig.add_subplot()
    names = [n for n, _ in rows][::-1]
    rates = [r["rate"] or 0.0 for _, r in rows][::-1]
    lows = [max(0.0, (r["rate"] or 0.0) - r["ci95"][0]) for _, r in rows][::-1]
    highs = [max(0.0, r["ci95"][1] - (r["rate"] or 0.0)) for _, r in rows][::-1]
    ax.barh(names, rates, xerr=[lows, highs], color="#4f81bd", capsize=3)
    for i, (rate, (_, r)) in enumerate(zip(rates, rows[::-1])):
        ax.text(min(rate, 0.98), i, f" {r['successes']}/{r['n']}", va="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("success rate (bars: 95% Wilson interval)")
    ax.set_title(f"{results['policy']} on {next(iter(results['source'].values()))}")
    fig.savefig(out / "success.png")
    fig = _figure()
    ax = fig.add_subplot()
    ks = [(int(k), v) for k, v in results["pass_hat_k"].items() if v is not None]
    if ks:
        ax.plot([k for k, _ in ks], [v for _, v in ks], marker="o")
        ax.set_xticks([k for k, _ in ks])
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("k")
        ax.set_ylabel("pass^k")
    else:
        _note(ax, "no episode finished")
    ax.set_title("pass^k: all k trials of a task succeed")
    fig.savefig(out / "pass_k.png")
    _barh(out / "eval_failures.png", results.get("failures", {}), "failures by kind", "no failure")
    esc = html.escape
    s = results["success"]
    table = [("policy", results["policy"]), ("source", json.dumps(results["source"])),
             ("tasks / episodes", f"{results['tasks']} / {results['episodes']}"),
             ("success", f"{s['successes']}/{s['n']} = {s['rate']} (95% CI {s['ci95'][0]}-{s['ci95'][1]})"),
             ("pass^k", ", ".join(f"k={k}: {v}" for k, v in results["pass_hat_k"].items())),
             ("rubric reward (mean)", results["rubric"]["mean_reward"]),
             ("infra errors", results["infra_errors"]),
             ("failures", ", ".join(f"{k}={v}" for k, v in results.get("failures", {}).items()) or "0")]
    body = "".join(f"<tr><th>{esc(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in table)
    images = "".join(f'<p><img src="{name}" alt="{name}"></p>' for name in EVAL_PLOTS)
    page = out / "index.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>synth eval {esc(results['policy'])}"
                    f"</title><style>{_DATA_STYLE}</style></head><body><h1>Evaluation: {esc(results['policy'])}</h1>"
                    f"<p class='note'>The headline success is independent of the training reward "
                    f"(docs/evaluation.md).</p><table>{body}</table>{images}</body></html>\n", encoding="utf-8")
    return page
