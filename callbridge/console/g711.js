// G.711 mu-law, bit-exact with callbridge/codecs/g711.py (and CPython's audioop):
// 16-bit input shifted arithmetically to 14 bits, magnitude clipped to 8159, biased by 33,
// segment-coded, all bits inverted. No I/O; used by the softphone worklet and by the tests.

const SEG_END = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];

/** One int16 sample (-32768..32767) -> one mu-law byte. */
export function ulawEncodeSample(pcm) {
  let v = pcm >> 2;
  let mask = 0xff;
  if (v < 0) {
    v = -v;
    mask = 0x7f;
  }
  if (v > 8159) v = 8159;
  v += 33;
  let seg = 0;
  while (seg < 8 && v > SEG_END[seg]) seg++;
  const uval = seg >= 8 ? 0x7f : (seg << 4) | ((v >> (seg + 1)) & 0x0f);
  return (uval ^ mask) & 0xff;
}

/** One mu-law byte -> one int16 sample. */
export function ulawDecodeSample(code) {
  const u = ~code & 0xff;
  let t = ((u & 0x0f) << 3) + 0x84;
  t <<= (u & 0x70) >> 4;
  return u & 0x80 ? 0x84 - t : t - 0x84;
}

/** Decoded value of each of the 256 codes, as floats in [-1, 1). */
export const ULAW_TO_FLOAT = Float32Array.from({ length: 256 }, (_, c) => ulawDecodeSample(c) / 32768);

/** Float samples in [-1, 1] -> mu-law bytes (clipped, rounded to int16 first). */
export function ulawEncodeFloat(samples, out = new Uint8Array(samples.length)) {
  for (let i = 0; i < samples.length; i++) {
    let s = Math.round(samples[i] * 32768);
    if (s > 32767) s = 32767;
    else if (s < -32768) s = -32768;
    out[i] = ulawEncodeSample(s);
  }
  return out;
}
