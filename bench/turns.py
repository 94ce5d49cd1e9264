"""Turn-taking benchmark of the embedded agent, end to end over real sockets: ending turns
on meaning against silence alone, side by side in one run.

    python bench/turns.py            # 10 finished + 8 unfinished requests, each on both gateways
    python bench/turns.py --quick    # 4 + 4

Two gateways run as separate processes (``run.py serve``, so their CPU can be read from
/proc): **silence** (``ENDPOINT_COMPLETE_MS`` = ``ENDPOINT_UNFINISHED_MS`` =
``ENDPOINT_SILENCE_MS``: every turn waits the configured silence, the behaviour before
turns ended on meaning) and **meaning** (the defaults: a complete request ends after
``ENDPOINT_COMPLETE_MS``, a clearly unfinished one waits ``ENDPOINT_UNFINISHED_MS``).
Each request is one call (real-time mu-law), placed on one gateway then the other, one call
at a time, alternating which goes first. The caller speaks with the Piper voice (``--caller
natural``, the default: a human-sounding caller, no sampling noise) or espeak-ng (``--caller
espeak``, en-us, 150 wpm: the figures before the neural engines). Both gateways run the
default engines (Whisper, Piper); ``--stt sphinx`` gives them pocketsphinx and espeak-ng.

- **finished** requests (``UTTERANCES``): voice-to-voice (the caller's last speech frame ->
  the agent's first reply frame sent), split into endpointing, STT finalisation, agent
  (first text) and TTS (first chunk -> first frame on the socket); word error rate;
- **unfinished** requests (``UNFINISHED``: a request spoken with a ``PAUSE_S`` pause where
  it is not over: "I'd like to book an appointment on ... Monday at three pm"): a **false
  cut-off** is a call whose first turn ended in the pause (more than one final transcript).

Targets (the issue's): voice-to-voice p50 <= 450 ms on finished requests with the meaning
gateway; <= 5% false cut-offs on the unfinished set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np

from callbridge.sim.caller import SimulatedCall
from callbridge.speech.tts import EspeakTTS
from callbridge.testing.audio import natural_speech, speech
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


PAUSE_S = 0.7
"""The pause inside each unfinished request: longer than ENDPOINT_SILENCE_MS (500)."""

UNFINISHED = [
    ("I would like to book an appointment on", "Monday at three pm."),
    ("Can you move my appointment to", "Friday morning?"),
    ("I need to cancel my appointment for", "next Tuesday."),
    ("Do you have anything free on", "Thursday afternoon?"),
    ("My appointment is at", "ten am on Wednesday."),
    ("I would like to book an appointment and", "it should be on Monday."),
    ("Can I book an appointment for", "tomorrow at two pm?"),
    ("I want to move my appointment to the", "second of March."),
]

MODES = {
    "silence": {"ENDPOINT_COMPLETE_MS": "500", "ENDPOINT_UNFINISHED_MS": "500"},
    "meaning": {},
}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def call(url: str, audio: np.ndarray) -> dict:
    result = await SimulatedCall(url, audio=[audio], polite=True, hold_s=0.2, reply_timeout_s=8.0).run()
    timeline = (result.record or {}).get("timeline", [])
    finals = [e["text"] for e in timeline if e["event"] == "transcript.final"]
    turn = next((e for e in timeline if e["event"] == "turn"), None)
    verdicts = [e["verdict"] for e in timeline if e["event"] == "turn.judged"]
    return {"finals": finals, "turn": turn, "verdicts": verdicts, "seconds": len(result.caller_audio) / 8000}


async def run(
    quick: bool, json_path: str | None = None, caller: str = "natural", stt: str = "whisper"
) -> int:
    finished = UTTERANCES[:4] if quick else UTTERANCES
    unfinished = UNFINISHED[:4] if quick else UNFINISHED
    if caller == "natural":
        say = natural_speech
    else:
        tts = EspeakTTS(voice="en-us", rate_wpm=150)
        say = partial(speech, tts)
    engines = {"STT": "sphinx", "TTS": "espeak"} if stt == "sphinx" else {"STT": "whisper", "TTS": "piper"}
    pause = np.zeros(int(PAUSE_S * 8000), np.int16)
    audio = [say(t) for t in finished]
    audio += [np.concatenate([say(a), pause, say(b)]) for a, b in unfinished]
    texts = [*finished, *(f"{a} {b}" for a, b in unfinished)]
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    cpu = dict.fromkeys(MODES, 0.0)
    with (
        gateway(GREETING="Hi.", **engines, **MODES["silence"]) as silence,
        gateway(GREETING="Hi.", **engines) as meaning,
    ):
        servers = {"silence": silence, "meaning": meaning}
        cpu0 = {mode: cpu_seconds(proc.pid) for mode, (proc, _) in servers.items()}
        for i, clip in enumerate(audio):
            order = list(MODES) if i % 2 == 0 else list(reversed(MODES))
            for mode in order:
                results[mode].append(await call(servers[mode][1], clip))
        for mode, (proc, _) in servers.items():
            cpu[mode] = cpu_seconds(proc.pid) - cpu0[mode]

    n = len(finished)
    print(
        f"python {sys.version.split()[0]} | cpus {os.cpu_count()} | {n} finished + {len(unfinished)} "
        f"unfinished requests ({PAUSE_S:.1f} s pause), one call at a time on each gateway; caller voice "
        f"{caller}, engines {engines}"
    )
    figures: dict[str, dict] = {}
    for mode, rs in results.items():
        turns = [r["turn"] for r in rs[:n] if r["turn"]]
        heard = [" ".join(r["finals"]) for r in rs]
        errors = sum(word_errors(words(t), words(h)) for t, h in zip(texts[:n], heard[:n], strict=True))
        ref = sum(len(words(t)) for t in texts[:n])
        cut = [len(r["finals"]) > 1 for r in rs[n:]]
        early_cut = [len(r["finals"]) > 1 for r in rs[:n]]
        f = figures[mode] = {
            "p50": {k: pct([t[k] for t in turns], 50) for k in PARTS},
            "p95": {k: pct([t[k] for t in turns], 95) for k in PARTS},
            "replies": len(turns),
            "wer_pct": 100 * errors / max(ref, 1),
            "false_cutoffs": sum(cut),
            "false_cutoff_pct": 100 * sum(cut) / max(len(cut), 1),
            "finished_split": sum(early_cut),
            "verdicts": {
                v: sum(r["verdicts"].count(v) for r in rs) for v in ("complete", "unfinished", "unknown")
            },
            "cpu_pct_per_call": 100 * cpu[mode] / max(sum(r["seconds"] for r in rs), 1e-9),
        }
        print(f"\n[{mode}] per finished request (ms):  v2v = endpoint + stt + agent + tts")
        for text, r in zip(texts, rs, strict=True):
            t = r["turn"]
            v2v = (
                f"{t['voice_to_voice_ms']:6.0f} = {t['endpoint_ms']:4.0f} + {t['stt_ms']:4.0f} + "
                f"{t['agent_ms']:4.0f} + {t['tts_ms']:4.0f}"
                if t
                else "   no reply"
            )
            print(f"  {v2v}  {len(r['finals'])} turn(s) {r['verdicts']}  said: {text!r}")
            print(f"  {'':>38}heard: {r['finals']!r}")
        print(
            f"  p50 voice-to-voice {f['p50']['voice_to_voice_ms']:.0f} ms (endpoint {f['p50']['endpoint_ms']:.0f}), "
            f"p95 {f['p95']['voice_to_voice_ms']:.0f}; replies {len(turns)}/{n}; WER {f['wer_pct']:.1f}%"
        )
        print(
            f"  false cut-offs {sum(cut)}/{len(cut)} ({f['false_cutoff_pct']:.0f}%); finished requests split: "
            f"{sum(early_cut)}/{n}; verdicts {f['verdicts']}; gateway CPU {f['cpu_pct_per_call']:.1f}% per call"
        )
    s50, m50 = figures["silence"]["p50"]["voice_to_voice_ms"], figures["meaning"]["p50"]["voice_to_voice_ms"]
    print(f"\nvoice-to-voice p50: silence {s50:.0f} ms -> meaning {m50:.0f} ms ({m50 - s50:+.0f} ms)")
    print(
        f"target p50 <= 450 ms (meaning): {'met' if m50 <= 450 else 'MISSED'}; "
        f"false cut-offs <= 5%: {'met' if figures['meaning']['false_cutoff_pct'] <= 5 else 'MISSED'}"
    )
    if json_path:
        import json

        Path(json_path).write_text(json.dumps(figures, indent=2))  # noqa: ASYNC240 - once, after the run
    return 0


PARTS = ("voice_to_voice_ms", "endpoint_ms", "stt_ms", "agent_ms", "tts_ms")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--caller", choices=("natural", "espeak"), default="natural")
    parser.add_argument("--stt", choices=("whisper", "sphinx"), default="whisper")
    args = parser.parse_args()
    return asyncio.run(run(args.quick, args.json, args.caller, args.stt))


if __name__ == "__main__":
    sys.exit(main())
