/**
 * XXH32, used by EROFS only for the 32-bit xattr name bloom filter (names of at most a few hundred
 * bytes), so a small pure implementation is enough.
 */
const PRIME1 = 2654435761;
const PRIME2 = 2246822519;
const PRIME3 = 3266489917;
const PRIME4 = 668265263;
const PRIME5 = 374761393;

function rotl(value: number, bits: number): number {
  return ((value << bits) | (value >>> (32 - bits))) >>> 0;
}

function round(acc: number, lane: number): number {
  acc = (acc + Math.imul(lane, PRIME2)) >>> 0;
  acc = rotl(acc, 13);
  return Math.imul(acc, PRIME1) >>> 0;
}

export function xxh32(data: Uint8Array, seed: number): number {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const length = data.byteLength;
  let pos = 0;
  let hash: number;
  if (length >= 16) {
    let v1 = (seed + PRIME1 + PRIME2) >>> 0;
    let v2 = (seed + PRIME2) >>> 0;
    let v3 = seed >>> 0;
    let v4 = (seed - PRIME1) >>> 0;
    while (pos + 16 <= length) {
      v1 = round(v1, view.getUint32(pos, true));
      v2 = round(v2, view.getUint32(pos + 4, true));
      v3 = round(v3, view.getUint32(pos + 8, true));
      v4 = round(v4, view.getUint32(pos + 12, true));
      pos += 16;
    }
    hash = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) >>> 0;
  } else {
    hash = (seed + PRIME5) >>> 0;
  }
  hash = (hash + length) >>> 0;
  while (pos + 4 <= length) {
    hash = (hash + Math.imul(view.getUint32(pos, true), PRIME3)) >>> 0;
    hash = Math.imul(rotl(hash, 17), PRIME4) >>> 0;
    pos += 4;
  }
  while (pos < length) {
    hash = (hash + Math.imul(data[pos]!, PRIME5)) >>> 0;
    hash = Math.imul(rotl(hash, 11), PRIME1) >>> 0;
    pos++;
  }
  hash ^= hash >>> 15;
  hash = Math.imul(hash, PRIME2) >>> 0;
  hash ^= hash >>> 13;
  hash = Math.imul(hash, PRIME3) >>> 0;
  hash ^= hash >>> 16;
  return hash >>> 0;
}
