"""What one shard told the pool's call store, kept so that a new pool can learn it again.

The pool supervisor holds the cluster's ``StoreBook``; when it dies, ``run.py serve``
starts a new one, empty, that adopts the running shards (``NewPool``). Each shard then
checkpoints its live calls again and sends its ``StoreJournal`` as one ``Replay``: the
stream tokens it claimed (until they expire), the streams it carries, and the ended
markers of its last ``history`` calls (a redirect after a hang-up still gets
``<Hangup/>``). The same journal is the shard's own guard while the pool does not
answer: a token or a CallSid it has seen is refused here without asking.

Pure bookkeeping, ``now`` passed in; every part bounded.
"""

from __future__ import annotations

from typing import Any

from ..gateway.store import StoreBook, summary_of
from . import control as c


class StoreJournal:
    def __init__(self, history: int, pid: int) -> None:
        self.book = StoreBook(history)
        """Tokens, stream claims and ended calls only: checkpoints are sent again on their own."""
        self.pid = pid

    def claim_token(self, key: str, keep_s: float, now: float) -> bool:
        """Note a token this shard is starting a stream with; False if it was seen here."""
        return self.book.claim_token(key, keep_s, now)

    def claim_stream(self, call_sid: str) -> bool:
        """Note a stream this shard is starting; False while it carries one for the call."""
        return self.book.claim_stream(call_sid, self.pid)

    def release_stream(self, call_sid: str) -> None:
        self.book.release_stream(call_sid, self.pid)

    def finish(self, call_sid: str, record: dict[str, Any], resumable: bool, now: float) -> None:
        """The call's stream ended here; ``resumable`` False: the call is over for good
        (kept as its summary)."""
        self.release_stream(call_sid)
        if not resumable:
            self.book.finish(call_sid, {**summary_of(record), "state": "ended", "timeline": []}, False, now)

    def replay(self, index: int, now: float) -> c.Replay:
        """Everything a new pool must learn from this shard (``StoreBook.replay``)."""
        book = self.book
        return c.Replay(
            index, self.pid, book.used_tokens.left(now), list(book.streams), list(book.ended.items())
        )
