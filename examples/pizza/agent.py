"""A pizza shop's phone agent: your own Python agent, run by callbridge's embedded pipeline.

    AGENT=examples.pizza.agent:PizzaAgent callbridge serve

It greets the caller, looks an order up by its number with a tool declared in code
(``order_status``), puts the caller through to the shop when asked for a person (the
bridge's ``transfer_call`` tool, to ``TRANSFER_TO``), and says goodbye. Rule-based, so it
runs offline; an agent backed by a language model would offer the same ``tools()`` to its
model and run the model's calls with ``use_tool`` the same way.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from callbridge.agents import Agent, Turn
from callbridge.speech.vocabulary import Vocabulary
from callbridge.tools import Tool, ToolContext

ORDERS = {
    "123": {"status": "in the oven", "minutes": 15},
    "248": {"status": "out for delivery", "minutes": 5},
}
"""The shop's orders (a real agent would ask the shop's system)."""

DIGIT_WORDS = {
    "zero": "0",
    "oh": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
PERSON = re.compile(r"\b(?:someone|somebody|person|human|operator|the shop|manager)\b")
GOODBYE = re.compile(r"\b(?:bye|goodbye|that's all|that is all|no thanks)\b")


async def order_status(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """The ``order_status`` tool: where an order is."""
    order = ORDERS.get(args["order"])
    if order is None:
        return {"found": False}
    return {"found": True, **order}


ORDER_STATUS = Tool(
    "order_status",
    "Where a pizza order is, by its order number.",
    {
        "type": "object",
        "properties": {"order": {"type": "string", "pattern": "^[0-9]{1,8}$"}},
        "required": ["order"],
        "additionalProperties": False,
    },
    order_status,
    timeout_s=3.0,
    filler="Let me check on that.",
)


def _numbers() -> list[str]:
    """Every three-digit order number, each after one of the ways callers lead into it."""
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    leads = ["my order number is", "order number", "it is", "it's", "", "the number is"]
    return [
        f"{leads[n % len(leads)]} {words[n // 100]} {words[n // 10 % 10]} {words[n % 10]}".strip()
        for n in range(1000)
    ]


VOCABULARY = Vocabulary(
    "pizza",
    (
        "where is my order",
        "where is my pizza",
        "i want to check my order",
        "can you check my order",
        "my order number is",
        "order number",
        "can i talk to someone",
        "can i speak to someone",
        "can i talk to a person",
        "a real person please",
        "put me through to the shop",
        "thank you goodbye",
        "thanks bye",
        "goodbye",
        "no thanks",
        "that's all",
        "yes",
        "no",
        *_numbers(),
    ),
)
"""What callers of the shop say (the recogniser hears only these words, and hears them well)."""


def order_number(text: str) -> str | None:
    """The order number in what the caller said ("one two three", "123"), or None. The
    shop's numbers have three digits: of a longer run the last three are taken (a word
    before the number heard as a digit: "number is one two three" as "number eight one two
    three")."""
    digits = "".join(DIGIT_WORDS.get(w, w if w.isdigit() else " ") for w in text.lower().split())
    runs = digits.split()
    return runs[-1][-3:] if runs else None


class PizzaAgent(Agent):
    """One caller's conversation with the pizza shop."""

    name = "pizza"

    def __init__(self, call_sid: str = "") -> None:
        self.call_sid = call_sid
        self.looked_up: list[str] = []

    def greeting(self) -> str:
        return "Thanks for calling Mario's Pizza. What is your order number?"

    def vocabulary(self) -> Vocabulary:
        return VOCABULARY

    def tools(self) -> Sequence[Tool]:
        return (ORDER_STATUS,)

    def state(self) -> dict[str, Any]:
        return {"looked_up": self.looked_up[-5:]}

    async def reply(self, transcript: str, history: Sequence[Turn]) -> AsyncGenerator[str, None]:
        text = transcript.lower()
        if GOODBYE.search(text):
            self._ended = True  # the call ends once this has played
            yield "Thanks for calling Mario's. Enjoy your pizza. Goodbye!"
            return
        if PERSON.search(text):
            yield "Sure, I'll put you through to the shop. "
            outcome = await self.use_tool("transfer_call", {"mode": "cold"})
            if not outcome.ok:
                yield "Sorry, nobody at the shop can take your call right now. What is your order number?"
            return
        number = order_number(text)
        if number is None:
            yield "I can check on your order. What is your order number?"
            return
        outcome = await self.use_tool("order_status", {"order": number})
        self.looked_up.append(number)
        spoken = " ".join(number)
        if not outcome.ok:
            yield "Sorry, I can't look orders up just now. Please try again in a minute."
        elif not outcome.result["found"]:
            yield f"I can't find order {spoken}. Could you say the number again?"
        else:
            found = outcome.result
            yield f"Order {spoken} is {found['status']}. "
            yield f"It should be with you in about {found['minutes']} minutes. Anything else?"
