"""Live calls and the record of ended ones.

``Call`` binds one Media Streams socket to one actor tree: it feeds Twilio's events to
the tree as messages, implements ``CallIO`` for the supervisor (outbound frames and marks go
to the socket's ``OutboundWriter``; notes go to the ``Timeline``), and keeps the call's
stats. The call's state is the supervisor's: ``Call`` reads it through
``CallSupervisor.view()`` and ``snapshot()``. Why the call ends is set in one place,
``end_because`` (the socket's side) or ``end`` (the supervisor's), and ``stop`` tears it down.
``CallRegistry`` holds live calls by CallSid and the last ``CALL_HISTORY`` ended ones.

Every timeline note goes through ``Call.note``, the one place observability hooks in: the
call's ``CallFigures`` (key figures and Prometheus metrics), the events poster, and the
console's live feed (``watch``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import numpy as np

from .. import actions
from ..actors import messages as m
from ..actors.runtime import Dispatcher
from ..actors.supervisor import CHILDREN, CallSupervisor
from ..codecs.g711 import ULAW_SQUARED
from ..codecs.marks import MarkName
from ..codecs.mediastreams import Media, Start
from ..config import Settings
from ..metrics import CallFigures, Metrics
from ..timeline import MAX_EVENTS, Timeline, bounded_data
from ..upstreams.base import Conversation
from .ignored import IgnoredInput
from .limits import TokenBucket
from .output import OutboundWriter
from .recordings import Recording, Recordings
from .store import CHECKPOINT_TIMELINE, CallStore, summary_of

log = logging.getLogger("callbridge.gateway")

HIDDEN_PARAMETERS = ("token",)
CHECKPOINT_EVENTS = frozenset(
    {
        "started",
        "resumed",
        "transcript.final",
        "agent.reply",
        "agent.truncated",
        "mark_played",
        "barge_in",
        "dtmf",
        "call_ending",
        "child_restarted",
        "upstream.bound",
        "upstream.released",
        "call.transferred",
        "dtmf.sent",
    }
)
"""Timeline events after which the call's state is checkpointed to the store."""
NORMAL_ENDS = frozenset({"the agent ended the call"})
"""End reasons of a call that went as it should (logged at INFO; any other at WARNING)."""
CHECKPOINTS_PER_S = 4.0
CHECKPOINT_BURST = 4
"""Checkpoints of one call: ``CHECKPOINT_BURST`` at once, ``CHECKPOINTS_PER_S`` sustained;
past that they are coalesced and the latest state follows as soon as one is allowed. A
normal call's few events each checkpoint at once; a flood of them cannot."""

Telephony = Callable[["Call", str, dict[str, Any], Callable[[dict[str, Any]], None]], None]
"""Carries out a checked telephony action on a call: ``(call, kind, args, done)``."""

Watch = Callable[[str, int, dict[str, Any]], None]
"""Called with (callSid, index in the timeline, entry) for each timeline event."""


class Call:
    def __init__(
        self,
        settings: Settings,
        start: Start,
        send: Callable[[str], Awaitable[None]],
        hang_up: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        publish: Callable[[str, str, dict[str, Any]], None] | None = None,
        store: CallStore | None = None,
        resume: dict[str, Any] | None = None,
        metrics: Metrics | None = None,
        watch: Watch | None = None,
        source: str = "twilio",
        bind: Callable[[str, str], None] | None = None,
        ignored: IgnoredInput | None = None,
        transport: asyncio.Transport | None = None,
        recordings: Recordings | None = None,
    ) -> None:
        """``resume``: the checkpoint of this call from a stream that dropped (the call
        carries on: conversation, timeline, utterance numbering). ``ignored``: the
        socket's tally of ignored input (its count goes in the call's stats).
        ``hang_up(reason)``: close the stream (the supervisor ended the call).
        ``transport``: the stream's connection (for ``abort``). ``recordings``
        (``RECORDING=local``): this stream is recorded, as the call's next part."""
        self.call_sid = start.call_sid
        self.stream_sid = start.stream_sid
        self.source = source
        self.clock = clock
        self.store = store
        self._checkpoint_due: asyncio.Handle | None = None
        self._checkpoint_budget = TokenBucket(CHECKPOINTS_PER_S, CHECKPOINT_BURST, clock())
        self._checkpointed_events = 0
        """Timeline events the store has (checkpoints carry only what is new)."""
        self.ignored = ignored if ignored is not None else IgnoredInput(metrics)
        self.metrics = metrics
        self.figures = CallFigures(metrics)
        self._watch = watch
        self.last_in = b""
        """The latest caller frame (the console's level meter samples it)."""
        self._sampled = (0, 0)
        self.started_wall = time.time()
        self.timeline = Timeline(clock())
        self.state = "live"
        self._stop_reason = ""
        self._resumable = True
        self.frames_in = 0
        self.marks_played = 0
        self._hang_up = hang_up
        self._publish = publish
        self.transport = transport
        self._bind = bind
        self.agent_closing: asyncio.Task[Any] | None = None
        self.telephony: Telephony | None = None
        """Carries out telephony actions (``act``); set by the gateway."""
        self.redirected = ""
        """Why the bridge is giving the call new TwiML (a telephony action): the ``stop``
        Twilio then sends ends this stream, not the call (``expect_redirect``)."""
        self.resumes = 0
        conversation = self._resume(resume) if resume is not None else None
        params = {k: v for k, v in start.custom_parameters.items() if k not in HIDDEN_PARAMETERS}
        self.parameters = params
        """The stream's custom parameters (the token left out)."""
        self.note("started", streamSid=start.stream_sid, parameters=params)
        self.writer = OutboundWriter(
            send,
            start.stream_sid,
            settings.media.outbound_lead_ms / 1000.0,
            clock,
            on_first_frame=self._first_frame_sent,
            on_utterance_sent=self._utterance_sent,
        )
        self.writer_task = asyncio.get_running_loop().create_task(
            self.writer.run(), name=f"{self.call_sid}/writer"
        )
        self.recording: Recording | None = None
        if recordings is not None:
            self.recording = recordings.begin(self.call_sid, self.resumes + 1, clock())
            if self.recording is None:
                self.note("recording.skipped", reason="no recording for this CallSid or part")
            else:
                self.writer.recorder = self.recording.recorder
                self.note("recording.started", mode="local", part=self.recording.part)
        self.dispatcher = Dispatcher(clock, settings.server.check_messages, name=self.call_sid)
        supervisor = self.dispatcher.add(
            CallSupervisor,
            None,
            settings,
            self,
            m.CallStarted(start.call_sid, start.stream_sid, params),
            conversation,
        )
        assert isinstance(supervisor, CallSupervisor)
        self.supervisor = supervisor

    def _resume(self, snap: dict[str, Any]) -> Conversation:
        view = snap.get("view") or {}
        wall = time.time()
        self.started_wall = float(view.get("started_at", wall))
        self.timeline.t0 = self.clock() - (wall - float(snap.get("t0_wall", wall)))
        self.timeline.events = list(view.get("timeline", []))
        self.resumes = int(snap.get("resumes", 0)) + 1
        played = int(snap.get("played_upto", 0))
        conversation = Conversation.restore(snap.get("conversation") or {}, played)
        last_seen = self.timeline.events[-1]["t_ms"] / 1000.0 if self.timeline.events else 0.0
        self.note(
            "resumed",
            from_pid=snap.get("pid"),
            resumes=self.resumes,
            since_last_event_ms=round((self.clock() - self.timeline.t0 - last_seen) * 1000.0),
            repeating=conversation.resume_say is not None,
        )
        return conversation

    # -- from the socket -----------------------------------------------------------------

    def media(self, event: Media) -> None:
        self.frames_in += 1
        self.last_in = event.payload
        self.dispatcher.tell("jitter", m.MediaReceived(event.chunk, event.timestamp, event.payload))
        recording = self.recording
        if recording is not None:
            recorder = recording.recorder
            recorder.caller(event.timestamp, event.payload, self.clock())
            if recorder.stopped:
                self._stop_recording("RECORDINGS_MAX_CALL_S reached")

    def mark_played(self, name: str) -> None:
        """Twilio echoed mark ``name``: one this stream sent and awaits goes to the
        supervisor if it played (not if a clear cut it); any other is ignored, counted."""
        echo = self.writer.marks.echoed(name)
        if echo is None:
            self.ignored.add("unknown_mark", f"call {self.call_sid}", name)
            return
        mark, played = echo
        self.marks_played += 1
        if played:
            self.dispatcher.tell("supervisor", m.MarkPlayed(mark.utterance, mark.frames))

    def dtmf(self, digit: str) -> None:
        self.dispatcher.tell("supervisor", m.DtmfReceived(digit))

    def answered_by(self, who: str) -> None:
        """Twilio's answering-machine detection said who took this outbound call."""
        self.dispatcher.tell("supervisor", m.AnsweredBy(who))

    def abort(self) -> None:
        """Drop the stream's connection at once, as a crash would (fault injection)."""
        if self.transport is not None:
            self.transport.abort()

    def inject_fault(self, role: str) -> None:
        self.dispatcher.tell(role, m.InjectFault("fault-injection endpoint"))

    # -- ending ------------------------------------------------------------------------

    def end_because(self, reason: str, resumable: bool = False) -> None:
        """Why the stream ends, recorded as the call's ``stop_reason`` (the latest given
        wins) before ``stop``. Not ``resumable`` (the caller or we hung up, bad input): the
        redirect Twilio follows gets ``<Hangup/>``; once so, it stays so. ``resumable`` (the
        connection dropped): a new stream may carry the call on."""
        self._stop_reason = reason
        self._resumable = self._resumable and resumable

    def expect_redirect(self, reason: str) -> None:
        """The bridge is about to replace the call's TwiML (``reason``; empty: it did not
        after all): Twilio's ``stop`` on this stream will not mean the caller hung up."""
        self.redirected = reason

    def played_out(self) -> bool:
        """Everything the agent sent has played: nothing queued here, every mark echoed."""
        return self.writer.idle and len(self.writer.marks) == 0

    @property
    def stop_reason(self) -> str:
        return self._stop_reason

    @property
    def resumable(self) -> bool:
        """False once the call was ended on purpose (``end_because`` not resumable)."""
        return self._resumable

    def stop(self) -> None:
        """End the call with the reason given (``end_because``; none: the socket closed):
        stop the actor tree and the writer. Idempotent."""
        if self.state == "ended":
            return
        if self._checkpoint_due is not None:  # the latest state, before the record
            self.checkpoint()
        self.state = "ended"
        reason = self._stop_reason = self._stop_reason or "socket closed"
        self.dispatcher.tell("supervisor", m.CallStopped(reason))
        self.dispatcher.close()
        self.writer.close()
        if self.recording is not None:  # what Twilio still had buffered never played
            self.recording.recorder.cleared(self.clock())
            self._stop_recording("")
        self.note("stopped", reason=reason)
        if self.metrics is not None:
            self.metrics.call_ended(reason, self.frames_in, self.writer.frames_sent)

    def _stop_recording(self, why: str) -> None:
        """End this stream's recording (the writer completes the file: ``recording.ready``
        follows); ``why``: it stopped before the call did (noted on the timeline)."""
        recording, self.recording = self.recording, None
        if recording is None:
            return
        self.writer.recorder = None
        if why:
            self.note(
                "recording.stopped",
                reason=why,
                seconds=round(recording.recorder.samples / 8000, 1),
                part=recording.part,
            )
        recording.close()

    # -- CallIO, for the supervisor ---------------------------------------------------------

    def send_frame(self, payload: bytes) -> None:
        self.writer.frame(payload)

    def send_mark(self, mark: MarkName) -> None:
        self.writer.mark(mark)

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
        timeline = self.timeline
        data = bounded_data(data)
        entry = timeline.add(self.clock(), event, **data)
        self.figures.observe(event, data)
        if self._publish is not None:
            self._publish(event, self.call_sid, data)
        if self._watch is not None and entry is not None:
            self._watch(self.call_sid, len(timeline.events) - 1, entry)
        if event in CHECKPOINT_EVENTS and self.store is not None and self._checkpoint_due is None:
            # Coalesced (one per loop iteration at most) and rate-limited, carrying every change.
            loop = asyncio.get_running_loop()
            budget = self._checkpoint_budget
            budget.take(self.clock(), 0.0)  # brought up to now
            wait = budget.retry_after()
            self._checkpoint_due = (
                loop.call_later(wait, self.checkpoint) if wait > 0 else loop.call_soon(self.checkpoint)
            )

    def carry_over(self, event: str, data: dict[str, Any]) -> None:
        """An event of this call's earlier stream that came after its last checkpoint (a
        recording completes a moment after its stream ends): into the timeline and the
        console's feed only, as it was already published."""
        entry = self.timeline.add(self.clock(), event, **data)
        if self._watch is not None and entry is not None:
            self._watch(self.call_sid, len(self.timeline.events) - 1, entry)

    def checkpoint(self, full: bool = False) -> None:
        """Post this call's state to the store (what a resume on another process needs):
        the timeline events since the last checkpoint, or with ``full`` (a store that may
        have lost them) the latest ``CHECKPOINT_TIMELINE`` of them."""
        if self._checkpoint_due is not None:
            self._checkpoint_due.cancel()
            self._checkpoint_due = None
        if self.store is None or self.state != "live":
            return
        events = self.timeline.events
        since = 0 if full else self._checkpointed_events
        self._checkpoint_budget.spend(self.clock())  # a forced one (stop, adoption) too
        self._checkpointed_events = len(events)
        view = self.to_json(with_timeline=False)
        self.store.checkpoint(
            self.call_sid,
            {
                "pid": os.getpid(),
                "t0_wall": time.time() - (self.clock() - self.timeline.t0),
                "resumes": self.resumes,
                **self.supervisor.snapshot(),  # conversation, played_upto
                "view": view,
                "timeline_add": events[max(since, len(events) - CHECKPOINT_TIMELINE) :],
                "timeline_reset": since == 0,
            },
        )

    def end(self, reason: str) -> None:
        """The supervisor ends the call (the agent said goodbye, a child gave up)."""
        level = logging.INFO if reason in NORMAL_ENDS else logging.WARNING
        log.log(level, "call %s: ending: %s", self.call_sid, reason)
        self.end_because(reason)
        self._hang_up(reason)

    def act(self, kind: str, args: dict[str, Any], done: Callable[[dict[str, Any]], None]) -> None:
        """A telephony action asked by the call's Upstream (``callbridge.actions``): checked
        here, carried out by ``self.telephony`` (None: none is available)."""
        try:
            args = actions.check(kind, args)
        except actions.ActionError as exc:
            done({"ok": False, "error": str(exc)})
            return
        if self.telephony is None:
            done({"ok": False, "error": f"{kind}: telephony actions are not available on this bridge"})
            return
        self.telephony(self, kind, args, done)

    def outlive(self, closing: Coroutine[Any, Any, Any]) -> None:
        self.agent_closing = asyncio.get_running_loop().create_task(closing)

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
            "source": self.source,
            "state": self.state,
            "pid": os.getpid(),
            "resumes": self.resumes,
            "started_at": self.started_wall,
            "duration_ms": round((self.clock() - self.timeline.t0) * 1000.0),
            "stop_reason": self.stop_reason,
            "figures": self.figures.to_json(),
        }

    def live_figures(self) -> dict[str, Any]:
        """What the console's meters show, sampled (not per frame): the level of the
        latest frame each way since the last sample (dBFS; -100 when none came), frame
        counts, duration."""
        frames_in, frames_out = self.frames_in, self.writer.frames_sent
        seen_in, seen_out = self._sampled
        self._sampled = (frames_in, frames_out)
        return {
            "in_db": level_db(self.last_in) if frames_in != seen_in else -100.0,
            "out_db": level_db(self.writer.last_sent) if frames_out != seen_out else -100.0,
            "frames_in": frames_in,
            "frames_out": frames_out,
            "duration_ms": round((self.clock() - self.timeline.t0) * 1000.0),
        }

    def to_json(self, with_timeline: bool = True) -> dict[str, Any]:
        restarts = self.supervisor.view().restarts
        record = {
            **self.summary(),
            "stats": {
                "frames_in": self.frames_in,
                "frames_out": self.writer.frames_sent,
                "frames_dropped_out": self.writer.frames_dropped,
                "marks_sent": self.writer.marks_sent,
                "marks_played": self.marks_played,
                "marks_unechoed": self.writer.marks.forgotten,
                "ignored": self.ignored.to_json(),
                "messages_delivered": self.dispatcher.delivered,
                "messages_dropped": self.dispatcher.dropped,
                "restarts": {c.role: restarts[c.role] for c in CHILDREN},
            },
            "timeline_dropped": self.timeline.dropped,
        }
        if with_timeline:
            record["timeline"] = self.timeline.to_list()
        return record


def level_db(payload: bytes) -> float:
    """RMS level of a mu-law frame in dBFS (-100 for silence or nothing)."""
    if not payload:
        return -100.0
    power = float(ULAW_SQUARED[np.frombuffer(payload, dtype=np.uint8)].mean())
    return round(10.0 * math.log10(power / 32768.0**2), 1) if power > 0 else -100.0


class CallRegistry:
    """Live calls, and the records of the last ``history`` ended ones. ``on_change`` is
    told each call's summary when it starts and when it ends."""

    def __init__(self, history: int, on_change: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.live: dict[str, Call] = {}
        self.ended: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.history = history
        self.total = 0
        self.on_change = on_change
        self.aliases: OrderedDict[tuple[str, str], str] = OrderedDict()
        """(provider, remote call id) -> CallSid, for live and kept ended calls."""

    def add(self, call: Call) -> None:
        self.live[call.call_sid] = call
        self.total += 1
        if self.on_change is not None:
            self.on_change(call.summary())

    def finish(self, call: Call) -> None:
        if self.live.get(call.call_sid) is call:
            del self.live[call.call_sid]
        self.ended[call.call_sid] = call.to_json()
        self.ended.move_to_end(call.call_sid)
        while len(self.ended) > self.history:
            self.ended.popitem(last=False)
        if self.on_change is not None:
            self.on_change(summary_of(self.ended[call.call_sid]))
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

    def ended_listing(self) -> list[dict[str, Any]]:
        """Summaries of the ended calls kept, most recent first."""
        return [summary_of(record) for record in reversed(self.ended.values())]

    def live_frames(self) -> list[tuple[int, int]]:
        return [(c.frames_in, c.writer.frames_sent) for c in self.live.values() if c.state != "ended"]
