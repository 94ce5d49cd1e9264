// A streaming band-limited resampler for any pair of rates (windowed-sinc interpolation,
// Blackman window, kernel from a table). No I/O. Used by the softphone worklet:
// microphone (44.1/48 kHz) -> 8 kHz before mu-law, agent audio 8 kHz -> the output rate.
// The low-pass sits at 0.9 x the lower Nyquist frequency (3.6 kHz for 8 kHz); delay is
// HALF_TAPS zero-crossings of the kernel (~2 ms). Input is kept only as far back as the
// kernel reaches.

const HALF_TAPS = 16; // zero crossings each side
const TABLE_RES = 64; // table points per input sample

export class Resampler {
  constructor(inRate, outRate) {
    if (!(inRate > 0 && outRate > 0)) throw new RangeError("rates must be positive");
    this.step = inRate / outRate; // input samples per output sample
    const fc = 0.9 * Math.min(1, outRate / inRate); // cutoff, fraction of the input Nyquist
    this.half = HALF_TAPS / fc; // kernel half-width in input samples
    const n = Math.ceil(this.half * TABLE_RES) + 2;
    this.table = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const t = i / TABLE_RES;
      if (t >= this.half) continue;
      const x = Math.PI * fc * t;
      const sinc = t === 0 ? 1 : Math.sin(x) / x;
      const w = t / this.half;
      const blackman = 0.42 + 0.5 * Math.cos(Math.PI * w) + 0.08 * Math.cos(2 * Math.PI * w);
      this.table[i] = fc * sinc * blackman;
    }
    this.buf = new Float32Array(4096);
    this.len = 0;
    this.pos = 0; // position of the next output sample, in input samples
  }

  /** Feed input samples (Float32Array); returns the output samples now complete. */
  process(input) {
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array(Math.max(this.buf.length * 2, this.len + input.length));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
    const out = [];
    const { buf, table, half } = this;
    while (this.pos + half < this.len) {
      const c = this.pos;
      const lo = Math.max(0, Math.ceil(c - half));
      const hi = Math.min(this.len - 1, Math.floor(c + half));
      let acc = 0;
      for (let i = lo; i <= hi; i++) {
        const d = Math.abs(i - c) * TABLE_RES;
        const k = d | 0;
        acc += buf[i] * (table[k] + (table[k + 1] - table[k]) * (d - k));
      }
      out.push(acc);
      this.pos += this.step;
    }
    const drop = Math.floor(this.pos - half) - 1;
    if (drop > 0) {
      buf.copyWithin(0, drop, this.len);
      this.len -= drop;
      this.pos -= drop;
    }
    return Float32Array.from(out);
  }

  reset() {
    this.len = 0;
    this.pos = 0;
  }
}
