/**
 * The kernel FUSE wire protocol (include/uapi/linux/fuse.h, protocol 7.x): opcodes, record sizes and
 * the encoders/decoders for the records this read-only server uses. Little-endian on every host we
 * run on (x86-64, arm64); offsets appear only here.
 */

export const FUSE_KERNEL_VERSION = 7;
/** 7.31 added FUSE_MAX_PAGES-era fields we rely on (max_pages, map_alignment); older kernels are refused. */
export const FUSE_MIN_MINOR = 31;
/** The minor we speak; the kernel picks min(ours, its own). */
export const FUSE_OUR_MINOR = 31;
export const FUSE_ROOT_ID = 1n;

export const OPCODE = {
  LOOKUP: 1, FORGET: 2, GETATTR: 3, SETATTR: 4, READLINK: 5, SYMLINK: 6, MKNOD: 8, MKDIR: 9, UNLINK: 10,
  RMDIR: 11, RENAME: 12, LINK: 13, OPEN: 14, READ: 15, WRITE: 16, STATFS: 17, RELEASE: 18, FSYNC: 20,
  SETXATTR: 21, GETXATTR: 22, LISTXATTR: 23, REMOVEXATTR: 24, FLUSH: 25, INIT: 26, OPENDIR: 27,
  READDIR: 28, RELEASEDIR: 29, FSYNCDIR: 30, GETLK: 31, SETLK: 32, SETLKW: 33, ACCESS: 34, CREATE: 35,
  INTERRUPT: 36, BMAP: 37, DESTROY: 38, IOCTL: 39, POLL: 40, BATCH_FORGET: 42, FALLOCATE: 43,
  READDIRPLUS: 44, RENAME2: 45, LSEEK: 46, COPY_FILE_RANGE: 47, TMPFILE: 51,
} as const;

/** Operations that would change the tree: a read-only file system answers EROFS. */
export const WRITE_OPCODES: ReadonlySet<number> = new Set([
  OPCODE.SETATTR, OPCODE.SYMLINK, OPCODE.MKNOD, OPCODE.MKDIR, OPCODE.UNLINK, OPCODE.RMDIR, OPCODE.RENAME,
  OPCODE.LINK, OPCODE.WRITE, OPCODE.SETXATTR, OPCODE.REMOVEXATTR, OPCODE.CREATE, OPCODE.FALLOCATE,
  OPCODE.RENAME2, OPCODE.COPY_FILE_RANGE, OPCODE.TMPFILE,
]);

export const INIT_FLAG = {
  ASYNC_READ: 1 << 0,
  BIG_WRITES: 1 << 5,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  PARALLEL_DIROPS: 1 << 18,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24,
} as const;

export const FOPEN = { DIRECT_IO: 1, KEEP_CACHE: 2, NONSEEKABLE: 4, CACHE_DIR: 8 } as const;

export const NOTIFY_INVAL_ENTRY = 3;

export const IN_HEADER_SIZE_BYTES = 40;
export const OUT_HEADER_SIZE_BYTES = 16;
export const ATTR_SIZE_BYTES = 88;
export const ENTRY_OUT_SIZE_BYTES = 40 + ATTR_SIZE_BYTES;
export const ATTR_OUT_SIZE_BYTES = 16 + ATTR_SIZE_BYTES;
export const INIT_OUT_SIZE_BYTES = 64;
export const OPEN_OUT_SIZE_BYTES = 16;
export const STATFS_OUT_SIZE_BYTES = 80;
export const DIRENT_HEADER_SIZE_BYTES = 24;
export const READ_IN_SIZE_BYTES = 40;
/** 1 MiB: the most the kernel asks for in one READ with max_pages = 256 (4 KiB pages). */
export const MAX_READ_BYTES = 1 << 20;
/** The kernel refuses a read buffer smaller than max_write plus a page for the headers. */
export const REQUEST_BUFFER_BYTES = MAX_READ_BYTES + 64 * 1024;

export class FuseProtocolError extends Error {
  readonly code = 'ERR_FUSE_PROTOCOL';
  constructor(message: string) {
    super(`FUSE protocol: ${message}`);
    this.name = 'FuseProtocolError';
  }
}

export interface InHeader {
  lengthBytes: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
  /** Extension bytes after the body (units of 8 bytes on the wire), already converted to bytes. */
  extLengthBytes: number;
}

export function decodeInHeader(buf: Buffer, receivedBytes: number): InHeader {
  if (receivedBytes < IN_HEADER_SIZE_BYTES) throw new FuseProtocolError(`request of ${receivedBytes} bytes is shorter than its header`);
  const lengthBytes = buf.readUInt32LE(0);
  if (lengthBytes !== receivedBytes) throw new FuseProtocolError(`header says ${lengthBytes} bytes, read returned ${receivedBytes}`);
  return {
    lengthBytes,
    opcode: buf.readUInt32LE(4),
    unique: buf.readBigUInt64LE(8),
    nodeid: buf.readBigUInt64LE(16),
    uid: buf.readUInt32LE(24),
    gid: buf.readUInt32LE(28),
    pid: buf.readUInt32LE(32),
    extLengthBytes: buf.readUInt16LE(36) * 8,
  };
}

export function encodeOutHeader(totalBytes: number, errno: number, unique: bigint): Buffer {
  const out = Buffer.alloc(OUT_HEADER_SIZE_BYTES);
  out.writeUInt32LE(totalBytes, 0);
  out.writeInt32LE(errno === 0 ? 0 : -Math.abs(errno), 4);
  out.writeBigUInt64LE(unique, 8);
  return out;
}

export interface InitIn {
  major: number;
  minor: number;
  maxReadaheadBytes: number;
  flags: number;
}

export function decodeInitIn(body: Buffer): InitIn {
  if (body.length < 16) throw new FuseProtocolError(`INIT body of ${body.length} bytes`);
  return { major: body.readUInt32LE(0), minor: body.readUInt32LE(4), maxReadaheadBytes: body.readUInt32LE(8), flags: body.readUInt32LE(12) };
}

export interface InitOut {
  minor: number;
  maxReadaheadBytes: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWriteBytes: number;
  timeGranNs: number;
  maxPages: number;
}

export function encodeInitOut(init: InitOut): Buffer {
  const out = Buffer.alloc(INIT_OUT_SIZE_BYTES);
  out.writeUInt32LE(FUSE_KERNEL_VERSION, 0);
  out.writeUInt32LE(init.minor, 4);
  out.writeUInt32LE(init.maxReadaheadBytes, 8);
  out.writeUInt32LE(init.flags >>> 0, 12);
  out.writeUInt16LE(init.maxBackground, 16);
  out.writeUInt16LE(init.congestionThreshold, 18);
  out.writeUInt32LE(init.maxWriteBytes, 20);
  out.writeUInt32LE(init.timeGranNs, 24);
  out.writeUInt16LE(init.maxPages, 28);
  return out;
}

/** What FUSE reports for an inode (struct fuse_attr). */
export interface FuseAttr {
  ino: bigint;
  sizeBytes: number;
  blocks512: number;
  mtimeSec: bigint;
  mtimeNsec: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Kernel dev_t in new_encode_dev form. */
  rdev: number;
  blksizeBytes: number;
}

/** new_encode_dev: the 32-bit dev_t layout fuse_attr.rdev carries (12-bit major, 20-bit minor, split). */
export function encodeDev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

export function writeAttr(out: Buffer, at: number, attr: FuseAttr): void {
  out.writeBigUInt64LE(attr.ino, at);
  out.writeBigUInt64LE(BigInt(attr.sizeBytes), at + 8);
  out.writeBigUInt64LE(BigInt(attr.blocks512), at + 16);
  // EROFS keeps one timestamp: the kernel reports it as atime, mtime and ctime alike.
  const sec = BigInt.asUintN(64, attr.mtimeSec);
  out.writeBigUInt64LE(sec, at + 24);
  out.writeBigUInt64LE(sec, at + 32);
  out.writeBigUInt64LE(sec, at + 40);
  out.writeUInt32LE(attr.mtimeNsec, at + 48);
  out.writeUInt32LE(attr.mtimeNsec, at + 52);
  out.writeUInt32LE(attr.mtimeNsec, at + 56);
  out.writeUInt32LE(attr.mode >>> 0, at + 60);
  out.writeUInt32LE(attr.nlink >>> 0, at + 64);
  out.writeUInt32LE(attr.uid >>> 0, at + 68);
  out.writeUInt32LE(attr.gid >>> 0, at + 72);
  out.writeUInt32LE(attr.rdev >>> 0, at + 76);
  out.writeUInt32LE(attr.blksizeBytes, at + 80);
  out.writeUInt32LE(0, at + 84);
}

export interface Validity {
  /** Seconds the kernel may trust an entry or attributes: images never change, so this is long. */
  entrySec: number;
  attrSec: number;
}

export function writeEntryOut(out: Buffer, at: number, nodeid: bigint, attr: FuseAttr | null, validity: Validity): void {
  out.writeBigUInt64LE(nodeid, at);
  out.writeBigUInt64LE(0n, at + 8);
  out.writeBigUInt64LE(BigInt(validity.entrySec), at + 16);
  out.writeBigUInt64LE(BigInt(validity.attrSec), at + 24);
  out.writeUInt32LE(0, at + 32);
  out.writeUInt32LE(0, at + 36);
  if (attr !== null) writeAttr(out, at + 40, attr);
}

export function encodeEntryOut(nodeid: bigint, attr: FuseAttr, validity: Validity): Buffer {
  const out = Buffer.alloc(ENTRY_OUT_SIZE_BYTES);
  writeEntryOut(out, 0, nodeid, attr, validity);
  return out;
}

export function encodeAttrOut(attr: FuseAttr, validity: Validity): Buffer {
  const out = Buffer.alloc(ATTR_OUT_SIZE_BYTES);
  out.writeBigUInt64LE(BigInt(validity.attrSec), 0);
  writeAttr(out, 16, attr);
  return out;
}

export function encodeOpenOut(fh: bigint, openFlags: number): Buffer {
  const out = Buffer.alloc(OPEN_OUT_SIZE_BYTES);
  out.writeBigUInt64LE(fh, 0);
  out.writeUInt32LE(openFlags, 8);
  return out;
}

export interface StatfsOut {
  blocks: number;
  files: number;
  blockSizeBytes: number;
  nameMaxBytes: number;
}

export function encodeStatfsOut(s: StatfsOut): Buffer {
  const out = Buffer.alloc(STATFS_OUT_SIZE_BYTES);
  out.writeBigUInt64LE(BigInt(s.blocks), 0);
  // bfree, bavail, ffree stay 0: nothing can be written.
  out.writeBigUInt64LE(BigInt(s.files), 24);
  out.writeUInt32LE(s.blockSizeBytes, 40);
  out.writeUInt32LE(s.nameMaxBytes, 44);
  out.writeUInt32LE(s.blockSizeBytes, 48);
  return out;
}

export interface ReadIn {
  fh: bigint;
  offsetBytes: bigint;
  sizeBytes: number;
}

export function decodeReadIn(body: Buffer): ReadIn {
  if (body.length < 24) throw new FuseProtocolError(`READ body of ${body.length} bytes`);
  return { fh: body.readBigUInt64LE(0), offsetBytes: body.readBigUInt64LE(8), sizeBytes: body.readUInt32LE(16) };
}

/** A NUL-terminated name at the start of a body (LOOKUP, GETXATTR after its fixed part). */
export function decodeName(body: Buffer, at = 0): Buffer {
  const end = body.indexOf(0, at);
  if (end < 0) throw new FuseProtocolError('name without its terminating NUL');
  return body.subarray(at, end);
}

/** Bytes a dirent of this name takes, padded to 8 like FUSE_DIRENT_ALIGN. */
export function direntSizeBytes(nameBytes: number, plus: boolean): number {
  const raw = (plus ? ENTRY_OUT_SIZE_BYTES : 0) + DIRENT_HEADER_SIZE_BYTES + nameBytes;
  return (raw + 7) & ~7;
}

export function writeDirent(out: Buffer, at: number, ino: bigint, nextOffset: bigint, name: Buffer, type: number): void {
  out.writeBigUInt64LE(ino, at);
  out.writeBigUInt64LE(nextOffset, at + 8);
  out.writeUInt32LE(name.length, at + 16);
  out.writeUInt32LE(type, at + 20);
  name.copy(out, at + DIRENT_HEADER_SIZE_BYTES);
}

/** FUSE_NOTIFY_INVAL_ENTRY: drop the kernel's dentry `name` under `parent` (an image leaving the root). */
export function encodeInvalEntry(parent: bigint, name: Buffer): Buffer {
  const body = Buffer.alloc(16 + name.length + 1);
  body.writeBigUInt64LE(parent, 0);
  body.writeUInt32LE(name.length, 8);
  name.copy(body, 16);
  const header = Buffer.alloc(OUT_HEADER_SIZE_BYTES);
  header.writeUInt32LE(OUT_HEADER_SIZE_BYTES + body.length, 0);
  header.writeInt32LE(NOTIFY_INVAL_ENTRY, 4);
  header.writeBigUInt64LE(0n, 8);
  return Buffer.concat([header, body]);
}
