"""Messages between the actors of one call.

One small immutable class per intent; each docstring names sender -> receiver. Every
message encodes to msgpack and back (``encode``/``decode``) so the same messages can
cross a process boundary (production mode) unchanged; in-process they travel as objects.
Audio travels as bytes: mu-law for Twilio-side frames, little-endian int16 PCM otherwise.

``SYSTEM`` messages (start, stop, failures, marks) are never queued behind audio: the
dispatcher delivers them before any pending data message.
"""

from __future__ import annotations

import math
from dataclasses import Field, astuple, dataclass, field, replace
from dataclasses import fields as dataclass_fields
from typing import TYPE_CHECKING, Any, ClassVar

import msgpack

from ..codecs.marks import MarkName


class Message:
    """Base of all actor messages. ``system`` ones jump the queue."""

    system: ClassVar[bool] = False
    __slots__ = ()
    if TYPE_CHECKING:  # every message is a dataclass: astuple() and fields() take it
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]


# --- inbound audio ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaReceived(Message):
    """Gateway -> Dejitter: one Twilio media frame as it arrived (mu-law 8 kHz; maybe out
    of order, duplicated, late or missing)."""

    chunk: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class CallerUlaw(Message):
    """Dejitter -> Codec (and, for a back end that takes mu-law, Codec -> Upstream): the
    caller's mu-law 8 kHz, one 20 ms frame, in order and continuous (gaps concealed).
    ``at``: the frame's media time on the caller's clock (monotonic s, the end of its
    20 ms; ``codecs.inorder``): the clock of the VAD, endpointer, barge-in and echo logic."""

    chunk: int
    timestamp: int
    payload: bytes
    at: float


@dataclass(frozen=True, slots=True)
class CallerAudio(Message):
    """Codec -> Upstream and BargeIn: caller PCM, continuous; ``at`` as in ``CallerUlaw``."""

    chunk: int
    timestamp: int
    pcm: bytes
    rate: int
    at: float


# --- outbound audio --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentAudio(Message):
    """Upstream -> Codec: agent speech, int16 PCM at ``rate``, part of ``utterance``."""

    utterance: int
    pcm: bytes
    rate: int


@dataclass(frozen=True, slots=True)
class AgentUlaw(Message):
    """Upstream -> Codec: agent speech already in Twilio's format (mu-law 8 kHz, any
    length), part of ``utterance``: framed as is, never decoded or resampled."""

    utterance: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class AgentUtteranceEnd(Message):
    """Upstream -> Codec: the utterance is complete; flush and mark it."""

    utterance: int


@dataclass(frozen=True, slots=True)
class OutboundFrame(Message):
    """Codec -> CallSupervisor: one 160-byte (20 ms) mu-law payload for Twilio."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboundMark(Message):
    """Codec -> CallSupervisor: send a Twilio ``mark`` after the frames before it: the
    end mark of ``utterance`` (``frames`` 0) or a progress mark after ``frames`` of it."""

    utterance: int
    frames: int = 0

    @property
    def mark(self) -> MarkName:
        return MarkName(self.utterance, self.frames)


@dataclass(frozen=True, slots=True)
class UtteranceStarting(Message):
    """Codec -> CallSupervisor: the frames that follow start ``utterance``; report
    when the first of them actually leaves for Twilio."""

    utterance: int


@dataclass(frozen=True, slots=True)
class AgentAudioSent(Message):
    """CallSupervisor -> Upstream: the first frame of ``utterance`` was just sent."""

    system: ClassVar[bool] = True
    utterance: int


@dataclass(frozen=True, slots=True)
class EndCall(Message):
    """Upstream -> CallSupervisor: hang up now (the agent said goodbye, or gave up)."""

    system: ClassVar[bool] = True
    reason: str


@dataclass(frozen=True, slots=True)
class CallerSpeech(Message):
    """Upstream -> BargeIn: the caller has been speaking since ``onset`` (monotonic s),
    sustained long enough to start a turn; detected at ``detected``."""

    system: ClassVar[bool] = True
    onset: float
    detected: float


@dataclass(frozen=True, slots=True)
class SpeechRejected(Message):
    """BargeIn -> Upstream: the speech that began at ``onset`` is the agent's own echo;
    drop that turn."""

    system: ClassVar[bool] = True
    onset: float


@dataclass(frozen=True, slots=True)
class BargeInDetected(Message):
    """BargeIn -> CallSupervisor: the caller talks over ``utterance``; cut it now."""

    system: ClassVar[bool] = True
    utterance: int
    played_ms: int
    onset: float


@dataclass(frozen=True, slots=True)
class Interrupted(Message):
    """CallSupervisor -> Codec and Upstream: ``utterance`` (and all before it) was cut
    after the caller heard ``played_ms`` of it; drop what is left of them."""

    system: ClassVar[bool] = True
    utterance: int
    played_ms: int


@dataclass(frozen=True, slots=True)
class Playback(Message):
    """CallSupervisor -> BargeIn and Upstream: what the caller hears of the agent, as
    known from the Codec (an utterance's first frame leaves) and Twilio's echoed marks.
    The supervisor owns the call's one ``Playback`` and sends each new value (in order
    with the frames, like the ``UtteranceStarting`` it follows); the others read the
    latest, never track their own. Pure: the transitions return a new value."""

    playing: int | None = None
    """The utterance audible now: started, its end mark not back, not cut."""
    started: int = 0
    """The latest utterance that started playing (cut ones never do)."""
    played_upto: int = 0
    """The latest utterance whose end mark came back played."""
    cut_upto: int = 0
    """The latest utterance cut by a barge-in (it and all before it)."""
    frames: int = 0
    """Frames of ``playing`` known played (its latest progress mark)."""
    at: float = 0.0
    """When ``frames`` was learnt (its start, or its progress mark)."""
    quiet_since: float = -math.inf
    """When an end mark last came back."""
    starts: int = 0
    """Utterance starts so far (each one, even of the same utterance after a restart)."""

    def played_ms(self, now: float, mark_every_ms: int = 200) -> int:
        """How much of ``playing`` the caller has heard: the last progress mark and the
        time since, at most one mark interval more."""
        return self.frames * 20 + min(mark_every_ms, round((now - self.at) * 1000))

    def start(self, utterance: int, now: float) -> Playback:
        """The first frame of ``utterance`` goes out now (nothing if it was cut)."""
        if utterance <= self.cut_upto:
            return self
        return replace(self, playing=utterance, started=utterance, frames=0, at=now, starts=self.starts + 1)

    def echo(self, mark: MarkName, now: float) -> Playback:
        """Twilio echoed ``mark``: it played."""
        if not mark.is_end:
            if mark.utterance != self.playing:
                return self
            return replace(self, frames=mark.frames, at=now)
        playing = None if mark.utterance == self.playing else self.playing
        return replace(
            self, playing=playing, played_upto=max(self.played_upto, mark.utterance), quiet_since=now
        )

    def cut(self, utterance: int) -> Playback:
        """A barge-in cuts ``utterance`` and all before it."""
        playing = None if self.playing is not None and self.playing <= utterance else self.playing
        return replace(self, playing=playing, cut_upto=max(self.cut_upto, utterance))


@dataclass(frozen=True, slots=True)
class UpstreamBound(Message):
    """Upstream -> CallSupervisor: the remote back end knows this call as ``remote_id``
    (its webhooks name that id; the gateway maps it back to the CallSid)."""

    system: ClassVar[bool] = True
    provider: str
    remote_id: str


@dataclass(frozen=True, slots=True)
class CallAction(Message):
    """Upstream -> CallSupervisor: carry out a telephony action on the call
    (``callbridge.actions``); its outcome comes back as ``ActionDone`` with ``request``."""

    system: ClassVar[bool] = True
    request: int
    kind: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionDone(Message):
    """CallSupervisor -> Upstream: the outcome of ``CallAction`` ``request``
    (``{"ok": bool, ...}``)."""

    system: ClassVar[bool] = True
    request: int
    outcome: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HangUpAfterPlayed(Message):
    """Gateway (a remote back end's server-URL request) -> Upstream: end the call once
    what the agent is saying has played (its goodbye)."""

    system: ClassVar[bool] = True
    reason: str


@dataclass(frozen=True, slots=True)
class AnsweredBy(Message):
    """Gateway -> CallSupervisor: Twilio's answering-machine detection on an outbound call
    (``answered_by``: ``human``, ``machine_start``, ``machine_end_beep``, ... as Twilio
    reports it). A machine gets the voicemail message, a fax the end of the call."""

    system: ClassVar[bool] = True
    answered_by: str


@dataclass(frozen=True, slots=True)
class LeaveVoicemail(Message):
    """CallSupervisor -> Upstream: an answering machine took the call: stop the back end,
    say the voicemail message, hang up once it has played. ``cut``: the latest utterance
    allocated so far (its audio, and that of every one before it, is dropped)."""

    system: ClassVar[bool] = True
    cut: int


# --- control -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallStarted(Message):
    """CallSupervisor -> every child: the call's identity. ``generation`` counts the
    child's restarts (0: first start)."""

    system: ClassVar[bool] = True
    call_sid: str
    stream_sid: str
    parameters: dict[str, str] = field(default_factory=dict)
    generation: int = 0


@dataclass(frozen=True, slots=True)
class CallStopped(Message):
    """CallSupervisor -> every child: the call is over; release resources."""

    system: ClassVar[bool] = True
    reason: str


@dataclass(frozen=True, slots=True)
class MarkPlayed(Message):
    """Gateway -> CallSupervisor -> BargeIn and Upstream: Twilio echoed a mark we sent,
    after playing the audio before it (fields as in ``OutboundMark``)."""

    system: ClassVar[bool] = True
    utterance: int
    frames: int = 0

    @property
    def mark(self) -> MarkName:
        return MarkName(self.utterance, self.frames)


@dataclass(frozen=True, slots=True)
class DtmfReceived(Message):
    """Gateway -> CallSupervisor -> Upstream: the caller pressed a key."""

    system: ClassVar[bool] = True
    digit: str


@dataclass(frozen=True, slots=True)
class ChildFailed(Message):
    """Dispatcher -> CallSupervisor: a child's handler or task raised."""

    system: ClassVar[bool] = True
    role: str
    error: str


@dataclass(frozen=True, slots=True)
class InjectFault(Message):
    """Operator (fault-injection endpoint, tests) -> any child: raise inside its handler."""

    system: ClassVar[bool] = True
    note: str = ""


@dataclass(frozen=True, slots=True)
class TimelineNote(Message):
    """Any child -> CallSupervisor: record an event in the call's timeline."""

    system: ClassVar[bool] = True
    event: str
    data: dict[str, Any] = field(default_factory=dict)


MESSAGE_TYPES: tuple[type[Message], ...] = (
    CallerUlaw,
    CallerAudio,
    AgentAudio,
    AgentUtteranceEnd,
    OutboundFrame,
    OutboundMark,
    UtteranceStarting,
    AgentAudioSent,
    EndCall,
    CallerSpeech,
    SpeechRejected,
    BargeInDetected,
    Interrupted,
    CallStarted,
    CallStopped,
    MarkPlayed,
    DtmfReceived,
    ChildFailed,
    InjectFault,
    TimelineNote,
    AgentUlaw,
    UpstreamBound,
    MediaReceived,
    Playback,
    CallAction,
    ActionDone,
    HangUpAfterPlayed,
    AnsweredBy,
    LeaveVoicemail,
)
_CODE = {cls: i for i, cls in enumerate(MESSAGE_TYPES)}
MAX_ENCODED_BYTES = 1 << 20
"""Largest encoded message ``decode`` accepts (1 MiB)."""


class MessageError(ValueError):
    """Bytes that are not an encoded message."""


def encode(msg: Message) -> bytes:
    """Message -> msgpack bytes: ``[type code, *fields]``."""
    return msgpack.packb([_CODE[type(msg)], *astuple(msg)], use_bin_type=True)


def decode(data: bytes) -> Message:
    """msgpack bytes -> Message. Raises ``MessageError`` on anything else."""
    if len(data) > MAX_ENCODED_BYTES:
        raise MessageError("encoded message too large")
    try:
        code, *fields = msgpack.unpackb(data, raw=False, strict_map_key=True)
        if type(code) is not int or not 0 <= code < len(MESSAGE_TYPES):
            raise ValueError(f"unknown type code {code!r:.20}")
        cls = MESSAGE_TYPES[code]
        msg = cls(*fields)
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
        raise MessageError(f"not a message: {exc}") from None
    # msgpack gives back plain types; check them against the declared fields.
    for f, value in zip(dataclass_fields(cls), fields, strict=False):  # defaulted fields may be absent
        if not _type_ok(value, f.type):
            raise MessageError(f"{cls.__name__}.{f.name}: unexpected {type(value).__name__}")
    return msg


_TYPE_CHECK: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "str": str,
    "bytes": bytes,
    "bool": bool,
    "float": (int, float),
}


def _type_ok(value: Any, annotation: Any) -> bool:
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if name in _TYPE_CHECK:
        if name in ("int", "float") and isinstance(value, bool):
            return False
        return isinstance(value, _TYPE_CHECK[name])
    if name.startswith("dict"):
        return isinstance(value, dict)
    return True
