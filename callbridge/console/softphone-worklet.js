// The softphone's audio thread: microphone -> 8 kHz -> mu-law 160-byte frames (posted to
// the page, which sends them as Media Streams `media`), and agent mu-law -> output rate ->
// speaker, with Twilio's mark and clear semantics: a mark is echoed once the audio queued
// before it has played; `clear` drops all queued audio at once and echoes every pending mark.
// Limits: at most MAX_QUEUED_S of agent audio queued (older audio is dropped past it).
import { ulawEncodeFloat, ULAW_TO_FLOAT } from "./g711.js";
import { Resampler } from "./resampler.js";

const FRAME = 160;
const MAX_QUEUED_S = 60;

class Softphone extends AudioWorkletProcessor {
  constructor() {
    super();
    this.down = new Resampler(sampleRate, 8000);
    this.up = new Resampler(8000, sampleRate);
    this.pcm = new Float32Array(FRAME);
    this.fill = 0;
    this.queue = []; // {audio: Float32Array, at: number} | {mark: string}
    this.queuedSamples = 0;
    this.muted = false;
    this.peaks = [0, 0];
    this.quanta = 0;
    this.port.onmessage = (e) => this.command(e.data);
  }

  command(m) {
    if (m.type === "media") {
      const codes = m.payload;
      const pcm = new Float32Array(codes.length);
      for (let i = 0; i < codes.length; i++) pcm[i] = ULAW_TO_FLOAT[codes[i]];
      const audio = this.up.process(pcm);
      if (audio.length) {
        this.queue.push({ audio, at: 0 });
        this.queuedSamples += audio.length;
      }
      while (this.queuedSamples > MAX_QUEUED_S * sampleRate && this.queue.length) {
        const old = this.queue.shift();
        if (old.audio) this.queuedSamples -= old.audio.length - old.at;
        else this.port.postMessage({ type: "played", name: old.mark });
      }
    } else if (m.type === "mark") {
      this.queue.push({ mark: m.name });
    } else if (m.type === "clear") {
      const marks = this.queue.filter((item) => item.mark !== undefined).map((item) => item.mark);
      this.queue = [];
      this.queuedSamples = 0;
      this.up.reset();
      this.port.postMessage({ type: "cleared", marks });
    } else if (m.type === "mute") {
      this.muted = !!m.muted;
    }
  }

  process(inputs, outputs) {
    const input = inputs[0] && inputs[0][0];
    let inPeak = 0;
    if (input) {
      const down = this.down.process(input);
      for (let i = 0; i < down.length; i++) {
        const s = this.muted ? 0 : down[i];
        this.pcm[this.fill++] = s;
        if (Math.abs(s) > inPeak) inPeak = Math.abs(s);
        if (this.fill === FRAME) {
          const payload = ulawEncodeFloat(this.pcm);
          this.port.postMessage({ type: "frame", payload }, [payload.buffer]);
          this.fill = 0;
        }
      }
    }
    const out = outputs[0];
    const channel = out[0];
    let outPeak = 0;
    let i = 0;
    while (i < channel.length) {
      const head = this.queue[0];
      if (!head) break;
      if (head.mark !== undefined) {
        this.queue.shift();
        this.port.postMessage({ type: "played", name: head.mark });
        continue;
      }
      const n = Math.min(channel.length - i, head.audio.length - head.at);
      for (let k = 0; k < n; k++) {
        const s = head.audio[head.at + k];
        channel[i + k] = s;
        if (Math.abs(s) > outPeak) outPeak = Math.abs(s);
      }
      head.at += n;
      i += n;
      this.queuedSamples -= n;
      if (head.at >= head.audio.length) this.queue.shift();
    }
    channel.fill(0, i);
    for (let c = 1; c < out.length; c++) out[c].set(channel);
    this.peaks[0] = Math.max(this.peaks[0], inPeak);
    this.peaks[1] = Math.max(this.peaks[1], outPeak);
    if (++this.quanta >= 16) { // ~40 ms: enough for a meter
      this.port.postMessage({ type: "level", inPeak: this.peaks[0], outPeak: this.peaks[1] });
      this.peaks = [0, 0];
      this.quanta = 0;
    }
    return true;
  }
}

registerProcessor("softphone", Softphone);
