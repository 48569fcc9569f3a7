import { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import type { DigestAlgorithm } from './digest.js';
import type { GunzipDecoder } from './gunzip.js';
import { moduleUrl } from '../paths.js';
import { WORKER_RESOURCE_LIMITS, workerExecArgv } from '../util/worker.js';

/**
 * Layer decompression (gzip, zstd) on a worker thread, which also hashes the compressed and the
 * decompressed bytes (the layer's digest and diff_id). zlib's own streams inflate on libuv's thread
 * pool, but each piece needs a turn of the main thread's event loop to hand over its output and
 * start the next, and a converter busy parsing gives few: inflating and converting took turns
 * instead of running on two cores; zstd and the digests ran on the main thread itself. The worker
 * has an event loop of its own, runs up to {@link INFLATE_AHEAD_BYTES} ahead, and its output waits
 * in the main thread's message queue.
 */

/** Output the worker may have sent that the main thread has not taken yet. */
export const INFLATE_AHEAD_BYTES = 4 << 20;
/** Output gathered into one message. */
export const INFLATE_BATCH_BYTES = 1 << 20;
/** Compressed pieces sent ahead of the worker's requests, so it has input while the main thread is busy. */
const INPUT_AHEAD_PIECES = 2;

/** What the worker decompresses, and the digests it computes on the way: of the bytes it is given and of those it produces. */
export interface InflateOptions {
  compression: 'gzip' | 'zstd';
  /** Which library inflates gzip (see {@link gunzipDecoder}). */
  gunzip?: GunzipDecoder;
  input?: DigestAlgorithm;
  output?: DigestAlgorithm;
}

/** Error code of the worker's zstd errors (their message says what is wrong with the stream). */
export const ZSTD_ERROR_CODE = 'ERR_ZSTD_STREAM';
/** Error code of the worker's errors for gzip inflated by ISA-L (zlib's carry zlib's codes). */
export const GZIP_ERROR_CODE = 'ERR_GZIP_STREAM';
/** `algorithm:hex` of what was hashed, reported at the end. */
export interface InflateDigests {
  input?: string;
  output?: string;
}

export type InflateRequest = { type: 'input'; buffer: ArrayBuffer } | { type: 'input-end' } | { type: 'ack'; bytes: number };
export type InflateResponse =
  | { type: 'need' }
  | { type: 'data'; buffer: ArrayBuffer }
  | { type: 'end'; digests: InflateDigests }
  | { type: 'error'; code?: string; message: string };

/**
 * The decompressed bytes of `compressed`, as a Readable. zlib's errors come out as Errors with
 * zlib's `code` (Z_DATA_ERROR, Z_BUF_ERROR for a truncated stream), as from `createGunzip`; zstd's
 * with {@link ZSTD_ERROR_CODE}; an error of `compressed` comes out unchanged. `ownPieces`: its buffers
 * are fresh and ours to detach (see LayerLocation.ownPieces). At the end, `check`
 * gets the digests (and may throw) before the stream ends. Destroying the result destroys
 * `compressed` and stops the worker.
 *
 * A Readable over a generator rather than a Duplex pipeline stage: destroying a Readable.from
 * returns the generator (its `finally` stops the worker), where a Duplex.from stage left it waiting.
 */
export function decompressOffThread(compressed: Readable, options: InflateOptions, ownPieces: boolean, check?: (actual: InflateDigests) => void): Readable {
  async function* inflate(): AsyncGenerator<Buffer> {
    const worker = new Worker(moduleUrl('oci/inflateWorker.js'), { workerData: options, execArgv: workerExecArgv(), resourceLimits: WORKER_RESOURCE_LIMITS });
    let actual: InflateDigests = {};
    const input = compressed[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    const output: Buffer[] = [];
    let ended = false;
    let failure: { error: unknown } | undefined;
    let wake: (() => void) | undefined;
    const signal = (): void => {
      wake?.();
      wake = undefined;
    };
    let inFlight = 0;
    let inputDone = false;
    let pumping = false;
    // Sends compressed pieces while fewer than INPUT_AHEAD_PIECES wait in the worker.
    const pump = async (): Promise<void> => {
      if (pumping) return;
      pumping = true;
      try {
        while (!inputDone && inFlight < INPUT_AHEAD_PIECES && failure === undefined) {
          const next = await input.next();
          if (next.done === true) {
            inputDone = true;
            worker.postMessage({ type: 'input-end' } satisfies InflateRequest);
            break;
          }
          const piece = next.value;
          // A piece we own that is all of its ArrayBuffer (a file read's buffer) is handed over as it
          // is (detached here); others are copied out first.
          const whole = ownPieces && piece.byteOffset === 0 && piece.byteLength === piece.buffer.byteLength && piece.buffer instanceof ArrayBuffer;
          const buffer = whole ? piece.buffer : (piece.buffer as ArrayBuffer).slice(piece.byteOffset, piece.byteOffset + piece.byteLength);
          inFlight++;
          worker.postMessage({ type: 'input', buffer } satisfies InflateRequest, [buffer]);
        }
      } catch (error) {
        failure ??= { error };
        signal();
      } finally {
        pumping = false;
      }
    };
    worker.on('message', (message: InflateResponse) => {
      switch (message.type) {
        case 'need':
          if (inFlight > 0) inFlight--;
          void pump();
          return;
        case 'data':
          output.push(Buffer.from(message.buffer));
          break;
        case 'end':
          ended = true;
          actual = message.digests;
          break;
        case 'error':
          failure ??= { error: Object.assign(new Error(message.message), { code: message.code }) };
          break;
      }
      signal();
    });
    worker.on('error', (error) => {
      failure ??= { error };
      signal();
    });
    worker.on('exit', () => {
      if (!ended) failure ??= { error: new Error('the decompressing thread stopped before the end of the stream') };
      signal();
    });
    try {
      for (;;) {
        const chunk = output.shift();
        if (chunk !== undefined) {
          worker.postMessage({ type: 'ack', bytes: chunk.length } satisfies InflateRequest);
          yield chunk;
          continue;
        }
        if (failure !== undefined) throw failure.error;
        if (ended) {
          // Before the stream ends: a consumer never sees a clean end of unverified bytes.
          check?.(actual);
          return;
        }
        await new Promise<void>((resolve) => (wake = resolve));
      }
    } finally {
      worker.removeAllListeners('exit');
      await worker.terminate();
      if (!ended || failure !== undefined) compressed.destroy();
    }
  }
  return Readable.from(inflate(), { objectMode: false, highWaterMark: INFLATE_BATCH_BYTES });
}
