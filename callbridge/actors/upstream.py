"""Upstream child: the call's voice-AI back end, behind ``upstreams.base.Backend``.

The back end is resolved once per call by the supervisor (``upstreams.choose``:
``UPSTREAM``, or the call's ``upstream`` stream parameter), which hands its
``BackendSpec`` to this actor; the back end is built at ``CallStarted``. The default is
the embedded agent (``upstreams.embedded``): VAD, streaming STT, an agent, streaming
TTS; it also reads DTMF keys back. The remote ones (``upstreams.vapi``,
``upstreams.openai_realtime``) share ``upstreams.remote``. This actor adapts the actor world to the back end: messages in
become back-end calls, and the back end's ``Port`` becomes messages out (agent audio to
the Codec, ``EndCall``, timeline notes and the remote's call id to the supervisor) and
tasks owned by this actor.

Restart: a fresh Upstream gets the same ``Conversation`` from the supervisor (agent and
its state, history, utterance numbering), so the conversation goes on; what was being
spoken or recognised at the crash is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..upstreams.base import Backend, BackendSpec, Conversation
from ..upstreams.voicemail import Voicemail, voicemail_text
from . import messages as m
from .runtime import Actor, ActorContext

if TYPE_CHECKING:
    from ..config import Settings


class _Idle(Backend):
    """The back end until ``CallStarted``: ignores everything."""

    def start(self, call: m.CallStarted) -> None: ...
    def caller_audio(self, msg: m.CallerAudio) -> None: ...
    def stop(self) -> None: ...


class Upstream(Actor):
    role = "upstream"

    def __init__(
        self, ctx: ActorContext, settings: Settings, conversation: Conversation, spec: BackendSpec
    ) -> None:
        super().__init__(ctx)
        self.settings = settings
        self.conversation = conversation
        self.spec = spec
        self.backend: Backend = _Idle(self, conversation)
        self.playback = m.Playback()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.next_request = 0
        self.parameters: dict[str, str] = {}

    def stopped(self) -> None:
        self.backend.stop()

    # -- messages in ---------------------------------------------------------------------

    def receiveMsg_CallStarted(self, msg: m.CallStarted) -> None:
        self.parameters = msg.parameters
        self.backend = self.spec.create(self, self.conversation, self.settings)
        self.backend.playback = self.playback
        self.backend.start(msg)

    def receiveMsg_CallerUlaw(self, msg: m.CallerUlaw) -> None:
        self.backend.caller_ulaw(msg)

    def receiveMsg_CallerAudio(self, msg: m.CallerAudio) -> None:
        self.backend.caller_audio(msg)

    def receiveMsg_DtmfReceived(self, msg: m.DtmfReceived) -> None:
        self.backend.dtmf(msg.digit)

    def receiveMsg_MarkPlayed(self, msg: m.MarkPlayed) -> None:
        self.backend.mark_played(msg.mark)

    def receiveMsg_Playback(self, msg: m.Playback) -> None:
        self.playback = self.backend.playback = msg

    def receiveMsg_AgentAudioSent(self, msg: m.AgentAudioSent) -> None:
        self.backend.audio_sent(msg.utterance)

    def receiveMsg_SpeechRejected(self, msg: m.SpeechRejected) -> None:
        self.backend.speech_rejected()

    def receiveMsg_Interrupted(self, msg: m.Interrupted) -> None:
        self.backend.interrupted(msg.utterance, msg.played_ms)

    def receiveMsg_CallStopped(self, msg: m.CallStopped) -> None:
        self.backend.stop()

    def receiveMsg_HangUpAfterPlayed(self, msg: m.HangUpAfterPlayed) -> None:
        self.backend.hang_up_requested(msg.reason)

    def receiveMsg_LeaveVoicemail(self, msg: m.LeaveVoicemail) -> None:
        """An answering machine: the back end stops (what it was saying is cut) and the
        ``Voicemail`` back end leaves the message (``upstreams/voicemail.py``)."""
        if isinstance(self.backend, Voicemail):
            return
        old = self.backend
        old.interrupted(msg.cut, 0)
        old.stop()
        text = voicemail_text(self.settings, self.conversation, self.parameters)
        self.backend = Voicemail(self, self.conversation, self.settings, text)
        self.backend.playback = self.playback
        self.backend.start()

    def receiveMsg_ActionDone(self, msg: m.ActionDone) -> None:
        done = self.pending.get(msg.request)
        if done is not None and not done.done():
            done.set_result(msg.outcome)

    # -- the back end's Port -------------------------------------------------------------

    def audio(self, utterance: int, pcm: bytes, rate: int) -> None:
        self.ctx.tell("codec", m.AgentAudio(utterance, pcm, rate))

    def ulaw(self, utterance: int, payload: bytes) -> None:
        self.ctx.tell("codec", m.AgentUlaw(utterance, payload))

    def bound(self, provider: str, remote_id: str) -> None:
        self.ctx.tell_parent(m.UpstreamBound(provider, remote_id))

    def utterance_end(self, utterance: int) -> None:
        self.ctx.tell("codec", m.AgentUtteranceEnd(utterance))

    def note(self, event: str, **data: Any) -> None:
        self.ctx.note(event, **data)

    def caller_speech(self, onset: float) -> None:
        self.ctx.tell("bargein", m.CallerSpeech(onset, self.ctx.now()))

    def end_call(self, reason: str) -> None:
        self.ctx.tell_parent(m.EndCall(reason))

    async def act(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """Ask the supervisor (and through it the gateway) for a telephony action; wait
        for its outcome. Pending requests die with this actor (a restart): the tool that
        asked times out."""
        self.next_request += 1
        request = self.next_request
        done = self.pending[request] = asyncio.get_running_loop().create_future()
        self.ctx.tell_parent(m.CallAction(request, kind, args))
        try:
            return await done
        finally:
            self.pending.pop(request, None)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        return self.ctx.spawn(coro, name)

    def now(self) -> float:
        return self.ctx.now()
