import { TarFormatError } from './errors.js';

/**
 * The POSIX ustar header block (with the GNU and v7 variants a reader meets) and PAX extended
 * records, as pure functions over bytes. The archive index reads member offsets with it; the layer
 * reader uses tar-stream for the stream and this module for PAX records, which tar-stream decodes
 * as text (xattr values are bytes).
 *
 * Names are byte strings: latin1, one char per byte, so no byte sequence is lost.
 */
export const TAR_BLOCK_BYTES = 512;

// Field offsets and lengths of the 512-byte header (POSIX.1-1988 ustar).
const NAME = { offset: 0, length: 100 } as const;
const MODE = { offset: 100, length: 8 } as const;
const UID = { offset: 108, length: 8 } as const;
const GID = { offset: 116, length: 8 } as const;
const SIZE = { offset: 124, length: 12 } as const;
const MTIME = { offset: 136, length: 12 } as const;
const CHKSUM = { offset: 148, length: 8 } as const;
const TYPEFLAG_OFFSET = 156;
const LINKNAME = { offset: 157, length: 100 } as const;
const MAGIC = { offset: 257, length: 6 } as const;
const VERSION = { offset: 263, length: 2 } as const;
const UNAME = { offset: 265, length: 32 } as const;
const GNAME = { offset: 297, length: 32 } as const;
const DEVMAJOR = { offset: 329, length: 8 } as const;
const DEVMINOR = { offset: 337, length: 8 } as const;
const PREFIX = { offset: 345, length: 155 } as const;

const USTAR_MAGIC = Buffer.from('ustar\0', 'latin1');
const GNU_MAGIC = Buffer.from('ustar ', 'latin1');
const ZERO_BLOCK = Buffer.alloc(TAR_BLOCK_BYTES);

/** Typeflags (POSIX, plus the GNU and PAX ones a reader must recognize to skip or apply). */
export const TYPEFLAG = {
  file: '0',
  oldFile: '\0',
  hardlink: '1',
  symlink: '2',
  chr: '3',
  blk: '4',
  dir: '5',
  fifo: '6',
  contiguous: '7',
  paxLocal: 'x',
  paxGlobal: 'g',
  gnuLongName: 'L',
  gnuLongLink: 'K',
} as const;

export interface TarHeader {
  /** Byte string; for ustar the prefix field is already joined in front. */
  name: string;
  /** All 12 permission bits and whatever else the writer put in the field. */
  mode: number;
  uid: number;
  gid: number;
  sizeBytes: number;
  mtimeSec: number;
  /** One character, '\0' for pre-POSIX regular files. */
  typeflag: string;
  linkName: string;
  format: 'ustar' | 'gnu' | 'v7';
  uname: string;
  gname: string;
  devMajor: number;
  devMinor: number;
}

/** Bytes of zero padding after `sizeBytes` of member data, up to the next header. */
export function paddingBytes(sizeBytes: number): number {
  const rest = sizeBytes % TAR_BLOCK_BYTES;
  return rest === 0 ? 0 : TAR_BLOCK_BYTES - rest;
}

/** Size of a member's data area including its padding. */
export function paddedBytes(sizeBytes: number): number {
  return sizeBytes + paddingBytes(sizeBytes);
}

export function isZeroBlock(block: Uint8Array): boolean {
  return block.length === TAR_BLOCK_BYTES && ZERO_BLOCK.equals(block);
}

function hasMagic(block: Uint8Array, magic: Buffer): boolean {
  for (let i = 0; i < MAGIC.length; i++) if (block[MAGIC.offset + i] !== magic[i]) return false;
  return true;
}

/** A NUL-terminated (or full-width) string field, as a byte string. */
function decodeString(block: Buffer, f: { offset: number; length: number }): string {
  let end = f.offset;
  const limit = f.offset + f.length;
  while (end < limit && block[end] !== 0) end++;
  return end === f.offset ? '' : block.toString('latin1', f.offset, end);
}

/**
 * A numeric field: octal digits (space or NUL padded), or GNU base-256 when the top bit of the
 * first byte is set (how tars store sizes over 8 GiB and uids over 2097151). Negative base-256
 * values exist only for pre-1970 mtimes.
 */
function decodeNumber(block: Uint8Array, f: { offset: number; length: number }, name: string, offsetBytes: number): number {
  const first = block[f.offset]!;
  const limit = f.offset + f.length;
  if ((first & 0x80) !== 0) {
    const negative = first === 0xff;
    if (!negative && first !== 0x80) throw new TarFormatError(`${name} field has an invalid base-256 marker`, offsetBytes);
    let value = 0n;
    for (let i = f.offset + 1; i < limit; i++) value = (value << 8n) | BigInt(negative ? 0xff - block[i]! : block[i]!);
    if (negative) value = -value - 1n;
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < -BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new TarFormatError(`${name} field is out of range`, offsetBytes);
    }
    return Number(value);
  }
  // Octal digits, with spaces or NULs around them (writers pad either way); parsed by hand, in
  // place: this runs for six fields of every header of every layer.
  let at = f.offset;
  let end = limit;
  while (at < end && (block[at] === 0x20 || block[at] === 0)) at++;
  while (end > at && (block[end - 1] === 0x20 || block[end - 1] === 0)) end--;
  let value = 0;
  for (let i = at; i < end; i++) {
    const digit = block[i]! - 0x30;
    if (digit < 0 || digit > 7) throw new TarFormatError(`${name} field ${JSON.stringify(Buffer.from(block.subarray(at, end)).toString('latin1'))} is not octal`, offsetBytes);
    value = value * 8 + digit;
  }
  return value;
}

/** Sum of the header bytes with the checksum field counted as spaces (unsigned, and the historic signed sum). */
function checksums(block: Uint8Array): { unsigned: number; signed: number } {
  let unsigned = 0;
  let highBytes = 0;
  for (let i = 0; i < TAR_BLOCK_BYTES; i++) {
    const byte = block[i]!;
    unsigned += byte;
    if (byte >= 0x80) highBytes++;
  }
  // The checksum field counts as eight spaces.
  for (let i = CHKSUM.offset; i < CHKSUM.offset + CHKSUM.length; i++) {
    const byte = block[i]!;
    unsigned += 0x20 - byte;
    if (byte >= 0x80) highBytes--;
  }
  // The signed sum reads bytes 0x80-0xff as negative: each is 256 less.
  return { unsigned, signed: unsigned - 256 * highBytes };
}

/** True when `block` is a tar header whose checksum is right (how content sniffing recognizes a tar). */
export function looksLikeTarHeader(block: Uint8Array): boolean {
  if (block.length < TAR_BLOCK_BYTES || isZeroBlock(block.subarray(0, TAR_BLOCK_BYTES))) return false;
  try {
    decodeTarHeader(block.subarray(0, TAR_BLOCK_BYTES), 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Decodes one header block. The caller checks {@link isZeroBlock} first (the end-of-archive marker);
 * anything else that is not a header with a valid checksum throws {@link TarFormatError}.
 */
export function decodeTarHeader(block: Uint8Array, offsetBytes: number): TarHeader {
  if (block.length !== TAR_BLOCK_BYTES) throw new TarFormatError(`header is ${block.length} bytes, not ${TAR_BLOCK_BYTES}`, offsetBytes);
  const stored = decodeNumber(block, CHKSUM, 'checksum', offsetBytes);
  const { unsigned, signed } = checksums(block);
  if (stored !== unsigned && stored !== signed) throw new TarFormatError('invalid header checksum (not a tar, or corrupt)', offsetBytes);
  const format = hasMagic(block, USTAR_MAGIC) ? 'ustar' : hasMagic(block, GNU_MAGIC) ? 'gnu' : 'v7';
  const bytes = Buffer.isBuffer(block) ? block : Buffer.from(block.buffer, block.byteOffset, block.byteLength);
  let name = decodeString(bytes, NAME);
  // GNU tar uses the prefix area for atime/ctime, so only ustar joins it.
  if (format === 'ustar' && block[PREFIX.offset] !== 0) name = `${decodeString(bytes, PREFIX)}/${name}`;
  return {
    name,
    mode: decodeNumber(block, MODE, 'mode', offsetBytes),
    uid: decodeNumber(block, UID, 'uid', offsetBytes),
    gid: decodeNumber(block, GID, 'gid', offsetBytes),
    sizeBytes: decodeNumber(block, SIZE, 'size', offsetBytes),
    mtimeSec: decodeNumber(block, MTIME, 'mtime', offsetBytes),
    typeflag: String.fromCharCode(block[TYPEFLAG_OFFSET] ?? 0),
    linkName: decodeString(bytes, LINKNAME),
    format,
    uname: format === 'v7' ? '' : decodeString(bytes, UNAME),
    gname: format === 'v7' ? '' : decodeString(bytes, GNAME),
    devMajor: format === 'v7' ? 0 : decodeNumber(block, DEVMAJOR, 'devmajor', offsetBytes),
    devMinor: format === 'v7' ? 0 : decodeNumber(block, DEVMINOR, 'devminor', offsetBytes),
  };
}

export interface TarHeaderInput {
  name: string;
  typeflag: string;
  mode?: number;
  uid?: number;
  gid?: number;
  sizeBytes?: number;
  mtimeSec?: number;
  linkName?: string;
  uname?: string;
  gname?: string;
  devMajor?: number;
  devMinor?: number;
}

function encodeNumber(block: Buffer, f: { offset: number; length: number }, value: number): void {
  const digits = f.length - 1;
  if (value >= 0 && value < 8 ** digits) {
    block.write(value.toString(8).padStart(digits, '0'), f.offset, 'latin1');
    block[f.offset + digits] = 0;
    return;
  }
  // GNU base-256: marker byte, then the value big-endian in the remaining bytes.
  let rest = BigInt(value);
  const negative = rest < 0n;
  if (negative) rest = -rest - 1n;
  for (let i = f.length - 1; i >= 1; i--) {
    const byte = Number(rest & 0xffn);
    block[f.offset + i] = negative ? 0xff - byte : byte;
    rest >>= 8n;
  }
  if (rest !== 0n) throw new RangeError(`tar numeric field cannot hold ${value}`);
  block[f.offset] = negative ? 0xff : 0x80;
}

function encodeString(block: Buffer, f: { offset: number; length: number }, value: string, what: string): void {
  const bytes = Buffer.from(value, 'latin1');
  if (bytes.length > f.length) throw new RangeError(`tar ${what} ${JSON.stringify(value)} is longer than ${f.length} bytes (needs a PAX record)`);
  bytes.copy(block, f.offset);
}

/**
 * Encodes a ustar header. A name over 100 bytes is split into prefix and name at a '/' when it fits
 * (ustar's own extension); otherwise this throws and the caller writes a PAX `path` record first.
 */
export function encodeTarHeader(input: TarHeaderInput): Buffer {
  const block = Buffer.alloc(TAR_BLOCK_BYTES);
  let name = input.name;
  let prefix = '';
  if (Buffer.byteLength(name, 'latin1') > NAME.length) {
    // The first '/' that leaves at most 100 bytes after it, with at most 155 before it.
    let cut = name.indexOf('/', Math.max(1, name.length - NAME.length - 1));
    if (cut > PREFIX.length || cut === name.length - 1) cut = -1;
    if (cut < 0) throw new RangeError(`tar name ${JSON.stringify(name)} does not fit a ustar header (needs a PAX record)`);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
  }
  encodeString(block, NAME, name, 'name');
  encodeNumber(block, MODE, input.mode ?? 0o644);
  encodeNumber(block, UID, input.uid ?? 0);
  encodeNumber(block, GID, input.gid ?? 0);
  encodeNumber(block, SIZE, input.sizeBytes ?? 0);
  encodeNumber(block, MTIME, input.mtimeSec ?? 0);
  block.write(input.typeflag, TYPEFLAG_OFFSET, 'latin1');
  encodeString(block, LINKNAME, input.linkName ?? '', 'link name');
  USTAR_MAGIC.copy(block, MAGIC.offset);
  block.write('00', VERSION.offset, 'latin1');
  encodeString(block, UNAME, input.uname ?? '', 'uname');
  encodeString(block, GNAME, input.gname ?? '', 'gname');
  encodeNumber(block, DEVMAJOR, input.devMajor ?? 0);
  encodeNumber(block, DEVMINOR, input.devMinor ?? 0);
  encodeString(block, PREFIX, prefix, 'prefix');
  // The checksum is computed with its own field as spaces, then stored as 6 octal digits, NUL, space.
  block.fill(0x20, CHKSUM.offset, CHKSUM.offset + CHKSUM.length);
  const { unsigned } = checksums(block);
  block.write(`${unsigned.toString(8).padStart(6, '0')}\0 `, CHKSUM.offset, 'latin1');
  return block;
}

/**
 * Encodes PAX records (`LENGTH KEY=VALUE\n`, LENGTH counting itself). Keys are byte strings; values
 * are raw bytes (SCHILY.xattr values are binary).
 */
export function encodePaxRecords(records: Iterable<readonly [string, Buffer | string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [key, value] of records) {
    const body = Buffer.concat([Buffer.from(` ${key}=`, 'latin1'), typeof value === 'string' ? Buffer.from(value, 'utf8') : value, Buffer.from('\n')]);
    let length = body.length + 1;
    while (String(length).length + body.length !== length) length = String(length).length + body.length;
    parts.push(Buffer.from(String(length), 'latin1'), body);
  }
  return Buffer.concat(parts);
}

/** Upper bound on one PAX extended header; real ones are a few hundred bytes (xattrs: a few KiB). */
export const MAX_PAX_BYTES = 4 * 1024 * 1024;

/**
 * Decodes PAX records without interpreting values as text: keys become byte strings, values stay
 * bytes (copied, so they do not pin the stream's chunk). Later records override earlier ones, as the
 * standard says. A record whose length does not fit, or lacks '=' or the final newline, is corrupt.
 */
export function decodePaxRecords(data: Uint8Array, offsetBytes: number): Map<string, Buffer> {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const records = new Map<string, Buffer>();
  let position = 0;
  while (position < bytes.length) {
    // Writers pad the last block with NULs; a NUL where a record should start ends the records.
    if (bytes[position] === 0) break;
    const space = bytes.indexOf(0x20, position);
    const lengthText = space < 0 ? '' : bytes.toString('latin1', position, space);
    if (!/^[0-9]{1,8}$/.test(lengthText)) throw new TarFormatError(`malformed PAX record at byte ${position} of the extended header`, offsetBytes);
    const recordBytes = parseInt(lengthText, 10);
    const end = position + recordBytes;
    if (recordBytes <= space - position + 1 || end > bytes.length || bytes[end - 1] !== 0x0a) {
      throw new TarFormatError(`malformed PAX record at byte ${position} of the extended header (bad length)`, offsetBytes);
    }
    const equals = bytes.indexOf(0x3d, space + 1);
    if (equals < 0 || equals >= end - 1) throw new TarFormatError(`malformed PAX record at byte ${position} of the extended header (no '=')`, offsetBytes);
    const key = bytes.toString('latin1', space + 1, equals);
    records.set(key, Buffer.from(bytes.subarray(equals + 1, end - 1)));
    position = end;
  }
  return records;
}

const NO_RECORDS: ReadonlyMap<string, Buffer> = new Map();

/**
 * What extended headers say about the member that follows them: PAX records (global ones, which
 * last until overridden, with the member's local ones over them) and GNU long names and links.
 * Pure: the readers (a layer stream, an archive index, the first-member peek) feed it the data of
 * each extended header and ask it about the next member, so the three agree on every rule.
 */
export class ExtendedHeaders {
  private globalRecords: ReadonlyMap<string, Buffer> = NO_RECORDS;
  private localRecords: ReadonlyMap<string, Buffer> = NO_RECORDS;
  private merged: ReadonlyMap<string, Buffer> | undefined = NO_RECORDS;
  private longName: string | undefined;
  private longLink: string | undefined;

  /** Whether a header of this typeflag is an extended header (its data goes to {@link add}). */
  static isExtendedHeader(typeflag: string): boolean {
    return typeflag === TYPEFLAG.paxLocal || typeflag === TYPEFLAG.paxGlobal || typeflag === TYPEFLAG.gnuLongName || typeflag === TYPEFLAG.gnuLongLink;
  }

  /** Takes the data of one extended header. Malformed PAX records throw TarFormatError. */
  add(typeflag: string, data: Uint8Array, offsetBytes: number): void {
    if (typeflag === TYPEFLAG.gnuLongName || typeflag === TYPEFLAG.gnuLongLink) {
      const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      const nul = bytes.indexOf(0);
      const text = bytes.toString('latin1', 0, nul < 0 ? bytes.length : nul);
      if (typeflag === TYPEFLAG.gnuLongName) this.longName = text;
      else this.longLink = text;
      return;
    }
    const records = decodePaxRecords(data, offsetBytes);
    // Several headers of one kind accumulate, later records overriding earlier ones.
    if (typeflag === TYPEFLAG.paxGlobal) this.globalRecords = this.globalRecords.size === 0 ? records : new Map([...this.globalRecords, ...records]);
    else this.localRecords = this.localRecords.size === 0 ? records : new Map([...this.localRecords, ...records]);
    this.merged = undefined;
  }

  /** PAX records applying to the next member. */
  get records(): ReadonlyMap<string, Buffer> {
    this.merged ??= this.localRecords.size === 0 ? this.globalRecords : this.globalRecords.size === 0 ? this.localRecords : new Map([...this.globalRecords, ...this.localRecords]);
    return this.merged;
  }

  /** The next member's name: PAX `path`, else a GNU long name, else the header's. */
  memberName(header: TarHeader): string {
    return this.records.get('path')?.toString('latin1') ?? this.longName ?? header.name;
  }

  /** The next member's link target: PAX `linkpath`, else a GNU long link, else the header's. */
  memberLinkName(header: TarHeader): string {
    return this.records.get('linkpath')?.toString('latin1') ?? this.longLink ?? header.linkName;
  }

  /** The next member's data size: PAX `size` (over 8 GiB, ustar's field is too small), else the header's. */
  memberSizeBytes(header: TarHeader, offsetBytes: number): number {
    const size = this.records.get('size');
    if (size === undefined) return header.sizeBytes;
    const text = size.toString('latin1');
    const value = Number(text);
    if (!/^[0-9]{1,16}$/.test(text) || !Number.isSafeInteger(value)) throw new TarFormatError(`invalid PAX size ${JSON.stringify(text)}`, offsetBytes);
    return value;
  }

  /** Whether local records or a long name wait for a member (the end of the archive there means a member is missing). */
  get awaitingMember(): boolean {
    return this.localRecords.size > 0 || this.longName !== undefined || this.longLink !== undefined;
  }

  /** A member was read: its local records and long names end; global records go on. */
  endMember(): void {
    this.localRecords = NO_RECORDS;
    this.merged = undefined;
    this.longName = undefined;
    this.longLink = undefined;
  }
}

/**
 * The name of the first member of a tar that starts with `head`, with PAX `path` and GNU long names
 * applied: 'more' when `head` ends before the name is known, undefined when `head` does not start
 * like a tar (or the tar is empty). For telling what a stream is from its first bytes.
 */
export function firstMemberName(head: Uint8Array): string | 'more' | undefined {
  const bytes = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  const extended = new ExtendedHeaders();
  let offset = 0;
  for (;;) {
    if (bytes.length < offset + TAR_BLOCK_BYTES) return 'more';
    const block = bytes.subarray(offset, offset + TAR_BLOCK_BYTES);
    if (isZeroBlock(block)) return undefined;
    let header: TarHeader;
    try {
      header = decodeTarHeader(block, offset);
    } catch {
      return undefined;
    }
    if (!ExtendedHeaders.isExtendedHeader(header.typeflag)) return extended.memberName(header);
    if (header.sizeBytes > MAX_PAX_BYTES) return undefined;
    const dataEnd = offset + TAR_BLOCK_BYTES + header.sizeBytes;
    if (bytes.length < dataEnd) return 'more';
    try {
      extended.add(header.typeflag, bytes.subarray(offset + TAR_BLOCK_BYTES, dataEnd), offset);
    } catch {
      return undefined;
    }
    offset = dataEnd + paddingBytes(header.sizeBytes);
  }
}
