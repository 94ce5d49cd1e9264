"""The Media Streams session state machine, as data. No I/O.

    AWAIT_START --start--> STREAMING --stop--> STOPPED

``step(state, event)`` returns the next state or raises ``ProtocolError`` (close 1008)
for an event Twilio never sends in that state (media before start, a second start,
anything after stop). ``Unknown`` events are legal everywhere but STOPPED: Twilio may
add events, and one we don't know must not drop a call.
"""

from __future__ import annotations

import enum

from ..codecs.mediastreams import (
    CLOSE_POLICY,
    Connected,
    Dtmf,
    Event,
    Mark,
    Media,
    ProtocolError,
    Start,
    Stop,
    Unknown,
)


class StreamState(enum.Enum):
    AWAIT_START = "await_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


S = StreamState
TRANSITIONS: dict[tuple[StreamState, type], StreamState] = {
    (S.AWAIT_START, Connected): S.AWAIT_START,
    (S.AWAIT_START, Start): S.STREAMING,
    (S.AWAIT_START, Unknown): S.AWAIT_START,
    (S.STREAMING, Media): S.STREAMING,
    (S.STREAMING, Mark): S.STREAMING,
    (S.STREAMING, Dtmf): S.STREAMING,
    (S.STREAMING, Unknown): S.STREAMING,
    (S.STREAMING, Stop): S.STOPPED,
}


def step(state: StreamState, event: Event) -> StreamState:
    try:
        return TRANSITIONS[(state, type(event))]
    except KeyError:
        name = type(event).__name__.lower()
        raise ProtocolError(f"'{name}' not allowed in state {state.value}", CLOSE_POLICY) from None
