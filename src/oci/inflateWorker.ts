import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { createGunzip } from 'node:zlib';
import { isalGunzip } from './gunzip.js';
import { GZIP_ERROR_CODE, INFLATE_AHEAD_BYTES, INFLATE_BATCH_BYTES, ZSTD_ERROR_CODE, type InflateOptions, type InflateRequest, type InflateResponse } from './inflate.js';
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

/** gzip with Node's zlib (when the ISA-L addon is not built, or MKFS_EROFS_TS_GUNZIP=zlib): its stream, paused while the output sent ahead is at its limit. */
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
 * Pieces of input handed from the message handler to an async decoder loop; null marks the end.
 * `next` waits for the next one.
 */
function inputQueue(): { push(piece: Buffer | null): void; next(): Promise<Buffer | null> } {
  const pieces: (Buffer | null)[] = [];
  let wake: (() => void) | undefined;
  return {
    push(piece) {
      pieces.push(piece);
      wake?.();
      wake = undefined;
    },
    async next() {
      while (pieces.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      return pieces.shift()!;
    },
  };
}

/** Output written straight into the batch buffer that is then sent: no piece per call to copy and drop. */
class BatchOutput {
  buffer = Buffer.allocUnsafeSlow(INFLATE_BATCH_BYTES);
  filled = 0;

  /** Takes `produced` bytes written at `filled`; when the buffer is full, sends it and waits while the output sent ahead is at its limit. */
  async took(produced: number): Promise<void> {
    if (produced > 0) {
      outputHash?.update(this.buffer.subarray(this.filled, this.filled + produced));
      this.filled += produced;
    }
    if (this.filled < this.buffer.length) return;
    const full = send(this.buffer);
    this.buffer = Buffer.allocUnsafeSlow(INFLATE_BATCH_BYTES);
    this.filled = 0;
    if (full) await new Promise<void>((resolve) => (onRoom = resolve));
  }

  flush(): void {
    if (this.filled > 0) send(this.buffer.subarray(0, this.filled));
  }
}

/** Offset of a gzip member's FLG byte, and its bits RFC 1952 reserves (they must be zero). */
const GZIP_FLAGS_OFFSET = 3;
const GZIP_RESERVED_FLAGS = 0xe0;

/**
 * gzip with ISA-L's igzip (src/oci/gunzip.ts says why), driven like zstd below: one synchronous call
 * per piece of input or batch of output. Accepts what zlib accepts: members one after another, and
 * zero bytes after a member, which end the stream (padding, as zlib treats them); anything else after
 * a member must be a member. Errors say "corrupt" or "truncated" as layerStream's messages for zlib.
 */
function isalDecoder(): { write(input: Buffer): void; end(): void } {
  const isal = isalGunzip()!;
  const state = isal.create();
  const result = new Uint32Array(3);
  const queue = inputQueue();
  const fail = (message: string) => post({ type: 'error', code: GZIP_ERROR_CODE, message });
  void (async () => {
    const out = new BatchOutput();
    let sawInput = false;
    // The last call ended a member; the next byte starts another, or zero padding.
    let memberEnded = false;
    let padded = false;
    // Bytes of the current member consumed, up to its flags byte: igzip ignores the reserved flags,
    // which zlib (and RFC 1952) refuse.
    let memberBytes = 0;
    for (;;) {
      const piece = await queue.next();
      if (piece === null) break;
      if (piece.length > 0) sawInput = true;
      let input = padded ? piece.subarray(piece.length) : piece;
      for (;;) {
        if (memberEnded) {
          if (input.length === 0) break;
          if (input[0] === 0) {
            padded = true;
            break;
          }
          isal.reset(state);
          memberEnded = false;
          memberBytes = 0;
        }
        if (memberBytes <= GZIP_FLAGS_OFFSET && memberBytes + input.length > GZIP_FLAGS_OFFSET && (input[GZIP_FLAGS_OFFSET - memberBytes]! & GZIP_RESERVED_FLAGS) !== 0) {
          return fail('corrupt gzip stream (reserved header flags set)');
        }
        const room = out.buffer.length - out.filled;
        try {
          isal.inflate(state, input, out.buffer, out.filled, result);
        } catch (error) {
          return fail(`corrupt gzip stream (${(error as Error).message})`);
        }
        const consumed = result[0]!;
        const produced = result[1]!;
        memberEnded = result[2] === 1;
        input = input.subarray(consumed);
        if (memberBytes <= GZIP_FLAGS_OFFSET) memberBytes += consumed;
        await out.took(produced);
        // Done with this piece once it is consumed and igzip had room to flush what it holds.
        if (!memberEnded && input.length === 0 && produced < room) break;
        if (consumed === 0 && produced === 0 && !memberEnded) return fail('corrupt gzip stream (no progress)');
      }
      post({ type: 'need' });
    }
    out.flush();
    if (!sawInput) return fail('truncated gzip stream (empty)');
    if (!memberEnded && !padded) return fail('truncated gzip stream (unexpected end of file)');
    end();
  })();
  return { write: (input) => queue.push(input), end: () => queue.push(null) };
}

/**
 * zstd: zstd-napi's context driven by hand, one output buffer at a time (zstd expands a piece of
 * zeros to gigabytes, so output is produced only while there is room for it).
 */
function zstdDecoder(): { write(input: Buffer): void; end(): void } {
  const zstd = zstdBinding();
  const context = new zstd.DCtx();
  const queue = inputQueue();
  const fail = (message: string) => post({ type: 'error', code: ZSTD_ERROR_CODE, message });
  void (async () => {
    const out = new BatchOutput();
    let sawInput = false;
    // Nonzero while a frame is unfinished: input ending then means the stream was cut short.
    let hint = 0;
    for (;;) {
      const piece = await queue.next();
      if (piece === null) break;
      if (piece.length === 0) {
        post({ type: 'need' });
        continue;
      }
      sawInput = true;
      let input = piece;
      for (;;) {
        const room = out.buffer.length - out.filled;
        let produced: number;
        let consumed: number;
        try {
          [hint, produced, consumed] = context.decompressStream(out.buffer.subarray(out.filled), input);
        } catch (error) {
          return fail(`corrupt zstd stream (${(error as Error).message})`);
        }
        input = input.subarray(consumed);
        await out.took(produced);
        // Done with this piece once it is consumed and zstd had room to flush everything it holds.
        if (input.length === 0 && (produced < room || hint === 0)) break;
      }
      post({ type: 'need' });
    }
    out.flush();
    if (!sawInput) return fail('empty zstd stream (no frame)');
    if (hint !== 0) return fail('truncated zstd stream (ends inside a frame)');
    end();
  })();
  return { write: (input) => queue.push(input), end: () => queue.push(null) };
}

const decoder = options.compression === 'zstd' ? zstdDecoder() : options.gunzip === 'isal' ? isalDecoder() : gzipDecoder();

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
