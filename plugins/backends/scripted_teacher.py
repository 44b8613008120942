"""A competent scripted teacher: answers every prompt of the LLM path deterministically, over real HTTP.

:class:`ScriptedTeacher` is the ``reply`` of a :class:`~synthagent.core.testing.ScriptedOpenAIServer`: it
recognises each prompt by its marker line (``[synthagent:prompt=KIND]``; a request with ``tools`` and no
marker is the agent) and answers the way a capable teacher would:

* **toolset / task / fuzzy**: one of a few small tool worlds (shop, library, clinic, travel), chosen and
  filled in from the persona; the task's workflow binds later arguments to earlier responses
  (``step:N:$.field``) and carries each call's response (the seed of the mock world);
* **tool_sim**: a call outside the seed: success for an id the world knows, ``not_found`` otherwise;
* **equivalence**: ``{"same": false}`` unless the arguments are equal ignoring case;
* **user_sim**: answers the agent's question from the hidden facts, stops when the agent is done;
* **the agent** (demonstrations and rollouts): follows the world's workflow, asks the user for what it
  lacks, reports the confirmation. A model name ``NAME+MODE`` plays a corruption instead (``skip_step``,
  ``never_ask``, ``wrong_argument``, ``extra_write``), which the reward must catch;
* **judge**: a strict verdict: pass when the agent reported a confirmation, fail otherwise.

``noise`` (0-1) switches on faults, drawn per request from a hash of the request and ``seed``: malformed
JSON, a missing field, an invented id, a leaked hidden value (user), an early stop (user and agent). A re-ask
(repair) is answered correctly with probability ``1 - noise``, so most faults are repaired and some end as
named drops. Run it for a demo with ``synth teacher-server --port 8000 --noise 0.2`` (docs/llm.md).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping
from typing import Any

from synthagent.core.hookspecs import hookimpl

__all__ = ["ScriptedTeacher", "WORLDS", "CORRUPTIONS", "teacher_server"]

STOP = "###STOP###"
_MARKER = re.compile(r"\[synthagent:prompt=([a-z_]+)\]")


def _tool(name: str, description: str, params: dict[str, str], effect: str) -> dict[str, Any]:
    return {"name": name, "description": description, "effect": effect,
            "parameters": {"type": "object", "properties": {p: {"type": "string", "description": d}
                                                             for p, d in params.items()}, "required": list(params)},
            "returns": {"type": "object", "description": f"the result of {name}"}}


#: The worlds: tools, values (from n), a workflow (argument sources: ``v:KEY`` a value, ``o:STEP:FIELD``
#: an earlier response field), responses, hidden keys with (description, keywords), instructions.
WORLDS: dict[str, dict[str, Any]] = {
    "shop": {
        "domain": "online shop",
        "tools": [_tool("find_customer", "Find a customer by email.", {"email": "the customer's email"}, "read"),
                  _tool("get_latest_order", "The customer's latest order.", {"customer_id": "customer id"}, "read"),
                  _tool("change_delivery_date", "Move an order's delivery.", {"order_id": "order id",
                                                                             "new_date": "YYYY-MM-DD"}, "update"),
                  _tool("cancel_order", "Cancel an order.", {"order_id": "order id"}, "delete")],
        "values": lambda n: {"email": f"s{n}@mail.example", "new_date": f"2027-0{n % 9 + 1}-{n % 27 + 1:02d}"},
        "formats": {"email": r"[a-z0-9]+@mail\.example", "new_date": r"\d{4}-\d{2}-\d{2}"},
        "steps": [("find_customer", {"email": "v:email"}, lambda n: {"customer_id": f"C-{n}", "tier": "gold"}),
                  ("get_latest_order", {"customer_id": "o:0:customer_id"},
                   lambda n: {"order_id": f"O-{n}7", "status": "shipped"}),
                  ("change_delivery_date", {"order_id": "o:1:order_id", "new_date": "v:new_date"},
                   lambda n: {"confirmation": f"DLV-{n}", "status": "rescheduled"})],
        "hidden": {"new_date": ("the new delivery date", ["delivery date", "date"])},
        "full": "Please move the delivery of my latest order to {new_date}. My email is {email}.",
        "fuzzy": "Please move the delivery of my latest order to another day. My email is {email}.",
    },
    "library": {
        "domain": "city library",
        "tools": [_tool("find_member", "Find a member by library card.", {"card": "library card number"}, "read"),
                  _tool("get_loan", "A member's current loan.", {"member_id": "member id"}, "read"),
                  _tool("renew_loan", "Renew a loan to a branch.", {"loan_id": "loan id", "branch": "pickup branch"},
                        "update"),
                  _tool("close_account", "Close a member's account.", {"member_id": "member id"}, "delete")],
        "values": lambda n: {"card": f"LIB-{n:05d}", "branch": ["Branch-North", "Branch-Harbor", "Branch-Elm"][n % 3]},
        "formats": {"card": r"LIB-\d{5}", "branch": r"Branch-[A-Z][a-z]+"},
        "steps": [("find_member", {"card": "v:card"}, lambda n: {"member_id": f"M-{n}", "active": True}),
                  ("get_loan", {"member_id": "o:0:member_id"}, lambda n: {"loan_id": f"L-{n}3", "title": "Dune"}),
                  ("renew_loan", {"loan_id": "o:1:loan_id", "branch": "v:branch"},
                   lambda n: {"confirmation": f"REN-{n}", "due": "2027-05-01"})],
        "hidden": {"branch": ("the pickup branch", ["branch", "pickup"])},
        "full": "Renew the book I have on loan and send it to {branch}. My card is {card}.",
        "fuzzy": "Renew the book I have on loan and send it to my usual pickup place. My card is {card}.",
    },
    "clinic": {
        "domain": "family clinic",
        "tools": [_tool("find_patient", "Find a patient by email.", {"email": "patient email"}, "read"),
                  _tool("find_slot", "A free slot on a day.", {"patient_id": "patient id", "day": "YYYY-MM-DD"}, "read"),
                  _tool("book_slot", "Book a slot with a reason code.", {"slot_id": "slot id", "reason": "reason code"},
                        "create"),
                  _tool("delete_patient", "Delete a patient record.", {"patient_id": "patient id"}, "delete")],
        "values": lambda n: {"email": f"p{n}@clinic.example", "day": f"2027-1{n % 3}-{n % 28 + 1:02d}",
                             "reason": f"RC-{n % 90 + 10}"},
        "formats": {"email": r"[a-z0-9]+@clinic\.example", "day": r"\d{4}-\d{2}-\d{2}", "reason": r"RC-\d{2}"},
        "steps": [("find_patient", {"email": "v:email"}, lambda n: {"patient_id": f"P-{n}"}),
                  ("find_slot", {"patient_id": "o:0:patient_id", "day": "v:day"},
                   lambda n: {"slot_id": f"S-{n}9", "time": "09:30"}),
                  ("book_slot", {"slot_id": "o:1:slot_id", "reason": "v:reason"},
                   lambda n: {"confirmation": f"APT-{n}", "status": "booked"})],
        "hidden": {"day": ("the appointment day", ["day", "when"]),
                   "reason": ("the reason code", ["reason", "code"])},
        "full": "Book me an appointment on {day} with reason code {reason}. My email is {email}.",
        "fuzzy": "Book me an appointment please. My email is {email}.",
    },
    "travel": {
        "domain": "airline bookings",
        "tools": [_tool("find_booking", "Find a booking by reference.", {"ref": "booking reference"}, "read"),
                  _tool("get_passenger", "The passenger of a booking.", {"booking_id": "booking id"}, "read"),
                  _tool("change_seat", "Change a passenger's seat.", {"passenger_id": "passenger id", "seat": "seat"},
                        "update"),
                  _tool("cancel_booking", "Cancel a booking.", {"booking_id": "booking id"}, "delete")],
        "values": lambda n: {"ref": f"BK{n:04d}", "seat": f"{n % 30 + 1}{'ABCDEF'[n % 6]}"},
        "formats": {"ref": r"BK\d{4}", "seat": r"\b\d{1,2}[A-F]\b"},
        "steps": [("find_booking", {"ref": "v:ref"}, lambda n: {"booking_id": f"B-{n}", "flight": "SA101"}),
                  ("get_passenger", {"booking_id": "o:0:booking_id"}, lambda n: {"passenger_id": f"PX-{n}1"}),
                  ("change_seat", {"passenger_id": "o:1:passenger_id", "seat": "v:seat"},
                   lambda n: {"confirmation": f"SEAT-{n}", "status": "changed"})],
        "hidden": {"seat": ("the seat you want", ["seat"])},
        "full": "Change my seat to {seat} on booking {ref}.",
        "fuzzy": "Change my seat on booking {ref}.",
    },
}
_ORDER = ["shop", "library", "clinic", "travel"]
CORRUPTIONS = ("skip_step", "never_ask", "wrong_argument", "extra_write")


def _n(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 9000 + 100


def _world_of_persona(persona: str) -> tuple[str, int]:
    n = _n(persona)
    return _ORDER[n % len(_ORDER)], n


def _world_of_tools(names: set[str]) -> str | None:
    return next((w for w in _ORDER if {t["name"] for t in WORLDS[w]["tools"]} <= names), None)


def _world_of_text(text: str) -> tuple[str, int] | None:
    """The world and n of a full instruction (its values carry n)."""
    for w in _ORDER:
        spec = WORLDS[w]
        head = spec["full"].split("{")[0]
        if head and head in text:
            key = next(iter(k for k in spec["formats"] if k not in spec["hidden"]))
            m = re.search(spec["formats"][key], text)
            if m:
                for n in range(100, 9100):  # recover n from the visible value
                    if spec["values"](n)[key] == m.group(0):
                        return w, n
    return None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


class ScriptedTeacher:
    """The reply function of a scripted teacher server (module docstring).

    :param noise: probability of a fault per request (0 = a perfect teacher).
    :param seed: seeds the fault draws (with the request's content).
    """

    def __init__(self, noise: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= float(noise) <= 1.0:
            raise ValueError(f"noise must be between 0 and 1, got {noise!r}")
        self.noise = float(noise)
        self.seed = int(seed)
        #: answers by prompt kind, and faults injected by kind
        self.counts: dict[str, int] = {}

    def _count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def _rng(self, body: Mapping[str, Any]) -> random.Random:
        digest = hashlib.sha256(_json([self.seed, body.get("messages")]).encode()).hexdigest()
        return random.Random(digest)

    def _fault(self, body: Mapping[str, Any], kinds: list[str], scale: float = 1.0) -> str | None:
        if self.noise <= 0:
            return None
        rng = self._rng(body)
        if rng.random() < self.noise * scale:
            kind = rng.choice(kinds)
            self._count(f"fault:{kind}")
            return kind
        return None

    def __call__(self, body: Mapping[str, Any]) -> str | dict[str, Any]:
        """Answer one chat request body (OpenAI format)."""
        messages = body.get("messages") or []
        first = str((messages[0] or {}).get("content") or "") if messages else ""
        m = _MARKER.search(first)
        kind = m.group(1) if m else ("agent" if body.get("tools") else "unknown")
        self._count(kind)
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            return "I cannot help with that."
        return handler(body, first)

    # -- synthesis ---------------------------------------------------------------------------------
    def _broken(self, body: Mapping[str, Any], value: dict[str, Any], drop_key: str) -> str:
        fault = self._fault(body, ["malformed", "missing"])
        if fault == "malformed":
            return _json(value)[: max(10, len(_json(value)) // 2)]
        if fault == "missing":
            return _json({k: v for k, v in value.items() if k != drop_key})
        return _json(value)

    def _toolset(self, body: Mapping[str, Any], first: str) -> str:
        persona = re.search(r"The person: (.*)", first)
        world, _ = _world_of_persona(persona.group(1).strip() if persona else first)
        return self._broken(body, {"domain": WORLDS[world]["domain"], "tools": WORLDS[world]["tools"]}, "tools")

    def _task(self, body: Mapping[str, Any], first: str) -> str:
        persona = re.search(r"The person: (.*)", first)
        world, n = _world_of_persona(persona.group(1).strip() if persona else first)
        spec = WORLDS[world]
        values = spec["values"](n)
        responses = [resp(n) for _, _, resp in spec["steps"]]
        workflow = []
        for i, (tool, sources, _resp) in enumerate(spec["steps"]):
            args, bindings = {}, {}
            for arg, src in sources.items():
                if src.startswith("v:"):
                    args[arg] = values[src[2:]]
                else:
                    _, step, field = src.split(":")
                    args[arg] = responses[int(step)][field]
                    bindings[arg] = f"step:{step}:$.{field}"
            workflow.append({"description": f"call {tool}", "tool": tool, "arguments": args, "bindings": bindings,
                             "response": responses[i]})
        value = {"full_instruction": spec["full"].format(**values), "workflow": workflow,
                 "answer": [responses[-1]["confirmation"]]}
        if self._fault(body, ["invented_id"]) and len(body.get("messages") or []) == 1:
            workflow[-1]["arguments"] = {**workflow[-1]["arguments"],
                                         next(iter(workflow[-1]["bindings"])): "INVENTED-1"}
        return self._broken(body, value, "workflow")

    def _fuzzy(self, body: Mapping[str, Any], first: str) -> str:
        m = re.search(r'asked an assistant:\n"(.*)"', first)
        found = _world_of_text(m.group(1) if m else first)
        if found is None:
            return _json({"instruction": "Help me.", "hidden_facts": []})
        world, n = found
        spec = WORLDS[world]
        values = spec["values"](n)
        facts = [{"name": key, "value": values[key], "description": desc, "keywords": kw}
                 for key, (desc, kw) in spec["hidden"].items()]
        value = {"instruction": spec["fuzzy"].format(**values), "hidden_facts": facts}
        if self._fault(body, ["leak"]) == "leak":  # the rewrite leaves a hidden value in the instruction
            value["instruction"] = spec["full"].format(**values)
            return _json(value)
        return self._broken(body, value, "hidden_facts")

    # -- the mock world ------------------------------------------------------------------------------
    def _tool_sim(self, body: Mapping[str, Any], first: str) -> str:
        if self._fault(body, ["malformed"]) and len(body.get("messages") or []) == 1:
            return '{"status": "ok", "id": '
        call = re.search(r"The call to answer now:\n(\w+)\((.*)\)\s*\n", first)
        known = set(re.findall(r'"([A-Z]{1,4}-\d+)"', first.split("The call to answer now:")[0]))
        args = {}
        if call:
            try:
                args = json.loads(call.group(2))
            except ValueError:
                args = {}
        ids = [v for v in args.values() if isinstance(v, str) and re.fullmatch(r"[A-Z]{1,4}-\d+", v)]
        if ids and all(i in known for i in ids):
            return _json({"status": "ok", "confirmation": f"OK-{_n(_json(args)) % 1000}"})
        return _json({"error": "not_found", "message": "no record matches these arguments"})

    def _equivalence(self, body: Mapping[str, Any], first: str) -> str:
        a = re.search(r"^A: (.*)$", first, re.M)
        b = re.search(r"^B: (.*)$", first, re.M)
        same = bool(a and b and a.group(1).strip().lower() == b.group(1).strip().lower())
        return _json({"same": same})

    def _user_sim(self, body: Mapping[str, Any], first: str) -> str:
        facts = re.findall(r"^- (.+?): (.+)$", first.split("Rules:")[0], re.M)
        messages = body.get("messages") or []
        agent = str(messages[-1].get("content") or "") if len(messages) > 1 else ""
        if messages[-1].get("role") == "user" and agent.startswith("(You revealed"):
            agent = str(messages[-3].get("content") or "") if len(messages) > 3 else ""
            fault = None  # a re-ask after the leak guard: answer properly
        else:
            fault = self._fault(body, ["leak", "early_stop"], scale=0.5)
        if fault == "leak" and facts:
            return "By the way, " + " and ".join(f"{d} is {v}" for d, v in facts) + "."
        if fault == "early_stop":
            return f"Never mind. {STOP}"
        if "?" not in agent:
            return f"Thanks, that's all. {STOP}"
        words = set(re.findall(r"[a-z]+", agent.lower()))
        answers = [f"The {d.removeprefix('the ')} is {v}." for d, v in facts
                   if {w for w in re.findall(r"[a-z]+", d.lower()) if len(w) > 3} & words]
        return " ".join(answers) if answers else "Yes, please go ahead."

    def _judge(self, body: Mapping[str, Any], first: str) -> str:
        done = re.search(r"confirmation is [A-Z]+-\d+", first) is not None
        return _json({"verdict": "pass" if done else "fail",
                      "reason": "the agent reported the confirmation" if done else "no confirmation was reported"})

    # -- the agent -------------------------------------------------------------------------------------
    def _agent(self, body: Mapping[str, Any], first: str) -> dict[str, Any] | str:
        names = {t.get("function", {}).get("name") for t in body.get("tools") or []}
        world = _world_of_tools(names)
        if world is None:
            return "I cannot do this with these tools."
        spec = WORLDS[world]
        mode = str(body.get("model", "")).partition("+")[2]
        messages = body.get("messages") or []
        said = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
        found = {k: m.group(0) for k, rx in spec["formats"].items() if (m := re.search(rx, said))}
        outputs: list[Any] = []
        pending = {}
        for m in messages:
            if m.get("role") == "assistant":
                for c in m.get("tool_calls") or []:
                    pending[c.get("id")] = c.get("function", {}).get("name")
            if m.get("role") == "tool":
                try:
                    content = json.loads(m.get("content") or "null")
                except ValueError:
                    content = None
                if isinstance(content, dict) and "error" not in content:
                    outputs.append((pending.get(m.get("tool_call_id")), content))
        steps = spec["steps"]
        done = 0
        for tool, _src, _resp in steps:
            if any(t == tool for t, _ in outputs):
                done += 1
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        if mode == "skip_step" and steps[-1][0] in pending.values():
            return "I have done what I could."
        if mode == "skip_step" and done == 1 and not any(t == steps[1][0] for t, _ in outputs):
            done = 2  # jumps over the second step, using an id it never looked up
            outputs.append((steps[1][0], {k.split(":")[2]: f"X-{_n(world)}" for k in steps[2][1].values()
                                          if k.startswith("o:1:")}))
        extra_done = any(t == spec["tools"][3]["name"] for t, _ in outputs) or any(
            c.get("function", {}).get("name") == spec["tools"][3]["name"]
            for m in messages for c in (m.get("tool_calls") or []))
        if done >= len(steps):
            if mode == "extra_write" and not extra_done:
                first_out = outputs[0][1]
                arg = spec["tools"][3]["parameters"]["required"][0]
                return self._call(turn, spec["tools"][3]["name"], {arg: first_out.get(arg, next(iter(first_out.values())))})
            last = next((o for t, o in reversed(outputs) if t == steps[-1][0]), {})
            return f"All done: your confirmation is {last.get('confirmation', 'unknown')}."
        if self._fault(body, ["early_stop"], scale=0.25):
            return "I think that is everything I can do for now."
        tool, sources, _resp = steps[done]
        args = {}
        for arg, src in sources.items():
            if src.startswith("v:"):
                key = src[2:]
                if key not in found:
                    if mode == "never_ask":
                        found[key] = spec["values"](_world_of_text_values(spec, found))[key]
                    else:
                        desc, kw = spec["hidden"].get(key, (key, [key]))
                        return f"Could you tell me {desc} ({kw[0]})?"
                args[arg] = found[key]
            else:
                _, step, field = src.split(":")
                out = next((o for t, o in outputs if t == steps[int(step)][0]), {})
                args[arg] = out.get(field, "unknown")
        if mode == "wrong_argument" and done == len(steps) - 1:
            key = next(a for a, s in sources.items() if s.startswith("v:"))
            args[key] = "WRONG-" + str(args[key])[::-1]
        return self._call(turn, tool, args)

    @staticmethod
    def _call(turn: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"content": None, "tool_calls": [{"id": f"call_{turn}", "type": "function",
                                                 "function": {"name": name, "arguments": _json(args)}}]}


def _world_of_text_values(spec: Mapping[str, Any], found: Mapping[str, str]) -> int:
    """n from a visible value the agent has (the never-ask corruption guesses the hidden ones from it)."""
    for key, value in found.items():
        for n in range(100, 9100):
            if spec["values"](n).get(key) == value:
                return n
    return 100


def teacher_server(noise: float = 0.0, seed: int = 0, port: int = 0, latency_s: float = 0.0) -> Any:
    """A :class:`~synthagent.core.testing.ScriptedOpenAIServer` playing :class:`ScriptedTeacher` (use as a
    context manager; ``.base_url`` is its address, ``.reply`` the teacher)."""
    from synthagent.core.testing import ScriptedOpenAIServer

    return ScriptedOpenAIServer(ScriptedTeacher(noise, seed), port=port, latency_s=latency_s)


@hookimpl
def synth_register_commands(register: Any) -> None:
    """Register ``synth teacher-server`` (imported only when it runs)."""
    register("teacher-server", "synthagent.plugins.backends.teacher_server_cli:teacher_server_cmd",
             description="a scripted teacher on loopback: the LLM path without a model (docs/llm.md)")
