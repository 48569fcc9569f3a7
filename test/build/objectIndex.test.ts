import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ObjectIndexThread, buildObjectIndex, type ObjectEntry } from '../../src/build/objectIndex.js';

test('the object index built on its thread is byte-identical to one built in place (objects with several chunks and holes)', async () => {
  const objects: ObjectEntry[] = [];
  for (let i = 0; i < 500; i++) {
    const chunks = i % 7 === 0 ? [{ deviceId: 1, blkaddr: i * 8 }, { deviceId: 0, blkaddr: null }, { deviceId: 1, blkaddr: i * 8 + 2 }] : [{ deviceId: 1, blkaddr: i * 8 }];
    objects.push({ contentSha256Hex: randomBytes(32).toString('hex'), sizeBytes: chunks.length === 1 ? 5000 + i : 3 * 8192 - 1, chunkBits: chunks.length === 1 ? 13 : 13, chunks });
  }
  const input = { blobDigest: randomBytes(32).toString('hex'), blobBlocks: 5000, objects, blockSizeBits: 12 };
  const inPlace = buildObjectIndex(input.blobDigest, input.blobBlocks, input.objects, input.blockSizeBits);
  const onThread = await new ObjectIndexThread().build(input);
  assert.ok(inPlace.length > 0);
  assert.ok(onThread.equals(inPlace), 'same bytes from the thread');
});

test('an object index thread that gets no work is stopped without an error', async () => {
  const thread = new ObjectIndexThread();
  await thread.dispose();
});
