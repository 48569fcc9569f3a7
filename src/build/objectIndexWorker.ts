import { parentPort } from 'node:worker_threads';
import { buildObjectIndex, unpackObjects, type ObjectIndexInput, type PackedObjects } from './objectIndex.js';

/** Worker body of {@link ObjectIndexThread}: builds one object index, sends it back, and exits. */
parentPort!.once('message', (input: Omit<ObjectIndexInput, 'objects'> & { objects: PackedObjects }) => {
  const image = buildObjectIndex(input.blobDigest, input.blobBlocks, unpackObjects(input.objects), input.blockSizeBits);
  const bytes = (image.buffer as ArrayBuffer).slice(image.byteOffset, image.byteOffset + image.byteLength);
  parentPort!.postMessage(bytes, [bytes]);
  parentPort!.close();
});
