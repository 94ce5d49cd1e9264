"""Tests for callbridge.speech.tts against the real embedded espeak-ng (no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time

import numpy as np
import pytest

from callbridge.speech.tts import (
    MAX_TEXT_CHARS,
    EspeakTTS,
    get_tts,
    split_sentences,
)

HELLO = "Hello, thanks for calling."
OTHER = "Your appointment is confirmed for Tuesday at three in the afternoon."


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return get_tts()


def synth(tts: EspeakTTS, text: str, **kw) -> tuple[int, list[np.ndarray]]:
    chunks: list[np.ndarray] = []
    n = tts.synthesize(text, chunks.append, **kw)
    return n, chunks


def close_to(a: int, b: int) -> bool:
    # espeak output is not bit-exact between calls (a few dozen samples).
    return abs(a - b) <= max(200, 0.01 * b)


def test_get_tts_cached_and_sample_rate(tts):
    assert get_tts() is tts
    assert get_tts("en-us") is tts
    assert isinstance(tts.sample_rate, int)
    assert 8000 <= tts.sample_rate <= 48000


def test_synthesize_hello(tts):
    t0 = time.perf_counter()
    first_at: list[float] = []
    chunks: list[np.ndarray] = []

    def on_chunk(c):
        if not first_at:
            first_at.append(time.perf_counter())
        chunks.append(c)

    n = tts.synthesize(HELLO, on_chunk)
    t_end = time.perf_counter()

    assert len(chunks) > 1  # streamed, not one blob
    assert first_at[0] < t_end  # first chunk delivered before synthesize returned
    assert first_at[0] - t0 < t_end - t0
    assert all(isinstance(c, np.ndarray) and c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    assert all(c.size > 0 for c in chunks)
    audio = np.concatenate(chunks)
    assert n == audio.size
    assert n / tts.sample_rate > 0.5
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    assert rms > 300  # clearly not silence (int16 full scale is 32767)
    # chunks are private copies: writable and not aliasing each other
    assert all(c.flags.owndata and c.flags.writeable for c in chunks)


def test_should_stop_aborts(tts):
    full, _ = synth(tts, OTHER)
    polls = 0

    def should_stop():
        nonlocal polls
        polls += 1
        return polls > 2

    n, chunks = synth(tts, OTHER, should_stop=should_stop)
    assert n == sum(c.size for c in chunks)
    assert 0 < n < full // 2
    # the engine is usable again and produces the full utterance
    again, _ = synth(tts, OTHER)
    assert close_to(again, full)


def test_should_stop_true_from_start(tts):
    n, chunks = synth(tts, HELLO, should_stop=lambda: True)
    assert n == 0 and chunks == []


def test_on_chunk_exception_propagates_and_releases_lock(tts):
    full, _ = synth(tts, HELLO)
    calls = 0

    def bad(_chunk):
        nonlocal calls
        calls += 1
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        tts.synthesize(HELLO, bad)
    assert calls == 1  # aborted at the first failure
    # not wedged: another synthesis (also from another thread) completes
    result: list[int] = []
    th = threading.Thread(target=lambda: result.append(synth(tts, HELLO)[0]))
    th.start()
    th.join(5)
    assert not th.is_alive()
    assert close_to(result[0], full)


def test_reentrant_synthesize_raises(tts):
    def reenter(_chunk):
        tts.synthesize("nested", lambda c: None)

    with pytest.raises(RuntimeError, match="re-entrant"):
        tts.synthesize(HELLO, reenter)
    assert synth(tts, HELLO)[0] > 0


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "\x00\x07\x1b"])
def test_empty_text(tts, text):
    called = []
    assert tts.synthesize(text, called.append) == 0
    assert called == []


def test_overlong_text_raises(tts):
    called = []
    with pytest.raises(ValueError, match="too long"):
        tts.synthesize("a " * MAX_TEXT_CHARS, called.append)
    assert called == []
    # exactly at the limit (after stripping) is accepted; abort after 2 chunks
    text = ("Hello there. " * MAX_TEXT_CHARS)[:MAX_TEXT_CHARS] + "   "
    chunks: list[np.ndarray] = []
    n = tts.synthesize(text, chunks.append, should_stop=lambda: len(chunks) >= 2)
    assert n > 0 and len(chunks) == 2


def test_non_ascii_and_control_chars(tts):
    n, _chunks = synth(tts, "Grüße aus Zürich, ça va? Ünïcödé — “quotes” ✓")
    assert n > 0.5 * tts.sample_rate
    clean, _ = synth(tts, HELLO)
    dirty, _ = synth(tts, "Hello,\x00 thanks\x07 for\x1b calling.\r\n")
    assert close_to(dirty, clean)


def test_other_voice_and_params():
    de = get_tts("de")
    assert de is not get_tts() and de.sample_rate == get_tts().sample_rate
    assert synth(de, "Guten Tag, wie kann ich helfen?")[0] > 0
    fast = EspeakTTS(rate_wpm=300)
    slow_n = synth(get_tts(), OTHER)[0]
    fast_n = synth(fast, OTHER)[0]
    assert fast_n < 0.8 * slow_n  # settings are re-applied per instance
    assert close_to(synth(get_tts(), OTHER)[0], slow_n)
    with pytest.raises(ValueError):
        EspeakTTS("no-such-voice-xx")
    with pytest.raises(ValueError):
        EspeakTTS(rate_wpm=5)
    with pytest.raises(ValueError):
        EspeakTTS(pitch=101)


def test_two_threads_concurrently(tts):
    texts = [HELLO, OTHER]
    ref = {t: synth(tts, t)[0] for t in texts}
    events: list[tuple[int, int]] = []  # (worker, chunk size), global order
    results: dict[int, list[tuple[int, int]]] = {0: [], 1: []}
    barrier = threading.Barrier(2)

    def worker(i: int) -> None:
        barrier.wait()
        for _ in range(5):
            chunks: list[np.ndarray] = []

            def on_chunk(c, chunks=chunks):
                events.append((i, c.size))
                chunks.append(c)

            n = tts.synthesize(texts[i], on_chunk)
            results[i].append((n, sum(c.size for c in chunks)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert not any(th.is_alive() for th in threads)
    for i in (0, 1):
        assert len(results[i]) == 5
        for n, delivered in results[i]:
            assert n == delivered
            assert close_to(n, ref[texts[i]])
    # The lock serialises whole utterances: chunks of one call are never
    # interleaved with another's, so the event stream has exactly 10 runs.
    runs = 1 + sum(1 for a, b in itertools.pairwise(events) if a[0] != b[0])
    assert runs <= 10


async def test_stream_matches_synthesize_and_does_not_block_loop(tts):
    full = synth(tts, OTHER)[0]
    loop = asyncio.get_running_loop()

    # Occupy the engine from another thread; its on_chunk blocks until the
    # event loop has ticked several times. If stream() blocked the loop while
    # waiting for the engine, the ticker could never release it.
    release = threading.Event()
    holder_started = threading.Event()
    holder_result: list[bool] = []

    def holder_chunk(_c):
        holder_started.set()
        holder_result.append(release.wait(5))

    holder = threading.Thread(
        target=lambda: tts.synthesize(HELLO, holder_chunk, should_stop=lambda: bool(holder_result))
    )
    holder.start()
    await loop.run_in_executor(None, holder_started.wait, 5)

    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1
            if ticks == 10:
                release.set()

    tick_task = asyncio.create_task(ticker())
    chunks = []
    try:
        async for c in tts.stream(OTHER):
            assert c.dtype == np.int16
            chunks.append(c)
    finally:
        tick_task.cancel()
    holder.join(5)
    assert holder_result and holder_result[0] is True  # released by the ticker
    assert ticks >= 10
    assert len(chunks) > 1
    assert close_to(sum(c.size for c in chunks), full)


async def test_stream_aclose_aborts_and_frees_engine(tts):
    full = synth(tts, OTHER)[0]
    agen = tts.stream(OTHER)
    first = await agen.__anext__()
    assert first.size > 0
    await agen.aclose()
    assert not tts._engine.lock.locked()
    assert close_to(synth(tts, OTHER)[0], full)


async def test_stream_cancel_outside_generator(tts):
    # Consumer cancelled while the generator is suspended at `yield`.
    for use_aclosing in (True, False):
        got_one = asyncio.Event()

        async def consume(use_aclosing: bool = use_aclosing, got_one: asyncio.Event = got_one) -> None:
            agen = tts.stream("This is a long sentence. " * 100)
            if use_aclosing:
                async with contextlib.aclosing(agen):
                    async for _c in agen:
                        got_one.set()
                        await asyncio.sleep(10)
            else:
                async for _c in agen:
                    got_one.set()
                    await asyncio.sleep(10)

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_one.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        if use_aclosing:
            assert not tts._engine.lock.locked()
        else:  # closed via the finalizer / consumer-task watch: soon
            for _ in range(500):
                if not tts._engine.lock.locked():
                    break
                await asyncio.sleep(0.01)
            assert not tts._engine.lock.locked()
        assert synth(tts, HELLO)[0] > 0


async def test_stream_cancel_while_waiting_for_engine(tts):
    # Consumer cancelled inside __anext__ while the worker waits for the engine.
    release = threading.Event()
    holding = threading.Event()

    def holder_chunk(_c):
        holding.set()
        release.wait(5)

    holder = threading.Thread(target=lambda: tts.synthesize(HELLO, holder_chunk, should_stop=release.is_set))
    holder.start()
    await asyncio.get_running_loop().run_in_executor(None, holding.wait, 5)
    got = []

    async def consume():
        async for c in tts.stream(OTHER):
            got.append(c)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.sleep(0.02)
    assert not task.done()  # waits for the worker before finishing
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    holder.join(5)
    assert got == []  # aborted before producing anything
    assert not tts._engine.lock.locked()


async def test_stream_empty_and_overlong(tts):
    assert [c async for c in tts.stream("  ")] == []
    with pytest.raises(ValueError):
        async for _c in tts.stream("x" * (MAX_TEXT_CHARS + 1)):
            pass


async def test_stream_propagates_errors_from_worker(tts):
    # A sink failing inside the worker thread surfaces from the iteration.
    class Failing(EspeakTTS):
        def synthesize(self, text, on_chunk, should_stop=lambda: False):
            def wrapped(c):
                on_chunk(c)
                raise OSError("sink failed")

            return super().synthesize(text, wrapped, should_stop)

    f = Failing()
    got = []
    with pytest.raises(OSError, match="sink failed"):
        async for c in f.stream(HELLO):
            got.append(c)
    assert len(got) == 1
    assert not f._engine.lock.locked()


# --------------------------------------------------------------------------- #
# split_sentences
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", []),
        ("   \n ", []),
        ("Hello.", ["Hello."]),
        ("Hello there", ["Hello there"]),
        ("Hi! How are you? I'm fine.", ["Hi!", "How are you?", "I'm fine."]),
        ("First part; second part.", ["First part;", "second part."]),
        ("Wait... what?! Really.", ["Wait...", "what?!", "Really."]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("It costs 3.50 dollars. Okay.", ["It costs 3.50 dollars.", "Okay."]),
        ("Dr. Smith will see you. Mr. J. Doe too.", ["Dr. Smith will see you.", "Mr. J. Doe too."]),
        ("Bring fruit, e.g. apples. Thanks.", ["Bring fruit, e.g. apples.", "Thanks."]),
        ("Line one\nLine two", ["Line one", "Line two"]),
        ("Hello.   \n\n  World!", ["Hello.", "World!"]),
        ("Short, with comma.", ["Short, with comma."]),
        ("你好。再见！", ["你好。", "再见！"]),
        ("Hello. !!! World.", ["Hello.!!!", "World."]),
        ("...", ["..."]),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_split_sentences_long_clause_at_commas():
    text = (
        "Thanks for calling the city library, we are open from nine to five on weekdays, "
        "and from ten to two on Saturdays, but we are closed on Sundays and public holidays. "
        "Goodbye."
    )
    parts = split_sentences(text)
    assert parts[0] == "Thanks for calling the city library,"
    assert parts[-1] == "Goodbye."
    assert len(parts) >= 4
    assert " ".join(parts) == " ".join(text.split())
    # short sentences keep their commas
    assert split_sentences("Yes, sure, okay.") == ["Yes, sure, okay."]


def test_split_sentences_invariants():
    text = "word " * 3000 + "end. Next, sentence; " + "\x00\x07 " + "x" * 5000
    parts = split_sentences(text)
    assert parts and all(p and p == p.strip() for p in parts)
    assert all(len(p) <= MAX_TEXT_CHARS for p in parts)
    assert "".join(parts).replace(" ", "") == text.replace(" ", "").replace("\x00", "").replace("\x07", "")
