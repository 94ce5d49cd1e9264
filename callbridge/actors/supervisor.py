"""CallSupervisor: the root actor of one call, and the only one that touches I/O.

It creates the four children, forwards control (marks, DTMF, stop) to them, hands
outbound frames and marks to the call's ``CallIO`` (the gateway's socket writer),
records timeline notes, and restarts a failed child with fresh state. It owns the
call's ``Playback`` (what the caller hears of the agent, from the Codec's starts, the
echoed marks and barge-ins) and tells each new value to BargeIn and the Upstream.

Restart policy, per role, in one place (``POLICIES``): a child may be restarted
``max_restarts`` times within ``window_s``; past that the supervisor gives up on it:
``end_call`` hangs the stream up cleanly (Twilio continues with the next TwiML verb),
``run_without`` carries on without that child (only for roles the audio path does not
need).

The supervisor owns the call's state (the conversation, what Twilio played, the restarts);
the gateway reads it only through ``view()`` (a frozen ``CallView``) and ``snapshot()``
(what a resume elsewhere needs), and talks to the tree only through messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from .. import upstreams
from ..codecs.marks import MarkName
from ..config import Settings
from ..upstreams.base import Conversation
from . import messages as m
from .bargein import BargeIn
from .codec import Codec
from .jitter import Dejitter
from .runtime import Actor, ActorContext
from .upstream import Upstream


class CallIO(Protocol):
    """What the gateway provides to a call: the socket side and the record."""

    def send_frame(self, payload: bytes) -> None: ...
    def send_mark(self, mark: MarkName) -> None: ...
    def clear(self) -> float: ...
    def notify_when_sent(self, utterance: int) -> None: ...
    def end(self, reason: str) -> None: ...
    def bind_upstream(self, provider: str, remote_id: str) -> None: ...
    def act(self, kind: str, args: dict[str, Any], done: Callable[[dict[str, Any]], None]) -> None:
        """Carry out a telephony action (``callbridge.actions``); ``done(outcome)`` once, later."""
        ...

    def note(self, event: str, **data: Any) -> None: ...
    def outlive(self, closing: Coroutine[Any, Any, Any]) -> None:
        """Run ``closing`` after the actors are gone (the agent's ``aclose``)."""
        ...


@dataclass(frozen=True)
class CallView:
    """The supervisor's state of a call, read-only: ``played_upto``, the last utterance whose
    end mark Twilio echoed as played; ``restarts``, per child role, how often it was restarted."""

    played_upto: int
    restarts: Mapping[str, int]


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5
    window_s: float = 30.0
    on_give_up: str = "end_call"  # or "run_without"


CHILDREN: tuple[type[Actor], ...] = (Codec, Dejitter, Upstream, BargeIn)
PLAYBACK_TO = ("bargein", "upstream")
"""The children that read the call's ``Playback``. A progress mark (every 200 ms) changes
only what BargeIn reads (``frames``, ``at``): that value goes to BargeIn alone."""
POLICIES: dict[str, RestartPolicy] = {
    "codec": RestartPolicy(),
    "jitter": RestartPolicy(),
    "upstream": RestartPolicy(),
    "bargein": RestartPolicy(on_give_up="run_without"),
}


class CallSupervisor(Actor):
    role = "supervisor"

    def __init__(
        self,
        ctx: ActorContext,
        settings: Settings,
        io: CallIO,
        start: m.CallStarted,
        conversation: Conversation | None = None,
    ) -> None:
        super().__init__(ctx)
        self.settings = settings
        self.io = io
        self.start = start
        self.restarts: dict[str, deque[float]] = {c.role: deque() for c in CHILDREN}
        self.generation: dict[str, int] = {c.role: 0 for c in CHILDREN}
        self.restart_total = 0
        self.conversation = conversation or Conversation()
        self.voicemail = False
        """An answering machine took the call: the Upstream is leaving the message."""
        self.playback = m.Playback()
        """What the caller hears of the agent: this supervisor's, told to ``PLAYBACK_TO``."""
        self.backend = upstreams.choose(settings, start.parameters)
        """The call's back end, resolved once: its spec goes to the Codec and the Upstream."""

    @property
    def played_upto(self) -> int:
        """The last utterance whose end mark Twilio echoed as played."""
        return self.playback.played_upto

    def started(self) -> None:
        if self.backend.refused:
            self.io.note("upstream.error", error=self.backend.refused)
        for cls in CHILDREN:
            self._start_child(cls)

    def _child_args(self, cls: type[Actor]) -> tuple[Any, ...]:
        """What each child is built with: only what it needs."""
        if cls is Upstream:
            return (self.settings, self.conversation, self.backend.spec)
        if cls is Codec:
            return (self.backend.spec.caller_format(self.settings),)
        if cls is BargeIn:
            return (self.settings.speech.backchannel_ms,)
        return ()

    def stopped(self) -> None:
        agent = self.conversation.agent
        if agent is not None:  # outlives the actors: close its HTTP session, if any
            self.io.outlive(agent.aclose())

    # -- read by the gateway ---------------------------------------------------------

    def view(self) -> CallView:
        return CallView(self.played_upto, MappingProxyType(dict(self.generation)))

    def snapshot(self) -> dict[str, Any]:
        """What a resume on another stream or process needs (plain values): ``conversation``
        (``Conversation.snapshot()``) and ``played_upto``; ``Conversation.restore`` reverses it."""
        return {"conversation": self.conversation.snapshot(), "played_upto": self.played_upto}

    def _start_child(self, cls: type[Actor]) -> None:
        self.ctx.dispatcher.add(cls, self.role, *self._child_args(cls))
        start = self.start
        self.ctx.tell(
            cls.role,
            m.CallStarted(start.call_sid, start.stream_sid, start.parameters, self.generation[cls.role]),
        )
        if cls.role in PLAYBACK_TO:  # a restarted child carries on from what is playing
            self.ctx.tell(cls.role, self.playback)
        if cls.role == "upstream" and self.voicemail:  # restarted while leaving the message: again
            self.ctx.tell("upstream", m.LeaveVoicemail(self.conversation.next_utterance - 1))

    def _played(self, playback: m.Playback, to: tuple[str, ...] = PLAYBACK_TO) -> None:
        if playback is not self.playback:
            self.playback = playback
            for role in to:
                self.ctx.tell(role, playback)

    # -- from the gateway ----------------------------------------------------------

    def receiveMsg_MarkPlayed(self, msg: m.MarkPlayed) -> None:
        # Only marks we sent and Twilio played get here (the gateway drops the rest and
        # the ones a clear cut). An end mark is also an event for the Upstream (a goodbye
        # played: hang up).
        mark = msg.mark
        if not mark.is_end:
            self._played(self.playback.echo(mark, self.ctx.now()), to=("bargein",))
            return
        self.io.note("mark_played", name=str(mark))
        self.ctx.tell("upstream", msg)
        self._played(self.playback.echo(mark, self.ctx.now()))

    def receiveMsg_DtmfReceived(self, msg: m.DtmfReceived) -> None:
        self.io.note("dtmf", digit=msg.digit)
        self.ctx.tell("upstream", msg)

    def receiveMsg_AnsweredBy(self, msg: m.AnsweredBy) -> None:
        """A machine: cut what plays and have the Upstream leave the voicemail message; a
        fax: end the call; a human (or ``unknown``): the agent carries on."""
        if msg.answered_by.startswith("machine") and not self.voicemail:
            self.voicemail = True  # once: a second verdict must not cut the message
            dropped_s = self.io.clear()
            cut = self.conversation.next_utterance - 1
            self.ctx.tell("codec", m.Interrupted(cut, -1))
            self.ctx.tell("upstream", m.LeaveVoicemail(cut))
            self._played(self.playback.cut(cut))
            self.io.note("voicemail.starting", answered_by=msg.answered_by, dropped_s=round(dropped_s, 2))
        elif msg.answered_by == "fax":
            self.io.note("call_ending", reason="a fax machine answered")
            self.io.end("a fax machine answered")

    def receiveMsg_CallStopped(self, msg: m.CallStopped) -> None:
        for cls in CHILDREN:
            self.ctx.tell(cls.role, msg)

    # -- from the children ---------------------------------------------------------

    def receiveMsg_OutboundFrame(self, msg: m.OutboundFrame) -> None:
        self.io.send_frame(msg.payload)
        self.ctx.tell("bargein", msg)  # its level: echo reference

    def receiveMsg_OutboundMark(self, msg: m.OutboundMark) -> None:
        self.io.send_mark(msg.mark)

    def receiveMsg_BargeInDetected(self, msg: m.BargeInDetected) -> None:
        """Cut the agent now: ``clear`` at Twilio, drop our queue, stop TTS and the turn."""
        dropped_s = self.io.clear()
        cut = m.Interrupted(msg.utterance, msg.played_ms)
        self.ctx.tell("codec", cut)
        self.ctx.tell("upstream", cut)
        self.io.note(
            "barge_in",
            utterance=msg.utterance,
            heard_ms=msg.played_ms,
            detection_ms=round((self.ctx.now() - msg.onset) * 1000.0, 1),
            dropped_s=round(dropped_s, 2),
        )
        self._played(self.playback.cut(msg.utterance))

    def receiveMsg_UtteranceStarting(self, msg: m.UtteranceStarting) -> None:
        self.io.notify_when_sent(msg.utterance)
        self._played(self.playback.start(msg.utterance, self.ctx.now()))

    def receiveMsg_AgentAudioSent(self, msg: m.AgentAudioSent) -> None:
        self.ctx.tell("upstream", msg)

    def receiveMsg_EndCall(self, msg: m.EndCall) -> None:
        self.io.note("call_ending", reason=msg.reason)
        self.io.end(msg.reason)

    def receiveMsg_CallAction(self, msg: m.CallAction) -> None:
        def done(outcome: dict[str, Any]) -> None:
            self.ctx.tell("upstream", m.ActionDone(msg.request, outcome))

        self.io.act(msg.kind, msg.args, done)

    def receiveMsg_UpstreamBound(self, msg: m.UpstreamBound) -> None:
        self.io.bind_upstream(msg.provider, msg.remote_id)
        self.io.note("upstream.bound", provider=msg.provider, remote_id=msg.remote_id)

    def receiveMsg_TimelineNote(self, msg: m.TimelineNote) -> None:
        self.io.note(msg.event, **msg.data)

    def receiveMsg_ChildFailed(self, msg: m.ChildFailed) -> None:
        role = msg.role
        policy = POLICIES[role]
        now = self.ctx.now()
        history = self.restarts[role]
        while history and now - history[0] > policy.window_s:
            history.popleft()
        if len(history) >= policy.max_restarts:
            self.io.note("child_gave_up", child=role, error=msg.error, policy=policy.on_give_up)
            self.ctx.dispatcher.remove(role)
            if policy.on_give_up == "end_call":
                self.io.end(f"{role} failed {len(history) + 1} times in {policy.window_s:.0f} s")
            return
        history.append(now)
        self.generation[role] += 1
        self.restart_total += 1
        self._start_child(next(c for c in CHILDREN if c.role == role))
        self.io.note("child_restarted", child=role, error=msg.error, generation=self.generation[role])
