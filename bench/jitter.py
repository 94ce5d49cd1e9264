"""Jitter buffer under simulated mobile lines: added latency, concealment, drops, CPU; and
beside it, on the same lines, the in-order path every call now takes (``codecs.inorder``):
is there a line on which a playout buffer still helps a machine listener?

    python bench/jitter.py            # 4 profiles x 5 seeds x 120 s of speech; WER over 10 seeds, ~1 min
    python bench/jitter.py --quick    # 4 profiles x 2 seeds x 60 s; WER over 3 seeds, ~20 s

Profiles (``callbridge.sim.impair.Impairment``; every profile adds 0-5 ms of per-frame
socket noise, so "clean" has a small, non-zero line jitter):

  clean     no loss, no stalls
  moderate  1% loss, stalls of 50-200 ms every 0.2-1 s (a line that jitters all the time)
  heavy     3% loss, stalls of 200-800 ms every 1-5 s
  loss3     3% loss alone (gaps in the timestamps, as Twilio shows upstream loss), no stalls

The caller's audio is the three espeak utterances in ``callbridge/assets`` in a loop, with
0.3-1.5 s pauses, over -55 dBFS background noise, as 8 kHz mu-law.  The buffer is driven
exactly as a 20 ms playout timer would: each delivery is pushed at its delivery time and
``pop`` is called at each frame's due time.

Columns (ms unless noted; the % columns other than conc % are per 100 caller frames):
  line p95     the line's own jitter: p95 over delivered frames of (delivery delay - the
               smallest delay of the run)
  added p50/95 added latency of each caller frame played: (when it is played, or when it
               arrived if later) - (its capture time + the smallest delay); ground truth
               from the simulator, not the buffer's own estimate
  ratio        added p95 / line p95 (target <= 1.2; n/a on the lines without stalls, whose
               jitter is socket noise: there the minimum depth, JITTER_MIN_MS, is the floor)
  conc %       output frames that are concealment or comfort noise (lost slots and
               frames inserted while holding through a stall), per 100 output frames
  gap %        media slots lost upstream (the requested loss), concealed or skipped
  late %       media slots given up at the hold limit (their frames came too late)
  drop q/s %   frames dropped to catch up after a burst: quiet / speech
  stale        frames dropped for being > 2 s behind
  target       the target depth at the end of the run (mean over seeds)
  us/frame     CPU per caller frame, push + pop (median over seeds)

Each profile's ``in-order`` row: the same lines pushed into ``InOrder`` at their delivery
times (each frame out at once): added = its arrival after its ideal time (the line's own
delay, nothing waits), conc % its concealed gaps.

Then the recogniser's word error rate per profile (``in-order``: fed everything the
in-order path lets out, as a call now feeds it): the demo's three caller lines and the
five ``WER_SENTENCES`` (espeak-ng, en-us; 56 words), played out through the buffer over the
profile's line (10 seeds: 560 words per profile; 3 with --quick) and fed to the embedded STT
(``callbridge.speech.stt``) as a call feeds it: without the frames the buffer inserted while
holding through a stall (``Frame.filler``); scored against the text spoken. Two ways:

  in call  all eight lines in one call, one buffer, after 5 s of silence (the greeting, while
           the buffer learns the line: ``recognised_call``), as a caller's turns really come
  cold     a fresh buffer per line, 0.5 s before it: its first stall finds the buffer at its
           minimum depth (the earlier form of this benchmark; the worst case of a call's
           first words on a line that only then turned bad)

The recogniser carries its cepstral mean from utterance to utterance, so a figure moves by
a few points with the order and the seeds; compare profiles within one run.
Target (the issue's): WER at 3% loss (``loss3``) within 5 points of the clean line, in a
call; the heavy line (3% loss and 200-800 ms stalls) is reported beside it.

Hook for the speech-recognition comparison (WER versus the clean line):
``from bench.jitter import playout`` (from the repo root), then
``playout(audio_ulaw, impairment, params)`` returns the caller audio exactly as the buffer
plays it out (mu-law bytes, one frame per 20 ms of wall time), to feed to a recogniser;
``recognised_audio`` the same without the fillers: what a call's recogniser is fed.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from callbridge.codecs.g711 import ulaw_encode
from callbridge.codecs.inorder import InOrder
from callbridge.codecs.jitterbuffer import Frame, JitterBuffer, JitterParams, JitterStats
from callbridge.sim.impair import Impairment, delays_ms

ROOT = Path(__file__).resolve().parents[1]

FRAME_MS = 20
FRAME_BYTES = 160

PROFILES: dict[str, dict[str, Any]] = {  # Impairment keywords
    "clean": dict(noise_ms=5.0),
    "moderate": dict(loss=0.01, jitter=(50, 200), stall_every_s=(0.2, 1.0), noise_ms=5.0),
    "heavy": dict(loss=0.03, jitter=(200, 800), noise_ms=5.0),
    "loss3": dict(loss=0.03, noise_ms=5.0),
}
WER_SENTENCES = (
    "Can I move my appointment to Friday morning?",
    "Do you have anything on Wednesday at ten am?",
    "Yes please, confirm the booking.",
    "Is there anything available on Saturday afternoon?",
    "Hi, I need to book an appointment.",
)
"""Besides the demo's three lines: in-domain sentences the recogniser gets (nearly) right on
a clean line, so that the comparison measures what the line and the buffer take away."""


@dataclass
class PlayoutResult:
    audio: bytes  # mu-law, every frame played, in order
    frames: list[Frame]
    added_ms: list[float]  # ground-truth added latency of each "audio" frame
    line_jitter_ms: list[float]  # delay - min delay, per delivered frame
    stats: JitterStats
    cpu_us_per_frame: float


def simulate(
    audio_ulaw: bytes, impairment: Impairment, params: JitterParams | None = None, in_order: bool = False
) -> PlayoutResult:
    """Send ``audio_ulaw`` (8 kHz mu-law; the tail is padded with silence to a whole frame)
    through ``impairment`` into a ``JitterBuffer(params)`` and play it out until the buffer
    is empty, or (``in_order``) into the ``InOrder`` path calls take, each delivery pushed
    at its delivery time and out at once.  Pure and deterministic for a given seed."""
    params = params or JitterParams()
    fb, fms = params.frame_bytes, params.frame_ms
    if impairment.frame_ms != fms:
        raise ValueError(f"impairment frame_ms {impairment.frame_ms} != buffer frame_ms {fms}")
    pad = (-len(audio_ulaw)) % fb
    audio_ulaw = bytes(audio_ulaw) + b"\xff" * pad
    n = len(audio_ulaw) // fb
    sched = impairment.schedule(n)
    if not sched:
        return PlayoutResult(b"", [], [], [], JitterBuffer(params).stats(), 0.0)
    payloads = [audio_ulaw[i * fb : (i + 1) * fb] for i in range(n)]
    delays = delays_ms(sched, fms)
    dmin = min(delays)
    if in_order:
        return _simulate_in_order(sched, payloads, delays, dmin)
    fs = fms / 1000.0
    t0 = sched[0].at_s + params.initial_depth_ms / 1000.0  # first due time
    jb = JitterBuffer(params)
    frames: list[Frame] = []
    added: list[float] = []
    arrival = {}
    i = 0
    k = 0
    cpu = 0
    pc = time.perf_counter_ns
    gc_was = gc.isenabled()
    gc.disable()
    try:
        while True:
            now = t0 + k * fs
            while i < len(sched) and sched[i].at_s <= now:
                d = sched[i]
                arrival[d.timestamp_ms] = d.at_s
                c0 = pc()
                jb.push(d.chunk, d.timestamp_ms, payloads[d.frame], d.at_s)
                cpu += pc() - c0
                i += 1
            c0 = pc()
            out = jb.pop(now)
            cpu += pc() - c0
            for f in out:
                frames.append(f)
                if f.kind == "audio":
                    assert f.source_ts_ms is not None  # audio plays a media timestamp
                    ideal = f.source_ts_ms / 1000.0 + dmin / 1000.0
                    added.append((max(now, arrival[f.source_ts_ms]) - ideal) * 1000.0)
            k += 1
            if i >= len(sched) and len(jb) == 0:
                break
    finally:
        if gc_was:
            gc.enable()
    return _result(frames, added, delays, dmin, jb.stats(), cpu, n)


def _result(
    frames: list[Frame],
    added: list[float],
    delays: list[float],
    dmin: float,
    stats: JitterStats,
    cpu_ns: int,
    n: int,
) -> PlayoutResult:
    return PlayoutResult(
        audio=b"".join(f.payload for f in frames),
        frames=frames,
        added_ms=added,
        line_jitter_ms=[d - dmin for d in delays],
        stats=stats,
        cpu_us_per_frame=cpu_ns / 1000.0 / max(1, n),
    )


def _simulate_in_order(sched: list, payloads: list[bytes], delays: list[float], dmin: float) -> PlayoutResult:
    io = InOrder()
    frames: list[Frame] = []
    added: list[float] = []
    cpu = 0
    pc = time.perf_counter_ns
    for d in sched:
        c0 = pc()
        out = io.push(d.chunk, d.timestamp_ms, payloads[d.frame], d.at_s)
        cpu += pc() - c0
        frames += out
        if out and out[-1].kind == "audio":  # out at its arrival: only the line's delay
            added.append((d.at_s - (d.timestamp_ms + dmin) / 1000.0) * 1000.0)
    return _result(frames, added, delays, dmin, io.stats(), cpu, len(payloads))


def playout(audio_ulaw: bytes, impairment: Impairment, params: JitterParams | None = None) -> bytes:
    """The caller audio as the buffer plays it out over ``impairment``: mu-law bytes, one
    frame per 20 ms of wall time (concealment and comfort noise included).  The hook for
    the WER-versus-clean comparison: decode, resample and feed it to the recogniser."""
    return simulate(audio_ulaw, impairment, params).audio


def recognised_audio(audio_ulaw: bytes, impairment: Impairment, params: JitterParams | None = None) -> bytes:
    """What a call's recogniser is fed of ``audio_ulaw`` over ``impairment``: the buffer's
    output without the fillers inserted while it held through a stall."""
    return b"".join(f.payload for f in simulate(audio_ulaw, impairment, params).frames if not f.filler)


def recognised_call(
    lines: list[bytes],
    impairment: Impairment,
    params: JitterParams | None = None,
    lead_s: float = 5.0,
    in_order: bool = False,
) -> list[bytes]:
    """``lines`` (mu-law, whole frames each) spoken one after another in one call, after
    ``lead_s`` of silence (the agent's greeting: the buffer learns the line meanwhile), all
    through one buffer over ``impairment``: what the recogniser is fed of each line (the
    frames whose media time falls in it, without fillers)."""
    fb = FRAME_BYTES
    lead = b"\xff" * (int(lead_s * 1000) // FRAME_MS * fb)
    bounds, pos = [], len(lead) // fb
    for line in lines:
        if len(line) % fb:
            raise ValueError("each line must be a whole number of frames")
        bounds.append((pos * FRAME_MS, (pos + len(line) // fb) * FRAME_MS))
        pos += len(line) // fb
    out: list[list[bytes]] = [[] for _ in lines]
    i = 0
    for f in simulate(lead + b"".join(lines), impairment, params, in_order).frames:
        if f.source_ts_ms is None:  # a filler (f.filler)
            continue
        while i < len(bounds) and f.source_ts_ms >= bounds[i][1]:
            i += 1
        if i < len(bounds) and f.source_ts_ms >= bounds[i][0]:
            out[i].append(f.payload)
    return [b"".join(x) for x in out]


def speech_audio(seconds: float, seed: int) -> bytes:
    """The asset utterances in a loop with seeded pauses, over -55 dBFS noise, as mu-law."""
    from callbridge.sim.wavio import read_wav

    utts = [read_wav(p) for p in sorted((ROOT / "callbridge" / "assets").glob("*.wav"))]
    rng = np.random.default_rng(seed)
    n = int(seconds * 8000)
    parts, total, j = [], 0, 0
    while total < n:
        gap = np.zeros(int(rng.uniform(0.3, 1.5) * 8000), np.float64)
        u = utts[j % len(utts)].astype(np.float64)
        parts += [gap, u]
        total += len(gap) + len(u)
        j += 1
    x = np.concatenate(parts)[:n] + rng.normal(0, 32768 * 10 ** (-55 / 20), n)
    return ulaw_encode(np.clip(np.round(x), -32768, 32767).astype(np.int16))


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def call_params() -> JitterParams:
    """The buffer as calls ran it before the in-order path (20 ms least depth)."""
    return JitterParams(initial_depth_ms=20.0, min_depth_ms=20.0)


def word_error_rates(seeds: range) -> dict[str, float]:
    """WER (%) of the embedded recogniser on the demo lines and ``WER_SENTENCES`` over each
    profile, fed as a call feeds it (``recognised_audio``)."""
    import asyncio

    from callbridge.agents.desk_vocabulary import desk_vocabulary
    from callbridge.cli import DEMO_LINES, bundled_turns
    from callbridge.codecs.g711 import ulaw_decode
    from callbridge.codecs.resample import StreamingResampler
    from callbridge.sim.wavio import read_wav
    from callbridge.speech.stt import get_recognizer
    from callbridge.speech.tts import EspeakTTS
    from callbridge.testing.audio import speech
    from callbridge.testing.wer import word_errors, words

    pad = np.zeros(8000, np.int16)
    tts = EspeakTTS(voice="en-us", rate_wpm=150)
    spoken = [read_wav(p) for p in bundled_turns()] + [speech(tts, t) for t in WER_SENTENCES]
    lines = [
        ulaw_encode(np.concatenate([pad[:4000], x, pad, pad[: (-len(x) - 12000) % FRAME_BYTES]]))
        for x in spoken
    ]  # whole frames
    texts = [*DEMO_LINES, *WER_SENTENCES]

    async def transcribe(audio_ulaw: bytes) -> str:
        pcm16 = StreamingResampler(8000, 16000).process(ulaw_decode(audio_ulaw))
        utterance = await get_recognizer(desk_vocabulary()).start()
        for i in range(0, len(pcm16), 320):
            utterance.feed(pcm16[i : i + 320])
        return await utterance.finish()

    async def wer(kw: dict, how: str) -> float:
        errors = total = 0
        for seed in seeds:
            line = Impairment(seed=seed, **kw)
            if how != "cold":
                fed = recognised_call(lines, line, call_params(), in_order=how == "in-order")
            else:
                fed = [recognised_audio(audio, line, call_params()) for audio in lines]
            for text, audio in zip(texts, fed, strict=True):
                heard = await transcribe(audio)
                errors += word_errors(words(text), words(heard))
                total += len(words(text))
        return 100.0 * errors / total

    async def all_profiles() -> dict[str, float]:
        await get_recognizer(desk_vocabulary()).prewarm()
        return {
            f"{name} {how}": await wer(kw, how)
            for how in ("in-order", "in call", "cold")
            for name, kw in PROFILES.items()
        }

    return asyncio.run(all_profiles())


def run(quick: bool, json_path: str | None = None) -> None:
    seeds = range(2) if quick else range(5)
    seconds = 60.0 if quick else 120.0
    print(
        f"jitter buffer: {len(seeds)} seeds x {seconds:.0f} s of speech per profile; "
        f"min depth {call_params().min_depth_ms:.0f} ms ; python {sys.version.split()[0]}, "
        f"numpy {np.__version__}"
    )
    hdr = (
        f"{'profile':<9} {'line p95':>8} {'added p50':>9} {'added p95':>9} {'ratio':>6} "
        f"{'conc %':>6} {'gap %':>5} {'late %':>6} {'drop q %':>8} {'drop s %':>8} {'stale':>5} "
        f"{'target':>6} {'us/frame':>8}"
    )
    print(hdr)
    print("-" * len(hdr))
    figures: dict[str, dict] = {}
    for name, kw in PROFILES.items():
        line, added, cpu, targets = [], [], [], []
        tot = dict(n=0, out=0, conc=0, lost=0, late=0, dq=0, ds=0, stale=0)
        for seed in seeds:
            audio = speech_audio(seconds, seed)
            r = simulate(audio, Impairment(seed=seed, **kw), call_params())
            line += r.line_jitter_ms
            added += r.added_ms
            st = r.stats
            tot["n"] += len(audio) // FRAME_BYTES
            tot["out"] += st.output
            tot["conc"] += st.concealed + st.comfort
            tot["lost"] += st.lost
            tot["late"] += st.lost_late
            tot["dq"] += st.dropped_quiet
            tot["ds"] += st.dropped_speech
            tot["stale"] += st.stale
            targets.append(st.target_ms)
            cpu.append(r.cpu_us_per_frame)
        lp95, ap50, ap95 = pct(line, 95), pct(added, 50), pct(added, 95)
        ratio = f"{ap95 / lp95:6.2f}" if "jitter" in kw and lp95 > 0 else f"{'n/a':>6}"
        n = tot["n"]
        print(
            f"{name:<9} {lp95:8.0f} {ap50:9.0f} {ap95:9.0f} {ratio} {100 * tot['conc'] / tot['out']:6.2f} "
            f"{100 * tot['lost'] / n:5.2f} {100 * tot['late'] / n:6.2f} {100 * tot['dq'] / n:8.2f} "
            f"{100 * tot['ds'] / n:8.2f} {tot['stale']:5d} {statistics.mean(targets):6.0f} "
            f"{statistics.median(cpu):8.1f}"
        )
        io_added, io_cpu, io_conc, io_out = [], [], 0, 0
        for seed in seeds:
            r = simulate(speech_audio(seconds, seed), Impairment(seed=seed, **kw), in_order=True)
            io_added += r.added_ms
            io_cpu.append(r.cpu_us_per_frame)
            io_conc += r.stats.concealed + r.stats.comfort
            io_out += r.stats.output
        in_order = {
            "added_p50_ms": pct(io_added, 50),
            "added_p95_ms": pct(io_added, 95),
            "concealed_pct": 100 * io_conc / max(io_out, 1),
            "us_per_frame": statistics.median(io_cpu),
        }
        print(
            f"{'  in-order':<9} {lp95:8.0f} {in_order['added_p50_ms']:9.0f} {in_order['added_p95_ms']:9.0f} "
            f"{'':>6} {in_order['concealed_pct']:6.2f} {'':>5} {'':>6} {'':>8} {'':>8} {'':>5} {'':>6} "
            f"{in_order['us_per_frame']:8.1f}"
        )
        figures[name] = {
            "in_order": in_order,
            "line_p95_ms": lp95,
            "added_p50_ms": ap50,
            "added_p95_ms": ap95,
            "ratio": ap95 / lp95 if "jitter" in kw and lp95 > 0 else None,
            "concealed_pct": 100 * tot["conc"] / tot["out"],
            "stale": tot["stale"],
            "us_per_frame": statistics.median(cpu),
        }
    wer_seeds = range(3) if quick else range(10)
    rates = word_error_rates(wer_seeds)
    print(f"\nSTT word error rate, {len(wer_seeds)} seeds x 8 lines (560 words at 10 seeds):")
    for how, what in (
        ("in-order", "the in-order path every call takes: each frame at once, gaps concealed"),
        ("in call", "one buffer per call, lines after a 5 s greeting (target)"),
        ("cold", "a fresh buffer per line (its first stall finds it at the minimum depth)"),
    ):
        wer = {name: rates[f"{name} {how}"] for name in PROFILES}
        print(
            f"  {how:<7} " + ", ".join(f"{name} {rate:.1f}%" for name, rate in wer.items()) + f"   [{what}]"
        )
        print(
            f"          loss3 - clean {wer['loss3'] - wer['clean']:+.1f} points (target <= +5), "
            f"heavy - clean {wer['heavy'] - wer['clean']:+.1f} points"
        )
    if json_path:
        import json

        for name in PROFILES:
            figures[name]["in_order_wer_pct"] = rates[f"{name} in-order"]
            figures[name]["wer_pct"] = rates[f"{name} in call"]
            figures[name]["wer_cold_pct"] = rates[f"{name} cold"]
        Path(json_path).write_text(
            json.dumps({"seeds": len(seeds), "seconds": seconds, "profiles": figures}, indent=2)
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds x 60 s")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    run(args.quick, args.json)


if __name__ == "__main__":
    main()
