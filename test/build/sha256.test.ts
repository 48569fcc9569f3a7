import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { createSha256, defaultSha256Implementation, type Sha256Implementation } from '../../src/build/sha256.js';

// The chunk thread's SHA-256 (content and blob digests) runs on native/sha256-pair where the CPU
// has the SHA extensions, two digests in one pass. Each implementation is checked against FIPS
// 180-2's example digests and against OpenSSL (node:crypto) over random splits, with the two digests
// of a pair at the same and at different places in their 64-byte blocks.

const IMPLEMENTATIONS: Sha256Implementation[] = ['sha-extensions', 'node'];
const hex = (bytes: Buffer) => bytes.toString('hex');
const openssl = (...parts: Uint8Array[]) => {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest('hex');
};

test('the SHA extensions are used where the CPU has them (/proc/cpuinfo)', async () => {
  const flags = /^flags\s*:(.*)$/m.exec(await readFile('/proc/cpuinfo', 'utf8'))?.[1]?.split(/\s+/) ?? [];
  const hasSha = flags.includes('sha_ni') && flags.includes('ssse3') && flags.includes('sse4_1');
  assert.equal(defaultSha256Implementation(), hasSha ? 'sha-extensions' : 'node');
  const binding = createRequire(import.meta.url)('@mkfs-erofs-ts/sha256-pair') as { available: boolean };
  assert.equal(binding.available, hasSha);
});

for (const implementation of IMPLEMENTATIONS) {
  const usable = implementation === 'node' || defaultSha256Implementation() === 'sha-extensions';

  test(`${implementation}: FIPS 180-2 example digests, whole and byte by byte`, { skip: usable ? false : 'this CPU has no SHA extensions' }, () => {
    const vectors: [Buffer, string][] = [
      [Buffer.from(''), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'],
      [Buffer.from('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'],
      [Buffer.from('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'), '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1'],
      [Buffer.alloc(1_000_000, 'a'), 'cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0'],
    ];
    const sha = createSha256(implementation);
    for (const [message, expected] of vectors) {
      sha.update(message);
      assert.equal(hex(sha.digest()), expected);
      // digest() started the next one: the same object gives the same answer again.
      for (let i = 0; i < Math.min(message.length, 200); i++) sha.update(message.subarray(i, i + 1));
      sha.update(message.subarray(Math.min(message.length, 200)));
      assert.equal(hex(sha.digest()), expected);
    }
  });

  test(`${implementation}: every length around the padding boundaries`, { skip: usable ? false : 'this CPU has no SHA extensions' }, () => {
    const bytes = randomBytes(300);
    const sha = createSha256(implementation);
    for (let length = 0; length <= 300; length++) {
      sha.update(bytes.subarray(0, length));
      assert.equal(hex(sha.digest()), openssl(bytes.subarray(0, length)), `length ${length}`);
    }
  });

  test(`${implementation}: a pair of digests fed the same and their own bytes, at any offset`, { skip: usable ? false : 'this CPU has no SHA extensions' }, () => {
    for (let trial = 0; trial < 400; trial++) {
      const content = createSha256(implementation);
      const blob = createSha256(implementation);
      const contentParts: Buffer[] = [];
      const blobParts: Buffer[] = [];
      // Half the blobs start with bytes of their own, so the two digests stand at different block offsets.
      if (trial % 2 === 1) {
        const own = randomBytes(trial % 130);
        blob.update(own);
        blobParts.push(own);
      }
      for (let piece = 0; piece < 12; piece++) {
        const bytes = randomBytes([0, 1, 63, 64, 65, 4096, 5000, 70_000][(trial + piece) % 8]! + (piece % 3));
        const route = (trial * 7 + piece) % 4;
        if (route <= 1) {
          // A new chunk: its file's digest and the blob's, in one call.
          content.updateWith(blob, bytes);
          contentParts.push(bytes);
          blobParts.push(bytes);
        } else if (route === 2) {
          content.update(bytes); // a chunk found in the store: the file's digest only
          contentParts.push(bytes);
        } else {
          blob.update(bytes); // padding: the blob's only
          blobParts.push(bytes);
        }
      }
      assert.equal(hex(content.digest()), openssl(...contentParts), `content, trial ${trial}`);
      assert.equal(hex(blob.digest()), openssl(...blobParts), `blob, trial ${trial}`);
    }
  });
}

test('digests of different implementations can be fed together', { skip: defaultSha256Implementation() === 'sha-extensions' ? false : 'this CPU has no SHA extensions' }, () => {
  const bytes = randomBytes(10_000);
  for (const [a, b] of [
    ['sha-extensions', 'node'],
    ['node', 'sha-extensions'],
  ] as const) {
    const first = createSha256(a);
    const second = createSha256(b);
    second.update(bytes.subarray(0, 10));
    first.updateWith(second, bytes);
    assert.equal(hex(first.digest()), openssl(bytes));
    assert.equal(hex(second.digest()), openssl(bytes.subarray(0, 10), bytes));
  }
});

test('the addon refuses a state or digest buffer that is not a large enough Uint8Array', { skip: defaultSha256Implementation() === 'sha-extensions' ? false : 'this CPU has no SHA extensions' }, () => {
  const binding = createRequire(import.meta.url)('@mkfs-erofs-ts/sha256-pair') as {
    stateBytes: number;
    init(state: unknown): void;
    update(state: unknown, bytes: unknown): void;
    digest(state: unknown, out: unknown): void;
  };
  assert.throws(() => binding.init(new Uint8Array(binding.stateBytes - 1)), TypeError);
  assert.throws(() => binding.init(new Float64Array(binding.stateBytes)), TypeError);
  const state = new Uint8Array(binding.stateBytes);
  binding.init(state);
  assert.throws(() => binding.update(state, 'text'), TypeError);
  assert.throws(() => binding.digest(state, new Uint8Array(31)), TypeError);
});
