"""Helpers shared by more than one built-in plugin, as public names.

* :mod:`~synthagent.plugins.common.evidence`: what a trajectory shows (tool calls and their outcome, values
  in an answer, questions for facts, confirmations): read by the user simulators, the rubric builders and
  scorers, and the oracle backend;
* :mod:`~synthagent.plugins.common.corruptions`: plausible wrong versions of values and calls: played by
  the oracle backend and used by checker validation to perturb demonstrations.

No plugin imports another plugin's private (``_name``) names; what two plugins share lives here.
"""
