"""The dataset card of a run's exports (``exports/README.md``), in Hugging Face's form: YAML front matter whose
``configs:`` name each non-empty data file (``datasets.load_dataset("runs/NAME/exports", "sft")`` and a Hub
upload of the folder read it), then what is in each file, where it came from and how to make it again."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from synthagent.core.models import Task
from synthagent.core.store import RunStore

__all__ = ["dataset_card", "rerun_command"]

#: (config name, file under exports/, what a row is), in the card's order.
CARD_FILES: tuple[tuple[str, str, str], ...] = (
    ("sft", "sft.jsonl", "a kept trajectory: `messages` (OpenAI chat format, tool-call `arguments` as objects, "
                         "as chat templates expect), `tools`, `task_id`, `trajectory_id`, `domain`, `score`"),
    ("openai", "openai.jsonl", "the same trajectories in OpenAI's chat fine-tuning format: `messages` (tool-call "
                               "`arguments` as JSON strings) and `tools` only"),
    ("dpo", "dpo.jsonl", "a preference pair in TRL's conversational DPO format: `prompt`, `chosen`, `rejected`, "
                         "`tools`, `task_id`, `chosen_score`, `rejected_score`"),
    ("rl", "rl.jsonl", "a task for RL: the opening `prompt`, `tools`, `task_id` (the environment is rebuilt from "
                       "the run's tasks.jsonl)"),
    ("sft_rejected", "sft_rejected.jsonl", "a trajectory left out of `sft`, with its `reason` and `detail`"),
    ("curriculum_general", "curriculum/general.jsonl", "stage 1 of the SFT curriculum: every domain"),
    ("curriculum_vertical", "curriculum/vertical.jsonl", "stage 2 of the SFT curriculum: the vertical domains"),
)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def rerun_command(config: Mapping[str, Any]) -> str:
    """A ``synth run`` command line that gives a run with this configuration (the manifest's ``config``):
    ``--name`` and one ``--set KEY=VALUE`` per key that differs from the default (values as TOML)."""
    import shlex

    from synthagent.core.config import RunConfig

    default = dict(_flatten(json.loads(json.dumps(RunConfig().to_dict()))))  # tuples as the manifest's lists
    parts = ["synth", "run"]
    if config.get("name"):
        parts += ["--name", str(config["name"])]
    for key, value in _flatten(config):
        if key in ("name",) or default.get(key, object()) == value or (key.startswith("plugins.") and value == {}):
            continue
        if isinstance(value, tuple):
            value = list(value)
        parts += ["--set", f"{key}={json.dumps(value, ensure_ascii=False)}"]
    return " ".join(shlex.quote(p) for p in parts)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def _row_counts(store: RunStore) -> dict[str, int]:
    counts = {}
    for _, name, _ in CARD_FILES:
        path = store.exports / name
        if path.is_file():
            counts[name] = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return counts


def dataset_card(store: RunStore, tasks: Sequence[Task], info: Mapping[str, Any]) -> str:
    """The card's Markdown for the exports already written in ``store.exports``.

    :param info: the export stage's counts (``dpo_unpaired``, ``rejected``), stated in the card.
    """
    manifest = store.manifest
    config = manifest.get("config", {})
    llm = config.get("llm", {})
    counts = _row_counts(store)
    provenance = Counter((t.provenance.generator, t.provenance.teacher or "-") for t in tasks)
    domains = Counter(t.domain for t in tasks)
    # Data made by the offline oracle come only from the package's own domain files (Apache-2.0); a teacher
    # model's output falls under that model's and its provider's terms, which the card cannot know.
    offline = llm.get("backend") == "oracle" and all(t.provenance.teacher in ("", "oracle") for t in tasks)
    licence = "apache-2.0" if offline else "other"
    front = ["---", f"license: {licence}", f"pretty_name: synthagent run {store.root.name}",
             "language:", "- en", "task_categories:", "- text-generation",
             "tags:", "- synthetic", "- tool-use", "- agents", "- synthagent",
             "size_categories:", f"- {_size_category(max(counts.values(), default=0))}", "configs:"]
    first = True
    for config_name, name, _ in CARD_FILES:
        if counts.get(name):
            front += [f"- config_name: {config_name}", "  data_files:", "  - split: train", f"    path: {name}"]
            if first:
                front.append("  default: true")
                first = False
    if first:
        front[-1] = "configs: []"
    front.append("---")
    body = [
        f"# synthagent run `{store.root.name}`", "",
        "Synthetic multi-turn tool-use conversations made by synthagent (a simulated user, "
        "simulated tools and a teacher policy per task, each conversation scored against the task's rubric).", "",
        "## Files", "", "| config | file | rows | a row is |", "|---|---|---|---|",
    ]
    for config_name, name, what in CARD_FILES:
        if name in counts:
            body.append(f"| `{config_name}` | `{name}` | {counts[name]} | {what} |")
    unpaired = dict(info.get("dpo_unpaired") or {})
    if unpaired:
        from synthagent.core.stages.export import DPO_REASONS

        body += ["", "Tasks without a preference pair in `dpo.jsonl`, by reason:", ""]
        body += [f"- `{k}`: {v} ({DPO_REASONS.get(k, k)})" for k, v in sorted(unpaired.items())]
    rejected = dict(info.get("rejected") or {})
    if rejected:
        body += ["", "Trajectories left out of `sft.jsonl` (and `openai.jsonl`), by reason: "
                 + ", ".join(f"`{k}` {v}" for k, v in sorted(rejected.items())) + "."]
    body += ["", "## Domains", "", "| domain | tasks |", "|---|---|"]
    body += [f"| {d} | {n} |" for d, n in sorted(domains.items())]
    impl = manifest.get("implementations", {})
    teacher = llm.get("backend", "?") + (f" (model `{llm['model']}`)" if llm.get("model") else "")
    body += ["", "## Sources", "",
             f"- generator: `{config.get('generator', '?')}`"
             + (f" ({impl['generator'].get('plugin')} {impl['generator'].get('version')})"
                if isinstance(impl.get("generator"), Mapping) else ""),
             f"- teacher / policy backend: `{teacher}`",
             f"- seed: {manifest.get('seed', config.get('seed'))}",
             f"- trajectories per task (`simulate.samples`): {config.get('simulate', {}).get('samples', '?')}",
             f"- user simulator: `{config.get('user', '?')}`, tool simulator: `{config.get('tools', '?')}`, "
             f"rubric: `{config.get('rubric', '?')}`, scorer: `{config.get('scorer', '?')}`",
             "- tasks by (generator, teacher): " + ", ".join(f"{g} / {t}: {n}" for (g, t), n in sorted(provenance.items())),
             "", "## Licence", "",
             ("Apache-2.0: made by the offline oracle from synthagent's own domain files (no model's output)."
              if offline else
              "`other`: the conversations contain a teacher model's output; check the terms of that model and of "
              "its provider before you share or train on them."),
             "", "## How it was made", "",
             f"synthagent {manifest.get('synthagent', '?')}, {manifest.get('created', '?')}; configuration "
             f"fingerprint `{manifest.get('fingerprint', '?')}` (sha256 of the canonical configuration, "
             "`manifest.json` in the run directory holds it whole). The same records again:", "",
             "```", rerun_command(config), "```", "",
             "Load a file with `datasets.load_dataset(\"PATH/TO/exports\", \"sft\")` (a config name above) or "
             "`datasets.load_dataset(\"json\", data_files=\"PATH/TO/exports/sft.jsonl\")`.", ""]
    return "\n".join(front + body)
