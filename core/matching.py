"""Value matching shared by the core's evaluation and the rubric plugins: whole-token mentions of a value."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["mentions_value"]


def mentions_value(text: str, value: Any) -> bool:
    """Whether ``text`` mentions ``value`` as a whole token (numbers in their usual renderings, text
    case-insensitively): ``T0058`` is not mentioned by ``T00581`` or ``T0058-x``."""
    if isinstance(value, bool):
        forms = {str(value)}
    elif isinstance(value, float):
        forms = {str(value), f"{value:.2f}", f"{value:,.2f}"} | ({str(int(value))} if value.is_integer() else set())
    else:
        forms = {str(value)}
    return any(re.search(r"(?<![\w-])" + re.escape(f.lower()) + r"(?![\w-]|\.\d)", text.lower()) for f in forms if f)
