"""The runnable examples in sdk_examples/ run and do what they say."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "sdk_examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_langgraph_embedding_example_solves_its_task(capsys) -> None:
    example = load("langgraph_embedding")
    for domain in ("banking", "orders", "clinic"):
        result = asyncio.run(example.main(domain=domain, seed=1))
        assert result["success"] is True and result["score"] == 1.0, result
    out = capsys.readouterr().out
    assert "tool:" in out and "user:" in out
