"""The interface between the Upstream actor and a voice-AI back end.

A ``Backend`` receives the call's events (start, caller audio, DTMF, marks played, the
moment an utterance's first frame left for Twilio, stop) and acts through a ``Port``:
agent audio out, utterance boundaries, timeline notes, ending the call, and tasks that
belong to the Upstream actor (cancelled when it is replaced; an exception in one fails
the actor, which the supervisor restarts).

What must outlive a restart of the Upstream actor lives in ``Conversation``, which the
supervisor owns: the agent (and its state: bookings...), the history, the utterance
counter (mark names stay unique within the call), and a pending hang-up.

A ``BackendSpec`` describes a back end to the registry (``upstreams.BACKENDS``): its
class, its option group, what it needs to run, the caller audio it wants.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..actors import messages as m
from ..agents.base import Agent, Turn
from ..codecs.marks import MarkName

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("callbridge.upstream")


class Port(Protocol):
    def audio(self, utterance: int, pcm: bytes, rate: int) -> None: ...
    def ulaw(self, utterance: int, payload: bytes) -> None: ...
    def bound(self, provider: str, remote_id: str) -> None: ...
    def utterance_end(self, utterance: int) -> None: ...
    def note(self, event: str, **data: Any) -> None: ...
    def caller_speech(self, onset: float) -> None: ...
    def end_call(self, reason: str) -> None: ...
    async def act(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """A telephony action on the call (``callbridge.actions``); its outcome."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]: ...
    def now(self) -> float: ...


@dataclass
class Conversation:
    """Per-call state that survives an Upstream restart."""

    agent: Agent | None = None
    history: list[Turn] = field(default_factory=list)
    next_utterance: int = 1
    hang_up_after: int | None = None
    """Utterance whose mark, once played, ends the call (the goodbye)."""
    greeted: bool = False
    last_said: tuple[int, str] | None = None
    """The latest greeting or reply: (utterance, text)."""
    resume_say: str | None = None
    """Set when a call resumes on a new stream: what to say again (the last thing said,
    if the caller had not heard all of it when the stream dropped)."""
    remote_call: tuple[str, str, str] | None = None
    """A remote session that may still be running (provider, its id, the URL that ends
    it): the back end that comes next (after a restart or a resume) ends it first."""
    agent_unpicklable: bool = False
    """The agent could not be pickled once: checkpoints carry no agent from then on."""

    def new_utterance(self) -> int:
        utterance = self.next_utterance
        self.next_utterance += 1
        return utterance

    # -- checkpoints: the call outlives the process carrying it --------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to carry on elsewhere; plain values (msgpack- and
        pickle-safe). The agent is pickled; one that can't be loses its own state on a
        resume (the history is kept) and says so in the log."""
        agent = None
        if self.agent is not None and not self.agent_unpicklable:
            try:
                agent = pickle.dumps(self.agent, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                self.agent_unpicklable = True  # said once, not tried at every checkpoint
                log.warning("agent %s cannot be checkpointed: %s", type(self.agent).__name__, exc)
        return {
            "agent": agent,
            "history": [[t.role, t.text] for t in self.history],
            "next_utterance": self.next_utterance,
            "hang_up_after": self.hang_up_after,
            "greeted": self.greeted,
            "last_said": list(self.last_said) if self.last_said else None,
            "remote_call": list(self.remote_call) if self.remote_call else None,
        }

    @classmethod
    def restore(cls, snap: dict[str, Any], played_upto: int) -> Conversation:
        """The conversation from ``snapshot``; ``played_upto`` is the last utterance whose
        end mark Twilio echoed. If the last thing said had not all been heard, it is said
        again once the new stream is up."""
        agent = pickle.loads(snap["agent"]) if snap.get("agent") else None
        conv = cls(
            agent=agent,
            history=[Turn(role, text) for role, text in snap.get("history", [])],
            next_utterance=int(snap.get("next_utterance", 1)),
            hang_up_after=snap.get("hang_up_after"),
            greeted=bool(snap.get("greeted", False)),
        )
        held = snap.get("remote_call")
        if isinstance(held, list) and len(held) == 3:
            conv.remote_call = (str(held[0]), str(held[1]), str(held[2]))
        last = snap.get("last_said")
        if last:
            conv.last_said = (int(last[0]), str(last[1]))
            if conv.last_said[0] > played_upto:
                conv.resume_say = conv.last_said[1]
        return conv


class Backend(ABC):
    """A voice-AI back end, as the Upstream actor drives it: built as
    ``cls(port, conversation, settings)`` once the call starts, then told the call's events.
    ``start``, ``caller_audio`` and ``stop`` are required; the other handlers are optional
    hooks that do nothing unless overridden. A back end whose ``caller_format`` is
    ``"ulaw"`` gets ``caller_ulaw`` instead of ``caller_audio``."""

    playback: m.Playback = m.Playback()
    """What the caller hears of the agent: the supervisor's, as of its latest start, end
    mark or cut (progress within an utterance, ``frames``/``at``, is BargeIn's alone)."""

    def __init__(self, port: Port, conversation: Conversation, settings: Settings | None = None) -> None:
        self.port = port
        self.conversation = conversation

    @abstractmethod
    def start(self, call: m.CallStarted) -> None:
        """The stream is up (a new call, a restarted actor or a resumed call)."""

    @abstractmethod
    def caller_audio(self, msg: m.CallerAudio) -> None:
        """20 ms of the caller, decoded (``pcm16k`` back ends; BargeIn's levels otherwise)."""

    @abstractmethod
    def stop(self) -> None:
        """The call is over or this actor is being replaced: release what it holds."""

    def caller_ulaw(self, msg: m.CallerUlaw) -> None:
        """20 ms of the caller as Twilio sent it (``ulaw`` back ends)."""
        return None

    def dtmf(self, digit: str) -> None:
        """The caller pressed a key."""
        return None

    def audio_sent(self, utterance: int) -> None:
        """The first frame of ``utterance`` just left for Twilio."""
        return None

    def interrupted(self, utterance: int, played_ms: int) -> None:
        """The caller barged in: ``utterance`` was cut after ``played_ms``."""
        return None

    def speech_rejected(self) -> None:
        """What sounded like the caller starting to talk was too short (a cough)."""
        return None

    def hang_up_requested(self, reason: str) -> None:
        """End the call once the agent's goodbye has played (a remote back end's request);
        a back end that does not track what is playing ends it now."""
        self.port.end_call(reason)

    def mark_played(self, mark: MarkName) -> None:
        """An utterance's end mark came back: hang up once the goodbye has played."""
        end_after = self.conversation.hang_up_after
        if end_after is not None and mark.is_end and mark.utterance == end_after:
            self.port.end_call("the agent ended the call")


PCM16K = "pcm16k"
"""Caller audio decoded and resampled to 16 kHz by the Codec (``CallerAudio``)."""
ULAW = "ulaw"
"""Caller audio as Twilio's mu-law bytes, untouched (``CallerUlaw``)."""


def _ready(settings: Settings) -> str:
    return ""


@dataclass(frozen=True)
class BackendSpec:
    """One back end as the registry (``upstreams.BACKENDS``) knows it; each back end's
    module declares its own ``SPEC``. A spec is resolved once per call
    (``upstreams.choose``) and handed to the actors that depend on it."""

    name: str
    """The ``UPSTREAM`` value (and the stream parameter / ``?upstream=`` value)."""
    summary: str
    """A few words for the configuration reference."""
    backend: type[Backend]
    options: type[Any] | None = None
    """Its own settings: a frozen option group (``callbridge.options``), composed into
    ``Settings`` and read with ``settings.backend(options)``."""
    problem: Callable[[Settings], str] = _ready
    """Why it cannot take a call with these settings ("" when it can): checked at start
    for ``UPSTREAM`` and per call for a requested one."""
    audio: str | Callable[[Settings], str] = PCM16K
    """The caller audio it wants, ``PCM16K`` or ``ULAW``, or a function of the settings
    giving one."""
    remote: bool = False
    """It holds a session at a provider: the ``UPSTREAM_*`` remote settings apply and
    the remote's call id is reported (``upstream.bound``)."""
    prewarm: Callable[[Settings], Awaitable[None]] | None = None
    """Loads what its first call would otherwise load on the event loop; run once at
    start-up when it is ``UPSTREAM``."""

    def caller_format(self, settings: Settings) -> str:
        return self.audio if isinstance(self.audio, str) else self.audio(settings)

    def create(self, port: Port, conversation: Conversation, settings: Settings) -> Backend:
        return self.backend(port, conversation, settings)
