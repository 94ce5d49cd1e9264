"""Telephony actions carried out on the live Twilio call (``Call.telephony``): what an
agent's tool, a remote back end or an operator asks through ``Call.act``.

Every action but ``hang_up`` updates the live call through Twilio's REST API with new
TwiML (``Calls/{CallSid}.json``, ``Twiml``; see ``gateway/twiml.py``); Twilio runs it in
place of the ``<Connect><Stream>``, sending ``stop`` on the stream and closing it. That
``stop`` ends the stream, not the call: ``Call.expect_redirect`` marks it, and the call
stays resumable, so a later ``<Connect><Stream>`` with ``resume=1`` (the same CallSid)
carries the conversation on (``gateway/media.py``).

- ``transfer`` cold: ``<Dial>`` (``<Number>`` or ``<Sip>``), ``timeout`` =
  ``TRANSFER_RING_S``, ``action`` = ``/voice/transfer``: a dial that was answered ends
  the call when the human hangs up (``<Hangup/>``); one that was not (``no-answer``,
  ``busy``, ``failed``) tells the caller and streams the call back to the bridge.
- ``transfer`` warm (Twilio's conference pattern): the caller waits in conference
  ``transfer-{CallSid}`` with hold audio (``startConferenceOnEnter="false"``, ``waitUrl``
  = ``TRANSFER_HOLD_URL``) while the bridge calls the human (``Calls.json``) with TwiML
  that says the summary and then joins the conference, which starts it: both are
  connected. The human's status callback (``/voice/transfer``) says how it went; without
  one within ``TRANSFER_RING_S`` + ``CALLBACK_SLACK_S`` the bridge asks Twilio (the call's
  status) and, still ringing, cancels it. A human who does not answer (``no-answer``,
  ``busy``, ``failed``, ``canceled``, or the timeout) gets the caller told and streamed
  back to the bridge, where the agent carries on.
- ``send_dtmf``: ``<Play digits>`` then ``<Connect><Stream>`` back (resumed).
- ``hang_up``: ``Call.end`` (closes the stream and completes the call through the API).

Each waits first (at most ``TRANSFER_HANDOVER_WAIT_S``) for what the agent is saying (its
handover line) to finish playing. Outcomes: ``call.transferred`` (``to``, ``mode``,
``outcome``) and ``dtmf.sent`` in the call's timeline, events and metrics; notes made
while the call has no stream are kept (``MAX_PENDING`` calls) and added when it resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from . import twiml
from .calls import Call
from .security import stream_url
from .twilio_rest import TwilioError

log = logging.getLogger("callbridge.gateway")

POLL_S = 0.02
CALLBACK_SLACK_S = 10.0
"""How long past the ring timeout a warm transfer waits for Twilio's status callback."""
MAX_PENDING = 1000
MAX_WARM = 1000
HOLD_LINE = "Please hold while I connect you."
NOT_ANSWERED = "Sorry, nobody could take your call right now. I'm back with you."
ANSWERED = frozenset({"completed", "answered", "in-progress"})
NOT_REACHED = frozenset({"no-answer", "busy", "failed", "canceled"})
OUTCOMES = frozenset({"dialing", "holding", "timeout", *ANSWERED, *NOT_REACHED}) - {"in-progress"}
"""``call.transferred`` outcomes counted by name in the metrics (any other: ``other``)."""

Done = Callable[[dict[str, Any]], None]


@dataclass
class Warm:
    """A warm transfer in progress: the caller on hold, the human's phone ringing."""

    caller: str
    to: str
    human: str = ""
    timer: asyncio.TimerHandle | None = None


class Telephony:
    """One per gateway; ``Call.telephony`` for every call (``attach``)."""

    def __init__(self, gw: Any) -> None:
        self.gw = gw
        self.warm: OrderedDict[str, Warm] = OrderedDict()
        """Warm transfers waiting for the human, by the caller's CallSid."""
        self.pending: OrderedDict[str, list[tuple[str, dict[str, Any]]]] = OrderedDict()
        """Timeline notes for calls with no live stream, added when they resume."""
        self.cold: OrderedDict[str, str] = OrderedDict()
        """Where each cold transfer (not yet ended) dialed, by the caller's CallSid."""
        self.tasks: set[asyncio.Task[None]] = set()

    # -- wiring ------------------------------------------------------------------------

    def attach(self, call: Call) -> None:
        """A new stream's call: it can act, and gets the notes made while it had no stream."""
        call.telephony = self
        for event, data in self.pending.pop(call.call_sid, []):
            call.note(event, **data)

    def __call__(self, call: Call, kind: str, args: dict[str, Any], done: Done) -> None:
        self._spawn(self._act(call, kind, args, done))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def base(self) -> str:
        """The bridge's public base URL: ``PUBLIC_URL``, else the one Twilio's last signed
        webhook used ("" before any)."""
        return self.gw.settings.server.public_url or self.gw.webhook_base

    def note(self, call_sid: str, event: str, **data: Any) -> None:
        """To the call's timeline (live), or kept for its next stream and added to its
        ended record and the events meanwhile; counted in the metrics either way."""
        metrics = self.gw.metrics
        if event == "call.transferred":
            outcome = data["outcome"] if data["outcome"] in OUTCOMES else "other"
            metrics.transfers.labels(data["mode"], outcome).inc()
        elif event == "dtmf.sent":
            metrics.dtmf_sent.inc()
        call = self.gw.registry.live.get(call_sid)
        if call is not None and call.state == "live":
            call.note(event, **data)
            return
        self.gw.registry.note(call_sid, event, **data)
        if self.gw.events is not None:
            self.gw.events.publish(event, call_sid, data)
        self.pending.setdefault(call_sid, []).append((event, data))
        self.pending.move_to_end(call_sid)
        while len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)

    # -- the actions ---------------------------------------------------------------------

    async def _act(self, call: Call, kind: str, args: dict[str, Any], done: Done) -> None:
        if call.redirected or call.state != "live":
            done({"ok": False, "error": f"{kind}: the call is already {call.redirected or 'over'}"})
            return
        try:
            outcome = await getattr(self, "_" + kind)(call, args)
        except (TwilioError, twiml.TwimlTooLong) as exc:
            call.expect_redirect("")
            log.warning("call %s: %s failed: %s", call.call_sid, kind, exc)
            outcome = {"ok": False, "error": f"{kind}: {str(exc)[:300]}"}
        done(outcome)

    def refusal(self, kind: str, args: dict[str, Any], call: Call | None = None) -> str | None:
        """Why ``kind`` cannot be carried out on this bridge, or on ``call`` (None: it can)."""
        if kind == "hang_up":
            return None
        if self.gw.twilio is None:
            return f"{kind}: needs Twilio's REST API (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)"
        if not self.base():
            return f"{kind}: the bridge's public URL is not known yet (set PUBLIC_URL)"
        if kind == "transfer":
            if not (args.get("to") or self.gw.settings.telephony.transfer_to):
                return "transfer: no destination: pass `to` or set TRANSFER_TO"
            if args.get("mode") == "warm" and call is not None and not self.line(call):
                return "transfer: a warm transfer calls the human from the call's number or TWILIO_NUMBER: neither is known"
        return None

    def line(self, call: Call) -> str:
        """The number a warm transfer calls the human from: ``TWILIO_NUMBER``, else the
        account's number on this call (the stream parameter ``line``)."""
        return self.gw.settings.twilio.number or call.parameters.get("line", "")

    async def _handover(self, call: Call) -> None:
        """Let what the agent is saying finish playing (at most ``TRANSFER_HANDOVER_WAIT_S``)."""
        deadline = time.monotonic() + self.gw.settings.telephony.handover_wait_s
        while not call.played_out() and call.state == "live" and time.monotonic() < deadline:  # noqa: ASYNC110 - the writer and Twilio's echoes, polled
            await asyncio.sleep(POLL_S)

    async def _hang_up(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        await self._handover(call)
        if call.state == "live":
            call.end(args["reason"])
        return {"ok": True}

    async def _transfer(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        why = self.refusal("transfer", args, call)
        if why is not None:
            return {"ok": False, "error": why}
        to, mode = args.get("to") or self.gw.settings.telephony.transfer_to, args["mode"]
        if mode == "warm" and len(self.warm) >= MAX_WARM:
            return {"ok": False, "error": f"transfer: {MAX_WARM} warm transfers already waiting"}
        await self._handover(call)
        sid, telephony = call.call_sid, self.gw.settings.telephony
        if mode == "cold":
            document = twiml.dial(to, telephony.ring_timeout_s, self._transfer_url(sid, "dial"))
        else:
            document = twiml.hold(f"transfer-{sid}", telephony.hold_music_url, HOLD_LINE)
        call.expect_redirect(f"transferred ({mode}) to {to}")
        await self.gw.twilio.redirect(sid, document)
        self.note(
            sid, "call.transferred", to=to, mode=mode, outcome="dialing" if mode == "cold" else "holding"
        )
        if mode == "cold":
            self.cold[sid] = to
            while len(self.cold) > MAX_PENDING:
                self.cold.popitem(last=False)
            return {"ok": True, "to": to, "mode": mode}
        warm = Warm(sid, to)
        self.warm[sid] = warm
        try:
            warm.human = await self.gw.twilio.call_out(
                to,
                self.line(call),
                twiml.brief_and_join(args.get("summary", ""), f"transfer-{sid}"),
                telephony.ring_timeout_s,
                self._transfer_url(sid, "human"),
            )
        except TwilioError as exc:
            log.warning("call %s: calling %s for a warm transfer failed: %s", sid, to, exc)
            await self._bring_back(sid, "failed")
            return {"ok": False, "error": f"transfer: {str(exc)[:300]}"}
        loop = asyncio.get_running_loop()
        warm.timer = loop.call_later(
            telephony.ring_timeout_s + CALLBACK_SLACK_S, lambda: self._spawn(self._give_up(sid))
        )
        log.info("call %s: warm transfer: calling %s (%s)", sid, to, warm.human)
        return {"ok": True, "to": to, "mode": mode, "status": "ringing"}

    async def _send_dtmf(self, call: Call, args: dict[str, Any]) -> dict[str, Any]:
        why = self.refusal("send_dtmf", args, call)
        if why is not None:
            return {"ok": False, "error": why}
        await self._handover(call)
        document = self._back_to_bridge(call.call_sid, call.parameters, digits=args["digits"])
        call.expect_redirect("sending DTMF")
        await self.gw.twilio.redirect(call.call_sid, document)
        self.note(call.call_sid, "dtmf.sent", digits=args["digits"])
        return {"ok": True, "digits": args["digits"]}

    # -- back to the bridge ---------------------------------------------------------------

    def _transfer_url(self, call_sid: str, leg: str) -> str:
        # Only characters no URL normalisation touches: the query is under Twilio's signature.
        return f"{self.base()}/voice/transfer?{urlencode({'caller': call_sid, 'leg': leg})}"

    def _back_to_bridge(
        self, call_sid: str, parameters: dict[str, str], say: str = "", digits: str = ""
    ) -> str:
        base = self.base()
        upstream = parameters.get("upstream")
        query = {"attempt": "1", **({"upstream": upstream} if upstream else {})}
        stream_params = {"token": self.gw.tokens.issue(call_sid, time.time()), "resume": "1"}
        for name in ("upstream", "line"):
            if parameters.get(name):
                stream_params[name] = parameters[name]
        return twiml.back_to_bridge(
            stream_url(base), f"{base}/voice/inbound?{urlencode(query)}", stream_params, say, digits
        )

    def back_to_bridge(self, call_sid: str, say: str) -> str:
        """TwiML that tells the caller ``say`` and streams the call back (a cold transfer's
        dial that was not answered: the ``<Dial action>``'s answer)."""
        return self._back_to_bridge(call_sid, self._parameters(call_sid), say=say)

    def _parameters(self, call_sid: str) -> dict[str, str]:
        record = self.gw.registry.ended.get(call_sid) or {}
        started: dict[str, Any] = next(
            (e for e in record.get("timeline", []) if e.get("event") == "started"), {}
        )
        params = started.get("parameters") or {}
        return {k: v for k, v in params.items() if isinstance(v, str)}

    async def _bring_back(self, call_sid: str, outcome: str) -> None:
        """The human did not answer a warm transfer: tell the caller, resume the call."""
        warm = self.warm.pop(call_sid, None)
        if warm is None:
            return
        if warm.timer is not None:
            warm.timer.cancel()
        self.note(call_sid, "call.transferred", to=warm.to, mode="warm", outcome=outcome)
        try:
            await self.gw.twilio.redirect(call_sid, self.back_to_bridge(call_sid, NOT_ANSWERED))
        except TwilioError as exc:
            log.warning("call %s: bringing the caller back failed: %s", call_sid, exc)
            self.note(call_sid, "twilio.error", error=str(exc)[:300])

    async def _give_up(self, call_sid: str) -> None:
        warm = self.warm.get(call_sid)
        if warm is None:
            return
        if warm.human:  # the callback may have gone astray (another shard): ask Twilio
            try:
                status = await self.gw.twilio.status(warm.human)
            except TwilioError as exc:
                log.warning("call %s: asking how the human's call went failed: %s", call_sid, exc)
                status = ""
            if status in ANSWERED or status in NOT_REACHED:
                self.human_status(call_sid, warm.human, status)
                return
        log.warning("call %s: no status callback for the warm transfer in time; giving up", call_sid)
        if warm.human:
            try:
                await self.gw.twilio.cancel(warm.human)
            except TwilioError as exc:
                log.warning("call %s: canceling the human's call failed: %s", call_sid, exc)
        await self._bring_back(call_sid, "timeout")

    # -- Twilio's callbacks (``/voice/transfer``) -------------------------------------------

    def human_status(self, caller: str, human: str, status: str) -> bool:
        """The warm transfer's human call reports ``status``; False if no such transfer."""
        warm = self.warm.get(caller)
        if warm is None or (warm.human and human != warm.human):
            return False
        if status in ANSWERED:
            self.warm.pop(caller)
            if warm.timer is not None:
                warm.timer.cancel()
            self.note(caller, "call.transferred", to=warm.to, mode="warm", outcome="answered")
            self._spawn(self._over(caller))
        elif status in NOT_REACHED:
            self._spawn(self._bring_back(caller, status))
        return True

    async def dial_ended(self, caller: str, dial_status: str) -> str:
        """A cold transfer's ``<Dial action>``: the TwiML that follows."""
        to = self.cold.pop(caller, None)
        if to is None:
            return twiml.hang_up()  # no transfer of ours (or long forgotten): nothing to bring back
        self.note(caller, "call.transferred", to=to, mode="cold", outcome=dial_status or "unknown")
        if dial_status in ANSWERED:
            await self._over(caller)
            return twiml.hang_up()
        return self.back_to_bridge(caller, NOT_ANSWERED)

    async def _over(self, call_sid: str) -> None:
        """The caller is with the human now: the bridge's part of the call is over (its
        checkpoint is dropped; a later request about it gets ``<Hangup/>``)."""
        self.pending.pop(call_sid, None)
        record = self.gw.registry.ended.get(call_sid)
        if record is None:
            stored = await self.gw.store.lookup(call_sid)
            record = (
                (stored.data.get("view") or {}) if stored is not None and stored.state == "live" else None
            )
        if record is not None:
            await self.gw.store.finish(call_sid, record, resumable=False)

    async def close(self) -> None:
        for warm in self.warm.values():
            if warm.timer is not None:
                warm.timer.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
