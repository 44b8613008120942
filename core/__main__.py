"""``python -m synthagent.core`` runs the ``synth`` command line."""

from synthagent.core.cli import main

main()
