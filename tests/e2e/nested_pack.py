"""A small domain pack whose tools take and return nested JSON values (passenger lists, payment objects)."""

from __future__ import annotations

from typing import Any

PASSENGERS = [{"name": "Ada Byron", "seat": "12A", "meals": ["vegan"]},
              {"name": "Alan Turing", "seat": "12B", "meals": []}]
PAYMENT = {"methods": [{"kind": "card", "last4": "4242", "amount": 180.5}, {"kind": "voucher", "amount": 40}],
           "currency": "EUR"}


def nested_domain() -> dict[str, Any]:
    """The ``airline`` domain: bookings whose ``passengers`` and ``payment`` columns hold lists and objects."""
    customers = [{"customer_id": f"C{i:04d}", "name": n, "email": f"{n.split()[0].lower()}@example.org"}
                 for i, n in enumerate(["Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth"], 1)]
    bookings = [{"booking_id": f"B{i:04d}", "customer_id": f"C{(i - 1) % 4 + 1:04d}", "flight": f"LX{100 + i}",
                 "passengers": [{"name": customers[(i - 1) % 4]["name"], "seat": f"{i}C", "meals": []}],
                 "payment": {"methods": [{"kind": "card", "last4": f"{1000 + i}", "amount": 99.0}], "currency": "EUR"},
                 "status": "confirmed"} for i in range(1, 9)]
    return {
        "name": "airline",
        "description": "An airline's booking desk: bookings carry passenger lists and split payments.",
        "policy": "You are an airline booking agent. Identify the customer by email before changing a booking.",
        "tables": {
            "customers": {"primary_key": "customer_id",
                          "columns": {"customer_id": "TEXT", "name": "TEXT", "email": "TEXT"}},
            "bookings": {"primary_key": "booking_id",
                         "columns": {"booking_id": "TEXT", "customer_id": "TEXT", "flight": "TEXT",
                                     "passengers": "JSON", "payment": "JSON", "status": "TEXT"}},
        },
        "rows": {"customers": customers, "bookings": bookings},
        "tools": [
            {"name": "find_customer_by_email", "description": "Find a customer by email.",
             "parameters": {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]},
             "effect": {"kind": "read", "table": "customers", "where": {"email": "email"}}},
            {"name": "list_bookings", "description": "List a customer's bookings with their passengers.",
             "parameters": {"type": "object", "properties": {"customer_id": {"type": "string"}},
                            "required": ["customer_id"]},
             "effect": {"kind": "read", "table": "bookings", "where": {"customer_id": "customer_id"}, "many": True}},
            {"name": "rebook_passengers",
             "description": "Replace a booking's passenger list and payment methods.",
             "parameters": {"type": "object", "properties": {
                 "booking_id": {"type": "string"},
                 "passengers": {"type": "array", "items": {"type": "object"}},
                 "payment": {"type": "object"}}, "required": ["booking_id", "passengers", "payment"]},
             "effect": {"kind": "update", "table": "bookings", "where": {"booking_id": "booking_id"},
                        "set": {"passengers": "passengers", "payment": "payment"},
                        "require": {"status": ["confirmed"]}}},
        ],
        "scenarios": [{
            "id": "rebook",
            "intent": "I need to change who is flying on one of my bookings and how it is paid.",
            "anchor": {"table": "bookings", "where": {"status": "confirmed"}},
            "join": {"customer": {"table": "customers", "key": "anchor.customer_id"}},
            "facts": {
                "email": {"value": "customer.email", "description": "the account's address",
                          "keywords": ["email", "e-mail"], "say": "My email is {value}."},
                "flight": {"value": "anchor.flight", "description": "the flight number of the booking",
                           "keywords": ["flight"], "say": "It is flight {value}."},
                "passengers": {"value": {"literal": PASSENGERS}, "description": "who travels",
                               "keywords": ["passenger", "travellers"], "say": "The travellers are {value}."},
                "payment": {"value": {"literal": PAYMENT}, "description": "how it is paid",
                            "keywords": ["payment", "pay"], "say": "I pay like this: {value}."},
            },
            "hideable": ["email", "flight"],
            "steps": [
                {"tool": "find_customer_by_email", "args": {"email": "$email"}, "description": "Identify the customer"},
                {"tool": "list_bookings", "args": {"customer_id": "@0.customer_id"}, "description": "List bookings"},
                {"tool": "rebook_passengers", "args": {"booking_id": "@1[flight=$flight].booking_id",
                                                       "passengers": "$passengers", "payment": "$payment"},
                 "description": "Replace passengers and payment"},
            ],
            "answer": ["@2.booking_id"],
        }],
    }
