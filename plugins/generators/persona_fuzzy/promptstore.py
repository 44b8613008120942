"""Prompt versions of persona-fuzzy: content-hashed, stored with their parent and measurements (``synth evolve``).

A version is ``{"hash", "parent", "prompts": {"toolset", "task", "fuzzy"}, ...}`` in ``STORE/<hash>.json``;
``STORE/HEAD`` names the accepted one. The generator's ``prompt_version`` option loads one with
:func:`load_version`. This module imports nothing of the generator (the generator imports it).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from synthagent.core.errors import ConfigError, UsageError

__all__ = ["PromptStore", "PROMPT_NAMES", "base_prompts", "prompt_pairs", "version_hash", "load_version"]

_PKG = "synthagent.plugins.generators.persona_fuzzy"

#: persona-fuzzy's prompts, in pipeline order.
PROMPT_NAMES = ("toolset", "task", "fuzzy")


def base_prompts() -> dict[str, str]:
    """The package's own prompts."""
    from synthagent.core.teacher import load_prompt

    return {name: load_prompt(_PKG, f"{name}.md")[0] for name in PROMPT_NAMES}


def prompt_pairs(prompts: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``{name: (text, sha256 prefix)}``, the shape of :attr:`PersonaFuzzyGenerator.prompts`."""
    return {n: (prompts[n], hashlib.sha256(prompts[n].encode("utf-8")).hexdigest()[:16]) for n in PROMPT_NAMES}


def version_hash(prompts: Mapping[str, str]) -> str:
    """Content hash of a prompt version (sha256 of the canonical JSON of its prompts, 16 hex digits)."""
    data = json.dumps({k: prompts[k] for k in sorted(prompts)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


class PromptStore:
    """Prompt versions under ``root`` (``<hash>.json`` each, ``HEAD`` = the accepted one)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def put(self, prompts: Mapping[str, str], *, parent: str | None, **meta: Any) -> str:
        """Store a version (its metadata is kept from the first time it was stored); return its hash."""
        missing = [n for n in PROMPT_NAMES if not isinstance(prompts.get(n), str)]
        if missing:
            raise ConfigError(f"a prompt version needs the prompts {', '.join(missing)}")
        digest = version_hash(prompts)
        path = self.root / f"{digest}.json"
        if not path.is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            record = {"hash": digest, "parent": parent, "prompts": dict(prompts), **meta}
            path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return digest

    def get(self, ref: str) -> dict[str, Any]:
        """The version whose hash is (or starts with) ``ref``."""
        found = sorted(self.root.glob(f"{ref}*.json")) if re.fullmatch(r"[0-9a-f]{4,16}", ref or "") else []
        if len(found) != 1:
            raise UsageError(f"prompt version {ref!r} " + ("is ambiguous" if found else "is not")
                             + f" in the store {str(self.root)!r}")
        return json.loads(found[0].read_text(encoding="utf-8"))

    def head(self) -> str | None:
        """The accepted version's hash, if any."""
        path = self.root / "HEAD"
        return path.read_text(encoding="utf-8").strip() if path.is_file() else None

    def set_head(self, digest: str) -> None:
        """Make ``digest`` the accepted version."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "HEAD").write_text(digest + "\n", encoding="utf-8")

    def versions(self) -> list[dict[str, Any]]:
        """Every stored version, oldest round first."""
        rows = [json.loads(p.read_text(encoding="utf-8")) for p in self.root.glob("*.json")]
        return sorted(rows, key=lambda r: (r.get("round", -1), r["hash"]))

    def diff(self, a: str, b: str) -> str:
        """A unified diff of two versions' prompts."""
        va, vb = self.get(a), self.get(b)
        out: list[str] = []
        for name in PROMPT_NAMES:
            out += difflib.unified_diff(va["prompts"][name].splitlines(keepends=True),
                                        vb["prompts"][name].splitlines(keepends=True),
                                        f"{va['hash']}/{name}.md", f"{vb['hash']}/{name}.md")
        return "".join(out)


def load_version(ref: str, store: str = "") -> dict[str, Any]:
    """A prompt version from a version file, a store directory (its HEAD), or a hash in ``store``."""
    path = Path(ref)
    if path.is_file():
        try:
            version = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"prompt_version {ref!r} is not a readable prompt version file: {exc}") from None
    elif path.is_dir():
        head = PromptStore(path).head()
        if not head:
            raise ConfigError(f"prompt_version {ref!r} is a directory without a HEAD version")
        version = PromptStore(path).get(head)
    else:
        try:
            version = PromptStore(store or "prompts").get(ref)
        except UsageError as exc:
            raise ConfigError(f"prompt_version: {exc} (give a version file, a store directory, or a hash with "
                              "prompt_store set)") from None
    prompts = version.get("prompts") if isinstance(version, dict) else None
    if not isinstance(prompts, dict) or any(not isinstance(prompts.get(n), str) for n in PROMPT_NAMES):
        raise ConfigError(f"prompt_version {ref!r} does not hold the prompts {', '.join(PROMPT_NAMES)}")
    if version_hash(prompts) != version.get("hash"):
        raise ConfigError(f"prompt_version {ref!r}: its prompts do not match its hash (edited by hand?)")
    return version
