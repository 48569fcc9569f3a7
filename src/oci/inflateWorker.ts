import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { createGunzip } from 'node:zlib';
import { INFLATE_AHEAD_BYTES, INFLATE_BATCH_BYTES, type InflateDigestAlgorithms, type InflateRequest, type InflateResponse } from './inflate.js';

/**
 * Worker body of {@link gunzipOffThread}: inflates what the main thread sends, in its own event
 * loop, and sends the output back in batches, at most INFLATE_AHEAD_BYTES ahead of what the main
 * thread has taken.
 */
const port = parentPort!;
const gunzip = createGunzip({ chunkSize: 256 << 10 });
// The layer's digest and diff_id are hashed here, beside the inflating, rather than on the main
// thread, which is the busiest part of a conversion.
const algorithms = workerData as InflateDigestAlgorithms;
const inputHash = algorithms.input === undefined ? undefined : createHash(algorithms.input);
const outputHash = algorithms.output === undefined ? undefined : createHash(algorithms.output);
let batch: Buffer[] = [];
let batchBytes = 0;
let unackedBytes = 0;

const post = (message: InflateResponse, transfer: ArrayBuffer[] = []): void => port.postMessage(message, transfer);

function sendBatch(): void {
  if (batchBytes === 0) return;
  const bytes = Buffer.concat(batch, batchBytes);
  // A batch of a MiB owns its ArrayBuffer (not Buffer's small-allocation pool): sent as is, no copy.
  const owned = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
  const buffer = owned ? (bytes.buffer as ArrayBuffer) : (bytes.buffer as ArrayBuffer).slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  batch = [];
  batchBytes = 0;
  unackedBytes += buffer.byteLength;
  post({ type: 'data', buffer }, [buffer]);
  if (unackedBytes >= INFLATE_AHEAD_BYTES) gunzip.pause();
}

gunzip.on('data', (chunk: Buffer) => {
  outputHash?.update(chunk);
  batch.push(chunk);
  batchBytes += chunk.length;
  if (batchBytes >= INFLATE_BATCH_BYTES) sendBatch();
});
gunzip.on('end', () => {
  sendBatch();
  post({
    type: 'end',
    digests: {
      ...(inputHash === undefined ? {} : { input: `${algorithms.input}:${inputHash.digest('hex')}` }),
      ...(outputHash === undefined ? {} : { output: `${algorithms.output}:${outputHash.digest('hex')}` }),
    },
  });
});
gunzip.on('error', (error: NodeJS.ErrnoException) => post({ type: 'error', code: error.code, message: error.message }));

port.on('message', (message: InflateRequest) => {
  switch (message.type) {
    case 'input':
      // Ready for more once zlib has taken this piece.
      inputHash?.update(Buffer.from(message.buffer));
      gunzip.write(Buffer.from(message.buffer), () => post({ type: 'need' }));
      break;
    case 'input-end':
      gunzip.end();
      break;
    case 'ack':
      unackedBytes -= message.bytes;
      if (unackedBytes < INFLATE_AHEAD_BYTES && gunzip.isPaused()) gunzip.resume();
      break;
  }
});
post({ type: 'need' });
