"""Telephony actions: what the bridge does on the live Twilio call for an agent, a tool, a
remote back end or an operator.

Kinds (``KINDS``) and their arguments, checked by ``check(kind, args)``:

- ``hang_up`` ``{reason?}``: complete the call (after what is playing, for an agent).
- ``transfer`` ``{to?, mode?, summary?}``: connect the caller to ``to`` (E.164 ``+1...`` or a
  ``sip:`` URI; default ``TRANSFER_TO``); ``mode`` ``cold`` (default) or ``warm`` (the
  human hears ``summary`` first).
- ``send_dtmf`` ``{digits}``: play digits to the far end (``0-9``, ``*``, ``#``, ``w`` for a
  half-second pause), at most ``MAX_DIGITS``.

An action travels as ``messages.CallAction`` (Upstream -> CallSupervisor -> the gateway's
``Call.act``) and its outcome comes back as ``messages.ActionDone``: ``{"ok": True, ...}``
or ``{"ok": False, "error": "..."}``. ``TELEPHONY_TOOLS`` are the same actions as tools an
agent's model can call.
"""

from __future__ import annotations

import re
from typing import Any

from .tools import Tool, ToolContext

KINDS = ("hang_up", "transfer", "send_dtmf")
MODES = ("cold", "warm")
MAX_DIGITS = 32
MAX_SUMMARY = 1000
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
SIP_URI = re.compile(r"^sips?:[^\s<>\"]{1,250}$")
DIGITS = re.compile(r"^[0-9*#w]+$")
REASON_CHARS = 200


class ActionError(ValueError):
    """An action that cannot be carried out as asked (the message says why)."""


def check_destination(to: str) -> str:
    """``to`` if it is an E.164 number or a SIP URI, else ``ActionError``."""
    to = to.strip()
    if E164.match(to) or SIP_URI.match(to):
        return to
    raise ActionError(f"destination {to[:40]!r} is neither an E.164 number (+15551234567) nor a sip: URI")


def check(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments of action ``kind``, checked and normalised; ``ActionError`` if bad."""
    if kind not in KINDS:
        raise ActionError(f"unknown action {kind[:40]!r}; expected one of {', '.join(KINDS)}")
    allowed = {"hang_up": {"reason"}, "transfer": {"to", "mode", "summary"}, "send_dtmf": {"digits"}}[kind]
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise ActionError(f"{kind}: unknown argument(s) {', '.join(unknown)}")
    for key, value in args.items():
        if value is not None and not isinstance(value, str):
            raise ActionError(f"{kind}: {key} must be a string")
    out = {k: v for k, v in args.items() if v is not None}
    if kind == "hang_up":
        out["reason"] = (out.get("reason") or "the agent ended the call")[:REASON_CHARS]
    elif kind == "transfer":
        if out.get("to"):
            out["to"] = check_destination(out["to"])
        mode = out.setdefault("mode", "cold")
        if mode not in MODES:
            raise ActionError(f"transfer: mode must be cold or warm, not {mode[:20]!r}")
        if len(out.get("summary", "")) > MAX_SUMMARY:
            raise ActionError(f"transfer: summary is longer than {MAX_SUMMARY} characters")
    else:
        digits = out.get("digits", "")
        if not digits or len(digits) > MAX_DIGITS or not DIGITS.match(digits):
            raise ActionError(f"send_dtmf: digits must be 1-{MAX_DIGITS} of 0-9 * # w")
    return out


async def _act(kind: str, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    outcome = await ctx.act(kind, **args)
    if not outcome.get("ok"):
        raise ActionError(outcome.get("error") or f"{kind} failed")
    return outcome


async def _end_call(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    return await _act("hang_up", {"reason": args.get("reason")}, ctx)


async def _transfer(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    return await _act("transfer", args, ctx)


async def _send_dtmf(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    return await _act("send_dtmf", args, ctx)


TELEPHONY_TOOLS = (
    Tool(
        "end_call",
        "End the phone call, after saying goodbye.",
        {"type": "object", "properties": {"reason": {"type": "string"}}, "additionalProperties": False},
        _end_call,
        filler=None,
    ),
    Tool(
        "transfer_call",
        "Transfer the caller to a human. cold: connect them now; warm: brief the human with a summary first.",
        {
            "type": "object",
            "properties": {
                "to": {
                    "type": "string",
                    "description": "E.164 number or sip: URI; omit for the default desk",
                },
                "mode": {"type": "string", "enum": list(MODES)},
                "summary": {"type": "string", "maxLength": MAX_SUMMARY},
            },
            "additionalProperties": False,
        },
        _transfer,
        timeout_s=60.0,
        filler=None,
    ),
    Tool(
        "send_dtmf",
        "Press keys on the phone keypad (to navigate a phone menu).",
        {
            "type": "object",
            "properties": {"digits": {"type": "string", "pattern": "^[0-9*#w]{1,32}$"}},
            "required": ["digits"],
            "additionalProperties": False,
        },
        _send_dtmf,
        filler=None,
    ),
)
