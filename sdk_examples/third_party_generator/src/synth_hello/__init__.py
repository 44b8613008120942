"""synth-hello: an example third-party synthagent plugin."""

__version__ = "0.3.0"
