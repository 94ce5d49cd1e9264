"""Mark names on a Media Streams socket, without I/O.

``MarkName`` is the one value type for the marks the bridge sends: ``u<utterance>`` when
an utterance has been sent whole (its end mark) and ``u<utterance>.<frames>`` after that
many of its frames (a progress mark). ``str(mark)`` is the name on the wire;
``MarkName.parse(name)`` reads one back, strictly: ASCII digits only, no sign, no
leading zero, at most ``MAX_DIGITS`` per number (so ``u²`` or ``u`` and 5,000 digits are
not mark names).

``MarksInFlight`` is what one stream has sent and Twilio has not echoed yet (at most
``MAX_IN_FLIGHT``, the oldest forgotten first). An echo is accepted only for a name in
it, once: unknown, malformed, over-long and repeated names are not ours. After a
``clear`` every mark in flight comes back at once, looking exactly like a played one:
``cleared()`` records that those are cut, not heard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DIGITS = 9
MAX_NAME_CHARS = 2 * MAX_DIGITS + 2
"""The longest name ``MarkName`` writes: ``u`` + digits + ``.`` + digits."""
MAX_IN_FLIGHT = 256
"""Marks awaited per stream. The writer keeps well under a second of audio at Twilio and
marks every 200 ms, so a few are in flight; a clear echoes them all at once."""

_NUMBER = r"(0|[1-9][0-9]{0,%d})" % (MAX_DIGITS - 1)
_NAME_RE = re.compile(r"u%s(?:\.%s)?" % (_NUMBER, _NUMBER), re.ASCII)
_LIMIT = 10**MAX_DIGITS


@dataclass(frozen=True, slots=True)
class MarkName:
    """A mark the bridge sends. ``frames`` 0: the end mark of ``utterance``; otherwise a
    progress mark after that many of its frames."""

    utterance: int
    frames: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.utterance < _LIMIT and 0 <= self.frames < _LIMIT):
            raise ValueError(f"mark numbers must be 0..{_LIMIT - 1}: {self.utterance}, {self.frames}")

    @property
    def is_end(self) -> bool:
        return self.frames == 0

    def __str__(self) -> str:
        return f"u{self.utterance}" if self.frames == 0 else f"u{self.utterance}.{self.frames}"

    @classmethod
    def parse(cls, name: object) -> MarkName | None:
        """The mark ``name`` spells, or None if it is not one ``str(MarkName)`` writes."""
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
            return None
        match = _NAME_RE.fullmatch(name)
        if match is None:
            return None
        frames = match.group(2)
        if frames == "0":
            return None  # u<n>.0 is never written: frames 0 is the end mark, u<n>
        return cls(int(match.group(1)), int(frames) if frames else 0)


class MarksInFlight:
    """The marks one stream sent that Twilio has not echoed yet; bounded."""

    __slots__ = ("_awaited", "forgotten")

    def __init__(self) -> None:
        self._awaited: dict[str, tuple[MarkName, bool]] = {}
        """name -> (mark, cut): cut once a clear was sent after it."""
        self.forgotten = 0
        """Marks dropped unechoed past ``MAX_IN_FLIGHT`` (a peer that never echoes)."""

    def __len__(self) -> int:
        return len(self._awaited)

    def sent(self, mark: MarkName) -> str:
        """``mark`` goes out now; returns its name on the wire."""
        name = str(mark)
        awaited = self._awaited
        awaited.pop(name, None)
        awaited[name] = (mark, False)
        if len(awaited) > MAX_IN_FLIGHT:
            del awaited[next(iter(awaited))]
            self.forgotten += 1
        return name

    def cleared(self) -> None:
        """A ``clear`` went out: the marks in flight will come back without having played."""
        for name, (mark, _) in self._awaited.items():
            self._awaited[name] = (mark, True)

    def echoed(self, name: str) -> tuple[MarkName, bool] | None:
        """Twilio echoed ``name``: (the mark, whether it played) if we sent it and it was
        awaited; None if not (unknown, malformed, over-long, or echoed already)."""
        if len(name) > MAX_NAME_CHARS:
            return None
        found = self._awaited.pop(name, None)
        if found is None:
            return None
        mark, cut = found
        return mark, not cut
