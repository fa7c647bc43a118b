// Seeded pseudo-random numbers for tests: the same seed, the same test.
// Small enough to load in worker threads without the engine.

/** A seeded xorshift32 generator: the same seed, the same test. */
export function seededRandom(seed: number): () => number {
  let state = seed | 0 || 1;
  return () => {
    state ^= state << 13; state ^= state >>> 17; state ^= state << 5;
    return (state >>> 0) / 4294967296;
  };
}

export function randomBytes(random: () => number, length: number): Buffer {
  const out = Buffer.alloc(length);
  const whole = length - (length % 4);
  for (let i = 0; i < whole; i += 4) out.writeUInt32LE(Math.floor(random() * 4294967296), i);
  for (let i = whole; i < length; i += 1) out[i] = Math.floor(random() * 256);
  return out;
}
