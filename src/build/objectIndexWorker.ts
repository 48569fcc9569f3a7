import { parentPort, workerData } from 'node:worker_threads';
import { buildObjectIndex, type ObjectIndexInput } from './objectIndex.js';

/** Worker body of {@link buildObjectIndexOffThread}: builds one object index and sends it back. */
const input = workerData as ObjectIndexInput;
const image = buildObjectIndex(input.blobDigest, input.blobBlocks, input.objects, input.blockSizeBits);
const bytes = (image.buffer as ArrayBuffer).slice(image.byteOffset, image.byteOffset + image.byteLength);
parentPort!.postMessage(bytes, [bytes]);
