import { parentPort } from 'node:worker_threads';
import { createGunzip } from 'node:zlib';
import { INFLATE_AHEAD_BYTES, INFLATE_BATCH_BYTES, type InflateRequest, type InflateResponse } from './inflate.js';

/**
 * Worker body of {@link gunzipOffThread}: inflates what the main thread sends, in its own event
 * loop, and sends the output back in batches, at most INFLATE_AHEAD_BYTES ahead of what the main
 * thread has taken.
 */
const port = parentPort!;
const gunzip = createGunzip({ chunkSize: 256 << 10 });
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
  batch.push(chunk);
  batchBytes += chunk.length;
  if (batchBytes >= INFLATE_BATCH_BYTES) sendBatch();
});
gunzip.on('end', () => {
  sendBatch();
  post({ type: 'end' });
});
gunzip.on('error', (error: NodeJS.ErrnoException) => post({ type: 'error', code: error.code, message: error.message }));

port.on('message', (message: InflateRequest) => {
  switch (message.type) {
    case 'input':
      // Ready for more once zlib has taken this piece.
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
