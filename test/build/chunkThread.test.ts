import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BlobWriter } from '../../src/build/blob.js';
import { ChunkThread } from '../../src/build/chunkThread.js';
import type { ReadAt } from '../../src/build/chunker.js';
import { withTempDir } from '../helpers/tmp.js';

const readAtOf =
  (bytes: Buffer): ReadAt =>
  (buffer, offsetInBuffer, lengthBytes, positionBytes) =>
    bytes.copy(buffer, offsetInBuffer, positionBytes, positionBytes + lengthBytes);

// A build closes its chunk thread before it finishes its last image, so that the image is planned
// without the thread's memory. The thread must still make every blob durable first, then end.
test('chunk thread: close ends the thread only after every blob is durable under its digest; no layer after it', { timeout: 60_000 }, async () => {
  await withTempDir(async (dir) => {
    const blobsDir = join(dir, 'blobs', 'sha256');
    const thread = new ChunkThread(dir);
    try {
      const blobs: { digest: string; persisted: Promise<void> }[] = [];
      for (const content of [randomBytes(3 << 20), randomBytes(5000)]) {
        // Each file is reported once its chunk indexes are in, with its content digest.
        const reported: { chunks: number; digest: string }[] = [];
        thread.beginLayer(BlobWriter.temporaryPath(blobsDir), 4096, 'fixed', { deviceId: (code) => code, fileStored: (data, digest) => void reported.push({ chunks: data.chunks.length, digest: digest.toString('hex') }) });
        const stored = await thread.storeFile('file', readAtOf(content), content.length, 20);
        const layer = await thread.endLayer();
        assert.equal(stored.kind, 'chunks');
        assert.deepEqual(reported, [{ chunks: Math.ceil(content.length / (1 << 20)), digest: createHash('sha256').update(content).digest('hex') }]);
        assert.ok(layer.blob !== undefined, 'each layer wrote new chunks');
        blobs.push(layer.blob);
      }
      thread.close();
      await thread.ended;
      // Both blobs were made durable and renamed before the thread ended: their promises resolve.
      await Promise.all(blobs.map((blob) => blob.persisted));
      const names = (await readdir(blobsDir)).sort();
      assert.deepEqual(names, blobs.map((blob) => blob.digest).sort(), 'only the named blobs, no temporary file left');
      for (const blob of blobs) assert.equal(createHash('sha256').update(await readFile(join(blobsDir, blob.digest))).digest('hex'), blob.digest);
      assert.throws(() => thread.beginLayer(BlobWriter.temporaryPath(blobsDir), 4096, 'fixed', { deviceId: (code) => code, fileStored: () => {} }), /after the chunk thread was closed/);
    } finally {
      await thread.dispose();
    }
  });
});
