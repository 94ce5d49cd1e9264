"""Live calls and the record of ended ones.

``Call`` binds one Media Streams socket to one actor tree: it feeds Twilio's events to
the tree, implements ``CallIO`` for the supervisor (outbound frames and marks go to the
socket's ``OutboundWriter``; notes go to the ``Timeline``), and keeps the call's stats.
``CallRegistry`` holds live calls by CallSid and the last ``CALL_HISTORY`` ended ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from ..actors import messages as m
from ..actors.runtime import Dispatcher
from ..actors.supervisor import CHILDREN, CallSupervisor
from ..codecs.mediastreams import Media, Start
from ..config import Settings
from ..timeline import MAX_EVENTS, Timeline
from .output import OutboundWriter

log = logging.getLogger("callbridge.gateway")

HIDDEN_PARAMETERS = ("token",)


class Call:
    def __init__(
        self,
        settings: Settings,
        start: Start,
        send: Callable[[str], Awaitable[None]],
        hang_up: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        publish: Callable[[str, str, dict[str, Any]], None] | None = None,
        bind: Callable[[str, str], None] | None = None,
    ) -> None:
        self.call_sid = start.call_sid
        self.stream_sid = start.stream_sid
        self.clock = clock
        self.started_wall = time.time()
        self.timeline = Timeline(clock())
        self.state = "live"
        self.stop_reason = ""
        self.frames_in = 0
        self.marks_played = 0
        self._hang_up = hang_up
        self._publish = publish
        self._bind = bind
        self.closing: asyncio.Task[Any] | None = None
        self.agent_closing: asyncio.Task[Any] | None = None
        params = {k: v for k, v in start.custom_parameters.items() if k not in HIDDEN_PARAMETERS}
        self.note("started", streamSid=start.stream_sid, parameters=params)
        self.writer = OutboundWriter(
            send,
            start.stream_sid,
            settings.outbound_lead_ms / 1000.0,
            clock,
            on_first_frame=self._first_frame_sent,
            on_utterance_sent=self._utterance_sent,
        )
        self.writer_task = asyncio.get_running_loop().create_task(self.writer.run(), name=f"{self.call_sid}/writer")
        self.dispatcher = Dispatcher(clock, settings.check_messages, name=self.call_sid)
        self.supervisor = self.dispatcher.add(
            CallSupervisor, None, settings, self, m.CallStarted(start.call_sid, start.stream_sid, params)
        )

    # -- from the socket -----------------------------------------------------------------

    def media(self, event: Media) -> None:
        self.frames_in += 1
        self.dispatcher.tell("jitter", m.CallerMedia(event.chunk, event.timestamp, event.payload))

    def mark_played(self, name: str) -> None:
        self.marks_played += 1
        self.dispatcher.tell("supervisor", m.MarkPlayed(name))

    def dtmf(self, digit: str) -> None:
        self.dispatcher.tell("supervisor", m.DtmfReceived(digit))

    def inject_fault(self, role: str) -> None:
        self.dispatcher.tell(role, m.InjectFault("fault-injection endpoint"))

    def stop(self, reason: str) -> None:
        """End the call: stop the actor tree and the writer. Idempotent."""
        if self.state == "ended":
            return
        self.state = "ended"
        self.stop_reason = reason
        self.dispatcher.tell("supervisor", m.CallStopped(reason))
        self.dispatcher.close()
        self.writer.close()
        agent = self.supervisor.conversation.agent  # type: ignore[attr-defined]
        if agent is not None:  # outlives the actors: close its HTTP session, if any
            self.agent_closing = asyncio.get_running_loop().create_task(agent.aclose())
        self.note("stopped", reason=reason)

    # -- CallIO, for the supervisor ---------------------------------------------------------

    def send_frame(self, payload: bytes) -> None:
        self.writer.frame(payload)

    def send_mark(self, name: str) -> None:
        self.writer.mark(name)

    def clear(self) -> float:
        """Barge-in: drop queued agent audio and have Twilio drop its buffer. Returns the
        seconds of audio dropped (ours and, as far as we can tell, Twilio's)."""
        buffered = self.writer.pacer.buffered_s(self.clock())
        return self.writer.clear() * 0.020 + buffered

    def notify_when_sent(self, utterance: int) -> None:
        self.writer.notify(utterance)

    def _utterance_sent(self, utterance: int) -> None:
        self.dispatcher.tell("supervisor", m.AgentAudioSent(utterance))

    def note(self, event: str, **data: Any) -> None:
        self.timeline.add(self.clock(), event, **data)
        if self._publish is not None:
            self._publish(event, self.call_sid, data)

    def end(self, reason: str) -> None:
        log.warning("call %s: ending: %s", self.call_sid, reason)
        self._hang_up(reason)

    def bind_upstream(self, provider: str, remote_id: str) -> None:
        """The remote back end's id for this call: its webhooks find the call by it."""
        if self._bind is not None:
            self._bind(provider, remote_id)

    def _first_frame_sent(self) -> None:
        self.note("first_audio_sent")

    # -- views ---------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        return {
            "callSid": self.call_sid,
            "streamSid": self.stream_sid,
            "state": self.state,
            "started_at": self.started_wall,
            "duration_ms": round((self.clock() - self.timeline.t0) * 1000.0),
        }

    def to_json(self) -> dict[str, Any]:
        sup = self.supervisor
        return {
            **self.summary(),
            "stop_reason": self.stop_reason,
            "stats": {
                "frames_in": self.frames_in,
                "frames_out": self.writer.frames_sent,
                "frames_dropped_out": self.writer.frames_dropped,
                "marks_sent": self.writer.marks_sent,
                "marks_played": self.marks_played,
                "messages_delivered": self.dispatcher.delivered,
                "messages_dropped": self.dispatcher.dropped,
                "restarts": {c.role: sup.generation[c.role] for c in CHILDREN},  # type: ignore[attr-defined]
            },
            "timeline": self.timeline.to_list(),
            "timeline_dropped": self.timeline.dropped,
        }


class CallRegistry:
    def __init__(self, history: int) -> None:
        self.live: dict[str, Call] = {}
        self.ended: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.history = history
        self.total = 0
        self.aliases: OrderedDict[tuple[str, str], str] = OrderedDict()
        """(provider, remote call id) -> CallSid, for live and kept ended calls."""

    def add(self, call: Call) -> None:
        self.live[call.call_sid] = call
        self.total += 1

    def finish(self, call: Call) -> None:
        if self.live.get(call.call_sid) is call:
            del self.live[call.call_sid]
        self.ended[call.call_sid] = call.to_json()
        self.ended.move_to_end(call.call_sid)
        while len(self.ended) > self.history:
            self.ended.popitem(last=False)
        while len(self.aliases) > 2 * self.history + len(self.live):
            self.aliases.popitem(last=False)

    def alias(self, provider: str, remote_id: str, call_sid: str) -> None:
        self.aliases[(provider, remote_id)] = call_sid
        self.aliases.move_to_end((provider, remote_id))

    def by_alias(self, provider: str, remote_id: str) -> str | None:
        return self.aliases.get((provider, remote_id))

    def note(self, call_sid: str, event: str, **data: Any) -> bool:
        """Record ``event`` in a live call's timeline, or append it to a kept ended one
        (webhooks arrive after the call). False if the call is unknown."""
        call = self.live.get(call_sid)
        if call is not None:
            call.note(event, **data)
            return True
        record = self.ended.get(call_sid)
        if record is None:
            return False
        timeline = record["timeline"]
        if len(timeline) >= MAX_EVENTS:
            record["timeline_dropped"] = record.get("timeline_dropped", 0) + 1
            return True
        t_ms = round((time.time() - record["started_at"]) * 1000.0, 1)
        timeline.append({"t_ms": t_ms, "event": event, **data})
        return True

    def get(self, call_sid: str) -> dict[str, Any] | None:
        call = self.live.get(call_sid)
        return call.to_json() if call is not None else self.ended.get(call_sid)

    def listing(self) -> list[dict[str, Any]]:
        return [c.summary() for c in self.live.values()]
