import { Duplex, Readable, pipeline } from 'node:stream';
import { DigestCheck, type ParsedDigest } from './digest.js';
import { gunzipOffThread } from './inflate.js';
import { DigestMismatchError, InvalidLayerError, isOciError } from './errors.js';
import type { Compression } from './mediaTypes.js';
import { zstdBinding } from './zstd.js';

/** Everything needed to stream one layer and check it. */
export interface LayerLocation {
  /** Names the layer in errors: `layer 2/3 sha256:0123456789ab of real/v1 (/path/v1.tar)`. */
  subject: string;
  compression: Compression;
  /** The stored (compressed) bytes. */
  open: () => Readable;
  /** Checked against the stored bytes; absent when nothing names them (a lone tarball). */
  digest?: ParsedDigest;
  sizeBytes?: number;
  /** Checked against the uncompressed tar (config `rootfs.diff_ids`). */
  diffId?: ParsedDigest;
}

/** How far the returned stream reads ahead of its consumer. */
const READ_AHEAD_BYTES = 512 * 1024;

/**
 * zstd decompression with backpressure: zstd-napi's DecompressStream pushes all output of an input
 * chunk at once, and zstd expands a 64 KiB chunk of zeros to gigabytes, so we drive the context
 * ourselves from an async generator, which yields one output buffer at a time and only when the
 * consumer asks. Errors become {@link InvalidLayerError} naming the layer.
 */
function zstdDecompressor(subject: string): Duplex {
  return Duplex.from(async function* (source: AsyncIterable<Buffer>) {
    const zstd = zstdBinding();
    const context = new zstd.DCtx();
    const outBytes = zstd.dStreamOutSize();
    let sawInput = false;
    // Nonzero while a frame is unfinished: input ending then means the stream was cut short.
    let hint = 0;
    for await (const chunk of source) {
      if (chunk.length === 0) continue;
      sawInput = true;
      let input: Buffer = chunk;
      for (;;) {
        const output = Buffer.allocUnsafe(outBytes);
        let produced: number;
        let consumed: number;
        try {
          [hint, produced, consumed] = context.decompressStream(output, input);
        } catch (error) {
          throw new InvalidLayerError(subject, `corrupt zstd stream (${(error as Error).message})`);
        }
        input = input.subarray(consumed);
        if (produced > 0) yield output.subarray(0, produced);
        // Done with this chunk once it is consumed and zstd had room to flush everything it holds.
        if (input.length === 0 && (produced < output.length || hint === 0)) break;
      }
    }
    if (!sawInput) throw new InvalidLayerError(subject, 'empty zstd stream (no frame)');
    if (hint !== 0) throw new InvalidLayerError(subject, 'truncated zstd stream (ends inside a frame)');
  });
}

/** zlib's errors carry codes like Z_DATA_ERROR; say which layer, and that it is the gzip stream. */
function translate(error: unknown, subject: string): unknown {
  if (isOciError(error)) return error;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && code.startsWith('Z_')) {
    const problem = code === 'Z_BUF_ERROR' ? 'truncated gzip stream (unexpected end of file)' : `corrupt gzip stream (${(error as Error).message})`;
    return new InvalidLayerError(subject, problem);
  }
  return error;
}

/**
 * The layer's uncompressed tar bytes, verified on the fly: the stored bytes' size and digest, and
 * the tar's diff_id. A mismatch (or corrupt compression) makes the stream fail with a typed error
 * before it ends, so a consumer that sees 'end' has seen verified bytes only; bytes delivered
 * before the failure are not to be trusted, which a streaming consumer handles by discarding its
 * output when the stream errors.
 *
 * Backpressure holds end to end (file reads pause when the consumer does); destroying the returned
 * stream stops the read and closes the file.
 */
export function openLayerStream(location: LayerLocation): Readable {
  const { subject, compression, digest, sizeBytes, diffId } = location;
  const sameDigest = compression === 'none' && digest !== undefined && diffId !== undefined && digest.text === diffId.text;
  // The callback form of pipeline: errors reach the last stage (pipeline destroys every stream with
  // the first error), and relay() below turns them into typed ones.
  const chain = (first: Readable, stages: NodeJS.ReadWriteStream[]): Readable =>
    stages.length === 0 ? first : (pipeline([first, ...stages], () => {}) as unknown as Readable);
  const stored: NodeJS.ReadWriteStream[] = [];
  // gzip layers are hashed on the inflating thread (both digests); here only their size is counted.
  const gzip = compression === 'gzip';
  if ((digest !== undefined && !gzip) || sizeBytes !== undefined) {
    stored.push(new DigestCheck({ subject, kind: sameDigest ? 'digest (and diff_id)' : 'digest', expected: gzip ? undefined : digest, expectedSizeBytes: sizeBytes }));
  }
  if (compression === 'zstd') stored.push(zstdDecompressor(subject));
  const source = location.open();
  let tar = chain(source, stored);
  if (gzip) {
    // Inflated on a worker thread (see inflate.ts), after the size check; it also hashes the gzip
    // bytes and the tar, and the digests are compared before the stream ends.
    tar = gunzipOffThread(tar, { input: digest?.algorithm, output: diffId?.algorithm }, (actual) => {
      if (digest !== undefined && actual.input !== digest.text) throw new DigestMismatchError(subject, 'digest', digest.text, actual.input ?? '(none)');
      if (diffId !== undefined && actual.output !== diffId.text) throw new DigestMismatchError(subject, 'diff_id', diffId.text, actual.output ?? '(none)');
    });
  } else {
    tar = chain(tar, diffId !== undefined && !sameDigest ? [new DigestCheck({ subject, kind: 'diff_id', expected: diffId })] : []);
  }
  if (tar === source) return source;
  const last = tar;
  async function* relay(): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of last) yield chunk as Buffer;
    } catch (error) {
      throw translate(error, subject);
    }
  }
  return Readable.from(relay(), { objectMode: false, highWaterMark: READ_AHEAD_BYTES });
}
