import type { Readable } from 'node:stream';
import type { ReadAt } from './chunker.js';

/**
 * Serves the chunker's positional reads from a stream read front to back (a tar entry body).
 * The chunker reads each file strictly in order, so one pending piece is all we keep: memory stays
 * at one stream chunk (tens of KB), whatever the file size.
 */
export function sequentialReadAt(stream: Readable): ReadAt {
  const iterator = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let pending: Buffer = Buffer.alloc(0);
  let positionBytes = 0;
  let ended = false;
  return async (buffer, offsetInBuffer, lengthBytes, requestedPosition) => {
    if (requestedPosition !== positionBytes) {
      throw new Error(`internal: non-sequential read at ${requestedPosition}, stream is at ${positionBytes}`);
    }
    while (pending.length === 0 && !ended) {
      const next = await iterator.next();
      if (next.done === true) ended = true;
      else pending = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
    }
    const count = Math.min(lengthBytes, pending.length);
    pending.copy(buffer, offsetInBuffer, 0, count);
    pending = pending.subarray(count);
    positionBytes += count;
    return count;
  };
}
