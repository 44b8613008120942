"""synthagent.core: the small, stable kernel of the SDK.

It holds the data model (:mod:`synthagent.core.models`), the hook specifications
(:mod:`synthagent.core.hookspecs`), the typed protocols every implementation satisfies
(:mod:`synthagent.core.protocols`), the plugin manager, the run store, the pipeline, the LangGraph agent
loop and the ``synth`` command line. It imports no plugin and has no import-time side effects.
"""

from importlib import metadata as _metadata

try:
    __version__: str = _metadata.version("synthagent")
except _metadata.PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
