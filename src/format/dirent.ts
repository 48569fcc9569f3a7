import { DIRENT_SIZE_BYTES, FILE_TYPE, MAX_NAME_BYTES } from './constants.js';
import { writeSafeUInt64LE } from './bytes.js';
import { CorruptImageError, FormatLimitError } from './errors.js';

/** A directory entry (struct erofs_dirent plus its name). */
export interface Dirent {
  nid: number;
  name: Buffer;
  fileType: number;
}

/**
 * Directory layout rules: each block holds `[dirents][names][zero fill]`; an entry never spans
 * blocks; names are sorted by raw bytes across the whole directory, "." and ".." included.
 * The size depends on names only, so the writer can plan it before nids exist.
 */
export function directorySizeBytes(sortedNameLengths: readonly number[], blockSizeBytes: number): number {
  let fullBlocks = 0;
  let usedBytes = 0;
  for (const length of sortedNameLengths) {
    if (usedBytes + DIRENT_SIZE_BYTES + length > blockSizeBytes) {
      fullBlocks++;
      usedBytes = 0;
    }
    usedBytes += DIRENT_SIZE_BYTES + length;
  }
  return fullBlocks * blockSizeBytes + usedBytes;
}

export function compareNames(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

function validateNameKey(name: string): void {
  if (name.length === 0 || name.length > MAX_NAME_BYTES) throw new FormatLimitError(`name length ${name.length} outside 1..${MAX_NAME_BYTES}`);
  if (name.includes('/') || name.includes('\0')) throw new FormatLimitError(`name "${Buffer.from(name, 'latin1').toString()}" contains '/' or NUL`);
}

/** Encodes sorted entries into directory data of exactly `directorySizeBytes(...)` bytes. */
export function encodeDirectory(sortedEntries: readonly Dirent[], blockSizeBytes: number): Buffer {
  return encodeDirectoryKeys(
    sortedEntries.map((e) => e.name.toString('latin1')),
    sortedEntries.map((e) => e.nid),
    sortedEntries.map((e) => e.fileType),
    blockSizeBytes,
  );
}

/**
 * {@link encodeDirectory} for entries given as parallel arrays, names as latin1 strings (one char
 * per byte, as the image writer keys them): no Buffer per name, and names compare as strings.
 */
export function encodeDirectoryKeys(sortedNames: readonly string[], nids: readonly number[], fileTypes: readonly number[], blockSizeBytes: number): Buffer {
  const size = directorySizeBytes(
    sortedNames.map((name) => name.length),
    blockSizeBytes,
  );
  const out = Buffer.alloc(size);
  let blockStart = 0;
  let i = 0;
  while (i < sortedNames.length) {
    // Gather the entries that fit this block, as directorySizeBytes does.
    let used = 0;
    let end = i;
    while (end < sortedNames.length && used + DIRENT_SIZE_BYTES + sortedNames[end]!.length <= blockSizeBytes) {
      used += DIRENT_SIZE_BYTES + sortedNames[end]!.length;
      end++;
    }
    if (end === i) throw new FormatLimitError('directory entry larger than a block');
    let nameoff = (end - i) * DIRENT_SIZE_BYTES;
    for (let k = i; k < end; k++) {
      const name = sortedNames[k]!;
      validateNameKey(name);
      // Latin1 strings compare by char code, which is byte order.
      if (k > 0 && sortedNames[k - 1]! >= name) {
        throw new FormatLimitError(`directory names not strictly sorted at "${Buffer.from(name, 'latin1').toString()}"`);
      }
      const at = blockStart + (k - i) * DIRENT_SIZE_BYTES;
      writeSafeUInt64LE(out, nids[k]!, at);
      out.writeUInt16LE(nameoff, at + 8);
      out.writeUInt8(fileTypes[k]!, at + 10);
      const nameAt = blockStart + nameoff;
      for (let c = 0; c < name.length; c++) out[nameAt + c] = name.charCodeAt(c);
      nameoff += name.length;
    }
    i = end;
    blockStart += blockSizeBytes;
  }
  return out;
}

/**
 * Decodes one directory block. `maxsizeBytes` = min(block size, i_size - block start): the last
 * name ends at the first NUL or there. Checks every rule the kernel and fsck.erofs check, so a
 * hostile block yields CorruptImageError, never an out-of-range read.
 */
export function decodeDirectoryBlock(block: Uint8Array, maxsizeBytes: number, nid: number, blockIndex: number): Dirent[] {
  const where = { structure: `directory block ${blockIndex}`, nid };
  if (block.length < maxsizeBytes) throw new CorruptImageError('directory block truncated', where);
  if (maxsizeBytes < DIRENT_SIZE_BYTES) throw new CorruptImageError(`directory block of ${maxsizeBytes} bytes holds no entry`, where);
  const buf = Buffer.from(block.buffer, block.byteOffset, maxsizeBytes);
  const firstNameoff = buf.readUInt16LE(8);
  if (firstNameoff < DIRENT_SIZE_BYTES || firstNameoff >= maxsizeBytes || firstNameoff % DIRENT_SIZE_BYTES !== 0) {
    throw new CorruptImageError(`bad first name offset ${firstNameoff}`, where);
  }
  const count = firstNameoff / DIRENT_SIZE_BYTES;
  const entries: Dirent[] = [];
  for (let i = 0; i < count; i++) {
    const at = i * DIRENT_SIZE_BYTES;
    const nid64 = buf.readBigUInt64LE(at);
    if (nid64 > BigInt(Number.MAX_SAFE_INTEGER)) throw new CorruptImageError(`nid ${nid64} out of range`, where);
    const nameoff = buf.readUInt16LE(at + 8);
    const fileType = buf.readUInt8(at + 10);
    let nameEnd: number;
    if (i + 1 < count) {
      nameEnd = buf.readUInt16LE(at + DIRENT_SIZE_BYTES + 8);
    } else {
      const nul = buf.indexOf(0, nameoff);
      nameEnd = nul < 0 ? maxsizeBytes : nul;
    }
    if (nameoff < firstNameoff || nameEnd > maxsizeBytes || nameEnd <= nameoff) {
      throw new CorruptImageError(`entry ${i} has bad name bounds ${nameoff}..${nameEnd}`, where);
    }
    if (nameEnd - nameoff > MAX_NAME_BYTES) throw new CorruptImageError(`entry ${i} name longer than ${MAX_NAME_BYTES} bytes`, where);
    if (fileType > FILE_TYPE.SYMLINK) throw new CorruptImageError(`entry ${i} has file type ${fileType}`, where);
    const name = Buffer.from(buf.subarray(nameoff, nameEnd));
    if (name.includes(0x2f) || name.includes(0)) throw new CorruptImageError(`entry ${i} name contains '/' or NUL`, where);
    const previous = entries[entries.length - 1];
    if (previous !== undefined && compareNames(previous.name, name) >= 0) {
      throw new CorruptImageError(`names out of order ("${previous.name.toString()}" before "${name.toString()}")`, where);
    }
    entries.push({ nid: Number(nid64), name, fileType });
  }
  return entries;
}

export const DOT = Buffer.from('.');
export const DOTDOT = Buffer.from('..');
