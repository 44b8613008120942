"""Value matching shared by the core's evaluation and the rubric plugins: whole-token mentions of a value."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["mentions_value"]

#: A number as people write it: optional sign and currency sign, thousands separators, decimals
#: (``$1,628``, ``1628.00``, ``-3.5``); not part of a word, an id or a date (``T0058``, ``2026-01-05``).
_NUMBER = re.compile(r"(?<![\w.,-])(-?)[$€£]?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w-]|[.,]\d)")
#: A value that is a number: ``1628``, ``-3.5``, ``12.50`` (not ``0058``: a leading zero makes it an id).
_NUMERIC = re.compile(r"^-?(?:0|[1-9]\d*)(?:\.\d+)?$")


def _number(value: Any) -> Decimal | None:
    """``value`` as a number when it is one (an int, a finite float, or a string written as a plain number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value and abs(value) != float("inf") else None
    if isinstance(value, str) and _NUMERIC.match(value.strip()):
        try:
            return Decimal(value.strip())
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
            return None
    return None


def mentions_value(text: str, value: Any) -> bool:
    """Whether ``text`` mentions ``value`` as a whole token: text case-insensitively, numbers in their usual
    renderings (``1628`` is mentioned by "$1,628", "1,628.00" and "1628"; not by "16280" or "1628.5");
    ``T0058`` is not mentioned by ``T00581`` or ``T0058-x``."""
    forms = {str(value)}
    if isinstance(value, float):
        forms |= {f"{value:.2f}", f"{value:,.2f}"} | ({str(int(value))} if value.is_integer() else set())
    low = text.lower()
    if any(re.search(r"(?<![\w-])" + re.escape(f.lower()) + r"(?![\w-]|\.\d)", low) for f in forms if f):
        return True
    number = _number(value)
    if number is None:
        return False
    for m in _NUMBER.finditer(text):
        written = Decimal(m.group(1) + m.group(2).replace(",", "") + (m.group(3) or ""))
        if written == number:
            return True
    return False
