import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { DigestMismatchError, SizeMismatchError } from './errors.js';

/** The algorithms the OCI image spec registers; both are in node:crypto. */
export type DigestAlgorithm = 'sha256' | 'sha512';

export interface ParsedDigest {
  algorithm: DigestAlgorithm;
  /** Lowercase hex, 64 (sha256) or 128 (sha512) characters. */
  hex: string;
  /** `algorithm:hex`, the form descriptors carry. */
  text: string;
}

const HEX_CHARS: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };

/**
 * Parses `sha256:<64 hex>` or `sha512:<128 hex>`. Returns a reason instead of throwing, because only
 * the caller knows which file and field the digest came from. The spec requires lowercase hex for
 * both algorithms; anything else is refused, so a digest can safely become a path (`blobs/sha256/...`).
 */
export function parseDigest(text: string): ParsedDigest | { problem: string } {
  const colon = text.indexOf(':');
  if (colon <= 0) return { problem: `${JSON.stringify(text)} is not a digest (expected ALGORITHM:HEX)` };
  const algorithm = text.slice(0, colon);
  const hex = text.slice(colon + 1);
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    return { problem: `digest ${JSON.stringify(text)} uses algorithm ${JSON.stringify(algorithm)} (supported: sha256, sha512)` };
  }
  if (hex.length !== HEX_CHARS[algorithm] || !/^[0-9a-f]+$/.test(hex)) {
    return { problem: `digest ${JSON.stringify(text)} is not ${HEX_CHARS[algorithm]} lowercase hex characters` };
  }
  return { algorithm, hex, text };
}

export function isParsedDigest(value: ParsedDigest | { problem: string }): value is ParsedDigest {
  return 'hex' in value;
}

/** Digest of bytes already in memory (manifests, configs: small, read whole). */
export function digestOf(bytes: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/** A short, recognizable form for labels: `sha256:0123456789ab`. */
export function shortDigest(digest: string): string {
  const colon = digest.indexOf(':');
  return colon < 0 ? digest.slice(0, 12) : digest.slice(0, colon + 13);
}

export interface DigestCheckOptions {
  /** Names the bytes in errors (a layer label). */
  subject: string;
  /** Which digest this is in the image's words ('digest', 'diff_id'). */
  kind: string;
  expected?: ParsedDigest;
  expectedSizeBytes?: number;
}

/**
 * Passes bytes through unchanged while hashing and counting them. A byte count over the expected size
 * fails at once (a blob that is too long is not read to its end); a digest or short count fails in
 * `_flush`, that is before the stream ends, so a reader never sees a clean end of unverified bytes.
 */
export class DigestCheck extends Transform {
  private readonly hash: Hash | undefined;
  private seenBytes = 0;

  constructor(private readonly options: DigestCheckOptions) {
    super();
    this.hash = options.expected === undefined ? undefined : createHash(options.expected.algorithm);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seenBytes += chunk.length;
    const limit = this.options.expectedSizeBytes;
    if (limit !== undefined && this.seenBytes > limit) {
      callback(new SizeMismatchError(this.options.subject, limit, this.seenBytes, true));
      return;
    }
    this.hash?.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    const { expected, expectedSizeBytes, subject, kind } = this.options;
    if (expectedSizeBytes !== undefined && this.seenBytes !== expectedSizeBytes) {
      callback(new SizeMismatchError(subject, expectedSizeBytes, this.seenBytes));
      return;
    }
    if (expected !== undefined && this.hash !== undefined) {
      const actual = `${expected.algorithm}:${this.hash.digest('hex')}`;
      if (actual !== expected.text) {
        callback(new DigestMismatchError(subject, kind, expected.text, actual));
        return;
      }
    }
    callback();
  }
}
