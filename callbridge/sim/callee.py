"""Twilio's side of an outbound call, after Twilio accepted it (``Calls.json``): what
happens once someone picks up.

``await play_outbound(form, call_sid, auth_token, callee)`` takes the form the call was
created with and plays it as Twilio does: status callbacks for the events asked for
(``StatusCallbackEvent``: ``initiated``, ``ringing``, ``answered`` before the call,
``completed`` after it), the voice webhook at ``Url`` with ``Direction=outbound-api`` and
the call's ``From``/``To`` (``SimulatedCall``: it signs, opens the stream from the TwiML,
speaks the callee's audio), and, with ``AsyncAmd=true``, the ``AsyncAmdStatusCallback``
with the callee's ``answered_by`` once ``amd_after_s`` have passed since the stream
started (with ``DetectMessageEnd`` Twilio reports a machine at the end of its greeting:
set it to the greeting's length). Every callback is signed with the auth token, as
Twilio signs, and its answer's status recorded.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import numpy as np

from ..gateway.security import SignatureChecker
from .caller import CallResult, SimulatedCall


@dataclass
class Callee:
    """Who (or what) picks up."""

    audio: list[np.ndarray] = field(default_factory=list)
    """What they say, turn by turn (8 kHz int16): "Hello?", or a machine's greeting and beep."""
    answered_by: str = "human"
    """What Twilio's answering-machine detection reports (``AnsweredBy``)."""
    amd_after_s: float = 2.0
    gap_s: float = 0.3
    """Seconds from the stream's start to their first words (then between turns)."""
    hold_s: float = 3.0
    """Seconds they stay on after their last words (unless the bridge hangs up first)."""
    max_s: float = 30.0
    console_token: str = ""
    """The bridge's ``CONSOLE_TOKEN``, to fetch the call's record at the end."""


@dataclass
class OutboundResult:
    call: CallResult
    callbacks: list[tuple[str, str, int]] = field(default_factory=list)
    """(kind, value, HTTP status of the bridge's answer): ("status", "ringing", 200),
    ("amd", "human", 200)..."""


async def _post(http: aiohttp.ClientSession, url: str, params: dict[str, str], token: str) -> int:
    headers = {"X-Twilio-Signature": SignatureChecker.sign(token, url, params)} if token else {}
    async with http.post(url, data=params, headers=headers) as resp:
        await resp.read()
        return resp.status


async def play_outbound(
    form: dict[str, str], events: list[str], call_sid: str, account_sid: str, auth_token: str, callee: Callee
) -> OutboundResult:
    """Play the call created with ``form`` (``events``: its ``StatusCallbackEvent`` values)."""
    url = urlsplit(form["Url"])
    sim = SimulatedCall(
        f"{url.scheme}://{url.netloc}",
        audio=callee.audio,
        auth_token=auth_token,
        polite=False,
        gap_s=callee.gap_s,
        hold_s=callee.hold_s,
        max_s=callee.max_s,
        call_sid=call_sid,
        from_number=form["From"],
        to_number=form["To"],
        webhook_path=url.path + (f"?{url.query}" if url.query else ""),
        direction="outbound-api",
        console_token=callee.console_token,
    )
    result = OutboundResult(sim.result)
    base = {"AccountSid": account_sid, "CallSid": call_sid, "From": form["From"], "To": form["To"]}
    base |= {"Direction": "outbound-api", "ApiVersion": "2010-04-01"}
    started = time.monotonic()

    async def status(event: str, call_status: str, **extra: str) -> None:
        if event in events and form.get("StatusCallback"):
            params = {**base, "CallStatus": call_status, "CallbackSource": "call-progress-events", **extra}
            code = await _post(http, form["StatusCallback"], params, auth_token)
            result.callbacks.append(("status", call_status, code))

    async def amd() -> None:
        await sim.started.wait()
        await asyncio.sleep(callee.amd_after_s)
        params = {
            "AccountSid": account_sid,
            "CallSid": call_sid,
            "AnsweredBy": callee.answered_by,
            "MachineDetectionDuration": str(round(callee.amd_after_s * 1000)),
        }
        code = await _post(http, form["AsyncAmdStatusCallback"], params, auth_token)
        result.callbacks.append(("amd", callee.answered_by, code))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await status("initiated", "initiated")
        await status("ringing", "ringing")
        await status("answered", "in-progress")
        detecting = form.get("MachineDetection") and form.get("AsyncAmd") == "true"
        task = asyncio.create_task(amd()) if detecting else None
        try:
            await sim.run()
        finally:
            if task is not None and not task.done():
                task.cancel()
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        await status("completed", "completed", CallDuration=str(round(time.monotonic() - started)))
    return result
