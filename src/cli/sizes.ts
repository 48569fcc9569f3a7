import { InvalidOptionError } from '../build/errors.js';

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30 };

/** Parses "4096", "64K", "1M", "1MiB" into bytes. */
export function parseByteSize(text: string, option: string): number {
  const match = /^(\d+)\s*([kmg]?)(i?b)?$/i.exec(text.trim());
  if (match === null) throw new InvalidOptionError(option, `"${text}" is not a size (examples: 4096, 64K, 1M)`);
  const value = Number(match[1]) * UNITS[match[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(value) || value <= 0) throw new InvalidOptionError(option, `"${text}" is out of range`);
  return value;
}
