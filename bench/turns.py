"""Turn-taking benchmark of the embedded agent, end to end over real sockets.

    python bench/turns.py            # 10 utterances, 2 calls at a time
    python bench/turns.py --quick    # 4 utterances

A gateway runs as a separate process (``run.py serve``) so its CPU can be read from
/proc; the simulator places one call per utterance (espeak-ng speech, en-us, 150 wpm,
sent as real-time mu-law) and waits for the agent's answer. From each call's timeline:

- voice-to-voice: the caller's last speech frame -> the agent's first reply frame sent,
  split into endpointing (the configured silence), STT finalisation, agent (first text)
  and TTS (first chunk -> first frame on the socket);
- word error rate of the transcripts against the text spoken;
- CPU of the gateway process per active call, in % of one core.

Target: p50 voice-to-voice <= ENDPOINT_SILENCE_MS + 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

from callbridge.sim.caller import SimulatedCall
from callbridge.speech.tts import EspeakTTS
from callbridge.testing.audio import speech
from callbridge.testing.nodes import cpu_seconds, gateway
from callbridge.testing.wer import word_errors, words

UTTERANCES = [
    "I would like to book an appointment on Monday at three pm.",
    "Can I book an appointment on Wednesday at two pm?",
    "I need to cancel my appointment.",
    "Can you move my appointment to Friday?",
    "What time is my appointment?",
    "I would like to reschedule to Thursday at ten am.",
    "Do you have anything free tomorrow afternoon?",
    "Yes, book it.",
    "What are your hours?",
    "That's all, thank you. Goodbye.",
]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def run(utterances: list[str], concurrency: int, endpoint_ms: int, json_path: str | None = None) -> int:
    with gateway(GREETING="Hi.", ENDPOINT_SILENCE_MS=str(endpoint_ms)) as (server, url):
        tts = EspeakTTS(voice="en-us", rate_wpm=150)
        audio = [speech(tts, text) for text in utterances]
        gate = asyncio.Semaphore(concurrency)
        cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
        call_seconds = 0.0

        async def one(i: int) -> dict:
            nonlocal call_seconds
            async with gate:
                result = await SimulatedCall(url, audio=[audio[i]], polite=True, hold_s=0.2).run()
            call_seconds += len(result.caller_audio) / 8000
            timeline = (result.record or {}).get("timeline", [])
            final = next((e["text"] for e in timeline if e["event"] == "transcript.final"), "")
            turn = next((e for e in timeline if e["event"] == "turn"), None)
            return {"text": utterances[i], "heard": final, "turn": turn}

        results = await asyncio.gather(*(one(i) for i in range(len(utterances))))
        cpu = cpu_seconds(server.pid) - cpu0
        wall = time.monotonic() - wall0

    turns = [r["turn"] for r in results if r["turn"]]
    errors = sum(word_errors(words(r["text"]), words(r["heard"])) for r in results)
    ref_words = sum(len(words(r["text"])) for r in results)
    print(
        f"python {sys.version.split()[0]} | cpus {os.cpu_count()} | {len(utterances)} calls, "
        f"{concurrency} at a time | ENDPOINT_SILENCE_MS={endpoint_ms}"
    )
    print("\nper utterance (ms):  v2v = endpoint + stt + agent + tts")
    for r in results:
        t = r["turn"]
        v2v = (
            f"{t['voice_to_voice_ms']:6.0f} = {t['endpoint_ms']:4.0f} + {t['stt_ms']:4.0f} + {t['agent_ms']:4.0f} + {t['tts_ms']:4.0f}"
            if t
            else "   no reply"
        )
        print(f"  {v2v}   said: {r['text']!r}\n  {'':>38}heard: {r['heard']!r}")
    print("\nlatency (ms)        p50      p95")
    for key in ("voice_to_voice_ms", "endpoint_ms", "stt_ms", "agent_ms", "tts_ms"):
        vals = [t[key] for t in turns]
        print(f"  {key:<16} {pct(vals, 50):7.1f}  {pct(vals, 95):7.1f}")
    p50 = pct([t["voice_to_voice_ms"] for t in turns], 50)
    print(f"\nreplies: {len(turns)}/{len(results)}")
    print(f"word error rate: {errors}/{ref_words} = {100 * errors / max(ref_words, 1):.1f}%")
    print(
        f"gateway CPU: {cpu:.2f} s over {wall:.1f} s wall, {call_seconds:.1f} call-seconds "
        f"-> {100 * cpu / max(call_seconds, 1e-9):.1f}% of one core per active call"
    )
    target = endpoint_ms + 200
    print(f"target p50 voice-to-voice <= {target} ms: {'met' if p50 <= target else 'MISSED'} ({p50:.0f} ms)")
    if json_path:
        import json

        parts = ("voice_to_voice_ms", "endpoint_ms", "stt_ms", "agent_ms", "tts_ms")
        Path(json_path).write_text(  # noqa: ASYNC240 - once, after the run
            json.dumps(
                {
                    "calls": len(results),
                    "replies": len(turns),
                    "endpoint_ms_setting": endpoint_ms,
                    "p50": {k: pct([t[k] for t in turns], 50) for k in parts},
                    "p95": {k: pct([t[k] for t in turns], 95) for k in parts},
                    "wer_pct": 100 * errors / max(ref_words, 1),
                    "cpu_pct_per_call": 100 * cpu / max(call_seconds, 1e-9),
                },
                indent=2,
            )
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--endpoint-ms", type=int, default=500)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    utterances = UTTERANCES[:4] if args.quick else UTTERANCES
    return asyncio.run(run(utterances, args.concurrency, args.endpoint_ms, args.json))


if __name__ == "__main__":
    sys.exit(main())
