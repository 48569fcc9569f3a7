import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ChunkIndex } from '../../src/format/chunk.js';
import { writeMetadataImage } from '../../src/build/metadata.js';
import { buildObjectIndex, objectPath, objectPathValues, type ObjectEntry } from '../../src/build/objectIndex.js';
import { fingerprintValues } from '../../src/build/fingerprint.js';
import { defaultAttrs, makeDir, type DirNode } from '../../src/build/tree.js';
import { withKernelMount } from '../helpers/kernel.js';
import { withTempDir } from '../helpers/tmp.js';

/**
 * The oracle: the object index as a tree, `/<2 hex>/<hex>` (directories 0755, objects 0444), written by
 * the general planner and emitter, which the kernel and fsck.erofs tests check on every kind of tree.
 */
function objectIndexThroughTree(blobDigest: string, blobBlocks: number, objects: readonly ObjectEntry[], blockSizeBits: number): Buffer {
  const root = makeDir({ permissions: 0o755 });
  for (const object of objects) {
    const prefix = object.contentSha256Hex.slice(0, 2);
    let dir = root.children.get(prefix) as DirNode | undefined;
    if (dir === undefined) {
      dir = makeDir({ permissions: 0o755 });
      root.children.set(prefix, dir);
    }
    dir.children.set(object.contentSha256Hex, {
      kind: 'reg',
      ...defaultAttrs({ permissions: 0o444 }),
      data: { kind: 'chunks', sizeBytes: object.sizeBytes, chunkBits: object.chunkBits, chunks: object.chunks },
    });
  }
  return writeMetadataImage(root, { blockSizeBits, devices: [{ tag: blobDigest, blocks: blobBlocks }], volumeName: 'erofs-objects', uuid: Buffer.from(blobDigest.slice(0, 32), 'hex') });
}

/** A small deterministic generator, so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

function hexOf(n: number, prefix?: string): string {
  const hex = createHash('sha256').update(String(n)).digest('hex');
  return prefix === undefined ? hex : prefix + hex.slice(prefix.length);
}

/** Objects of every shape a build makes: one chunk, several, holes, empty, and over 4 GiB (extended inodes). */
function objects(count: number, seed: number, blockSizeBits: number, prefixes?: readonly string[]): ObjectEntry[] {
  const next = random(seed);
  let blkaddr = 0;
  const out: ObjectEntry[] = [];
  for (let i = 0; i < count; i++) {
    const shape = next();
    let sizeBytes: number;
    let chunkBits: number;
    if (shape < 0.02) {
      sizeBytes = 0;
      chunkBits = blockSizeBits;
    } else if (shape < 0.05) {
      sizeBytes = 2 ** 32 + Math.floor(next() * 2 ** 33);
      chunkBits = 30;
    } else if (shape < 0.25) {
      sizeBytes = 1 + Math.floor(next() * 8 * 2 ** 20);
      chunkBits = 20;
    } else {
      sizeBytes = 1 + Math.floor(next() * 2 ** 20);
      chunkBits = Math.max(blockSizeBits, Math.ceil(Math.log2(sizeBytes)));
    }
    const chunks: ChunkIndex[] = [];
    for (let c = 0; c < Math.ceil(sizeBytes / 2 ** chunkBits); c++) {
      if (next() < 0.1) chunks.push({ deviceId: 0, blkaddr: null });
      else {
        chunks.push({ deviceId: 1, blkaddr });
        blkaddr += 2 ** (chunkBits - blockSizeBits);
      }
    }
    const prefix = prefixes === undefined ? undefined : prefixes[Math.floor(next() * prefixes.length)];
    out.push({ contentSha256Hex: hexOf(seed * 1_000_003 + i, prefix), sizeBytes, chunkBits, chunks });
  }
  return out;
}

test('object indexes are byte for byte what the general planner makes of their tree', () => {
  const blob = createHash('sha256').update('blob').digest('hex');
  const cases: { name: string; list: ObjectEntry[]; blockSizeBits: number }[] = [
    { name: 'no objects', list: [], blockSizeBits: 12 },
    { name: 'one object', list: objects(1, 1, 12), blockSizeBits: 12 },
    // One prefix directory of several blocks and a tail; then tails of every length across few prefixes.
    { name: 'one full prefix', list: objects(300, 2, 12, ['ab']), blockSizeBits: 12 },
    { name: 'few prefixes', list: objects(700, 3, 12, ['00', '0f', '7a', 'ff']), blockSizeBits: 12 },
    { name: 'all prefixes', list: objects(3000, 4, 12), blockSizeBits: 12 },
    { name: '16 KiB blocks', list: objects(2000, 5, 14), blockSizeBits: 14 },
  ];
  for (let seed = 10; seed < 40; seed++) cases.push({ name: `seed ${seed}`, list: objects(1 + (seed * 37) % 400, seed, 12, ['1a', '2b', '3c', hexOf(seed).slice(0, 2)]), blockSizeBits: 12 });
  for (const { name, list, blockSizeBits } of cases) {
    const blocks = 1 + list.reduce((sum, o) => sum + o.chunks.filter((c) => c.blkaddr !== null).length * 2 ** (o.chunkBits - blockSizeBits), 0);
    const expected = objectIndexThroughTree(blob, blocks, list, blockSizeBits);
    // Given in any order: the index sorts them.
    const shuffled = [...list].reverse();
    const actual = buildObjectIndex(blob, blocks, shuffled, blockSizeBits);
    assert.equal(actual.length, expected.length, `${name}: image size`);
    assert.ok(actual.equals(expected), `${name}: first difference at byte ${actual.findIndex((b, i) => b !== expected[i])}`);
  }
});

test('the kernel reads each object of an object index as the bytes its chunks map in the blob', async () => {
  await withTempDir(async (dir) => {
    const blockSizeBits = 12;
    const list = objects(60, 7, blockSizeBits).filter((o) => o.sizeBytes < 2 ** 32);
    const blocks = 1 + list.reduce((sum, o) => sum + o.chunks.filter((c) => c.blkaddr !== null).length * 2 ** (o.chunkBits - blockSizeBits), 0);
    const blobBytes = randomBytes(blocks * 2 ** blockSizeBits);
    const blob = createHash('sha256').update(blobBytes).digest('hex');
    const blobPath = join(dir, blob);
    const imagePath = join(dir, 'objects.erofs');
    await writeFile(blobPath, blobBytes);
    await writeFile(imagePath, buildObjectIndex(blob, blocks, [...list].reverse(), blockSizeBits));
    await withKernelMount(imagePath, [blobPath], async (mountpoint) => {
      for (const object of list) {
        const expected = Buffer.alloc(object.sizeBytes);
        object.chunks.forEach((chunk, c) => {
          if (chunk.blkaddr === null) return;
          const start = c * 2 ** object.chunkBits;
          const length = Math.min(2 ** object.chunkBits, object.sizeBytes - start);
          blobBytes.copy(expected, start, chunk.blkaddr * 2 ** blockSizeBits, chunk.blkaddr * 2 ** blockSizeBits + length);
        });
        const actual = await readFile(join(mountpoint, objectPath(object.contentSha256Hex)));
        assert.ok(actual.equals(expected), `object ${object.contentSha256Hex}: content`);
      }
    });
  });
});

test('object paths and fingerprint values written into one buffer equal those made one at a time', () => {
  const contents = Array.from({ length: 300 }, (_, i) => Buffer.from(`content ${i}`));
  const digests = contents.map((content) => createHash('sha256').update(content).digest());
  const hexes = digests.map((digest) => digest.toString('hex'));
  const paths = objectPathValues(hexes);
  const values = fingerprintValues(hexes);
  assert.equal(paths.length, hexes.length);
  for (let i = 0; i < hexes.length; i++) {
    assert.deepEqual(paths[i], Buffer.from(objectPath(hexes[i]!)));
    assert.equal(paths[i]!.toString(), `/${hexes[i]!.slice(0, 2)}/${hexes[i]}`);
    // The value mkfs.erofs --xattr-inode-digest writes: "sha256:" and the 32 raw digest bytes.
    assert.deepEqual(values[i], Buffer.concat([Buffer.from('sha256:'), digests[i]!]));
  }
  assert.deepEqual(objectPathValues([]), []);
  assert.throws(() => fingerprintValues(['not hex']), /not 64 hex digits/);
});
