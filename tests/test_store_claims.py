"""The call store's claims: one live stream per CallSid, single-use tokens, and what a
shard replays to a new pool. ``StoreBook`` and ``StoreJournal`` with ``now`` passed in;
the new pool's hold on requests on a real thespian actor system (in-process base)."""

from __future__ import annotations

import time

import pytest
from thespian.actors import Actor, ActorSystem

from callbridge.gateway.store import StoreBook, UsedTokens
from callbridge.prod import control as c
from callbridge.prod.bridge import ASK_TIMEOUT_S
from callbridge.prod.journal import StoreJournal
from callbridge.prod.pool import REPLAY_WAIT_S, PoolSupervisor


def test_one_stream_per_call_until_its_owner_finishes_it():
    book = StoreBook(history=10)
    assert book.claim_stream("CA1", owner=100)
    assert not book.claim_stream("CA1", owner=200)  # another shard: refused
    assert not book.claim_stream("CA1", owner=100)  # the same shard too
    book.release_stream("CA1", owner=200)  # not its claim: kept
    assert not book.claim_stream("CA1", owner=200)
    book.checkpoint("CA1", {"pid": 100}, 0.0)
    book.finish_stream("CA1", {"state": "dropped"}, resumable=True, owner=100, now=1.0)
    assert book.claim_stream("CA1", owner=200)  # the resume after the drop is taken
    assert book.lookup("CA1", 1.0).state == "live"
    book.release_stream("CA1", owner=200)
    assert book.claim_stream("CA1", owner=300)


def test_a_dead_shard_s_stream_claims_go_with_it():
    book = StoreBook(history=10)
    book.claim_stream("CA1", 100)
    book.claim_stream("CA2", 200)
    book.checkpoint("CA1", {"pid": 100}, 0.0)
    assert book.orphan(100, 1.0) == ["CA1"]
    assert book.claim_stream("CA1", 200)  # the resume elsewhere
    assert not book.claim_stream("CA2", 300)  # the live shard's call keeps its claim


def test_stream_claims_are_bounded():
    book = StoreBook(history=10, max_calls=3)
    for i in range(5):
        assert book.claim_stream(f"CA{i}", 100)
    assert list(book.streams) == ["CA2", "CA3", "CA4"]


def test_used_tokens_remember_claims_made_elsewhere_with_the_time_left():
    used = UsedTokens(limit=3)
    assert used.claim("k1", keep_s=100.0, now=0.0)
    assert used.left(40.0) == [("k1", 100.0 + UsedTokens.SLACK_S - 40.0)]
    other = UsedTokens(limit=3)
    for key, keep_s in used.left(40.0):
        other.remember(key, keep_s, now=1000.0)  # another process, another clock
    assert not other.claim("k1", 10.0, now=1050.0)
    assert other.claim("k1", 10.0, now=1062.0)  # its time ran out there as well
    for i in range(5):
        other.remember(f"x{i}", 50.0, 1062.0)
    assert len(other) == 3


def test_a_new_book_learns_a_shard_s_journal():
    journal = StoreJournal(history=2, pid=100)
    assert journal.claim_token("k1", 100.0, now=0.0)
    assert not journal.claim_token("k1", 100.0, now=1.0)  # seen on this shard
    assert journal.claim_stream("CA1") and not journal.claim_stream("CA1")
    assert journal.claim_stream("CA2")
    journal.finish(
        "CA2", {"callSid": "CA2", "state": "live", "timeline": [{"event": "x"}] * 50}, True, now=2.0
    )
    assert journal.claim_stream("CA2")  # dropped: the resume may start here
    for sid in ("CA2", "CA3", "CA4"):
        journal.finish(
            sid,
            {"callSid": sid, "stop_reason": "hangup", "timeline": [{"event": "x"}] * 50},
            resumable=False,
            now=3.0,
        )
    replay = journal.replay(index=0, now=10.0)
    assert replay.pid == 100 and replay.streams == ["CA1"]
    assert [sid for sid, _ in replay.ended] == ["CA3", "CA4"]  # the last ``history`` ones
    assert replay.ended[0][1]["timeline"] == [] and replay.ended[0][1]["stop_reason"] == "hangup"

    book = StoreBook(history=10)
    book.checkpoint("CA1", {"pid": 100}, 500.0)  # checkpoints come again on their own
    book.replay(replay.pid, replay.tokens, replay.streams, replay.ended, now=500.0)
    assert not book.claim_token("k1", 100.0, now=550.0)  # its time left: ~91 s
    assert book.claim_token("k1", 100.0, now=600.0)
    assert not book.claim_stream("CA1", 200)
    found = book.lookup("CA4", 500.0)
    assert found is not None and found.state == "ended"
    book.orphan(100, 501.0)
    assert book.claim_stream("CA1", 200)


def test_a_replay_never_revives_a_call_the_new_book_saw_end():
    book = StoreBook(history=10)
    book.finish_stream(
        "CA1", {"state": "ended", "stop_reason": "hangup", "timeline": [1, 2]}, False, 100, 0.0
    )
    book.replay(100, [], ["CA1"], [("CA1", {"state": "ended", "timeline": []})], now=1.0)
    assert "CA1" not in book.streams and book.ended["CA1"]["timeline"] == [1, 2]


class _Shard(Actor):
    """Stands for an adopted shard: takes ``NewPool`` and says nothing."""

    def receiveMessage(self, msg, sender):
        pass


@pytest.fixture
def asys():
    system = ActorSystem("simpleSystemBase", {"callbridge.leader": True})
    yield system
    system.shutdown()


def _answers(asys, count: int) -> dict[int, object]:
    found = {}
    for _ in range(count):
        answer = asys.listen(3)
        assert isinstance(answer, c.Answer), answer
        found[answer.req] = answer.value
    return found


@pytest.mark.slow
def test_a_new_pool_answers_the_store_only_once_the_adopted_shards_replayed(asys):
    shard = asys.createActor(_Shard)
    pool = asys.createActor(PoolSupervisor)
    asys.ask(pool, c.StartPool(0, [c.Adoptee(0, "n", shard, 4242, "http://x")]), 5)
    asys.tell(pool, c.ClaimToken(1, "k1", 100.0))
    asys.tell(pool, c.ClaimStream(2, "CA1", 5151))
    asys.tell(pool, c.Lookup(3, "CA9"))
    assert asys.listen(0.3) is None  # held: the book is still filling
    asys.tell(pool, c.Replay(0, 4242, [("k1", 60.0)], ["CA1"], [("CA9", {"state": "ended", "timeline": []})]))
    answers = _answers(asys, 3)
    assert answers[1] is False and answers[2] is False and answers[3].state == "ended"


@pytest.mark.slow
def test_a_new_pool_stops_waiting_for_a_shard_that_never_replays(asys):
    shard = asys.createActor(_Shard)
    pool = asys.createActor(PoolSupervisor)
    asys.ask(pool, c.StartPool(0, [c.Adoptee(0, "n", shard, 4242, "http://x")]), 5)
    t0 = time.monotonic()
    asys.tell(pool, c.ClaimToken(1, "k1", 100.0))
    assert _answers(asys, 1) == {1: True}  # answered from what it has
    waited = time.monotonic() - t0
    assert REPLAY_WAIT_S * 0.8 <= waited < ASK_TIMEOUT_S, waited  # before the shard gives up asking
