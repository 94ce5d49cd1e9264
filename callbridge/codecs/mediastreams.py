"""Twilio Media Streams protocol, without I/O.

``parse_inbound(text)`` turns one WebSocket text message from Twilio into one event
(``Connected``, ``Start``, ``Media``, ``Dtmf``, ``Mark``, ``Stop``), or ``Unknown`` for an
event name we do not know (Twilio may add events: callers log and ignore them). Anything
malformed raises ``ProtocolError`` carrying the close code to use: 1007 for bad JSON, missing
or mistyped fields and bad base64; 1009 past ``MAX_MESSAGE_BYTES`` (the gateway caps the
socket too). Counters arrive as JSON strings and are returned as ints; the only media format
accepted is audio/x-mulaw, 8000 Hz, mono.

``media_message``, ``mark_message`` and ``clear_message`` return the JSON text Twilio expects
on a bidirectional stream (mark names: ``codecs.marks``). The stream SID is validated once,
at ``start`` (``SID_RE``), so the writers format JSON without escaping.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from .marks import MarkName

MAX_MESSAGE_BYTES = 64 * 1024
"""Largest inbound message accepted. A 20 ms media message is ~300 bytes; a start
message with custom parameters is at most a few KB."""

MAX_PAYLOAD_BYTES = 16 * 1024
"""Largest decoded media payload accepted (2 s of mu-law audio)."""

SID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_UNSUPPORTED = 1003


class ProtocolError(ValueError):
    """A message Twilio would never send; ``close_code`` says how to close the socket."""

    def __init__(self, message: str, close_code: int = CLOSE_INVALID_DATA) -> None:
        super().__init__(message)
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    tracks: tuple[str, ...]
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1


class Media(NamedTuple):
    """One 20 ms frame of caller audio (a NamedTuple: immutable and cheap to build,
    since one arrives every 20 ms per call)."""

    track: str
    chunk: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Dtmf:
    track: str
    digit: str


@dataclass(frozen=True, slots=True)
class Mark:
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    call_sid: str


@dataclass(frozen=True, slots=True)
class Unknown:
    event: str


Event = Connected | Start | Media | Dtmf | Mark | Stop | Unknown


def _obj(msg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"'{key}' must be an object")
    return value


def _str(obj: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise ProtocolError(f"'{key}' must be a string")
    return value


def _counter(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 15:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**15:
        return value
    raise ProtocolError(f"'{key}' must be a non-negative integer string")


def _sid(obj: Mapping[str, Any], key: str) -> str:
    value = _str(obj, key)
    if not SID_RE.match(value):
        raise ProtocolError(f"'{key}' is not a valid SID")
    return value


def _parse_media(msg: Mapping[str, Any]) -> Media:
    media = _obj(msg, "media")
    payload_b64 = media.get("payload")
    if not isinstance(payload_b64, str):
        raise ProtocolError("'payload' must be a string")
    if len(payload_b64) > _MAX_PAYLOAD_B64:
        raise ProtocolError("media payload too large", CLOSE_TOO_BIG)
    try:
        payload = binascii.a2b_base64(payload_b64, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"bad base64 payload: {exc}") from None
    return Media(
        track=_str(media, "track", "inbound"),
        chunk=_counter(media, "chunk"),
        timestamp=_counter(media, "timestamp"),
        payload=payload,
    )


_MAX_PAYLOAD_B64 = MAX_PAYLOAD_BYTES * 4 // 3 + 4


def _fast_media(msg: Mapping[str, Any]) -> Media | None:
    """The hot path: a well-formed media message, checked with the fewest operations.
    Returns None for anything unusual; ``_parse_media`` then says precisely what is wrong."""
    media = msg.get("media")
    if type(media) is not dict:
        return None
    chunk, timestamp, b64 = media.get("chunk"), media.get("timestamp"), media.get("payload")
    track = media.get("track", "inbound")
    if not (
        type(chunk) is str
        and type(timestamp) is str
        and type(b64) is str
        and type(track) is str
        and len(chunk) <= 15
        and len(timestamp) <= 15
        and len(b64) <= _MAX_PAYLOAD_B64
        and chunk.isascii()
        and chunk.isdigit()
        and timestamp.isascii()
        and timestamp.isdigit()
    ):
        return None
    try:
        payload = binascii.a2b_base64(b64, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    return Media(track, int(chunk), int(timestamp), payload)


def _parse_start(msg: Mapping[str, Any]) -> Start:
    start = _obj(msg, "start")
    fmt = start.get("mediaFormat", {})
    if not isinstance(fmt, dict):
        raise ProtocolError("'mediaFormat' must be an object")
    encoding = _str(fmt, "encoding", "audio/x-mulaw")
    rate = fmt.get("sampleRate", 8000)
    channels = fmt.get("channels", 1)
    if encoding != "audio/x-mulaw" or rate != 8000 or channels != 1:
        raise ProtocolError(
            f"unsupported media format {encoding}/{rate}/{channels}; only audio/x-mulaw 8000 Hz mono"
        )
    params = start.get("customParameters") or {}
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        raise ProtocolError("'customParameters' must map strings to strings")
    tracks = start.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise ProtocolError("'tracks' must be a list of strings")
    stream_sid = msg.get("streamSid", start.get("streamSid"))
    return Start(
        stream_sid=_sid({"streamSid": stream_sid}, "streamSid"),
        call_sid=_sid(start, "callSid"),
        account_sid=_str(start, "accountSid", ""),
        tracks=tuple(tracks),
        custom_parameters=dict(params),
        encoding=encoding,
        sample_rate=rate,
        channels=channels,
    )


def parse_inbound(text: str | bytes) -> Event:
    """Parse one message from Twilio. Raises ``ProtocolError`` on anything malformed."""
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError("message too large", CLOSE_TOO_BIG)
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("message must be a JSON object")
    event = msg.get("event")
    if event == "media":
        return _fast_media(msg) or _parse_media(msg)
    if event == "start":
        return _parse_start(msg)
    if event == "connected":
        return Connected(_str(msg, "protocol", ""), _str(msg, "version", ""))
    if event == "mark":
        return Mark(_str(_obj(msg, "mark"), "name"))
    if event == "dtmf":
        dtmf = _obj(msg, "dtmf")
        digit = _str(dtmf, "digit")
        if len(digit) != 1 or digit not in "0123456789*#ABCD":
            raise ProtocolError(f"bad DTMF digit {digit[:8]!r}")
        return Dtmf(_str(dtmf, "track", "inbound_track"), digit)
    if event == "stop":
        stop = msg.get("stop") or {}
        if not isinstance(stop, dict):
            raise ProtocolError("'stop' must be an object")
        return Stop(_str(stop, "callSid", ""))
    if not isinstance(event, str):
        raise ProtocolError("'event' must be a string")
    return Unknown(event[:64])


def media_message(stream_sid: str, payload: bytes) -> str:
    """Outbound ``media``: raw mu-law 8 kHz audio for Twilio to play."""
    b64 = binascii.b2a_base64(payload, newline=False).decode("ascii")
    return '{"event":"media","streamSid":"%s","media":{"payload":"%s"}}' % (stream_sid, b64)


def mark_message(stream_sid: str, mark: MarkName) -> str:
    """Outbound ``mark``: Twilio echoes it once the audio sent before it has played."""
    if type(mark) is not MarkName:
        raise TypeError(f"a mark is a MarkName, not {type(mark).__name__}")
    return '{"event":"mark","streamSid":"%s","mark":{"name":"%s"}}' % (stream_sid, mark)


def clear_message(stream_sid: str) -> str:
    """Outbound ``clear``: Twilio drops buffered audio and echoes pending marks."""
    return '{"event":"clear","streamSid":"%s"}' % stream_sid


# --- Twilio's side, used by the call simulator and tests -----------------------------


def twilio_connected() -> str:
    return '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def twilio_start(
    seq: int, stream_sid: str, call_sid: str, account_sid: str, params: Mapping[str, str]
) -> str:
    return orjson.dumps(
        {
            "event": "start",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "start": {
                "accountSid": account_sid,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": dict(params),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    ).decode()


def twilio_media(seq: int, stream_sid: str, chunk: int, timestamp: int, payload: bytes) -> str:
    b64 = binascii.b2a_base64(payload, newline=False).decode("ascii")
    return (
        '{"event":"media","sequenceNumber":"%d","streamSid":"%s","media":'
        '{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
        % (seq, stream_sid, chunk, timestamp, b64)
    )


def twilio_mark(seq: int, stream_sid: str, name: str) -> str:
    return orjson.dumps(
        {"event": "mark", "sequenceNumber": str(seq), "streamSid": stream_sid, "mark": {"name": name}}
    ).decode()


def twilio_dtmf(seq: int, stream_sid: str, digit: str) -> str:
    return orjson.dumps(
        {
            "event": "dtmf",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    ).decode()


def twilio_stop(seq: int, stream_sid: str, call_sid: str, account_sid: str) -> str:
    return orjson.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": stream_sid,
            "stop": {"accountSid": account_sid, "callSid": call_sid},
        }
    ).decode()


def parse_outbound(text: str | bytes) -> dict[str, Any]:
    """Twilio's view of what we send: validate and return the message (simulator use).

    Raises ``ProtocolError`` for anything Twilio would reject."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    if not isinstance(msg, dict) or msg.get("event") not in ("media", "mark", "clear"):
        raise ProtocolError(f"unknown outbound message {str(msg)[:80]}")
    _sid(msg, "streamSid")
    if msg["event"] == "media":
        try:
            msg["media"]["payload"] = binascii.a2b_base64(
                _str(_obj(msg, "media"), "payload"), strict_mode=True
            )
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(f"bad base64 payload: {exc}") from None
    elif msg["event"] == "mark":
        _str(_obj(msg, "mark"), "name")
    return msg
