"""Vapi's server-URL messages (``{"message": {"type": ..., "call": {...}, ...}}``). Pure.

``SERVER_MESSAGE_TYPES`` lists every type Vapi's API documents (``ServerMessage``);
``summarise`` picks the fields worth a timeline entry (bounded in size); ``reply`` is the
answer Vapi expects for a type (only ``assistant-request``, ``tool-calls``,
``transfer-destination-request``, ``knowledge-base-request`` and ``handoff-destination-
request`` expect one): this bridge runs no tools and picks no assistants or destinations,
so it answers each such request with an ``error`` Vapi passes to the assistant (every tool
result carries ``name`` and ``toolCallId``, as Vapi requires). Types not (yet) documented
are acknowledged like informational ones (``known`` says which they are).
"""

from __future__ import annotations

import re
from typing import Any

TEXT_CHARS = 1000
MAX_TOOL_CALLS = 20
NO_TOOLS = "callbridge runs no tools; give this tool its own server URL"
SERVER_MESSAGE_TYPES = frozenset(
    {
        "assistant-request",
        "conversation-update",
        "end-of-call-report",
        "handoff-destination-request",
        "hang",
        "knowledge-base-request",
        "model-output",
        "phone-call-control",
        "speech-update",
        "status-update",
        "tool-calls",
        "transfer-destination-request",
        "transfer-update",
        "transcript",
        'transcript[transcriptType="final"]',
        "user-interrupted",
        "language-change-detected",
        "voice-input",
        "assistant.speechStarted",
        "voice-request",
        "call.endpointing.request",
        "chat.created",
        "chat.deleted",
        "session.created",
        "session.updated",
        "session.deleted",
        "call.deleted",
        "call.delete.failed",
        "call.artifact.upload",
        "campaign.predial",
    }
)
TYPE = re.compile(r'[A-Za-z][A-Za-z0-9.\-\[\]="_]{0,63}')
"""What a message type may look like (documented or future): short, printable ASCII."""
_FIELDS: dict[str, tuple[str, ...]] = {
    "status-update": ("status", "endedReason"),
    "transcript": ("role", "transcriptType", "transcript"),
    "speech-update": ("role", "status", "turn"),
    "end-of-call-report": ("endedReason", "summary", "durationSeconds", "cost"),
    "transfer-update": ("destination",),
    "language-change-detected": ("language",),
    "voice-input": ("input",),
    "assistant.speechStarted": ("text", "turn", "source"),
}


def known(kind: str) -> bool:
    return kind in SERVER_MESSAGE_TYPES


def timeline_name(kind: str) -> str:
    """``vapi.<type>``; final-only transcripts are plain ``transcript`` messages."""
    return "vapi.transcript" if kind.startswith("transcript[") else f"vapi.{kind}"


def summarise(message: dict[str, Any]) -> dict[str, Any]:
    """The fields of a Vapi message worth a timeline entry (bounded in size)."""
    kind = str(message.get("type"))
    if kind.startswith("transcript["):
        kind = "transcript"
    out: dict[str, Any] = {}
    for name in _FIELDS.get(kind, ()):
        value = message.get(name)
        if isinstance(value, str):
            out[name] = value[:TEXT_CHARS]
        elif isinstance(value, (int, float, bool)):
            out[name] = value
    if kind == "end-of-call-report":
        artifact = message.get("artifact")
        transcript = artifact.get("transcript") if isinstance(artifact, dict) else message.get("transcript")
        if isinstance(transcript, str):
            out["transcript"] = transcript[:TEXT_CHARS]
    if kind == "tool-calls":
        out["tools"] = [name for _, name in tool_calls(message)]
    return out


def tool_calls(message: dict[str, Any]) -> list[tuple[str, str]]:
    """``(toolCallId, name)`` of each call in a ``tool-calls`` message (at most
    ``MAX_TOOL_CALLS``): from ``toolCallList`` (``name`` or ``function.name``), names
    missing there taken from ``toolWithToolCallList``."""
    named: dict[str, str] = {}
    pairs = message.get("toolWithToolCallList")
    for item in pairs[:MAX_TOOL_CALLS] if isinstance(pairs, list) else ():
        call = item.get("toolCall") if isinstance(item, dict) else None
        if isinstance(call, dict) and isinstance(item.get("name"), str):
            named[str(call.get("id", ""))[:200]] = item["name"]
    calls = message.get("toolCallList")
    if not isinstance(calls, list):
        calls = message.get("toolCalls")  # older messages
    out = []
    for call in calls[:MAX_TOOL_CALLS] if isinstance(calls, list) else ():
        if not isinstance(call, dict):
            continue
        call_id = str(call.get("id", ""))[:200]
        function = call.get("function")
        name = function.get("name") if isinstance(function, dict) else call.get("name")
        out.append((call_id, str(name if isinstance(name, str) else named.get(call_id, ""))[:100]))
    return out


WARM_PLANS = re.compile(r"^warm-transfer")
"""Vapi's ``transferPlan.mode`` values that brief the human first (``warm-transfer-say-
message``, ``warm-transfer-say-summary``, ...); the ``blind-transfer`` ones are cold."""


def transfer_destination(to: str) -> dict[str, Any]:
    """``{"destination": ...}`` for ``to`` (E.164 or a ``sip:`` URI), as Vapi's
    ``TransferDestinationNumber`` / ``TransferDestinationSip``."""
    if to.startswith(("sip:", "sips:")):
        return {"destination": {"type": "sip", "sipUri": to}}
    return {"destination": {"type": "number", "number": to}}


def destination_args(destination: Any) -> dict[str, Any]:
    """A Vapi transfer destination as ``transfer`` arguments (``to``, ``mode``,
    ``summary``); ``ValueError`` if it names no number or SIP URI."""
    if not isinstance(destination, dict):
        raise ValueError("no destination")
    kind = destination.get("type")
    to = (
        destination.get("number")
        if kind == "number"
        else destination.get("sipUri")
        if kind == "sip"
        else None
    )
    if not isinstance(to, str) or not to:
        raise ValueError(f"destination of type {str(kind)[:20]!r} names no number or sipUri")
    args: dict[str, Any] = {"to": to[:260], "mode": "cold"}
    plan = destination.get("transferPlan")
    if isinstance(plan, dict) and isinstance(plan.get("mode"), str) and WARM_PLANS.match(plan["mode"]):
        args["mode"] = "warm"
        if isinstance(plan.get("message"), str) and plan["message"]:
            args["summary"] = plan["message"][:TEXT_CHARS]
    return args


def control_action(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The action a ``phone-call-control`` message asks for: ``("transfer", args)`` for
    ``forward``, ``("hang_up", {reason})`` for ``hang-up``; ``ValueError`` otherwise."""
    request = message.get("request")
    if request == "hang-up":
        return "hang_up", {"reason": "vapi: the assistant ended the call"}
    if request == "forward":
        return "transfer", destination_args(message.get("destination"))
    raise ValueError(f"unknown phone-call-control request {str(request)[:40]!r}")


def tool_arguments(message: dict[str, Any]) -> dict[str, Any]:
    """``toolCallId -> arguments`` (a JSON text or an object) of a ``tool-calls`` message."""
    calls = message.get("toolCallList")
    if not isinstance(calls, list):
        calls = message.get("toolCalls")
    out: dict[str, Any] = {}
    for call in calls[:MAX_TOOL_CALLS] if isinstance(calls, list) else ():
        if isinstance(call, dict):
            function = call.get("function")
            args = function.get("arguments") if isinstance(function, dict) else call.get("parameters")
            out[str(call.get("id", ""))[:200]] = args if isinstance(args, (str, dict)) else None
    return out


def reply(message: dict[str, Any]) -> dict[str, Any]:
    """The JSON body Vapi expects in answer to ``message`` (``{}`` when none is)."""
    kind = message.get("type")
    if kind == "tool-calls":
        return {
            "results": [
                {"name": name, "toolCallId": call_id, "error": NO_TOOLS}
                for call_id, name in tool_calls(message)
            ]
        }
    if kind == "knowledge-base-request":
        return {"documents": []}
    if kind in ("assistant-request", "transfer-destination-request", "handoff-destination-request"):
        return {"error": f"callbridge does not answer {kind}"}
    return {}
