"""synthagent.plugins: the built-in implementations.

Each module registers its implementations through the hooks of :mod:`synthagent.core.hookspecs` and is
declared in the ``synthagent`` entry-point group, exactly as a third-party plugin would be.
"""
