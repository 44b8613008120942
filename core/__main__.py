"""``python -m synthagent.core`` runs the ``synth`` command line."""

from synthagent.core.cli import main

if __name__ == "__main__":  # not when a spawned worker process re-imports the main module
    main()
