"""Streaming pocketsphinx recognition on speech synthesised at test time."""

from __future__ import annotations

import asyncio
import gc
import time

import numpy as np
import pytest

from callbridge.agents.desk_vocabulary import desk_corpus, desk_vocabulary
from callbridge.codecs.resample import StreamingResampler
from callbridge.speech.stt import Recognizer, SttError, Utterance, get_recognizer
from callbridge.speech.tts import EspeakTTS

from .conftest import MAX_LOOP_STALL_S, RunQueueWait

SR = 16000
FRAME = 320  # 20 ms

_cache: dict[str, np.ndarray] = {}


def speech16k(text: str, voice: str = "en-us") -> np.ndarray:
    """``text`` spoken by espeak, resampled to 16 kHz, with 0.3 s of silence
    before and 0.5 s after (what a VAD with pre-roll hands over)."""
    key = f"{voice}:{text}"
    if key not in _cache:
        tts = EspeakTTS(voice=voice)
        chunks: list[np.ndarray] = []
        tts.synthesize(text, chunks.append)
        pcm = StreamingResampler(tts.sample_rate, SR).process(np.concatenate(chunks))
        _cache[key] = np.concatenate([np.zeros(4800, np.int16), pcm, np.zeros(8000, np.int16)])
    return _cache[key]


BOOK = "I would like to book an appointment on Tuesday at three pm"
CANCEL = "I need to cancel my appointment for tomorrow"
YES = "Yes that is correct"


@pytest.fixture(scope="module")
def rec():
    """One pool of two decoders for the whole module (creation ~0.5 s each)."""
    r = Recognizer(desk_vocabulary(), pool_size=2)
    yield r
    r.close()


async def transcribe(rec: Recognizer, pcm: np.ndarray, pace_s: float = 0.0, on_partial=None) -> str:
    utt = await rec.start(on_partial)
    for i in range(0, len(pcm), FRAME):
        utt.feed(pcm[i : i + FRAME])
        if pace_s:
            await asyncio.sleep(pace_s)
    return await utt.finish()


def words(text: str) -> set[str]:
    return set(text.split())


@pytest.mark.slow
@pytest.mark.parametrize(
    "text, key",
    [
        (BOOK, {"book", "appointment", "tuesday", "three"}),
        (CANCEL, {"cancel", "appointment", "tomorrow"}),
        (YES, {"yes"}),
        # "move" itself comes out as "you" about half the time on espeak's voice
        ("Can I move my appointment to Friday morning", {"appointment", "friday", "morning"}),
    ],
)
async def test_key_words_are_recognised(rec, text, key):
    got = await transcribe(rec, speech16k(text))
    assert key <= words(got), got
    assert got == got.lower() and "  " not in got


@pytest.mark.slow
async def test_partials_arrive_before_finish_and_loop_keeps_ticking(rec):
    """Frames paced at ~4x real time; an asyncio ticker measures loop stalls."""
    await rec.prewarm()  # creation happens on the decoder threads anyway
    gaps: list[float] = []

    async def ticker():  # less the time the loop's thread waited for a CPU (another process's)
        queued = RunQueueWait()
        last, q = time.perf_counter(), queued()
        try:
            while True:
                await asyncio.sleep(0.005)
                now, q_now = time.perf_counter(), queued()
                gaps.append(now - last - (q_now - q))
                last, q = now, q_now
        finally:
            queued.close()

    partials: list[str] = []
    tick = asyncio.create_task(ticker())
    try:
        results = await asyncio.gather(
            transcribe(rec, speech16k(BOOK), pace_s=0.005, on_partial=partials.append),
            transcribe(rec, speech16k(CANCEL), pace_s=0.005),
        )
        # on_partial runs on the loop, so everything seen so far was delivered
        # before finish() returned; none may arrive afterwards.
        seen = len(partials)
        await asyncio.sleep(0.05)
        assert len(partials) == seen
    finally:
        tick.cancel()
    assert partials, "no partial hypothesis"
    assert all(p == p.lower() and p for p in partials)
    assert len(set(partials)) == len(partials) or partials[-1] != partials[-2]  # changes only
    assert {"book", "appointment"} <= words(results[0]) and "cancel" in words(results[1])
    assert len(gaps) > 50
    # Decoding on the loop would stall tick after tick; a loaded CI machine (more workers
    # than cores) delays one now and then for reasons of its own, which the suite's
    # LoopWatch bound (0.5 s) covers.
    ordered = sorted(gaps)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    assert p90 <= 0.05, f"event loop stalled {p90 * 1000:.0f} ms at p90"
    assert max(gaps) <= MAX_LOOP_STALL_S, f"event loop stalled {max(gaps) * 1000:.0f} ms"


async def test_two_concurrent_utterances_then_pool_exhaustion(rec):
    u1 = await rec.start()
    u2 = await rec.start()
    assert rec.size == 2 and rec.idle == 0
    # All decoders busy: a third start waits (and can be cancelled safely).
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(rec.start(), 0.1)
    waiter = asyncio.create_task(rec.start())
    a, b = speech16k(BOOK), speech16k(YES)
    for i in range(0, max(len(a), len(b)), FRAME):
        u1.feed(a[i : i + FRAME])
        u2.feed(b[i : i + FRAME])
    t1, t2 = await asyncio.gather(u1.finish(), u2.finish())
    u3 = await asyncio.wait_for(waiter, 5)  # got the decoder u1/u2 returned
    await u3.cancel()  # before any assertion: a failure here must not hang the module's pool
    assert {"book", "tuesday"} <= words(t1), t1
    assert "yes" in words(t2), t2
    for _ in range(100):  # the other release is posted to the loop
        if rec.idle == 2:
            break
        await asyncio.sleep(0.01)
    assert rec.size == 2 and rec.idle == 2


async def test_feed_edge_cases(rec):
    utt = await rec.start()
    utt.feed(np.zeros(0, np.int16))  # ignored
    assert await utt.finish() == ""  # nothing fed at all: empty transcript
    assert await utt.finish() == ""  # idempotent
    with pytest.raises(RuntimeError):
        utt.feed(np.zeros(FRAME, np.int16))

    utt = await rec.start()
    with pytest.raises(TypeError):
        utt.feed(np.zeros(FRAME, np.float32))
    with pytest.raises(TypeError):
        utt.feed(b"\0" * 640)
    with pytest.raises(ValueError):
        utt.feed(np.zeros((2, FRAME), np.int16))
    pcm = speech16k(YES)
    for i in range(0, len(pcm), 333):  # odd chunk sizes and empty ones
        utt.feed(pcm[i : i + 333])
        utt.feed(pcm[:0])
    assert "yes" in words(await utt.finish())

    utt = await rec.start()
    utt.feed(pcm)
    await utt.cancel()
    await utt.cancel()
    assert await utt.finish() == ""


async def test_dropped_utterance_returns_its_decoder(rec):
    await rec.prewarm()
    utt = await rec.start()
    utt.feed(speech16k(YES)[:8000])
    assert rec.idle == 1
    del utt
    gc.collect()
    for _ in range(200):
        if rec.idle == 2:
            break
        await asyncio.sleep(0.01)
    assert rec.idle == 2


@pytest.mark.slow
async def test_max_utterance_truncates():
    r = Recognizer(desk_vocabulary(), pool_size=1, max_utterance_s=1.0)
    try:
        utt = await r.start()
        pcm = speech16k(BOOK)
        for i in range(0, len(pcm), FRAME):
            utt.feed(pcm[i : i + FRAME])
        assert utt.truncated and utt.samples == SR
        text = await utt.finish()
        assert "tuesday" not in words(text)  # said after the first second
        # Closing with an utterance in flight: it fails instead of hanging.
        utt = await r.start()
        utt.feed(pcm[:FRAME])
        r.close()
        with pytest.raises(RuntimeError, match="closed"):
            await asyncio.wait_for(utt.finish(), 5)
        await utt.cancel()
    finally:
        r.close()
    with pytest.raises(RuntimeError):
        await r.start()


def test_validation_and_singleton():
    for kwargs in (
        {"vocabulary": "klingon"},
        {"pool_size": 0},
        {"pool_size": 2.0},
        {"dither": -1},
        {"max_utterance_s": 0.5},
        {"partial_interval_s": float("nan")},
    ):
        with pytest.raises(ValueError):
            Recognizer(**kwargs)
    rec = get_recognizer(desk_vocabulary())
    assert rec is get_recognizer(desk_vocabulary()) and rec.mode == "desk"
    assert get_recognizer(desk_vocabulary(), decoders=3) is rec and rec.pool_size == 3
    get_recognizer(desk_vocabulary(), decoders=2)
    assert rec.pool_size == 2
    with pytest.raises(ValueError):
        get_recognizer(desk_vocabulary(), decoders=0)
    assert get_recognizer() is not rec and get_recognizer().mode == "general"
    corpus = desk_corpus()
    vocab = {w for s in corpus for w in s.split()}
    for w in (
        "book",
        "reschedule",
        "cancel",
        "appointment",
        "noon",
        "sunday",
        "tomorrow",
        "confirm",
        "goodbye",
    ):
        assert w in vocab
    assert desk_corpus() == corpus  # deterministic
    assert issubclass(SttError, RuntimeError) and Utterance is not None


@pytest.mark.slow
async def test_general_mode():
    r = Recognizer(None, pool_size=1)
    try:
        text = await transcribe(r, speech16k(YES))
        assert "yes" in words(text), text
    finally:
        r.close()


@pytest.mark.slow
async def test_decoder_error_surfaces_and_decoder_is_replaced():
    r = Recognizer(desk_vocabulary(), pool_size=1)
    try:
        await r.prewarm()
        worker = r._idle[0]

        class Broken:
            def __init__(self, dec):
                self.dec = dec

            def __getattr__(self, name):
                return getattr(self.dec, name)

            def process_raw(self, data):
                raise RuntimeError("boom")

        worker.dec = Broken(worker.dec)
        utt = await r.start()
        utt.feed(np.zeros(FRAME, np.int16))
        with pytest.raises(SttError, match="boom"):
            await utt.finish()
        assert r.size == 0  # discarded
        assert "yes" in words(await transcribe(r, speech16k(YES)))  # a fresh one
        assert r.size == 1
    finally:
        r.close()


@pytest.mark.slow
async def test_resize(rec):
    await rec.prewarm()
    assert rec.size == rec.idle == 2
    busy = await rec.start()
    rec.resize(1)  # the idle one goes now, the busy one stays until done
    assert rec.size == 1 and rec.idle == 0
    waiter = asyncio.create_task(rec.start())
    await asyncio.sleep(0.05)
    assert not waiter.done()  # one decoder, and it is busy
    rec.resize(2)  # room again: the waiter creates a decoder
    second = await asyncio.wait_for(waiter, 10)
    assert rec.size == 2
    await asyncio.gather(busy.cancel(), second.cancel())
    assert rec.idle == 2


def test_the_agent_supplies_the_vocabulary():
    from callbridge.agents.base import Agent, create_agent
    from callbridge.speech.vocabulary import Vocabulary

    assert create_agent("desk").vocabulary() is desk_vocabulary()
    assert Agent.vocabulary(create_agent("desk")) is None  # the default: any English
    assert Vocabulary("x", ("a b",)) == Vocabulary("x", ("a b",)) and Vocabulary("x", ("a b",)).words == {
        "a",
        "b",
    }
    with pytest.raises(ValueError):
        Vocabulary("empty", ())


async def test_a_vocabulary_word_the_dictionary_lacks_fails_the_decoder():
    from callbridge.speech.vocabulary import Vocabulary

    r = Recognizer(Vocabulary("odd", ("book a qwzxv",)), pool_size=1)
    try:
        with pytest.raises(SttError, match="qwzxv"):
            await asyncio.wait_for(r.start(), 10)
    finally:
        r.close()


async def test_hypothesis_mid_utterance_covers_all_audio_fed_and_does_not_end_it(rec):
    """What the listener asks at a pause (``Utterance.hypothesis``): the best guess over every
    frame fed before it, however far behind the decoder was; the utterance goes on."""
    pcm = speech16k(BOOK)
    half = len(pcm) // 2 // FRAME * FRAME
    utt = await rec.start()
    for i in range(0, half, FRAME):
        utt.feed(pcm[i : i + FRAME])
    early = await utt.hypothesis()  # asked at once: the decoder is still behind
    assert "book" in early.split() and "three" not in early.split()
    for i in range(half, len(pcm), FRAME):
        utt.feed(pcm[i : i + FRAME])
    late = await utt.hypothesis()
    final = await utt.finish()
    assert {"book", "tuesday", "three"} <= set(late.split()) & set(final.split())
    assert await utt.hypothesis() == ""
