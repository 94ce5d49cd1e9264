"""Cut a byte stream into exact fixed-size frames (160 bytes = 20 ms of mu-law 8 kHz).

Pure and stateful: ``push`` returns every complete frame and keeps the remainder;
``flush`` pads the remainder with ``pad`` (mu-law silence) to a whole frame.
"""

from __future__ import annotations

FRAME_BYTES = 160
FRAME_S = 0.020
"""Seconds of audio in one Media Streams frame (``FRAME_BYTES`` of mu-law 8 kHz)."""
ULAW_SILENCE_BYTE = 0xFF


class Framer:
    __slots__ = ("_rest", "size")

    def __init__(self, size: int = FRAME_BYTES) -> None:
        if size <= 0:
            raise ValueError("frame size must be positive")
        self.size = size
        self._rest = b""

    @property
    def pending(self) -> int:
        """Bytes held back, waiting for a whole frame."""
        return len(self._rest)

    def push(self, data: bytes) -> list[bytes]:
        buf = self._rest + data if self._rest else data
        size = self.size
        whole = len(buf) - len(buf) % size
        self._rest = buf[whole:]
        return [buf[i : i + size] for i in range(0, whole, size)]

    def flush(self, pad: int = ULAW_SILENCE_BYTE) -> bytes | None:
        """The remainder padded to one whole frame, or None if nothing is held."""
        if not self._rest:
            return None
        frame = self._rest + bytes([pad]) * (self.size - len(self._rest))
        self._rest = b""
        return frame

    def reset(self) -> None:
        self._rest = b""
