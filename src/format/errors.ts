/**
 * Thrown when bytes that claim to be EROFS break a rule of the format. Decoders raise it with the
 * structure and byte offset; the reader adds the image path so the CLI can print one actionable line.
 */
export class CorruptImageError extends Error {
  readonly code = 'ERR_EROFS_CORRUPT';
  constructor(
    readonly problem: string,
    readonly where: { structure: string; offsetBytes?: number; nid?: number; path?: string; image?: string } = {
      structure: 'image',
    },
  ) {
    super(CorruptImageError.describe(problem, where));
    this.name = 'CorruptImageError';
  }

  /** The same error, naming the image it came from (kept when already set). */
  inImage(image: string): CorruptImageError {
    if (this.where.image !== undefined) return this;
    return new CorruptImageError(this.problem, { ...this.where, image });
  }

  private static describe(problem: string, where: CorruptImageError['where']): string {
    const parts: string[] = [];
    if (where.image !== undefined) parts.push(where.image);
    let place = where.structure;
    if (where.nid !== undefined) place += ` of nid ${where.nid}`;
    if (where.path !== undefined) place += ` (${where.path})`;
    if (where.offsetBytes !== undefined) place += ` at byte ${where.offsetBytes}`;
    parts.push(place);
    return `${parts.join(': ')}: ${problem}`;
  }
}

/** Thrown for valid EROFS that uses a feature this implementation does not read (compression, 48-bit, ...). */
export class UnsupportedFeatureError extends Error {
  readonly code = 'ERR_EROFS_UNSUPPORTED';
  constructor(readonly feature: string, readonly image?: string) {
    super(`${image !== undefined ? `${image}: ` : ''}unsupported EROFS feature: ${feature}`);
    this.name = 'UnsupportedFeatureError';
  }
}

/** Thrown by encoders when asked to write something the format cannot hold (a programming or input error). */
export class FormatLimitError extends Error {
  readonly code = 'ERR_EROFS_LIMIT';
  constructor(message: string) {
    super(message);
    this.name = 'FormatLimitError';
  }
}
