"""What ``synth run --resume`` resumes with, and which run names are allowed.

A resumed run uses the configuration stored in its manifest: ``synth run --resume --name small`` needs no
other flag. Options given with ``--resume`` (a config file, ``--set``, ``--seed``, ``--tasks``) must agree with
the stored configuration, except the ones that do not decide the records (``name``, ``out``,
``simulate.concurrency``, ``simulate.retries``), which apply to the resumed run. A disagreement is a
:class:`~synthagent.core.errors.RunDirectoryError` that names each differing key with both values.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from synthagent.core.errors import ConfigError, RunDirectoryError, UsageError
from synthagent.core.redact import has_redaction, redact_config

__all__ = ["check_run_name", "explicit_keys", "resume_config", "retry_infra_failures", "OPERATIONAL_KEYS", "INFRA_DROP"]

#: Keys that may differ on resume (they do not decide the records); the resumed run uses the given value.
OPERATIONAL_KEYS = frozenset({("name",), ("out",), ("simulate", "concurrency"), ("simulate", "retries")})


def check_run_name(name: str) -> str:
    """Return ``name`` if it is a plain folder name; else :class:`UsageError` (absolute paths, ``..``, ``.``,
    path separators and NUL would put the run directory somewhere other than inside ``--out``)."""
    bad = (not name or name in (".", "..") or os.path.isabs(name) or "/" in name or "\\" in name or "\0" in name
           or (os.altsep is not None and os.altsep in name))
    if bad:
        raise UsageError(f"--name {name!r} must be a plain folder name (no path separator, no '..', not absolute); "
                         "choose where runs go with --out")
    return name


def _leaves(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in data.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            out.extend(_leaves(value, path))
        else:
            out.append(path)
    return out


def explicit_keys(config_path: Path | None, overrides: Sequence[str], extra: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The config keys the user set on this command line (the file's keys, ``--set`` keys, CLI shortcuts)."""
    from synthagent.core.config import parse_set

    keys: list[tuple[str, ...]] = []
    if config_path is not None:
        try:  # load_config has already read and validated it
            keys.extend(_leaves(tomllib.loads(Path(config_path).read_text(encoding="utf-8"))))
        except (OSError, ValueError, UnicodeDecodeError):
            pass
    for item in overrides:
        path, value = parse_set(item)
        keys.extend(_leaves(value, tuple(path)) if isinstance(value, Mapping) and value else [tuple(path)])
    keys.extend((k,) for k, v in extra.items() if v is not None)
    return list(dict.fromkeys(keys))


_MISSING = object()


def _get(data: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return _MISSING
        data = data[key]
    return data


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _put(data: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def _show(value: Any) -> str:
    return "(not set)" if value is _MISSING else json.dumps(value, default=str, ensure_ascii=False)


def resume_config(manifest: Mapping[str, Any], given: Any, explicit: Sequence[tuple[str, ...]], root: Path) -> Any:
    """The :class:`~synthagent.core.config.RunConfig` to resume ``root`` with: the manifest's configuration,
    with the operational keys the user gave.

    :param given: the configuration built from this command line (defaults plus what the user set).
    :param explicit: the keys the user set (:func:`explicit_keys`).
    :raises RunDirectoryError: a key the user set disagrees with the stored configuration (each is named with
        both values), or the manifest holds no usable configuration.
    """
    from synthagent.core.config import config_from_dict

    stored = manifest.get("config")
    if not isinstance(stored, Mapping):
        raise RunDirectoryError(f"{str(root / 'manifest.json')!r} holds no configuration to resume with")
    given_dict = given.to_dict()
    data = json.loads(json.dumps(stored, default=str))  # a deep, plain copy
    differing: list[str] = []
    for path in explicit:
        value = _get(given_dict, path)
        if value is _MISSING and path and path[0] == given.executor:  # [ray] shorthand for [plugins.ray]
            path = ("plugins", *path)
            value = _get(given_dict, path)
        if value is _MISSING:
            continue
        if path in OPERATIONAL_KEYS:
            _put(data, path, value)
            continue
        old = _get(stored, path)
        shown = redact_config(value, path[-1])  # the manifest holds secrets redacted: compare redacted forms
        old_shown = old if old is _MISSING else redact_config(old, path[-1])  # (a run made before redaction)
        if not _same(old_shown, shown):
            differing.append(f"{'.'.join(path)}: stored {_show(old_shown)}, given {_show(shown)}")
        elif has_redaction(old):
            _put(data, path, value)  # the secret the manifest does not hold, given again
    if differing:
        raise RunDirectoryError(
            f"--resume: {str(root)!r} was started with a different configuration ({'; '.join(differing)}); leave "
            "these options out (the stored configuration is reused), or start a new run with another --name")
    missing = [".".join(p) for p in _leaves(data) if has_redaction(_get(data, p))]
    if missing:
        raise RunDirectoryError(
            f"--resume: {str(root)!r} was started with a secret in {', '.join(missing)}, which manifest.json does not "
            f"hold (stored {_show(_get(data, tuple(missing[0].split('.'))))}); give it again with the same config "
            f"file or --set {missing[0]}=..., or keep keys out of URLs (llm.api_key_env names an environment variable)")
    try:
        config = config_from_dict(data)
    except ConfigError as exc:
        raise RunDirectoryError(f"{str(root / 'manifest.json')!r} holds a configuration this version cannot "
                                f"resume: {exc}") from exc
    return config


#: Drop reasons (generator counters, rubric ``dropped``) that name an infrastructure failure, not a verdict.
INFRA_DROP = "teacher_unavailable"
_ORDER = ("generate", "simulate", "rubric", "score", "export")


def retry_infra_failures(store: Any, *, target_tasks: int, uses_demonstrations: bool) -> dict[str, int]:
    """Make ``--resume`` retry what failed for infrastructure reasons, keeping what failed on its merits.

    Rollouts and demonstrations recorded as infrastructure failures (``error`` set: server down, worker lost)
    and rubrics dropped because the teacher was unavailable are taken out of their record files
    (:meth:`~synthagent.core.store.JsonlFile.remove`; ids stay unique), with the scores (and, for a builder
    that reads the simulate stage's trajectories, the rubrics) that were made from them; a generate stage that
    made fewer tasks than asked and dropped slots because the teacher was unavailable is reopened. Every stage
    from the first one affected is marked pending, so the resumed run redoes exactly that work.

    :returns: how many records were taken out, by file (and ``generate: 1`` when generation was reopened).
    """
    failed = {t.id for t in store.trajectories if t.error is not None}
    failed_demos = [t for t in store.demonstrations if t.error is not None]
    redo_tasks = {t.task_id for t in failed_demos}
    if not uses_demonstrations:
        redo_tasks |= {t.task_id for t in store.trajectories if t.id in failed}
    rubrics = {r.id for r in store.rubrics
               if r.task_id in redo_tasks or str(r.dropped or "").startswith(INFRA_DROP)}
    rubric_tasks = {r.task_id for r in store.rubrics if r.id in rubrics}
    scores = {s.id for s in store.scores if s.trajectory_id in failed or s.task_id in rubric_tasks}
    removed = {"trajectories": store.trajectories.remove(failed),
               "demonstrations": store.demonstrations.remove({t.id for t in failed_demos}),
               "rubrics": store.rubrics.remove(rubrics), "scores": store.scores.remove(scores)}
    stages = store.manifest.setdefault("stages", {})
    gen = stages.get("generate", {})
    if (gen.get("status") == "done" and len(store.tasks) < target_tasks
            and any(str(k).endswith(INFRA_DROP) for k in (gen.get("dropped") or {}))):
        removed["generate"] = 1
    first = {"generate": "generate", "trajectories": "simulate", "demonstrations": "rubric", "rubrics": "rubric",
             "scores": "score"}
    hit = [_ORDER.index(first[k]) for k, n in removed.items() if n]
    if hit:
        for stage in _ORDER[min(hit):]:
            if stages.get(stage, {}).get("status") == "done":
                stages[stage] = {**stages[stage], "status": "pending",
                                 "reopened": "retrying infrastructure failures"}
        store.save_manifest()
    return {k: n for k, n in removed.items() if n}
