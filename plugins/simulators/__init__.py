"""Simulators of the world the agent acts in: :mod:`.users` (the user it talks to) and :mod:`.tools`
(the tools it calls)."""
