"""The ``user-sft`` algorithm: fine-tune a model to play the *user* (EigenData's user-model step before GRPO).

The data are the run's verified dialogues: every trajectory whose score passed (``success``, or a total at
least ``min_score``), without an infrastructure error. Each becomes one row seen from the user's side, exactly
as the ``llm`` user simulator shows it to its model (:meth:`LLMUserSession._view
<synthagent.plugins.simulators.users.llm.LLMUserSession._view>`): the system prompt holds the persona, the full
request and the hidden facts; the agent's messages are ``user`` turns and the user's own messages are the
``assistant`` turns the model learns (assistant-only loss, so every user turn is "the conversation so far in,
the user's next turn out"). A dialogue the user ended carries the stop signal the ``llm`` user recognises,
:data:`~synthagent.plugins.simulators.users.llm.STOP` (``###STOP###``), as a literal suffix of its last turn.

The trained model then serves as the ``llm`` user through any backend, e.g. in process::

    synth run --set user=llm --set plugins.llm.user.backend=transformers \\
              --set plugins.llm.user.backend_options.model=runs/r/train/user-sft/model
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from synthagent.core.errors import UsageError
from synthagent.core.models import Message, Task, from_json_dict
from synthagent.core.protocols import TrainRequest
from synthagent.plugins.training.trl.common import (check_model_dir, distributed_teardown, require_run, split_options,
                                                  trl_config)

__all__ = ["UserSFTAlgorithm", "USER_SFT_OPTIONS", "user_rows", "verified_dialogues"]

#: synthagent's own options of ``user-sft`` (everything else must be an ``SFTConfig`` field).
USER_SFT_OPTIONS: dict[str, Any] = {
    "min_score": -1.0,          # keep a dialogue whose score total >= this; < 0: keep the successful ones
    "max_examples": 0,          # at most this many dialogues (0 = all)
    "chat_template": "auto",    # auto | model | chatml-tools | PATH
    "plot": True,
    "save_model": True,
}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise UsageError(f"{str(path)!r} does not exist: user-sft needs a finished `synth run` directory")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def verified_dialogues(run_dir: str | Path, min_score: float = -1.0) -> list[tuple[Task, list[Message], bool]]:
    """``(task, messages, stopped)`` of every verified trajectory of a run, in file order.

    Verified: no infrastructure error and a score that passed (``success``; or ``total >= min_score`` when
    ``min_score >= 0``). ``stopped`` says whether the user ended the dialogue (termination ``user_stop``).
    """
    run = Path(run_dir)
    tasks = {t["id"]: t for t in _jsonl(run / "tasks.jsonl")}
    scores = {s["trajectory_id"]: s for s in _jsonl(run / "scores.jsonl")}
    out = []
    for traj in _jsonl(run / "trajectories.jsonl"):
        score = scores.get(traj["id"])
        if traj.get("error") or score is None or score.get("status", "ok") != "ok" or traj["task_id"] not in tasks:
            continue
        passed = bool(score.get("success")) if min_score < 0 else float(score.get("total") or 0.0) >= min_score
        if not passed:
            continue
        messages = [from_json_dict(Message, m) for m in traj["messages"]]
        out.append((from_json_dict(Task, tasks[traj["task_id"]]), messages, traj.get("termination") == "user_stop"))
    return out


def user_rows(dialogues: Iterable[tuple[Task, list[Message], bool]]) -> list[dict[str, Any]]:
    """SFT rows (``{"messages": [...]}``, OpenAI shape) that teach a model to play the user of each dialogue:
    the ``llm`` user's own view of it, with :data:`STOP` appended to the last user turn of a stopped dialogue."""
    from synthagent.plugins.simulators.users.llm import STOP, LLMUserSimulator

    sim = LLMUserSimulator()
    sim.llm = object()  # only the prompt rendering is used
    rows = []
    for task, messages, stopped in dialogues:
        view = sim_view(sim, task, messages)
        if stopped and view[-1]["role"] == "assistant":
            view[-1]["content"] = f"{view[-1]['content']} {STOP}".strip()
        if any(m["role"] == "assistant" for m in view[1:]):
            rows.append({"messages": view})
    return rows


def sim_view(sim: Any, task: Task, messages: list[Message]) -> list[dict[str, Any]]:
    """The user's view of ``messages`` as the ``llm`` user renders it (system prompt with the hidden facts)."""
    from synthagent.plugins.simulators.users.llm import LLMUserSession

    session = LLMUserSession(sim, task, 0)
    return [{"role": m.role, "content": m.content or ""} for m in session._view(messages)]


class UserSFTAlgorithm:
    """Fine-tune a user model on a run's verified dialogues (module docstring). Options:
    :data:`USER_SFT_OPTIONS` plus any ``SFTConfig`` field (``max_steps``, ``learning_rate``, ...)."""

    name = "user-sft"

    def train(self, request: TrainRequest) -> dict[str, Any]:
        """Fine-tune ``request.model`` as the user; write the model, ``metrics.jsonl``, ``user_sft.jsonl`` (the
        rows) and ``train_summary.json`` to ``request.output_dir``; return the summary."""
        check_model_dir(request.model)
        from trl import SFTConfig

        from synthagent.plugins.training.trl.sft import SFT_DEFAULTS, train_sft

        own, fields = split_options(request.options, USER_SFT_OPTIONS, SFTConfig, self.name)
        run = require_run(request.run_dir)
        rows = user_rows(verified_dialogues(run, float(own["min_score"])))
        if not rows:
            raise UsageError(f"run {request.run_dir!r} has no verified dialogue with a user turn to learn from")
        out = Path(request.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "user_sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        config = trl_config(SFTConfig, str(out / "trainer"), fields, SFT_DEFAULTS)
        sft_own: Mapping[str, Any] = {"chat_template": own["chat_template"], "max_examples": own["max_examples"],
                                      "plot": own["plot"], "save_model": own["save_model"]}
        with distributed_teardown():
            summary = train_sft(request, config, dict(sft_own), [("user-sft", rows)])
        summary["algorithm"] = self.name
        summary["dialogues"] = len(rows)
        if (out / "train_summary.json").is_file():
            from synthagent.plugins.training.trl.common import write_json

            write_json(out / "train_summary.json", summary)
        return summary
