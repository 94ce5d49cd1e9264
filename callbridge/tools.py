"""Tools an agent can call, the same whichever back end speaks (the embedded agents, OpenAI
Realtime, Vapi).

A ``Tool`` is a name, a description, a JSON schema for its arguments and an async handler
``handler(args, ctx) -> JSON-able result``. ``run_tool`` is the one way a tool is run: the
arguments are parsed and checked against the schema, the handler runs within the tool's
``timeout_s``, and the result is bounded (``MAX_RESULT_BYTES`` of JSON). It never raises for
the tool's own failures: a bad argument, a timeout or an exception becomes a failed
``ToolOutcome`` whose ``for_model()`` text tells the model what went wrong, so the model,
not the caller's silence, deals with it.

``ToolContext`` is what a handler may use of the call: its CallSid and ``act``, the
telephony actions carried out by the bridge on the Twilio call (``callbridge.actions``).

Limits: a name is 1-64 of ``[A-Za-z0-9_-]`` (what OpenAI accepts); at most ``MAX_TOOLS``
tools per agent; arguments at most ``MAX_ARGS_BYTES`` of JSON; a result past
``MAX_RESULT_BYTES`` is refused (the model is told it was too large).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonschema
import orjson

MAX_TOOLS = 64
MAX_ARGS_BYTES = 16 << 10
MAX_RESULT_BYTES = 16 << 10
DEFAULT_TIMEOUT_S = 10.0
FILLER_AFTER_S = 1.0
"""A tool still running after this long gets a short spoken filler (``Tool.filler``)."""
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolContext(Protocol):
    """What a tool handler (and ``run_tool``) may use of the call it runs in; the back end
    that runs the agent provides it."""

    @property
    def call_sid(self) -> str: ...

    async def act(self, kind: str, **args: Any) -> dict[str, Any]:
        """Carry out a telephony action on the call (``callbridge.actions.KINDS``) and
        return its outcome (``{"ok": bool, ...}``); raises nothing."""
        ...

    def note(self, event: str, **data: Any) -> None:
        """A timeline event of the call (``tool.called``)."""
        ...

    def say(self, text: str) -> None:
        """Speak ``text`` to the caller now (a slow tool's filler)."""
        ...


Handler = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    """One tool. ``parameters`` is a JSON schema (an ``object``); ``filler`` is said when the
    tool runs longer than ``FILLER_AFTER_S`` (None: say nothing)."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    handler: Handler
    timeout_s: float = DEFAULT_TIMEOUT_S
    filler: str | None = "One moment, please."
    _validator: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ValueError(f"tool name {self.name!r}: 1-64 letters, digits, _ or -")
        if self.parameters.get("type") != "object":
            raise ValueError(f"tool {self.name}: parameters must be a JSON schema of type object")
        if not 0 < self.timeout_s <= 300:
            raise ValueError(f"tool {self.name}: timeout_s must be in (0, 300]")
        cls = jsonschema.validators.validator_for(self.parameters)
        try:
            cls.check_schema(dict(self.parameters))
        except jsonschema.SchemaError as exc:
            raise ValueError(
                f"tool {self.name}: parameters are not a valid JSON schema: {exc.message}"
            ) from None
        object.__setattr__(self, "_validator", cls(self.parameters))

    def problem(self, args: Any) -> str | None:
        """Why ``args`` do not fit the schema, or None."""
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(args))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"{where}: {error.message}" if where else error.message

    def openai_chat(self) -> dict[str, Any]:
        """The tool as Chat Completions' ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }

    def openai_realtime(self) -> dict[str, Any]:
        """The tool as a Realtime ``session.tools`` entry."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        }


def toolbox(tools: Iterable[Tool]) -> dict[str, Tool]:
    """Tools by name; duplicate names and more than ``MAX_TOOLS`` raise ``ValueError``."""
    out: dict[str, Tool] = {}
    for tool in tools:
        if tool.name in out:
            raise ValueError(f"two tools are called {tool.name!r}")
        out[tool.name] = tool
    if len(out) > MAX_TOOLS:
        raise ValueError(f"{len(out)} tools: at most {MAX_TOOLS}")
    return out


@dataclass(frozen=True)
class ToolOutcome:
    """What became of one tool call: ``result`` (JSON-able) when ``ok``, else ``error``."""

    name: str
    ok: bool
    result: Any = None
    error: str = ""
    duration_ms: float = 0.0

    def for_model(self) -> str:
        """The outcome as the text a model reads (a function call's output)."""
        body = {"ok": True, "result": self.result} if self.ok else {"ok": False, "error": self.error}
        return orjson.dumps(body).decode()

    def event(self) -> dict[str, Any]:
        """The ``tool.called`` timeline event's fields."""
        data: dict[str, Any] = {"name": self.name, "ok": self.ok, "duration_ms": round(self.duration_ms, 1)}
        if not self.ok:
            data["error"] = self.error[:200]
        return data


def parse_arguments(raw: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """A model's arguments (a JSON text, or already parsed) as a dict; ``ValueError`` if not one."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, Mapping):
        return dict(raw)
    if len(raw) > MAX_ARGS_BYTES:
        raise ValueError(f"arguments are {len(raw)} bytes, at most {MAX_ARGS_BYTES}")
    try:
        args = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("arguments are not JSON") from None
    if not isinstance(args, dict):
        raise ValueError("arguments must be a JSON object")
    return args


async def run_tool(
    tools: Mapping[str, Tool],
    name: str,
    raw_args: str | Mapping[str, Any] | None,
    ctx: ToolContext,
    clock: Callable[[], float] = time.monotonic,
) -> ToolOutcome:
    """Run the tool ``name`` with the model's ``raw_args``; every failure is an outcome.
    The outcome is noted as ``tool.called``; a tool still running after ``FILLER_AFTER_S``
    has its ``filler`` said."""
    outcome = await _run(tools, name, raw_args, ctx, clock)
    ctx.note("tool.called", **outcome.event())
    return outcome


async def _run(
    tools: Mapping[str, Tool],
    name: str,
    raw_args: str | Mapping[str, Any] | None,
    ctx: ToolContext,
    clock: Callable[[], float],
) -> ToolOutcome:
    started = clock()

    def failed(error: str) -> ToolOutcome:
        return ToolOutcome(name, False, error=error, duration_ms=(clock() - started) * 1000.0)

    tool = tools.get(name)
    if tool is None:
        return failed(f"no tool called {name[:64]!r}; tools: {', '.join(sorted(tools)) or 'none'}")
    try:
        args = parse_arguments(raw_args)
    except ValueError as exc:
        return failed(str(exc))
    problem = tool.problem(args)
    if problem is not None:
        return failed(f"bad arguments: {problem}")
    filler = None
    if tool.filler is not None:
        filler = asyncio.get_running_loop().call_later(FILLER_AFTER_S, ctx.say, tool.filler)
    try:
        result = await asyncio.wait_for(tool.handler(args, ctx), tool.timeout_s)
    except TimeoutError:
        return failed(f"timed out after {tool.timeout_s:g} s")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the tool's own failure: the model is told, the call goes on
        return failed(f"{type(exc).__name__}: {str(exc)[:300]}")
    finally:
        if filler is not None:
            filler.cancel()
    try:
        size = len(orjson.dumps(result))
    except TypeError:
        return failed("the result is not JSON-able")
    if size > MAX_RESULT_BYTES:
        return failed(f"the result is {size} bytes of JSON, at most {MAX_RESULT_BYTES}")
    return ToolOutcome(name, True, result=result, duration_ms=(clock() - started) * 1000.0)
