"""The ``redis`` mapping store: per-task call -> response in Redis (shared by every process and host that
reaches the server).

One Redis hash per task (key ``prefix + task_id``, field = canonical call, value = JSON). ``put`` sends
``HSETNX`` then ``HGET`` in one ``MULTI``/``EXEC`` transaction, so the first writer wins and every writer gets
the stored response back in one round trip. Needs the ``redis`` package (``pip install redis``, or the extra
``synthagent[redis]``); it is imported only when a store is created, so this module imports without it.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from synthagent.core.errors import ConfigError, require_non_negative_int
from synthagent.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisMappingStore"]

_GLOB_SPECIAL = "\\*?[]"


def _glob_escape(text: str) -> str:
    """``text`` as a literal Redis ``MATCH`` pattern."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)


class RedisMappingStore:
    """(task id, canonical call) -> JSON response in Redis hashes. First writer wins, across processes/hosts.

    :param url: the server, as ``redis://[[user]:password@]host:port/db`` (``rediss://`` for TLS,
        ``unix://path`` for a socket).
    :param prefix: prepended to the task id to name the task's hash; give runs that share a server different
        prefixes to keep their mappings apart.
    :param ttl_s: when > 0, a task's hash expires ``ttl_s`` seconds after its last ``put`` (``EXPIRE``);
        0 keeps it until deleted.

    ``stats`` counts ``hits`` and ``misses`` (``get`` found / did not find a response), ``puts`` (``put``
    stored its value) and ``conflicts`` (``put`` found a response already stored and returned it).
    The client connects lazily, in the event loop of the first call; use the store from that loop only, and
    call :meth:`aclose` when done. Connection failures raise ``redis.exceptions.ConnectionError``.
    """

    name = "redis"

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "synthagent:map:", ttl_s: int = 0) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:
            raise ConfigError(
                "mapping store 'redis' needs the redis package: pip install redis "
                "(or install synthagent with the extra: pip install 'synthagent[redis]')"
            ) from exc
        if not isinstance(prefix, str):
            raise ConfigError(f"mapping store 'redis': prefix must be a string, got {prefix!r}")
        require_non_negative_int("mapping store 'redis'", "ttl_s", ttl_s, "no expiry")
        self.url = url
        self.prefix = prefix
        self.ttl_s = ttl_s
        #: ``hits``, ``misses``, ``puts``, ``conflicts`` (see the class docstring).
        self.stats: Counter[str] = Counter(hits=0, misses=0, puts=0, conflicts=0)
        try:
            self._client: Redis | None = aioredis.Redis.from_url(url, decode_responses=True)
        except ValueError as exc:
            raise ConfigError(f"mapping store 'redis': invalid url {url!r}: {exc}") from exc

    def _redis(self) -> Redis:
        if self._client is None:
            raise RuntimeError(f"mapping store 'redis' ({self.url}) is closed")
        return self._client

    async def get(self, task_id: str, key: str) -> Any | None:
        """The stored response, or None."""
        text = await self._redis().hget(self.prefix + task_id, key)
        if text is None:
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        return json.loads(text)

    async def put(self, task_id: str, key: str, value: Any) -> Any:
        """Store ``value`` unless a response exists; return the stored response (first writer wins).

        The value is serialized to JSON when called (a ``TypeError`` for a value JSON cannot hold); the return
        value is always the stored JSON decoded, so every writer gets an equal object back.
        """
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        name = self.prefix + task_id
        async with self._redis().pipeline(transaction=True) as pipe:
            pipe.hsetnx(name, key, text)
            pipe.hget(name, key)
            if self.ttl_s > 0:
                pipe.expire(name, self.ttl_s)
            results = await pipe.execute()
        inserted, stored = results[0], results[1]
        self.stats["puts" if inserted else "conflicts"] += 1
        return json.loads(stored)

    async def count(self, task_id: str | None = None) -> int:
        """How many responses are stored: for one task, or under this store's prefix in all (like ``len``)."""
        client = self._redis()
        if task_id is not None:
            return int(await client.hlen(self.prefix + task_id))
        total = 0
        async for name in client.scan_iter(match=_glob_escape(self.prefix) + "*", count=1000, _type="hash"):
            total += int(await client.hlen(name))
        return total

    async def aclose(self) -> None:
        """Close the client's connections. Idempotent; the store is unusable afterwards."""
        client, self._client = self._client, None
        if client is None:
            return
        close = getattr(client, "aclose", None)  # redis >= 5.0.1; 5.0.0 has only close()
        await (close() if close is not None else client.close())

    async def __aenter__(self) -> RedisMappingStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@hookimpl
def synth_register_mapping_stores(register: Any) -> None:
    """Register the ``redis`` mapping store."""
    register("redis", RedisMappingStore, description="Redis hashes (shared by processes and hosts; needs redis)")
