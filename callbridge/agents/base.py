"""The agent interface: one ``Agent`` per call, asked for a reply to each caller turn.

Contract (what the Upstream can rely on):

- ``reply(transcript, history)`` is an async generator of text pieces (tokens, clauses or
  sentences); joined, they are the whole reply. The caller speaks sentence by sentence as
  they arrive. ``history`` holds the turns *before* this one (the current ``transcript`` is
  not in it). Consume it with ``contextlib.aclosing`` so that abandoning a reply (barge-in,
  timeout) closes it, and with it any HTTP response, at once.
- A failed or unreachable back end raises ``AgentError`` (with a short, loggable message).
  Timeouts, retries and fallbacks are the caller's job; a provider never retries.
- Cancelling the task that iterates a reply is safe: providers close their responses.
- ``ended`` turns True during the reply that says goodbye; the call should end after that
  reply has played.
- ``state()`` is a small JSON-able dict for the call's timeline and API.
- ``greeting()`` is the agent's own opening line, or None to use the configured greeting.
- ``vocabulary()`` is what its callers are expected to say, for the embedded pipeline's
  speech recognition, or None (the default) for any English.
- ``tools()`` are the agent's own tools (``callbridge.tools.Tool``), offered to its model; the
  bridge adds the telephony tools (``callbridge.actions.TELEPHONY_TOOLS``) and the user's
  served ones (``TOOLS_URL``, ``callbridge.usertools``). Before a reply the back end gives
  the agent the call's ``ToolContext`` and the served tools (``bind``); ``use_tool`` runs a
  tool through it (``callbridge.tools.run_tool``: checked, timed out, noted). Neither the
  context nor the served tools are pickled with the agent (a checkpoint): the next back end
  binds them again.
- ``aclose()`` releases what the agent holds (a no-op for most agents).

Your own agent (``AGENT=package.module:Name``, ``loader.py``; docs/agents.md): a subclass,
or a factory returning one, imported and checked at start-up; one instance per call,
built as ``Name()`` or ``Name(call_sid=...)``. It runs on the event loop of the process
that carries the call, so it must never block. An exception other than ``AgentError`` from
``reply`` is a bug: it fails the call's Upstream actor, which the supervisor restarts with
the same agent (that turn goes unanswered). A barge-in closes the reply's generator at its
``yield``: code after it (a transfer after the handover line) does not run.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..actions import TELEPHONY_TOOLS
from ..speech.vocabulary import Vocabulary
from ..tools import Tool, ToolContext, ToolOutcome, run_tool, toolbox

AGENT_KINDS = ("desk", "openai", "webhook")


class AgentError(Exception):
    """The agent's back end failed (unreachable, HTTP error, malformed answer)."""


@dataclass(frozen=True)
class Turn:
    role: Literal["caller", "agent"]
    text: str

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "text": self.text}


class Agent(ABC):
    """One conversation (one call). Cheap to create; holds only this call's state."""

    name: str = "agent"
    _greeting: str | None = None
    _ended: bool = False

    def greeting(self) -> str | None:
        """The agent's own opening line; None means: use the configured greeting."""
        return self._greeting

    def vocabulary(self) -> Vocabulary | None:
        """What callers are expected to say (speech recognition is tuned to it); None: any
        English, through the recogniser's general model."""
        return None

    def turn_complete(self, transcript: str) -> bool | None:
        """Whether ``transcript`` (the caller's turn so far, after a short pause) is a whole
        request (True: answer it now), clearly unfinished (False: wait longer) or either
        (None, the default: the configured silence decides). ``speech.turnend``."""
        return None

    @abstractmethod
    def reply(self, transcript: str, history: Sequence[Turn]) -> AsyncGenerator[str, None]:
        """Yield the reply to ``transcript`` in pieces (implemented as an async generator)."""

    @property
    def ended(self) -> bool:
        """True once the agent has said goodbye: end the call after this reply plays."""
        return self._ended

    def state(self) -> dict[str, Any]:
        """A small JSON-able view of the agent's state (bookings, remote state...)."""
        return {}

    context: ToolContext | None = None
    """The call this agent speaks in, for its tools (``bind``); None outside a call."""
    served_tools: Sequence[Tool] = ()
    """Tools the bridge serves to every agent (the user's ``TOOLS_URL`` ones; ``bind``)."""

    def tools(self) -> Sequence[Tool]:
        """The agent's own tools, offered to its model (none by default)."""
        return ()

    def all_tools(self) -> dict[str, Tool]:
        """Its own tools, the served ones and the telephony ones, by name (in that order of
        precedence on a name clash)."""
        own = toolbox(self.tools())
        served = {t.name: t for t in self.served_tools if t.name not in own}
        telephony = {t.name: t for t in TELEPHONY_TOOLS if t.name not in own and t.name not in served}
        return toolbox([*telephony.values(), *served.values(), *own.values()])

    def bind(self, context: ToolContext, served: Sequence[Tool] = ()) -> None:
        """The back end gives the agent its call (and the tools it serves) before a reply."""
        self.context = context
        self.served_tools = tuple(served)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the call it is bound to (a checkpoint outlives it)."""
        state = self.__dict__.copy()
        state.pop("context", None)
        state.pop("served_tools", None)
        return state

    async def use_tool(self, name: str, arguments: str | dict[str, Any] | None) -> ToolOutcome:
        """Run one of ``all_tools()`` in the bound call; a failure is an outcome, never raised."""
        context = self.context
        if context is None:
            return ToolOutcome(name, False, error="no call to run the tool in")
        busy = getattr(context, "busy", None)
        if busy is None:
            return await run_tool(self.all_tools(), name, arguments, context)
        with busy():  # the back end knows the reply is waiting on a tool, not stuck
            return await run_tool(self.all_tools(), name, arguments, context)

    async def aclose(self) -> None:  # noqa: B027 - an optional hook: most agents hold nothing
        """Release resources held by the agent (none by default)."""


_PIECE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def split_pieces(text: str) -> list[str]:
    """Split after each sentence end (``.``, ``!``, ``?`` then whitespace).

    The pieces keep their trailing whitespace, so ``"".join(split_pieces(t)) == t``.
    """
    pieces: list[str] = []
    start = 0
    for m in _PIECE_END.finditer(text):
        pieces.append(text[start : m.end()])
        start = m.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


async def reply_text(agent: Agent, transcript: str, history: Sequence[Turn] = ()) -> str:
    """The whole reply as one string (tests, non-streaming callers)."""
    gen = agent.reply(transcript, history)
    parts: list[str] = []
    try:
        async for piece in gen:
            parts.append(piece)
    finally:
        await gen.aclose()
    return "".join(parts)


def create_agent(kind: str = "desk", **config: Any) -> Agent:
    """Build one agent for one call.

    ``kind``: ``desk`` (default, offline), ``openai`` (needs ``base_url`` and ``model``),
    ``webhook`` (needs ``url``), or ``package.module:Name``, your own agent
    (``agents/loader.py``; it gets ``call_sid`` only). ``config`` entries whose value is None
    are dropped, so unset settings can be passed straight through. Unknown kinds, missing
    required settings and unknown settings raise ``ValueError`` naming them.
    """
    config = {k: v for k, v in config.items() if v is not None}
    if ":" in (kind or ""):
        from .loader import build

        unknown = sorted(set(config) - {"call_sid"})
        if unknown:
            raise ValueError(f"agent {kind!r}: unknown setting(s) {', '.join(unknown)}; accepted: call_sid")
        return build(kind.strip(), str(config.get("call_sid", "")))
    kind = (kind or "desk").strip().lower()
    cls: type[Agent]
    required: tuple[str, ...]
    if kind == "desk":
        from .desk import DeskAgent

        cls, required = DeskAgent, ()
    elif kind == "openai":
        from .openai_chat import OpenAIChatAgent

        cls, required = OpenAIChatAgent, ("base_url", "model")
    elif kind == "webhook":
        from .webhook import WebhookAgent

        cls, required = WebhookAgent, ("url",)
    else:
        raise ValueError(f"unknown agent kind {kind!r}; expected one of: {', '.join(AGENT_KINDS)}")
    missing = [k for k in required if not config.get(k)]
    if missing:
        raise ValueError(f"agent {kind!r} needs {', '.join(missing)}")
    accepted = getattr(cls, "CONFIG_KEYS", None)
    if accepted is not None:
        unknown = sorted(set(config) - set(accepted))
        if unknown:
            raise ValueError(
                f"agent {kind!r}: unknown setting(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(accepted))}"
            )
    return cls(**config)
