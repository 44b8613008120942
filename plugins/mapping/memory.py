"""The ``memory`` mapping store: per-task call -> response in a dict (one process, lost at exit)."""

from __future__ import annotations

import asyncio
from typing import Any

from synthagent.core.hookspecs import hookimpl

__all__ = ["MemoryMappingStore"]


class MemoryMappingStore:
    """A dict of (task id, canonical call) -> response. First writer wins."""

    name = "memory"

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], Any] = {}
        self._lock = asyncio.Lock()

    async def get(self, task_id: str, key: str) -> Any | None:
        """The stored response, or None."""
        return self._data.get((task_id, key))

    async def put(self, task_id: str, key: str, value: Any) -> Any:
        """Store ``value`` unless present; return the stored response."""
        async with self._lock:
            return self._data.setdefault((task_id, key), value)

    def __len__(self) -> int:
        return len(self._data)


@hookimpl
def synth_register_mapping_stores(register: Any) -> None:
    """Register the ``memory`` mapping store."""
    register("memory", MemoryMappingStore, description="in-process dict (tests, single runs)")
