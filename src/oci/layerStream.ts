import { Readable, pipeline } from 'node:stream';
import { DigestCheck, type ParsedDigest } from './digest.js';
import { gunzipDecoder } from './gunzip.js';
import { decompressOffThread, GZIP_ERROR_CODE, ZSTD_ERROR_CODE } from './inflate.js';
import { DigestMismatchError, InvalidLayerError, isOciError } from './errors.js';
import type { Compression } from './mediaTypes.js';

/** Everything needed to stream one layer and check it. */
export interface LayerLocation {
  /** Names the layer in errors: `layer 2/3 sha256:0123456789ab of real/v1 (/path/v1.tar)`. */
  subject: string;
  compression: Compression;
  /** The stored (compressed) bytes. */
  open: () => Readable;
  /**
   * Whether the buffers `open()` gives are fresh and held by nothing else (file reads): a compressed
   * layer's are then handed to the decompressing thread as they are, instead of copied (which cost
   * 8-9% of a gzip build's time, BENCHMARKS.md). Handing over detaches them, so a stream that gives
   * views of memory someone keeps (a test's buffer, a network body) must leave this unset.
   */
  ownPieces?: boolean;
  /** Checked against the stored bytes; absent when nothing names them (a lone tarball). */
  digest?: ParsedDigest;
  sizeBytes?: number;
  /** Checked against the uncompressed tar (config `rootfs.diff_ids`). */
  diffId?: ParsedDigest;
}

/** How far the returned stream reads ahead of its consumer. */
const READ_AHEAD_BYTES = 512 * 1024;

/** zlib's errors carry codes like Z_DATA_ERROR, igzip's {@link GZIP_ERROR_CODE}, zstd's {@link ZSTD_ERROR_CODE}; say which layer, and which stream. */
function translate(error: unknown, subject: string): unknown {
  if (isOciError(error)) return error;
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === ZSTD_ERROR_CODE || code === GZIP_ERROR_CODE) return new InvalidLayerError(subject, (error as Error).message);
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
  // Compressed layers are hashed on the decompressing thread (both digests); here only their size is counted.
  const compressed = compression !== 'none';
  if ((digest !== undefined && !compressed) || sizeBytes !== undefined) {
    stored.push(new DigestCheck({ subject, kind: sameDigest ? 'digest (and diff_id)' : 'digest', expected: compressed ? undefined : digest, expectedSizeBytes: sizeBytes }));
  }
  const source = location.open();
  let tar = chain(source, stored);
  if (compressed) {
    // Decompressed on a worker thread (see inflate.ts), after the size check; it also hashes the
    // stored bytes and the tar, and the digests are compared before the stream ends.
    tar = decompressOffThread(tar, { compression, ...(compression === 'gzip' ? { gunzip: gunzipDecoder() } : {}), input: digest?.algorithm, output: diffId?.algorithm }, location.ownPieces === true, (actual) => {
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
