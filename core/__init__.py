"""synthagent.core: the small, stable kernel of the SDK.

It holds the data model (:mod:`synthagent.core.models`), the hook specifications
(:mod:`synthagent.core.hookspecs`), the typed protocols every implementation satisfies
(:mod:`synthagent.core.protocols`), the plugin manager, the run store, the pipeline, the LangGraph agent
loop and the ``synth`` command line. It imports no plugin and has no import-time side effects.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    """``__version__`` is looked up on first use (importlib.metadata is slow to import; ``synth --help``
    does not need it)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("synthagent")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        version = "0.0.0+unknown"
    globals()["__version__"] = version
    return version
