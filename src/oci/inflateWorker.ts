import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { createGunzip } from 'node:zlib';
import { INFLATE_AHEAD_BYTES, INFLATE_BATCH_BYTES, ZSTD_ERROR_CODE, type InflateOptions, type InflateRequest, type InflateResponse } from './inflate.js';
import { zstdBinding } from './zstd.js';

/**
 * Worker body of {@link decompressOffThread}: decompresses what the main thread sends (gzip or
 * zstd), in its own event loop, and sends the output back in batches, at most INFLATE_AHEAD_BYTES
 * ahead of what the main thread has taken. The layer's digest and diff_id are hashed here too,
 * beside the decompressing, rather than on the main thread, the busiest part of a conversion.
 */
const port = parentPort!;
const options = workerData as InflateOptions;
const inputHash = options.input === undefined ? undefined : createHash(options.input);
const outputHash = options.output === undefined ? undefined : createHash(options.output);
let batch: Buffer[] = [];
let batchBytes = 0;
let unackedBytes = 0;
/** Called when acknowledgements bring the output sent ahead below the limit. */
let onRoom: (() => void) | undefined;

const post = (message: InflateResponse, transfer: ArrayBuffer[] = []): void => port.postMessage(message, transfer);

/**
 * Posts output, its ArrayBuffer transferred (a view of part of one is copied out first); true when
 * the output sent ahead is at its limit (the caller should wait).
 */
function send(bytes: Buffer): boolean {
  // A batch of a MiB owns its ArrayBuffer (not Buffer's small-allocation pool): sent as is, no copy.
  const owned = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
  const buffer = owned ? (bytes.buffer as ArrayBuffer) : (bytes.buffer as ArrayBuffer).slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  unackedBytes += buffer.byteLength;
  post({ type: 'data', buffer }, [buffer]);
  return unackedBytes >= INFLATE_AHEAD_BYTES;
}

function sendBatch(): void {
  if (batchBytes === 0) return;
  const bytes = Buffer.concat(batch, batchBytes);
  batch = [];
  batchBytes = 0;
  send(bytes);
}

/** One piece of output; true when the output sent ahead is at its limit (the caller should wait). */
function emit(chunk: Buffer): boolean {
  outputHash?.update(chunk);
  // zlib's output buffers are a batch in size: one it filled whole (most of them) goes as it is,
  // not copied into a batch of its own.
  if (batchBytes === 0 && chunk.length === INFLATE_BATCH_BYTES && chunk.byteOffset === 0 && chunk.buffer.byteLength === chunk.length) return send(chunk);
  batch.push(chunk);
  batchBytes += chunk.length;
  if (batchBytes >= INFLATE_BATCH_BYTES) sendBatch();
  return unackedBytes >= INFLATE_AHEAD_BYTES;
}

function end(): void {
  sendBatch();
  post({
    type: 'end',
    digests: {
      ...(inputHash === undefined ? {} : { input: `${options.input}:${inputHash.digest('hex')}` }),
      ...(outputHash === undefined ? {} : { output: `${options.output}:${outputHash.digest('hex')}` }),
    },
  });
}

/** gzip: zlib's stream, paused while the output sent ahead is at its limit. */
function gzipDecoder(): { write(input: Buffer): void; end(): void } {
  const gunzip = createGunzip({ chunkSize: INFLATE_BATCH_BYTES });
  gunzip.on('data', (chunk: Buffer) => {
    if (emit(chunk)) {
      gunzip.pause();
      onRoom = () => gunzip.resume();
    }
  });
  gunzip.on('end', end);
  gunzip.on('error', (error: NodeJS.ErrnoException) => post({ type: 'error', code: error.code, message: error.message }));
  return {
    // Ready for more once zlib has taken this piece.
    write: (input) => void gunzip.write(input, () => post({ type: 'need' })),
    end: () => void gunzip.end(),
  };
}

/**
 * zstd: zstd-napi's context driven by hand, one output buffer at a time (zstd expands a piece of
 * zeros to gigabytes, so output is produced only while there is room for it).
 */
function zstdDecoder(): { write(input: Buffer): void; end(): void } {
  const zstd = zstdBinding();
  const context = new zstd.DCtx();
  const pieces: (Buffer | null)[] = [];
  let wake: (() => void) | undefined;
  const next = async (): Promise<Buffer | null> => {
    while (pieces.length === 0) await new Promise<void>((resolve) => (wake = resolve));
    return pieces.shift()!;
  };
  const fail = (message: string) => post({ type: 'error', code: ZSTD_ERROR_CODE, message });
  void (async () => {
    let sawInput = false;
    // Nonzero while a frame is unfinished: input ending then means the stream was cut short.
    let hint = 0;
    // Output goes straight into the batch buffer that is then sent: no piece per call to copy and drop.
    let out = Buffer.allocUnsafeSlow(INFLATE_BATCH_BYTES);
    let filled = 0;
    for (;;) {
      const piece = await next();
      if (piece === null) break;
      if (piece.length === 0) {
        post({ type: 'need' });
        continue;
      }
      sawInput = true;
      let input = piece;
      for (;;) {
        const room = out.length - filled;
        let produced: number;
        let consumed: number;
        try {
          [hint, produced, consumed] = context.decompressStream(out.subarray(filled), input);
        } catch (error) {
          fail(`corrupt zstd stream (${(error as Error).message})`);
          return;
        }
        input = input.subarray(consumed);
        if (produced > 0) {
          outputHash?.update(out.subarray(filled, filled + produced));
          filled += produced;
        }
        if (filled === out.length) {
          const full = send(out);
          out = Buffer.allocUnsafeSlow(INFLATE_BATCH_BYTES);
          filled = 0;
          if (full) await new Promise<void>((resolve) => (onRoom = resolve));
        }
        // Done with this piece once it is consumed and zstd had room to flush everything it holds.
        if (input.length === 0 && (produced < room || hint === 0)) break;
      }
      post({ type: 'need' });
    }
    if (filled > 0) send(out.subarray(0, filled));
    if (!sawInput) return fail('empty zstd stream (no frame)');
    if (hint !== 0) return fail('truncated zstd stream (ends inside a frame)');
    end();
  })();
  const push = (piece: Buffer | null) => {
    pieces.push(piece);
    wake?.();
    wake = undefined;
  };
  return { write: push, end: () => push(null) };
}

const decoder = options.compression === 'zstd' ? zstdDecoder() : gzipDecoder();

port.on('message', (message: InflateRequest) => {
  switch (message.type) {
    case 'input': {
      const input = Buffer.from(message.buffer);
      inputHash?.update(input);
      decoder.write(input);
      break;
    }
    case 'input-end':
      decoder.end();
      break;
    case 'ack':
      unackedBytes -= message.bytes;
      if (unackedBytes < INFLATE_AHEAD_BYTES && onRoom !== undefined) {
        const resume = onRoom;
        onRoom = undefined;
        resume();
      }
      break;
  }
});
post({ type: 'need' });
