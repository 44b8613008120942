"""mentions_value: whole-token mentions, numbers in the renderings people write (issue 22: tau2's answers)."""

from __future__ import annotations

from typing import Any

import pytest

from synthagent.core.matching import mentions_value


@pytest.mark.parametrize(("text", "value", "mentioned"), [
    ("The total is $1,628.", "1628", True),  # issue 22: the docstring promised it, the code said no
    ("The total is $1,628.", 1628, True),
    ("That comes to 1,628.00 in all.", 1628.0, True),
    ("Total 12.50 USD", "12.5", True),
    ("You owe -3.5 now.", -3.5, True),
    ("Room 5, please.", 5, True),
    ("Order 16280 shipped.", 1628, False),
    ("It costs 1628.5.", 1628, False),
    ("on 2026-01-05", 5, False),  # part of a date
    ("the 5th floor", 5, False),
    ("ticket T0058", "0058", False),  # a leading zero is an id, not a number: whole tokens only
    ("ticket 0058", "0058", True),
    ("ticket T00581", "T0058", False),
    ("ticket T0058-x", "T0058", False),
    ("Ticket t0058 is open.", "T0058", True),
    ("it is True", True, True),
    ("it is 1", True, False),
])
def test_mentions_value(text: str, value: Any, mentioned: bool) -> None:
    assert mentions_value(text, value) is mentioned
