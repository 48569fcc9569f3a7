import {
  MAX_SHARED_XATTRS_PER_INODE,
  MAX_XATTR_NAME_SUFFIX_BYTES,
  MAX_XATTR_VALUE_BYTES,
  XATTR_ENTRY_HEADER_SIZE_BYTES,
  XATTR_FILTER_BITS,
  XATTR_FILTER_SEED,
  XATTR_IBODY_HEADER_SIZE_BYTES,
  XATTR_INDEX,
  XATTR_LONG_PREFIX_FLAG,
  XATTR_LONG_PREFIX_MASK,
} from './constants.js';
import { CorruptImageError, FormatLimitError } from './errors.js';
import { xxh32 } from './xxh32.js';

/** Short name prefixes by e_name_index. Index 0 (used only as a long prefix's base) means none. */
export const SHORT_XATTR_PREFIXES: ReadonlyMap<number, string> = new Map([
  [0, ''],
  [XATTR_INDEX.USER, 'user.'],
  [XATTR_INDEX.POSIX_ACL_ACCESS, 'system.posix_acl_access'],
  [XATTR_INDEX.POSIX_ACL_DEFAULT, 'system.posix_acl_default'],
  [XATTR_INDEX.TRUSTED, 'trusted.'],
  [XATTR_INDEX.LUSTRE, 'lustre.'],
  [XATTR_INDEX.SECURITY, 'security.'],
]);

/** The ACL prefixes name a whole attribute: nothing may follow them. */
const WHOLE_NAME_INDEXES: ReadonlySet<number> = new Set([XATTR_INDEX.POSIX_ACL_ACCESS, XATTR_INDEX.POSIX_ACL_DEFAULT]);

/** A long name prefix (struct erofs_xattr_long_prefix): a short prefix plus an infix. */
export interface XattrLongPrefix {
  baseIndex: number;
  infix: Buffer;
}

/** One xattr entry as stored: name index, the name's remainder after its prefix, and the value. */
export interface XattrEntry {
  nameIndex: number;
  suffix: Buffer;
  value: Buffer;
}

export function longPrefixFullName(prefix: XattrLongPrefix): Buffer {
  const base = SHORT_XATTR_PREFIXES.get(prefix.baseIndex);
  if (base === undefined) throw new FormatLimitError(`long prefix base index ${prefix.baseIndex} is unknown`);
  return Buffer.concat([Buffer.from(base, 'latin1'), prefix.infix]);
}

/**
 * Splits a full xattr name into its stored form. A matching long prefix wins (the longest), then
 * the short prefixes; names in no namespace EROFS knows cannot be stored.
 */
export function splitXattrName(name: Buffer, longPrefixes: readonly XattrLongPrefix[] = []): { nameIndex: number; suffix: Buffer } {
  let best: { nameIndex: number; suffix: Buffer } | undefined;
  let bestLength = -1;
  longPrefixes.forEach((prefix, number) => {
    const full = longPrefixFullName(prefix);
    if (full.length > bestLength && name.length >= full.length && name.subarray(0, full.length).equals(full)) {
      best = { nameIndex: XATTR_LONG_PREFIX_FLAG | number, suffix: Buffer.from(name.subarray(full.length)) };
      bestLength = full.length;
    }
  });
  if (best !== undefined) return checkSuffix(best, name);
  for (const [index, prefix] of SHORT_XATTR_PREFIXES) {
    if (index === 0) continue;
    const prefixBytes = Buffer.from(prefix, 'latin1');
    if (WHOLE_NAME_INDEXES.has(index)) {
      if (name.equals(prefixBytes)) return { nameIndex: index, suffix: Buffer.alloc(0) };
      continue;
    }
    if (name.length > prefixBytes.length && name.subarray(0, prefixBytes.length).equals(prefixBytes)) {
      return checkSuffix({ nameIndex: index, suffix: Buffer.from(name.subarray(prefixBytes.length)) }, name);
    }
  }
  throw new FormatLimitError(`xattr "${name.toString()}" is in no namespace EROFS can store`);
}

function checkSuffix(split: { nameIndex: number; suffix: Buffer }, name: Buffer): { nameIndex: number; suffix: Buffer } {
  if (split.suffix.length > MAX_XATTR_NAME_SUFFIX_BYTES) {
    throw new FormatLimitError(`xattr name "${name.toString()}" is too long (suffix over ${MAX_XATTR_NAME_SUFFIX_BYTES} bytes)`);
  }
  return split;
}

/** The full name of a stored entry. */
export function joinXattrName(nameIndex: number, suffix: Buffer, longPrefixes: readonly XattrLongPrefix[]): Buffer {
  if (nameIndex & XATTR_LONG_PREFIX_FLAG) {
    const prefix = longPrefixes[nameIndex & XATTR_LONG_PREFIX_MASK];
    if (prefix === undefined) throw new CorruptImageError(`xattr long prefix ${nameIndex & XATTR_LONG_PREFIX_MASK} does not exist`, { structure: 'xattr entry' });
    return Buffer.concat([longPrefixFullName(prefix), suffix]);
  }
  const prefix = SHORT_XATTR_PREFIXES.get(nameIndex);
  if (prefix === undefined || nameIndex === 0) throw new CorruptImageError(`unknown xattr name index ${nameIndex}`, { structure: 'xattr entry' });
  return Buffer.concat([Buffer.from(prefix, 'latin1'), suffix]);
}

/**
 * The base short index and the name after the short prefix, which the kernel hashes for the
 * bloom filter (for long prefixes: infix plus suffix under the base index).
 */
export function filterKeyOf(entry: Pick<XattrEntry, 'nameIndex' | 'suffix'>, longPrefixes: readonly XattrLongPrefix[]): { baseIndex: number; name: Buffer } {
  if (entry.nameIndex & XATTR_LONG_PREFIX_FLAG) {
    const prefix = longPrefixes[entry.nameIndex & XATTR_LONG_PREFIX_MASK];
    if (prefix === undefined) throw new FormatLimitError(`xattr long prefix ${entry.nameIndex & XATTR_LONG_PREFIX_MASK} does not exist`);
    return { baseIndex: prefix.baseIndex, name: Buffer.concat([prefix.infix, entry.suffix]) };
  }
  return { baseIndex: entry.nameIndex, name: entry.suffix };
}

export function xattrFilterBit(baseIndex: number, nameAfterShortPrefix: Uint8Array): number {
  return xxh32(nameAfterShortPrefix, (XATTR_FILTER_SEED + baseIndex) >>> 0) & (XATTR_FILTER_BITS - 1);
}

/** h_name_filter: a set bit means "no xattr of this hash", so absent names fail fast. */
export function computeXattrFilter(keys: readonly { baseIndex: number; name: Uint8Array }[]): number {
  let present = 0;
  for (const key of keys) present |= 1 << xattrFilterBit(key.baseIndex, key.name);
  return ~present >>> 0;
}

export function xattrEntrySizeBytes(suffixBytes: number, valueBytes: number): number {
  return Math.ceil((XATTR_ENTRY_HEADER_SIZE_BYTES + suffixBytes + valueBytes) / 4) * 4;
}

export function encodeXattrEntry(entry: XattrEntry): Buffer {
  const buf = Buffer.alloc(xattrEntrySizeBytes(entry.suffix.length, entry.value.length));
  writeXattrEntry(buf, 0, entry);
  return buf;
}

/** Writes an entry at `at` of `buf` (zero there: the 4-byte alignment padding is not written); returns its size with padding. */
export function writeXattrEntry(buf: Buffer, at: number, entry: XattrEntry): number {
  if (entry.suffix.length > MAX_XATTR_NAME_SUFFIX_BYTES) throw new FormatLimitError('xattr name suffix longer than 255 bytes');
  if (entry.value.length > MAX_XATTR_VALUE_BYTES) throw new FormatLimitError(`xattr value of ${entry.value.length} bytes exceeds ${MAX_XATTR_VALUE_BYTES}`);
  buf.writeUInt8(entry.suffix.length, at);
  buf.writeUInt8(entry.nameIndex, at + 1);
  buf.writeUInt16LE(entry.value.length, at + 2);
  entry.suffix.copy(buf, at + XATTR_ENTRY_HEADER_SIZE_BYTES);
  entry.value.copy(buf, at + XATTR_ENTRY_HEADER_SIZE_BYTES + entry.suffix.length);
  return xattrEntrySizeBytes(entry.suffix.length, entry.value.length);
}

/** Decodes the entry at `offsetBytes` of `bytes`, which must end within `limitBytes`. */
export function decodeXattrEntry(bytes: Uint8Array, offsetBytes: number, limitBytes: number, where: { structure: string; nid?: number }): { entry: XattrEntry; nextOffsetBytes: number } {
  const limit = Math.min(limitBytes, bytes.length);
  if (offsetBytes + XATTR_ENTRY_HEADER_SIZE_BYTES > limit) throw new CorruptImageError('xattr entry header runs past its area', where);
  const suffixLength = bytes[offsetBytes]!;
  const nameIndex = bytes[offsetBytes + 1]!;
  const valueLength = bytes[offsetBytes + 2]! | (bytes[offsetBytes + 3]! << 8);
  const start = offsetBytes + XATTR_ENTRY_HEADER_SIZE_BYTES;
  const end = start + suffixLength + valueLength;
  if (end > limit) throw new CorruptImageError(`xattr entry of ${suffixLength}+${valueLength} bytes runs past its area`, where);
  return {
    entry: {
      nameIndex,
      suffix: Buffer.from(bytes.subarray(start, start + suffixLength)),
      value: Buffer.from(bytes.subarray(start + suffixLength, end)),
    },
    nextOffsetBytes: offsetBytes + xattrEntrySizeBytes(suffixLength, valueLength),
  };
}

/** The inline xattr area: header (filter, shared count), shared ids, inline entries. */
export interface XattrIbody {
  nameFilter: number;
  sharedIds: number[];
  entries: XattrEntry[];
}

export function xattrIbodyContentSizeBytes(sharedCount: number, entries: readonly Pick<XattrEntry, 'suffix' | 'value'>[]): number {
  let entryBytes = 0;
  for (const entry of entries) entryBytes += xattrEntrySizeBytes(entry.suffix.length, entry.value.length);
  return xattrIbodySizeBytesFor(sharedCount, entries.length, entryBytes);
}

/** {@link xattrIbodyContentSizeBytes} from counts: `entryBytes` is the inline entries' total {@link xattrEntrySizeBytes}. */
export function xattrIbodySizeBytesFor(sharedCount: number, entryCount: number, entryBytes: number): number {
  if (sharedCount === 0 && entryCount === 0) return 0;
  // icount 1 would mean a bare header, which readers refuse: a lone header is never written.
  return Math.max(XATTR_IBODY_HEADER_SIZE_BYTES + 4 * sharedCount + entryBytes, XATTR_IBODY_HEADER_SIZE_BYTES + 4);
}

export function encodeXattrIbody(ibody: XattrIbody): Buffer {
  const buf = Buffer.alloc(xattrIbodyContentSizeBytes(ibody.sharedIds.length, ibody.entries));
  writeXattrIbody(buf, 0, ibody);
  return buf;
}

/** Writes an ibody at `at` of `buf`, whose bytes there must be zero (alignment padding is not written). */
export function writeXattrIbody(buf: Buffer, at: number, ibody: XattrIbody): void {
  if (ibody.sharedIds.length > MAX_SHARED_XATTRS_PER_INODE) throw new FormatLimitError(`${ibody.sharedIds.length} shared xattrs exceed ${MAX_SHARED_XATTRS_PER_INODE}`);
  if (ibody.sharedIds.length === 0 && ibody.entries.length === 0) return;
  buf.writeUInt32LE(ibody.nameFilter >>> 0, at);
  buf.writeUInt8(ibody.sharedIds.length, at + 4);
  let entryAt = at + XATTR_IBODY_HEADER_SIZE_BYTES;
  for (const id of ibody.sharedIds) {
    buf.writeUInt32LE(id >>> 0, entryAt);
    entryAt += 4;
  }
  for (const entry of ibody.entries) entryAt += writeXattrEntry(buf, entryAt, entry);
}

/** Decodes an ibody of exactly `bytes.length` bytes (from i_xattr_icount). */
export function decodeXattrIbody(bytes: Uint8Array, nid: number): XattrIbody {
  const where = { structure: 'inline xattrs', nid };
  if (bytes.length < XATTR_IBODY_HEADER_SIZE_BYTES) throw new CorruptImageError('xattr header truncated', where);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const nameFilter = buf.readUInt32LE(0);
  const sharedCount = buf.readUInt8(4);
  let at = XATTR_IBODY_HEADER_SIZE_BYTES;
  if (at + 4 * sharedCount > buf.length) throw new CorruptImageError(`${sharedCount} shared xattr ids do not fit the ibody`, where);
  const sharedIds: number[] = [];
  for (let i = 0; i < sharedCount; i++, at += 4) sharedIds.push(buf.readUInt32LE(at));
  const entries: XattrEntry[] = [];
  // Entries run to the end of the ibody; trailing zero padding shorter than a header ends the list.
  while (at + XATTR_ENTRY_HEADER_SIZE_BYTES <= buf.length) {
    const { entry, nextOffsetBytes } = decodeXattrEntry(buf, at, buf.length, where);
    if (entry.suffix.length === 0 && entry.value.length === 0 && entry.nameIndex === 0) break;
    entries.push(entry);
    at = nextOffsetBytes;
  }
  return { nameFilter, sharedIds, entries };
}

/** A long prefix record: u16 length, base index, infix, padded to 4 bytes. */
export function encodeXattrLongPrefix(prefix: XattrLongPrefix): Buffer {
  const length = 1 + prefix.infix.length;
  if (length > 256) throw new FormatLimitError('long xattr prefix longer than 256 bytes');
  const buf = Buffer.alloc(Math.ceil((2 + length) / 4) * 4);
  buf.writeUInt16LE(length, 0);
  buf.writeUInt8(prefix.baseIndex, 2);
  prefix.infix.copy(buf, 3);
  return buf;
}

/** Decodes `count` prefix records starting at `bytes[0]` (the table's byte offset is for messages). */
export function decodeXattrLongPrefixes(bytes: Uint8Array, count: number, tableOffsetBytes: number): XattrLongPrefix[] {
  const prefixes: XattrLongPrefix[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    const where = { structure: `long xattr prefix ${i}`, offsetBytes: tableOffsetBytes + at };
    if (at + 3 > bytes.length) throw new CorruptImageError('prefix record truncated', where);
    const length = bytes[at]! | (bytes[at + 1]! << 8);
    if (length < 1 || length > 256 || at + 2 + length > bytes.length) throw new CorruptImageError(`bad prefix length ${length}`, where);
    const baseIndex = bytes[at + 2]!;
    if (!SHORT_XATTR_PREFIXES.has(baseIndex)) throw new CorruptImageError(`prefix base index ${baseIndex} is unknown`, where);
    prefixes.push({ baseIndex, infix: Buffer.from(bytes.subarray(at + 3, at + 2 + length)) });
    at += Math.ceil((2 + length) / 4) * 4;
  }
  return prefixes;
}

/** Bytes the prefix table occupies. */
export function xattrLongPrefixTableSizeBytes(prefixes: readonly XattrLongPrefix[]): number {
  return prefixes.reduce((sum, p) => sum + Math.ceil((3 + p.infix.length) / 4) * 4, 0);
}
