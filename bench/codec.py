"""Per-frame CPU cost of the Twilio media codec path, three ways side by side.

    python bench/codec.py           # ~5 s: 5000 frames x 9 repeats
    python bench/codec.py --quick   # ~2 s: 500 frames x 5 repeats

INBOUND  = one Twilio ``media`` message text -> JSON parse -> base64 decode ->
           mu-law decode -> resample 8 kHz -> 16 kHz (int16 for the agent).
OUTBOUND = 20 ms of 16 kHz int16 agent audio (bytes, as a TTS gives it) ->
           resample 16 kHz -> 8 kHz -> mu-law encode -> cut into 160-byte
           frames -> base64 -> ``media`` JSON text.

Implementations:
  callbridge  callbridge.codecs.{mediastreams, g711, resample}
  soxr        orjson + binascii + audioop + soxr.ResampleStream (quality HQ)
  pipecat     pipecat-ai TwilioFrameSerializer (deserialize a media message /
              serialize an OutputAudioRawFrame; audioop + soxr VHQ + json +
              base64 inside; it does not cut outbound audio into 160-byte
              frames).  Skipped, with a note, if pipecat-ai is not installed.

Time is wall time (time.perf_counter_ns) around a loop over all frames with
the GC off, divided by the frame count, so an implementation that buffers
and emits bursts is charged its total cost spread over all frames; the
median of several repeats is reported.  The burstiness table shows how the
output is spread over calls (hold-back before the first output, share of
20 ms inputs that gave nothing).  Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import gc
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

STREAM_SID = "MZ" + "0123456789abcdef" * 2
FRAME_IN = 160  # mu-law bytes / 8 kHz samples per 20 ms
FRAME_AGENT = 320  # 16 kHz samples per 20 ms


def _optional(name):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return __import__(name), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


# -- test material ----------------------------------------------------------


def speechish(rate: int, n: int, seed: int) -> np.ndarray:
    """Voice-band test audio: a few moving tones plus noise, ~-12 dBFS."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = rng.normal(0, 1500, n)
    for f0, amp in ((180, 6000), (720, 3000), (1900, 1500), (3100, 700)):
        x += amp * np.sin(2 * np.pi * f0 * t * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t)))
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def inbound_messages(n_frames: int) -> list[str]:
    """Twilio-format ``media`` messages (the layout Twilio sends)."""
    from callbridge.codecs.g711 import ulaw_encode

    mu = ulaw_encode(speechish(8000, n_frames * FRAME_IN, 1))
    out = []
    for i in range(n_frames):
        b64 = binascii.b2a_base64(mu[i * FRAME_IN : (i + 1) * FRAME_IN], newline=False).decode()
        out.append(
            '{"event":"media","sequenceNumber":"%d","streamSid":"%s","media":'
            '{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
            % (i + 2, STREAM_SID, i + 1, i * 20, b64)
        )
    return out


def agent_frames(n_frames: int) -> list[bytes]:
    pcm = speechish(16000, n_frames * FRAME_AGENT, 2)
    return [pcm[i * FRAME_AGENT : (i + 1) * FRAME_AGENT].tobytes() for i in range(n_frames)]


# -- implementations ----------------------------------------------------------
# Each make_* returns (inbound(text) -> pcm16k, outbound(bytes) -> list[str]).
# The output lengths are what the burstiness statistics count.


def make_callbridge():
    from callbridge.codecs import mediastreams
    from callbridge.codecs.framing import Framer
    from callbridge.codecs.g711 import ulaw_decode, ulaw_encode
    from callbridge.codecs.resample import StreamingResampler

    parse, media_message, media_cls = (
        mediastreams.parse_inbound,
        mediastreams.media_message,
        mediastreams.Media,
    )
    up = StreamingResampler(8000, 16000).process
    down = StreamingResampler(16000, 8000).process
    i16 = np.dtype(np.int16)
    push = Framer(FRAME_IN).push

    def inbound(text):
        ev = parse(text)
        if type(ev) is not media_cls:
            return None
        return up(ulaw_decode(ev.payload))

    def outbound(agent: bytes):
        frames = push(ulaw_encode(down(np.frombuffer(agent, i16))))
        return [media_message(STREAM_SID, f) for f in frames]

    return inbound, outbound


def make_soxr():
    import orjson
    import soxr

    from callbridge.codecs.framing import Framer

    audioop, err = _optional("audioop")
    if audioop is None:
        raise ImportError(f"audioop: {err}")
    up = soxr.ResampleStream(8000, 16000, 1, dtype="int16", quality="HQ").resample_chunk
    down = soxr.ResampleStream(16000, 8000, 1, dtype="int16", quality="HQ").resample_chunk
    loads, dumps, a2b, b2a = orjson.loads, orjson.dumps, binascii.a2b_base64, binascii.b2a_base64
    ulaw2lin, lin2ulaw = audioop.ulaw2lin, audioop.lin2ulaw
    i16 = np.dtype(np.int16)
    push = Framer(FRAME_IN).push

    def inbound(text):
        msg = loads(text)
        if msg.get("event") != "media":
            return None
        pcm = ulaw2lin(a2b(msg["media"]["payload"]), 2)
        return up(np.frombuffer(pcm, i16))

    def outbound(agent: bytes):
        msgs = []
        for frame in push(lin2ulaw(down(np.frombuffer(agent, i16)).tobytes(), 2)):
            b64 = b2a(frame, newline=False).decode()
            msg = {"event": "media", "streamSid": STREAM_SID, "media": {"payload": b64}}
            msgs.append(dumps(msg).decode())
        return msgs

    return inbound, outbound


def make_pipecat():
    os.environ.setdefault("LOGURU_LEVEL", "WARNING")  # no import banner
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pipecat.frames.frames import OutputAudioRawFrame
        from pipecat.serializers.twilio import TwilioFrameSerializer

    ser = TwilioFrameSerializer(
        STREAM_SID, params=TwilioFrameSerializer.InputParams(auto_hang_up=False, sample_rate=16000)
    )
    ser._sample_rate = 16000  # what setup() does from the pipeline's settings
    frame_cls = OutputAudioRawFrame

    def sync(coro):
        # the serializer's coroutines never suspend: drive them without a loop
        try:
            coro.send(None)
        except StopIteration as stop:
            return stop.value
        coro.close()
        raise RuntimeError("pipecat coroutine suspended")

    def inbound(text):
        frame = sync(ser.deserialize(text))
        return None if frame is None else frame.audio

    def outbound(agent_frame):
        text = sync(ser.serialize(agent_frame))
        return [] if text is None else [text]

    def wrap(agent: list[bytes]):
        # the TTS hands pipecat frame objects: build them outside the timing
        return [frame_cls(audio=a, sample_rate=16000, num_channels=1) for a in agent]

    return inbound, outbound, wrap


# -- measurement ----------------------------------------------------------------


def per_frame_us(fn, items, repeats: int) -> float:
    for it in items[: min(len(items), 200)]:  # warm-up
        fn(it)
    times = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            for it in items:
                fn(it)
            times.append((time.perf_counter_ns() - t0) / len(items) / 1000.0)
    finally:
        gc.enable()
    return statistics.median(times)


def burst_stats(fn, items, unit) -> str:
    """How a fresh stream spreads its output over calls."""
    sizes = [unit(fn(it)) for it in items]  # ms of audio per call
    first = next((i for i, s in enumerate(sizes) if s), len(sizes))
    empty = sum(1 for s in sizes if not s)
    nonzero = [s for s in sizes if s]
    biggest = max(nonzero) if nonzero else 0
    return (
        f"first output after {first:3d} frames ({first * 20:4d} ms), "
        f"{100.0 * empty / len(sizes):5.1f}% calls empty, largest output {biggest:g} ms"
    )


def machine_info() -> str:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [
        f"python {platform.python_version()} ({platform.python_implementation()})",
        f"numpy {np.__version__}",
        f"cpus {os.cpu_count()}",
        model,
        platform.platform(),
    ]
    for mod in ("soxr", "orjson", "pipecat"):
        m = sys.modules.get(mod)
        if m is not None:
            parts.append(f"{mod} {getattr(m, '__version__', '?')}")
    return " | ".join(p for p in parts if p)


def components(repeats: int, n: int) -> list[tuple[str, float]]:
    """The building blocks alone, µs per 20 ms frame."""
    import orjson

    from callbridge.codecs import mediastreams
    from callbridge.codecs.g711 import ulaw_decode, ulaw_encode
    from callbridge.codecs.resample import StreamingResampler

    def us(fn, items):
        return per_frame_us(fn, items, repeats)

    text = inbound_messages(1)[0]
    pcm8 = speechish(8000, FRAME_IN, 3)
    mu = ulaw_encode(pcm8)
    a2b, loads, media_message = binascii.a2b_base64, orjson.loads, mediastreams.media_message

    def orjson_b64(t):
        return a2b(loads(t)["media"]["payload"])

    rows = [
        ("mediastreams.parse_inbound (media)", us(mediastreams.parse_inbound, [text] * n)),
        ("  vs orjson.loads + a2b_base64", us(orjson_b64, [text] * n)),
        ("mediastreams.media_message 160 B", us(lambda b: media_message(STREAM_SID, b), [mu] * n)),
        ("g711 ulaw_decode 160 B", us(ulaw_decode, [mu] * n)),
        ("g711 ulaw_encode 160 samples", us(ulaw_encode, [pcm8] * n)),
    ]
    audioop, _ = _optional("audioop")
    if audioop is not None:
        raw = pcm8.tobytes()
        ulaw2lin, lin2ulaw = audioop.ulaw2lin, audioop.lin2ulaw
        rows.append(("  vs audioop.ulaw2lin 160 B", us(lambda b: ulaw2lin(b, 2), [mu] * n)))
        rows.append(("  vs audioop.lin2ulaw 160 samples", us(lambda b: lin2ulaw(b, 2), [raw] * n)))
    soxr, _ = _optional("soxr")
    for a, b in ((8000, 16000), (16000, 8000), (22050, 8000), (24000, 8000)):
        step = a // 50
        x = speechish(a, step * n, 4)
        frames = [x[i * step : (i + 1) * step] for i in range(n)]
        r = StreamingResampler(a, b)
        label = f"StreamingResampler {a}->{b} (delay {r.delay_ms:.2f} ms)"
        rows.append((label, us(r.process, frames)))
        if soxr is not None:
            s = soxr.ResampleStream(a, b, 1, dtype="int16", quality="HQ")
            rows.append((f"  vs soxr HQ stream {a}->{b}", us(s.resample_chunk, frames)))
    return rows


def _pcm16k_ms(y) -> float:
    """ms of 16 kHz audio in an inbound result (int16 array or bytes)."""
    if y is None:
        return 0.0
    return (y.size if isinstance(y, np.ndarray) else len(y) // 2) / 16.0


def _mulaw_ms(msgs: list[str]) -> float:
    """ms of 8 kHz mu-law audio in the outbound media messages of one call."""
    total = 0
    for msg in msgs:
        i = msg.index('"payload":') + len('"payload":')
        total += len(base64.b64decode(msg[i:].split('"')[1]))
    return total / 8.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer frames and repeats (~2 s)")
    ap.add_argument("--frames", type=int, help="frames per repeat")
    ap.add_argument("--repeats", type=int, help="timed repeats (median reported)")
    ap.add_argument("--json", help="also write the figures (µs per frame) to this file")
    args = ap.parse_args(argv)
    n = args.frames or (500 if args.quick else 5000)
    repeats = args.repeats or (5 if args.quick else 9)

    texts = inbound_messages(n)
    agent = agent_frames(n)
    factories = {"callbridge": make_callbridge, "soxr": make_soxr, "pipecat": make_pipecat}
    notes = []
    for name, factory in list(factories.items()):
        try:
            factory()  # import check; the timed instances are made fresh below
        except Exception as exc:
            notes.append(f"{name}: not run ({type(exc).__name__}: {exc})")
            del factories[name]

    print("machine:", machine_info())
    print(f"frames per repeat: {n}, repeats: {repeats} (median); µs per 20 ms frame")
    for note in notes:
        print("note:", note)
    print()

    results, bursts = {}, {}
    for name, factory in factories.items():
        made = factory()
        wrap = made[2] if len(made) > 2 else (lambda frames: frames)
        t_in = per_frame_us(made[0], texts, repeats)
        t_out = per_frame_us(made[1], wrap(agent), repeats)
        results[name] = (t_in, t_out)
        fresh = factory()
        bursts[name] = (
            burst_stats(fresh[0], texts[:100], _pcm16k_ms),
            burst_stats(fresh[1], wrap(agent[:100]), _mulaw_ms),
        )

    base_in, base_out = results.get("callbridge", (float("nan"), float("nan")))
    print(
        f"{'implementation':<12} {'in µs':>8} {'out µs':>8} {'in+out µs':>10}"
        f"   {'x in':>6} {'x out':>6} {'x total':>7}"
    )
    print("-" * 67)
    for name, (t_in, t_out) in results.items():
        total = (t_in + t_out) / (base_in + base_out)
        print(
            f"{name:<12} {t_in:8.2f} {t_out:8.2f} {t_in + t_out:10.2f}"
            f"   {t_in / base_in:6.2f} {t_out / base_out:6.2f} {total:7.2f}"
        )
    print("(x = time relative to callbridge; higher is slower)")
    print()
    print("burstiness, first 100 frames of a fresh stream (ms of audio per call):")
    for name, (b_in, b_out) in bursts.items():
        print(f"  {name:<10} in : {b_in}")
        print(f"  {'':<10} out: {b_out}")
    if "pipecat" in results:
        print("  (pipecat sends what its resampler returns as one message;")
        print("   the others cut it into 160-byte / 20 ms messages)")
    print()
    print("components alone (µs per 20 ms frame):")
    parts = components(repeats, max(200, n // 2))
    for label, t in parts:
        print(f"  {label:<48} {t:7.2f}")
    if args.json:
        out = {
            "frames": n,
            "repeats": repeats,
            "notes": notes,
            "components_us": dict(parts),
            "us_per_frame": {k: {"in": i, "out": o, "total": i + o} for k, (i, o) in results.items()},
        }
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
