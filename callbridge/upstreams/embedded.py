"""The embedded voice agent: listen (VAD, endpointing, streaming STT), think (an
``Agent``), speak (streaming TTS). Offline by default.

Turn discipline:
- one turn in flight per call: finals that arrive while a reply is being produced wait,
  and are answered together, as one turn, when it is done (never two overlapping replies);
- the agent's first text piece, and each one after, must come within ``AGENT_TIMEOUT_S``;
  on a timeout or an ``AgentError`` before anything was said the caller hears a short
  fallback ("One moment, please.") and the turn is retried after each pause of
  ``UPSTREAM_RETRIES_S`` (1, 2, 4 s); after that the agent apologises and the call ends
  once the apology has played;
- a reply that fails half-way keeps what was said (no retry: it would repeat itself);
- an agent that says goodbye (``agent.ended``), or whose tool asks to hang up (``end_call``),
  ends the call once its last words played;
- tools: before each reply the agent is bound to the call's ``CallTools`` (``calltools``)
  and the user's served tools (``TOOLS_URL``, ``usertools``); a tool's filler is spoken
  in turn with the reply (after what was already said of it), and the time a tool runs
  does not count against ``AGENT_TIMEOUT_S``;
- a recorded call (``RECORDING``) starts with ``RECORDING_NOTICE``, said before the greeting;
- on an outbound call (stream parameter ``direction=outbound``) the greeting waits for the
  callee's first words ("Hello?": their final transcript) or ``OUTBOUND_GREETING_WAIT_S``;
  the call's own ``greeting`` parameter, when given, replaces the agent's.

Timeline: ``transcript.partial``, ``transcript.final``, ``agent.reply``, ``agent.error``,
and ``turn`` with the latencies of each answered turn: caller's last speech -> end of
turn detected (``endpoint_ms``, the configured silence) -> final transcript (``stt_ms``)
-> first agent text (``agent_ms``) -> first audio frame sent (``tts_ms``), and in all
``voice_to_voice_ms`` (caller's last speech frame -> agent's first frame sent).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..actors import messages as m
from ..agents.base import Agent, AgentError, Turn, create_agent
from ..agents.loader import is_agent_path
from ..options import ConfigError
from ..retry import Failure, RetryPolicy
from ..speech import vad
from ..speech.engines import recognizer_for
from ..speech.turnend import Verdict, judge
from ..usertools import load_served, served_tools
from .base import Backend, BackendSpec, Conversation, Port
from .calltools import CallTools
from .listener import Heard, Listener
from .speaker import APOLOGY, FALLBACK, GOODBYE, Speaker, Utterance, prewarm_voice, shared_tts

if TYPE_CHECKING:
    from ..config import Settings

DTMF_WORDS = {"*": "star", "#": "pound"}
HANDOVER_POLL_S = 0.02
"""How often a handover checks whether its line has played (``_handover``)."""


async def prewarm(settings: Settings) -> None:
    """Load what the first call would otherwise load on the event loop: the TTS voice,
    the VAD model, the speech recogniser (pocketsphinx's decoders, or the speech workers with
    Whisper and the Piper voice, which also speaks the greeting and fallback lines once:
    they start at once on a call) and the agent's module. Run once at start-up, before calls arrive."""
    try:
        agent = agent_for(settings, "CAprewarm")
    except AgentError as exc:  # your own agent's factory failed or returned no Agent
        raise ConfigError(str(exc)) from None
    voice = shared_tts(settings.speech)
    vad.preload()
    await load_served(settings.tools)
    await prewarm_voice(voice, (settings.speech.greeting, agent.greeting() or "", FALLBACK, APOLOGY, GOODBYE))
    await recognizer_for(settings.speech, agent.vocabulary()).prewarm()


def agent_for(settings: Settings, call_sid: str) -> Agent:
    a = settings.agents
    if a.name == "openai":
        return create_agent(
            "openai",
            base_url=a.openai_base_url,
            model=a.openai_model,
            api_key=a.openai_api_key or None,
            call_sid=call_sid,
            timeout_s=a.timeout_s,
            max_tokens=a.openai_max_tokens,
            max_tokens_param=a.openai_max_tokens_param,
        )
    if a.name == "webhook":
        return create_agent(
            "webhook",
            url=a.webhook_url,
            secret=a.webhook_secret or None,
            call_sid=call_sid,
            timeout_s=a.timeout_s,
        )
    if is_agent_path(a.name):
        return create_agent(a.name, call_sid=call_sid)
    return create_agent("desk", call_sid=call_sid, transfer_to=settings.telephony.transfer_to or None)


@dataclass
class _TurnTimes:
    last_speech: float
    detected: float
    final: float
    first_text: float = 0.0


def turn_policy(settings: Settings) -> RetryPolicy:
    """An agent's turn: each piece of the reply within ``AGENT_TIMEOUT_S``, retried after
    the pauses of ``UPSTREAM_RETRIES_S`` on a timeout or an ``AgentError``."""
    return RetryPolicy(
        "agent turn",
        pauses_s=settings.backends.retry_schedule,
        timeout_s=settings.agents.timeout_s,
        errors=(TimeoutError, AgentError),
    )


class EmbeddedBackend(Backend):
    def __init__(self, port: Port, conversation: Conversation, settings: Settings) -> None:
        super().__init__(port, conversation)
        self.settings = settings
        self.retry = turn_policy(settings)
        self.speaker = Speaker(
            port,
            shared_tts(settings.speech),
            conversation.new_utterance,
        )
        self.listener = Listener(port, settings.speech, self.heard, self._judge)
        self.pending: list[Heard] = []
        self.turn_task: asyncio.Task[None] | None = None
        self.turn_times: dict[int, _TurnTimes] = {}
        self.reply_turns: dict[int, int] = {}
        """utterance -> index of its agent turn in the history (for truncation)."""
        self.tools = CallTools(port, "", self._filler, self.retry.timeout_s, self._handover)
        self.reply_utterance: Utterance | None = None
        """The reply being spoken, while its agent may still add to it."""
        self.greeting = ""
        """The call's own greeting (stream parameter ``greeting``, from ``POST /calls``)."""
        self.awaiting_hello: asyncio.Task[None] | None = None
        """An outbound call's greeting, waiting for the callee to speak first."""

    # -- call events ---------------------------------------------------------------------

    def start(self, call: m.CallStarted) -> None:
        conv = self.conversation
        self.tools = CallTools(self.port, call.call_sid, self._filler, self.retry.timeout_s, self._handover)
        if conv.agent is None:
            conv.agent = agent_for(self.settings, call.call_sid)
        self.listener.listen_for(conv.agent.vocabulary())
        self.greeting = call.parameters.get("greeting", "")
        wait_s = self.settings.outbound.greeting_wait_s
        if not conv.greeted and call.parameters.get("direction") == "outbound" and wait_s > 0:
            # Someone picks up and says "Hello?": greet them once they have (``heard``),
            # or after ``OUTBOUND_GREETING_WAIT_S`` of them saying nothing, not over them.
            self.awaiting_hello = self.port.spawn(self._greet_after(wait_s), "greeting_wait")
            self.port.note("greeting.waiting", wait_s=wait_s)
        elif not conv.greeted:
            self._greet()
        elif conv.resume_say:  # resumed on a new stream: repeat what the caller missed
            text, conv.resume_say = conv.resume_say, None
            self._said(self.speaker.say(text, "resume_repeat"), text)
            if conv.hang_up_after is not None and conv.last_said is not None:
                conv.hang_up_after = conv.last_said[0]

    def _greet(self, why: str = "") -> None:
        conv = self.conversation
        assert conv.agent is not None
        conv.greeted = True
        if self.awaiting_hello is not None:
            self.awaiting_hello.cancel()
            self.awaiting_hello = None
            self.port.note("greeting.heard_callee" if why == "heard" else "greeting.wait_over")
        recordings = self.settings.recordings
        if recordings.mode != "off" and recordings.notice.strip():  # said before anything else
            self._said(self.speaker.say(recordings.notice, "recording_notice"), recordings.notice)
        greeting = self.greeting or conv.agent.greeting() or self.settings.speech.greeting
        if greeting.strip():
            self._said(self.speaker.say(greeting, "greeting"), greeting)

    async def _greet_after(self, wait_s: float) -> None:
        await asyncio.sleep(wait_s)
        self.awaiting_hello = None  # this task: not cancelled by the greeting it starts
        self.port.note("greeting.wait_over")
        self._greet()

    def caller_audio(self, msg: m.CallerAudio) -> None:
        self.listener.feed(np.frombuffer(msg.pcm, dtype="<i2"), msg.at)

    def _judge(self, text: str) -> Verdict:
        """Is the caller's turn so far over? Its words, and the agent's opinion."""
        agent = self.conversation.agent
        return judge(text, agent.turn_complete if agent is not None else None)

    def dtmf(self, digit: str) -> None:
        self.speaker.say(f"You pressed {DTMF_WORDS.get(digit, digit)}.", "dtmf_reply")

    def audio_sent(self, utterance: int) -> None:
        times = self.turn_times.pop(utterance, None)
        if times is None:
            return
        now = self.port.now()
        self.port.note(
            "turn",
            utterance=utterance,
            endpoint_ms=_ms(times.detected - times.last_speech),
            stt_ms=_ms(times.final - times.detected),
            agent_ms=_ms(times.first_text - times.final),
            tts_ms=_ms(now - times.first_text),
            voice_to_voice_ms=_ms(now - times.last_speech),
        )

    def stop(self) -> None:
        self.listener.stop()
        if self.awaiting_hello is not None:
            self.awaiting_hello.cancel()
            self.awaiting_hello = None

    def speech_rejected(self) -> None:
        """The turn in progress is the agent's own echo: drop it, transcribe nothing."""
        self.listener.reject()

    def interrupted(self, utterance: int, played_ms: int) -> None:
        """Barge-in: stop speaking, stop the agent's generation for this turn, and keep in
        the history only what the caller heard of the cut reply."""
        self.speaker.cancel()
        if self.turn_task is not None and not self.turn_task.done():
            self.turn_task.cancel()
        conv = self.conversation
        if conv.last_said is not None and conv.last_said[0] == utterance:
            conv.last_said = None  # cut on purpose: never repeated on a resume
        if conv.hang_up_after is not None and conv.hang_up_after <= utterance:
            conv.hang_up_after = None  # a cut goodbye: the caller wants to go on
        index = self.reply_turns.get(utterance)
        if index is not None:
            full = conv.history[index].text
            heard = self.speaker.heard(utterance, played_ms)
            conv.history[index] = Turn("agent", heard + " —" if heard != " ".join(full.split()) else full)
            self.port.note("agent.truncated", utterance=utterance, heard=heard, said=full[:1000])

    # -- turns ----------------------------------------------------------------------------

    def heard(self, heard: Heard) -> None:
        """A final transcript (from the listener). Empty ones (noise) start no turn, and
        none does once the agent has said goodbye."""
        if not heard.text or self.conversation.hang_up_after is not None:
            return
        if self.awaiting_hello is not None:  # the callee's "Hello?": answered by the greeting
            self.conversation.history.append(Turn("caller", heard.text))
            self._greet("heard")
            return
        self.pending.append(heard)
        if self.turn_task is None or self.turn_task.done():
            self.turn_task = self.port.spawn(self._turns(), "turns")

    async def _turns(self) -> None:
        while self.pending and self.conversation.hang_up_after is None:
            batch, self.pending = self.pending, []
            text = " ".join(h.text for h in batch)
            last = batch[-1]
            await self._answer(text, _TurnTimes(last.last_speech, last.detected_at, last.final_at))
        self.pending.clear()  # the call is ending: nothing more is answered

    async def _answer(self, text: str, times: _TurnTimes) -> None:
        conv = self.conversation
        agent = conv.agent
        assert agent is not None
        history = list(conv.history)
        conv.history.append(Turn("caller", text))
        policy = self.retry
        retries = policy.start()
        tools = self.tools
        while True:
            utterance = None
            said = ""
            tools.hang_up_reason = None
            self.reply_utterance = None
            agent.bind(tools, served_tools(self.settings.tools))
            try:
                async with aclosing(agent.reply(text, history)) as pieces:
                    async for piece in _with_timeout(pieces, policy.timeout_s, tools):
                        if self.reply_utterance is None:  # the reply's first words, or after a handover
                            first = utterance is None
                            if first:
                                times.first_text = self.port.now()
                            utterance = self.reply_utterance = self.speaker.open("reply")
                            if utterance is None:
                                return
                            if first:
                                self.turn_times[utterance.number] = times
                        assert utterance is not None
                        utterance.add(piece)
                        said += piece
            except policy.errors as exc:
                # half a reply was spoken: keep it, don't repeat it
                failure = retries.failed(exc, retry=utterance is None)
                self._turn_failed(failure)
                if utterance is not None:
                    if not utterance.closed:
                        utterance.close()
                    self._replied(said, utterance.number, agent)
                    return
                if failure.pause_s is not None:
                    await asyncio.sleep(failure.pause_s)
                    continue
                apology = self.speaker.say(APOLOGY, "apology")
                self._said(apology, APOLOGY)
                conv.history.append(Turn("agent", APOLOGY))
                conv.hang_up_after = apology.number if apology is not None else None
                return
            if utterance is None:  # the agent chose to say nothing
                self.port.note("agent.reply", text="", utterance=None)
                if tools.hang_up_reason is not None:  # never a silent hang-up
                    bye = self.speaker.say(GOODBYE, "goodbye")
                    self._said(bye, GOODBYE)
                    conv.hang_up_after = bye.number if bye is not None else None
                    if bye is None:
                        self.port.end_call(tools.hang_up_reason)
                return
            if not utterance.closed:
                utterance.close()
            self._replied(said, utterance.number, agent)
            return

    async def _handover(self) -> None:
        """Before a tool moves the call (transfer, DTMF): what the reply has said so far
        becomes an utterance of its own, and this waits until it has played (its end mark
        came back), at most ``TRANSFER_HANDOVER_WAIT_S``; the reply goes on in a new one."""
        utterance = self.reply_utterance
        if utterance is None or utterance.closed or not utterance.text.strip():
            return
        utterance.close()
        self.reply_utterance = None
        deadline = self.port.now() + self.settings.telephony.handover_wait_s
        while self.playback.played_upto < utterance.number and self.port.now() < deadline:  # noqa: ASYNC110 - Playback is replaced by messages, not awaitable
            await asyncio.sleep(HANDOVER_POLL_S)

    def _turn_failed(self, failure: Failure) -> None:
        """Noted; the caller hears a filler before the first retry."""
        exc = failure.error
        error = "timeout" if isinstance(exc, TimeoutError) else str(exc)
        self.port.note("agent.error", attempt=failure.attempt, error=error[:300])
        if failure.attempt == 1 and failure.pause_s is not None:
            self.speaker.say(FALLBACK, "fallback")

    def _filler(self, text: str) -> None:
        """A tool's filler: said next within the reply being spoken, or on its own."""
        utterance = self.reply_utterance
        if utterance is not None and not utterance.closed:
            utterance.interject(text)
        else:
            self.speaker.say(text, "filler")

    def _said(self, utterance: Utterance | None, text: str) -> None:
        if utterance is not None:
            self.conversation.last_said = (utterance.number, text)

    def _replied(self, text: str, utterance: int, agent: Agent) -> None:
        self.conversation.last_said = (utterance, text)
        self.reply_turns[utterance] = len(self.conversation.history)
        self.conversation.history.append(Turn("agent", text))
        self.port.note("agent.reply", text=text[:1000], utterance=utterance, state=_small(agent.state()))
        if agent.ended or self.tools.hang_up_reason is not None:
            self.conversation.hang_up_after = utterance


async def _with_timeout(
    pieces: AsyncIterator[str], timeout_s: float | None, tools: CallTools
) -> AsyncIterator[str]:
    """Each next piece must arrive within ``timeout_s`` (raises ``TimeoutError``), not
    counting the time a tool runs (``CallTools.busy`` moves the deadline)."""
    while True:
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                tools.deadline = deadline
                try:
                    piece = await anext(pieces)
                finally:
                    tools.deadline = None
        except StopAsyncIteration:
            return
        yield piece


SPEC = BackendSpec("embedded", "offline pipeline", EmbeddedBackend, prewarm=prewarm)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def _small(state: dict[str, Any]) -> dict[str, Any]:
    return state if len(repr(state)) <= 2000 else {"truncated": True}
