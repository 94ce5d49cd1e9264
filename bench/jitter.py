"""Jitter buffer under simulated mobile lines: added latency, concealment, drops, CPU.

    python bench/jitter.py            # 3 profiles x 5 seeds x 120 s of speech, ~2 s
    python bench/jitter.py --quick    # 3 profiles x 2 seeds x 60 s, < 1 s

Profiles (``callbridge.sim.impair.Impairment``; every profile adds 0-5 ms of per-frame
socket noise, so "clean" has a small, non-zero line jitter):

  clean     no loss, no stalls
  moderate  1% loss, stalls of 50-200 ms every 0.2-1 s (a line that jitters all the time)
  heavy     3% loss, stalls of 200-800 ms every 1-5 s

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
  ratio        added p95 / line p95 (target <= 1.2; n/a on the clean line, whose jitter is
               socket noise: there the minimum depth, JITTER_MIN_MS, is the floor)
  conc %       output frames that are concealment or comfort noise (lost slots and
               frames inserted while holding through a stall), per 100 output frames
  gap %        media slots lost upstream (the requested loss), concealed or skipped
  late %       media slots given up at the hold limit (their frames came too late)
  drop q/s %   frames dropped to catch up after a burst: quiet / speech
  stale        frames dropped for being > 2 s behind
  target       the target depth at the end of the run (mean over seeds)
  us/frame     CPU per caller frame, push + pop (median over seeds)

Then the recogniser's word error rate per profile: the demo's three caller lines, each
played out through the buffer over the profile's line (all seeds), transcribed by the
embedded STT (``callbridge.speech.stt``), against the text spoken; target: heavy within 5
points of clean.

Hook for the speech-recognition comparison (WER versus the clean line):
``from bench.jitter import playout`` (from the repo root), then
``playout(audio_ulaw, impairment, params)`` returns the caller audio exactly as the buffer
plays it out (mu-law bytes, one frame per 20 ms of wall time), to feed to a recogniser.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from callbridge.codecs.g711 import ulaw_encode  # noqa: E402
from callbridge.codecs.jitterbuffer import Frame, JitterBuffer, JitterParams, JitterStats  # noqa: E402
from callbridge.config import Settings  # noqa: E402
from callbridge.sim.impair import Impairment, delays_ms  # noqa: E402

FRAME_MS = 20
FRAME_BYTES = 160

PROFILES = {
    "clean": dict(noise_ms=5.0),
    "moderate": dict(loss=0.01, jitter=(50, 200), stall_every_s=(0.2, 1.0), noise_ms=5.0),
    "heavy": dict(loss=0.03, jitter=(200, 800), noise_ms=5.0),
}


@dataclass
class PlayoutResult:
    audio: bytes  # mu-law, every frame played, in order
    frames: list[Frame]
    added_ms: list[float]  # ground-truth added latency of each "audio" frame
    line_jitter_ms: list[float]  # delay - min delay, per delivered frame
    stats: JitterStats
    cpu_us_per_frame: float


def simulate(audio_ulaw: bytes, impairment: Impairment, params: JitterParams | None = None) -> PlayoutResult:
    """Send ``audio_ulaw`` (8 kHz mu-law; the tail is padded with silence to a whole frame)
    through ``impairment`` into a ``JitterBuffer(params)`` and play it out until the buffer
    is empty.  Pure and deterministic for a given impairment seed."""
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
                    ideal = f.source_ts_ms / 1000.0 + dmin / 1000.0
                    added.append((max(now, arrival[f.source_ts_ms]) - ideal) * 1000.0)
            k += 1
            if i >= len(sched) and len(jb) == 0:
                break
    finally:
        if gc_was:
            gc.enable()
    return PlayoutResult(
        audio=b"".join(f.payload for f in frames),
        frames=frames,
        added_ms=added,
        line_jitter_ms=[d - dmin for d in delays],
        stats=jb.stats(),
        cpu_us_per_frame=cpu / 1000.0 / max(1, n),
    )


def playout(audio_ulaw: bytes, impairment: Impairment, params: JitterParams | None = None) -> bytes:
    """The caller audio as the buffer plays it out over ``impairment``: mu-law bytes, one
    frame per 20 ms of wall time (concealment and comfort noise included).  The hook for
    the WER-versus-clean comparison: decode, resample and feed it to the recogniser."""
    return simulate(audio_ulaw, impairment, params).audio


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
    """The buffer as a call runs it (``JITTER_MIN_MS``)."""
    depth = float(Settings().jitter_min_ms)
    return JitterParams(initial_depth_ms=depth, min_depth_ms=depth)


def word_error_rates(seeds: range) -> dict[str, float]:
    """WER (%) of the embedded recogniser on the demo lines played out over each profile."""
    import asyncio

    from bench.turns import word_errors, words
    from callbridge.cli import DEMO_LINES, bundled_turns
    from callbridge.codecs.g711 import ulaw_decode
    from callbridge.codecs.resample import StreamingResampler
    from callbridge.sim.wavio import read_wav
    from callbridge.speech.stt import get_recognizer

    pad = np.zeros(8000, np.int16)
    lines = [ulaw_encode(np.concatenate([pad[:4000], read_wav(p), pad])) for p in bundled_turns()]

    async def transcribe(audio_ulaw: bytes) -> str:
        pcm16 = StreamingResampler(8000, 16000).process(ulaw_decode(audio_ulaw))
        utterance = await get_recognizer().start()
        for i in range(0, len(pcm16), 320):
            utterance.feed(pcm16[i : i + 320])
        return await utterance.finish()

    async def wer(kw: dict) -> float:
        errors = total = 0
        for seed in seeds:
            for text, audio in zip(DEMO_LINES, lines):
                heard = await transcribe(playout(audio, Impairment(seed=seed, **kw), call_params()))
                errors += word_errors(words(text), words(heard))
                total += len(words(text))
        return 100.0 * errors / total

    async def all_profiles() -> dict[str, float]:
        return {name: await wer(kw) for name, kw in PROFILES.items()}

    return asyncio.run(all_profiles())


def run(quick: bool, json_path: str | None = None) -> None:
    seeds = range(2) if quick else range(5)
    seconds = 60.0 if quick else 120.0
    print(f"jitter buffer: {len(seeds)} seeds x {seconds:.0f} s of speech per profile; "
          f"min depth {call_params().min_depth_ms:.0f} ms (JITTER_MIN_MS); python {sys.version.split()[0]}, "
          f"numpy {np.__version__}")
    hdr = (f"{'profile':<9} {'line p95':>8} {'added p50':>9} {'added p95':>9} {'ratio':>6} "
           f"{'conc %':>6} {'gap %':>5} {'late %':>6} {'drop q %':>8} {'drop s %':>8} {'stale':>5} "
           f"{'target':>6} {'us/frame':>8}")
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
        ratio = f"{ap95 / lp95:6.2f}" if name != "clean" and lp95 > 0 else f"{'n/a':>6}"
        n = tot["n"]
        print(f"{name:<9} {lp95:8.0f} {ap50:9.0f} {ap95:9.0f} {ratio} {100 * tot['conc'] / tot['out']:6.2f} "
              f"{100 * tot['lost'] / n:5.2f} {100 * tot['late'] / n:6.2f} {100 * tot['dq'] / n:8.2f} "
              f"{100 * tot['ds'] / n:8.2f} {tot['stale']:5d} {statistics.mean(targets):6.0f} "
              f"{statistics.median(cpu):8.1f}")
        figures[name] = {"line_p95_ms": lp95, "added_p50_ms": ap50, "added_p95_ms": ap95,
                         "ratio": ap95 / lp95 if name != "clean" and lp95 > 0 else None,
                         "concealed_pct": 100 * tot["conc"] / tot["out"], "stale": tot["stale"],
                         "us_per_frame": statistics.median(cpu)}
    rates = word_error_rates(seeds)
    print("\nSTT word error rate on the demo lines played out over each profile: " + ", ".join(
        f"{name} {rate:.1f}%" for name, rate in rates.items()))
    print(f"heavy - clean: {rates['heavy'] - rates['clean']:+.1f} points (target <= +5)")
    if json_path:
        import json

        for name, rate in rates.items():
            figures.setdefault(name, {})["wer_pct"] = rate
        Path(json_path).write_text(json.dumps({"seeds": len(seeds), "seconds": seconds, "profiles": figures}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds x 60 s")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    run(args.quick, args.json)


if __name__ == "__main__":
    main()
