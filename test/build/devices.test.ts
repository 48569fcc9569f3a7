import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeMetadataImage } from '../../src/build/metadata.js';
import { defaultAttrs, makeDir, type RegNode } from '../../src/build/tree.js';
import type { ChunkIndex } from '../../src/format/chunk.js';
import { assertFsckClean, withKernelMount } from '../helpers/kernel.js';
import { withTempDir } from '../helpers/tmp.js';

const BLOCK = 4096;

/**
 * The writer with chunks placed by hand in three blob devices: files whose chunks alternate between
 * devices, per-inode chunk sizes from 4 KiB to 64 KiB in one image, holes, and a chunk shared by two
 * files. Expected content is assembled here from the blob bytes, independently of the writer.
 */
test('chunks spread over three blob devices, mixed chunk sizes, holes and shared chunks', async () => {
  await withTempDir(async (dir) => {
    const blobs = [randomBytes(40 * BLOCK), randomBytes(24 * BLOCK), randomBytes(64 * BLOCK)];
    const blobPaths = blobs.map((_, i) => join(dir, `blob${i + 1}`));
    await Promise.all(blobs.map((bytes, i) => writeFile(blobPaths[i]!, bytes)));
    const blockOf = (deviceId: number, blkaddr: number, lengthBytes: number) =>
      blobs[deviceId - 1]!.subarray(blkaddr * BLOCK, blkaddr * BLOCK + lengthBytes);

    const root = makeDir({ mtimeSec: 1_700_000_000n });
    const expected = new Map<string, Buffer>();
    const addFile = (name: string, chunkBits: number, sizeBytes: number, chunks: ChunkIndex[]) => {
      const chunkSize = 2 ** chunkBits;
      const parts = chunks.map((chunk, i) => {
        const length = Math.min(chunkSize, sizeBytes - i * chunkSize);
        return chunk.blkaddr === null ? Buffer.alloc(length) : blockOf(chunk.deviceId, chunk.blkaddr, length);
      });
      expected.set(name, Buffer.concat(parts));
      const node: RegNode = { kind: 'reg', ...defaultAttrs({ permissions: 0o644, mtimeSec: 1_700_000_000n }), data: { kind: 'chunks', sizeBytes, chunkBits, chunks } };
      root.children.set(name, node);
    };
    // 4 KiB chunks alternating devices 1, 2, 3, with a hole in the middle and a partial last chunk.
    addFile('alternating', 12, 5 * BLOCK - 100, [
      { deviceId: 1, blkaddr: 3 },
      { deviceId: 2, blkaddr: 0 },
      { deviceId: 0, blkaddr: null },
      { deviceId: 3, blkaddr: 63 },
      { deviceId: 1, blkaddr: 39 },
    ]);
    // 64 KiB chunks (16 blocks each) on device 3, the second one partial.
    addFile('big-chunks', 16, 16 * BLOCK + 5000, [
      { deviceId: 3, blkaddr: 0 },
      { deviceId: 3, blkaddr: 16 },
    ]);
    // 16 KiB chunks on device 2, sharing its first chunk with "shares-with-big".
    addFile('mid-chunks', 14, 8 * BLOCK, [
      { deviceId: 2, blkaddr: 4 },
      { deviceId: 2, blkaddr: 20 },
    ]);
    addFile('shares-with-mid', 14, 4 * BLOCK, [{ deviceId: 2, blkaddr: 4 }]);
    addFile('all-hole', 13, 3 * 8192, [
      { deviceId: 0, blkaddr: null },
      { deviceId: 0, blkaddr: null },
      { deviceId: 0, blkaddr: null },
    ]);

    const metadataImage = join(dir, 'meta.erofs');
    const devices = blobs.map((bytes, i) => ({ tag: createHash('sha256').update(bytes).digest('hex').slice(0, 60) + `-${i}`, blocks: bytes.length / BLOCK }));
    await writeFile(metadataImage, writeMetadataImage(root, { devices }));

    await assertFsckClean(metadataImage, blobPaths);
    await withKernelMount(metadataImage, blobPaths, async (mountpoint) => {
      for (const [name, content] of expected) {
        const read = await readFile(join(mountpoint, name));
        assert.equal(read.length, content.length, `${name}: size`);
        assert.ok(read.equals(content), `${name}: content differs from the blob bytes its chunks point at`);
      }
    });
  });
});

test('a chunk pointing at a device the image does not have is refused by the writer', () => {
  const root = makeDir();
  root.children.set('f', { kind: 'reg', ...defaultAttrs(), data: { kind: 'chunks', sizeBytes: 10, chunkBits: 12, chunks: [{ deviceId: 2, blkaddr: 0 }] } });
  assert.throws(() => writeMetadataImage(root, { devices: [{ tag: 'only-one', blocks: 1 }] }), /device 2, but only 1 devices/);
});
