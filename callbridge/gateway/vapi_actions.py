"""Vapi's telephony requests, carried out by the bridge on the Twilio call.

Over the WebSocket transport Vapi does not own the phone call, so it cannot transfer it
or hang it up: the bridge does, on the call the server-URL message names (its Vapi call
id, bound to our CallSid by the Vapi back end). ``answer(gw, call_sid, message)`` is the
webhook's answer to the messages that ask for an action (None for the others):

- ``transfer-destination-request`` (a ``transferCall`` tool without destinations): the
  answer is ``TRANSFER_TO`` as Vapi's destination (``{"destination": {"type": "number",
  "number"}}`` or ``{"type": "sip", "sipUri"}``), or ``{"error": ...}`` without one. Vapi
  then transfers to it, which, with ``phone-call-control`` delegated, is:
- ``phone-call-control`` (in the assistant's ``serverMessages``, Vapi hands "the hangup
  and forwarding responsibilities" to the server): ``forward`` -> the ``transfer``
  action (``to`` = the destination's ``number`` or ``sipUri``; a ``warm-transfer-*``
  ``transferPlan.mode`` is ``warm``) through the call's ``Call.act``; ``hang-up`` (the
  ``endCall`` tool) -> the call's Upstream ends the call once the goodbye has played
  (``HangUpAfterPlayed``). Answered ``{}`` at once; the outcome lands in the timeline as
  ``vapi.action`` (``request``, ``kind``, ``to``, ``ok``, ``error``).
- ``tool-calls`` of the bridge's own telephony tools (``end_call``, ``transfer_call``,
  ``send_dtmf``, defined as Vapi function tools whose server URL is this bridge): run
  through ``run_tool`` with ``VapiCallTools``, each result ``ToolOutcome.for_model()``. Other
  tools get an error result.

Limits: ``MAX_RUNNING`` actions in flight in the process (past it, a request is noted and
not carried out), each given ``ACTION_TIMEOUT_S``; a live call only (one that has ended, or lives in another process,
gets no action: noted, and tool calls get an error result).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ..actions import TELEPHONY_TOOLS
from ..actors import messages as m
from ..tools import run_tool, toolbox
from .vapi_messages import NO_TOOLS, control_action, tool_arguments, tool_calls, transfer_destination

if TYPE_CHECKING:
    from .calls import Call
    from .context import Gateway

log = logging.getLogger("callbridge.gateway")

MAX_RUNNING = 100
ACTION_TIMEOUT_S = 60.0
"""A ``phone-call-control`` action not done by then is noted as failed (a transfer's
longest wait, as the ``transfer_call`` tool's timeout)."""
NO_DESTINATION = "no transfer destination is configured on the bridge (TRANSFER_TO)"
_running: set[asyncio.Task[None]] = set()


class VapiCallTools:
    """``callbridge.tools.ToolContext`` over a live gateway ``Call``: actions through
    ``Call.act``, ``hang_up`` through the call's Upstream (after the goodbye); ``say`` does
    nothing (Vapi speaks its own tool messages)."""

    def __init__(self, call: Call) -> None:
        self.call = call

    @property
    def call_sid(self) -> str:
        return self.call.call_sid

    async def act(self, kind: str, **args: Any) -> dict[str, Any]:
        if kind == "hang_up":
            reason = str(args.get("reason") or "vapi: the assistant ended the call")
            self.call.dispatcher.tell("upstream", m.HangUpAfterPlayed(reason[:200]))
            return {"ok": True, "ends": "after the goodbye has played"}
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def finish(outcome: dict[str, Any]) -> None:
            if not done.done():
                done.set_result(outcome)

        self.call.act(kind, args, finish)
        return await done

    def note(self, event: str, **data: Any) -> None:
        self.call.note(event, **data)

    def say(self, text: str) -> None:
        return None


async def answer(gw: Gateway, call_sid: str, message: dict[str, Any]) -> dict[str, Any] | None:
    """The webhook's answer to a message asking for a telephony action (None: not one)."""
    kind = message.get("type")
    call = gw.registry.live.get(call_sid)
    if kind == "transfer-destination-request":
        to = gw.settings.telephony.transfer_to
        gw.registry.note(call_sid, "vapi.transfer_destination", to=to or None)
        return transfer_destination(to) if to else {"error": NO_DESTINATION}
    if kind == "phone-call-control":
        _control(gw, call_sid, call, message)
        return {}
    if kind == "tool-calls":
        return {"results": await _tool_results(call, message)}
    return None


def _control(gw: Gateway, call_sid: str, call: Call | None, message: dict[str, Any]) -> None:
    request = str(message.get("request", ""))[:40]
    try:
        kind, args = control_action(message)
    except ValueError as exc:
        gw.registry.note(call_sid, "vapi.action", request=request, ok=False, error=str(exc)[:200])
        return
    if call is None or len(_running) >= MAX_RUNNING:
        why = "the call is not live here" if call is None else "too many actions in flight"
        gw.registry.note(call_sid, "vapi.action", request=request, kind=kind, ok=False, error=why)
        return

    async def run(call: Call) -> None:
        try:
            outcome = await asyncio.wait_for(VapiCallTools(call).act(kind, **args), ACTION_TIMEOUT_S)
        except TimeoutError:
            outcome = {"ok": False, "error": f"no outcome within {ACTION_TIMEOUT_S:g} s"}
        extra = {"to": args["to"]} if "to" in args else {}
        if not outcome.get("ok"):
            extra["error"] = str(outcome.get("error", ""))[:200]
        call.note("vapi.action", request=request, kind=kind, ok=bool(outcome.get("ok")), **extra)

    task = asyncio.get_running_loop().create_task(run(call), name=f"{call_sid}/vapi-{kind}")
    _running.add(task)
    task.add_done_callback(_running.discard)


async def _tool_results(call: Call | None, message: dict[str, Any]) -> list[dict[str, Any]]:
    tools = toolbox(TELEPHONY_TOOLS)
    arguments = tool_arguments(message)
    results = []
    for call_id, name in tool_calls(message):
        result: dict[str, Any] = {"name": name, "toolCallId": call_id}
        if name not in tools:
            result["error"] = NO_TOOLS
        elif call is None:
            result["error"] = "the call is not live on this bridge"
        else:
            outcome = await run_tool(tools, name, arguments.get(call_id), VapiCallTools(call))
            result["result" if outcome.ok else "error"] = outcome.for_model()
        results.append(result)
    return results
