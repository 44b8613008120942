"""Realistic argument and row values from a parameter's name, type, format and description.

Generators that fill tools' arguments or seed databases offline (``graph-domains``, a team's own toolset)
call :func:`realistic_value` instead of writing placeholders such as ``"reservation time rapid 97"``.
People, places, companies, e-mail addresses and phone numbers come from `Faker <https://faker.readthedocs.io>`_,
seeded from the caller's ``random.Random`` (so a seed gives the same values); times, dates, notes and
requests from short lists of phrases a customer would say; anything else becomes a name-like value
("Maple Pizza" for a ``pizza`` parameter) with no digits or underscores. Enums are the caller's business:
a parameter with an ``enum`` should draw from it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Mapping
from functools import lru_cache
from typing import Any

__all__ = ["realistic_value", "in_person", "PLACEHOLDER", "PERSON_ENTITIES"]

#: What a placeholder value looks like: a parameter's words followed by a filler word and a number
#: (``"special request prime 76"``, ``"notes amber-3"``). Tests check that no instruction contains one.
PLACEHOLDER = re.compile(r"\b(?:north|blue|prime|quiet|rapid|solar) \d{2}\b|\b[a-z]+-\d+\b")
#: Entities whose ``name`` column is a person's name.
PERSON_ENTITIES = frozenset({"customer", "user", "patient", "employee", "member", "guest", "passenger", "student",
                             "owner", "contact", "driver", "tenant", "client", "traveler", "attendee", "person",
                             "doctor", "agent", "candidate", "applicant", "subscriber", "account_holder"})
_ADJECTIVES = ("Classic", "Harbor", "Golden", "Summit", "Garden", "Maple", "Urban", "Coastal", "Royal", "Rustic",
               "Evergreen", "Sunset", "Alpine", "Willow", "Copper", "Meadow", "Cedar", "Silver", "Northern", "Bright",
               "Orchard", "Riverside", "Lakeside", "Crimson", "Ivory", "Pine", "Oak", "Juniper", "Sterling",
               "Highland", "Prairie", "Canyon", "Aspen", "Cobalt", "Amber", "Sage", "Hillside", "Bayview",
               "Westwood", "Starlight")
_NOTES = ("Please ring the bell twice.", "Leave it at the front desk.", "No onions, please.",
          "I'd like a window seat if possible.", "Call me when you arrive.", "It's for a birthday.",
          "Please use the side entrance.", "I need it before noon.", "Extra napkins, please.",
          "I'm allergic to peanuts.", "Quiet room, away from the elevator.", "Gift wrap it, please.")
_REASONS = ("my plans changed", "I found a better option", "it arrived damaged", "I ordered the wrong size",
            "I no longer need it", "the date doesn't work for me", "it was a duplicate", "I'm moving")
_TIMES = ("08:30", "09:00", "10:15", "11:45", "12:30", "13:00", "14:45", "16:00", "17:30", "18:15", "19:00",
          "20:30")


@lru_cache(maxsize=1)
def _faker() -> Any:
    from faker import Faker  # imported on first use: loading the plugins stays light

    return Faker("en_US")


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def realistic_value(param: str, schema: Mapping[str, Any] | None, rng: random.Random, *, entity: str = "",
                    current: Any = None, avoid: Collection[Any] = ()) -> Any:
    """A plausible value for parameter (or column) ``param`` of JSON-schema ``schema``, drawn with ``rng``.

    :param entity: the entity the value belongs to (``customer``): a ``name`` of a person entity is a person's
        name. :param current: a value to differ from (an update's new value must change something).
    :param avoid: values already taken (a column's other rows: a new value that another row already holds
        would make a write to the wrong row invisible in the final state). After a few draws that all collide,
        the value gets a distinguishing number.
    """
    schema = schema or {}
    words = _words(param)
    last = words[-1] if words else "value"
    typ = schema.get("type", "string")
    fmt = str(schema.get("format", ""))
    fake = _faker()
    taken = set(map(str, avoid)) | ({str(current)} if current is not None else set())
    for _ in range(8):
        fake.seed_instance(rng.getrandbits(32))
        value = _draw(words, last, typ, fmt, entity, fake, rng)
        if str(value) not in taken:
            return value
    if isinstance(value, str):
        n = 2
        while f"{value} {n}" in taken:
            n += 1
        return f"{value} {n}"
    return value


def _draw(words: list[str], last: str, typ: str, fmt: str, entity: str, fake: Any, rng: random.Random) -> Any:
    joined = "_".join(words)
    if last == "id" and typ == "string":  # a reference to a record: an id like the seeded ones (C0042)
        prefix = "".join(w[0] for w in words[:-1]).upper() or "ID"
        return f"{prefix}{rng.randint(1000, 9999)}"
    if typ == "integer":
        return rng.randint(1, 60) if not {"year"} & set(words) else rng.randint(2020, 2027)
    if typ == "number":
        return round(rng.uniform(10, 500), 2)
    if typ == "boolean":
        return rng.random() < 0.5
    if typ == "array":
        return [rng.choice(_ADJECTIVES) + " " + last.rstrip("s").title()]
    if typ == "object":
        return {}
    if fmt == "email" or "email" in words:
        return fake.email()
    if fmt in ("uri", "url") or {"url", "website", "link"} & set(words):
        return fake.url()
    if "phone" in words or "mobile" in words:
        return f"({rng.randint(200, 989)}) {rng.randint(200, 899)}-{rng.randint(1000, 9999)}"
    if fmt == "date-time":
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.choice(_TIMES)}:00"
    if fmt == "date" or "date" in words or last in ("day", "birthday") or joined.endswith(("_on", "_at")):
        return f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "time" or "time" in words or last == "hour":
        return rng.choice(_TIMES)
    if {"first"} & set(words) and "name" in words:
        return fake.first_name()
    if {"last", "surname", "family"} & set(words) and "name" in words:
        return fake.last_name()
    if last == "name" and (entity in PERSON_ENTITIES or set(words) & PERSON_ENTITIES or words == ["full", "name"]):
        return fake.name()
    if set(words) & PERSON_ENTITIES and last not in ("name", "type", "status", "note", "notes"):
        return fake.name()
    if {"company", "business", "vendor", "supplier", "employer", "organization", "brand"} & set(words):
        return fake.company()
    if {"address", "street"} & set(words):
        return fake.street_address()
    if "city" in words or "town" in words:
        return fake.city()
    if {"state", "province", "region"} & set(words):
        return fake.state()
    if "country" in words:
        return fake.country()
    if {"zip", "postal", "postcode"} & set(words):
        return fake.postcode()
    if {"color", "colour"} & set(words):
        return fake.color_name()
    if {"note", "notes", "comment", "comments", "instructions", "request", "requests", "message", "description",
            "preferences"} & set(words):
        return rng.choice(_NOTES)
    if "reason" in words:
        return rng.choice(_REASONS)
    if {"title", "subject", "headline"} & set(words):
        return fake.catch_phrase()
    noun = " ".join(w for w in words if w not in ("new", "the", "a", "name", "id")) or entity.replace("_", " ") \
        or "item"
    return f"{rng.choice(_ADJECTIVES)} {noun.title()}"


_PEOPLE = r"(?:customer|user|client|patient|member|guest|caller)"
_PERSON_FORMS = {
    "first": [(re.compile(rf"\b(?:for|on behalf of) (?:a|the) {_PEOPLE}\b"), "for me"),
              (re.compile(rf"\b(?:a|the) {_PEOPLE}'s\b"), "my"),
              (re.compile(rf"\b(?:of|from) (?:a|the) {_PEOPLE}\b"), "of mine")],
    "second": [(re.compile(rf"\b(?:for|on behalf of) (?:a|the) {_PEOPLE}\b"), "for you"),
               (re.compile(rf"\b(?:a|the) {_PEOPLE}'s\b"), "your"),
               (re.compile(rf"\b(?:of|from) (?:a|the) {_PEOPLE}\b"), "of yours")],
}


def in_person(text: str, person: str = "first") -> str:
    """A tool's description spoken by the user (``first``: "place an order for a customer" -> "place an order
    for me") or to the user (``second``: "... for you"), without its closing period."""
    text = text.strip().rstrip(".").rstrip()
    before = text
    for pattern, repl in _PERSON_FORMS[person]:
        text = pattern.sub(repl, text)
    if text != before:  # "for the member at their chosen branch" -> "for you at your chosen branch"
        text = re.sub(r"\btheir\b", "my" if person == "first" else "your", text)
    return text
