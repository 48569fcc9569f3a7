/**
 * Typed errors of the image-source side. Each names the input (a path, an image, a layer) and the
 * problem in one line, so the CLI can print `message` as is; `code` lets callers tell them apart
 * without `instanceof` (they all start with `ERR_`).
 */

/** The source given is not something we read (unknown format, bad JSON, inconsistent manifest...). */
export class InvalidImageSourceError extends Error {
  readonly code = 'ERR_INVALID_IMAGE_SOURCE';
  constructor(
    /** The source as the user named it (a path, maybe with `:TAG`), or the file inside it. */
    readonly source: string,
    readonly problem: string,
  ) {
    super(`${source}: ${problem}`);
    this.name = 'InvalidImageSourceError';
  }
}

/** `SOURCE:TAG` named a tag the source does not have, or a platform no manifest provides. */
export class ImageNotFoundError extends Error {
  readonly code = 'ERR_IMAGE_NOT_FOUND';
  constructor(
    readonly source: string,
    readonly wanted: string,
    /** What the source does offer, listed in the message so the user can pick one. */
    readonly available: readonly string[],
  ) {
    const offer = available.length === 0 ? 'it holds no images' : `available: ${available.join(', ')}`;
    super(`${source}: no image ${wanted} (${offer})`);
    this.name = 'ImageNotFoundError';
  }
}

/** A blob a manifest or index refers to is not in the layout (or archive). */
export class MissingBlobError extends Error {
  readonly code = 'ERR_MISSING_BLOB';
  constructor(
    /** The layout directory or archive path. */
    readonly source: string,
    readonly digest: string,
    /** What the blob was for: 'manifest', 'config', 'layer 2 of base', ... */
    readonly role: string,
    /** Where we looked, relative to the source (`blobs/sha256/...`). */
    readonly expectedPath: string,
  ) {
    super(`${source}: ${role} blob ${digest} is missing (no ${expectedPath})`);
    this.name = 'MissingBlobError';
  }
}

/** Bytes whose sha256 (or sha512) differs from the digest the image promises. */
export class DigestMismatchError extends Error {
  readonly code = 'ERR_DIGEST_MISMATCH';
  constructor(
    /** The thing checked: a layer label, a manifest or config label. */
    readonly subject: string,
    /** Which digest: 'digest' (stored bytes), 'diff_id' (uncompressed tar), ... */
    readonly kind: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`${subject}: ${kind} mismatch: expected ${expected}, got ${actual}`);
    this.name = 'DigestMismatchError';
  }
}

/** Stored bytes longer or shorter than the descriptor's `size`. */
export class SizeMismatchError extends Error {
  readonly code = 'ERR_SIZE_MISMATCH';
  constructor(
    readonly subject: string,
    readonly expectedBytes: number,
    /** The size found, or a lower bound when reading stopped as soon as it ran over. */
    readonly actualBytes: number,
    readonly atLeast = false,
  ) {
    super(`${subject}: size mismatch: descriptor says ${expectedBytes} bytes, found ${atLeast ? 'at least ' : ''}${actualBytes} bytes`);
    this.name = 'SizeMismatchError';
  }
}

/** A media type (of a layer, manifest or config) that we do not convert. */
export class UnsupportedMediaTypeError extends Error {
  readonly code = 'ERR_UNSUPPORTED_MEDIA_TYPE';
  constructor(
    readonly subject: string,
    readonly mediaType: string,
    /** The kind of thing expected there: 'layer', 'manifest', 'config'. */
    readonly role: string,
    readonly supported: readonly string[] = [],
  ) {
    const hint = supported.length === 0 ? '' : ` (supported: ${supported.join(', ')})`;
    super(`${subject}: unsupported ${role} media type ${JSON.stringify(mediaType)}${hint}`);
    this.name = 'UnsupportedMediaTypeError';
  }
}

/**
 * A layer's bytes are not a valid (compressed) tar, or an entry breaks a rule: corrupt or truncated
 * gzip/zstd, truncated tar, a name escaping the root, an unknown entry type...
 */
export class InvalidLayerError extends Error {
  readonly code = 'ERR_INVALID_LAYER';
  constructor(
    readonly layer: string,
    readonly problem: string,
    /** The entry's name as displayed (UTF-8, quoted), when the problem is one entry's. */
    readonly entry?: string,
  ) {
    super(`${layer}: ${entry === undefined ? '' : `entry ${entry}: `}${problem}`);
    this.name = 'InvalidLayerError';
  }
}

/** An environment variable this module reads has a value it cannot use. */
export class InvalidSettingError extends Error {
  readonly code = 'ERR_INVALID_SETTING';
  constructor(
    readonly setting: string,
    readonly problem: string,
  ) {
    super(`${setting}: ${problem}`);
    this.name = 'InvalidSettingError';
  }
}

/** Raised by the tar header codec; readers turn it into one of the errors above with their context. */
export class TarFormatError extends Error {
  readonly code = 'ERR_TAR_FORMAT';
  constructor(
    readonly problem: string,
    /** Byte offset of the 512-byte header (or record) in the tar stream. */
    readonly offsetBytes: number,
  ) {
    super(`${problem} (tar header at byte ${offsetBytes})`);
    this.name = 'TarFormatError';
  }
}

/** True for any error of this module (their codes are what the CLI treats as user-facing). */
export function isOciError(error: unknown): error is Error & { code: string } {
  return (
    error instanceof InvalidImageSourceError ||
    error instanceof ImageNotFoundError ||
    error instanceof MissingBlobError ||
    error instanceof DigestMismatchError ||
    error instanceof SizeMismatchError ||
    error instanceof UnsupportedMediaTypeError ||
    error instanceof InvalidLayerError ||
    error instanceof TarFormatError ||
    error instanceof InvalidSettingError
  );
}

/** Every code above, for the CLI's list of expected (non-bug) failures. */
export const OCI_ERROR_CODES: readonly string[] = [
  'ERR_INVALID_IMAGE_SOURCE',
  'ERR_IMAGE_NOT_FOUND',
  'ERR_MISSING_BLOB',
  'ERR_DIGEST_MISMATCH',
  'ERR_SIZE_MISMATCH',
  'ERR_UNSUPPORTED_MEDIA_TYPE',
  'ERR_INVALID_LAYER',
  'ERR_TAR_FORMAT',
  'ERR_INVALID_SETTING',
];

/** A byte-string name (latin1, one char per byte) shown as UTF-8 in quotes, for messages. */
export function showName(byteString: string): string {
  return JSON.stringify(Buffer.from(byteString, 'latin1').toString('utf8'));
}
