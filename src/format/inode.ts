import {
  COMPACT_INODE_SIZE_BYTES,
  DATA_LAYOUT,
  FILE_TYPE,
  EXTENDED_INODE_SIZE_BYTES,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  XATTR_IBODY_HEADER_SIZE_BYTES,
} from './constants.js';
import { writeSafeUInt64LE } from './bytes.js';
import { CorruptImageError, FormatLimitError } from './errors.js';

/**
 * An inode in either on-disk form. `iu` is the raw 32-bit union at 0x10 (start block, chunk format,
 * or rdev, depending on type and layout). Timestamps are absolute.
 */
export interface Inode {
  isExtended: boolean;
  dataLayout: number;
  xattrIcount: number;
  mode: number;
  nlink: number;
  sizeBytes: number;
  iu: number;
  ino: number;
  uid: number;
  gid: number;
  mtimeSec: bigint;
  mtimeNsec: number;
}

/** Superblock fields that give compact inodes their timestamp. */
export interface InodeTimeBase {
  epochSec: bigint;
  fixedNsec: number;
}

const COMPACT = { format: 0x00, xattrIcount: 0x02, mode: 0x04, nlink: 0x06, size: 0x08, mtime: 0x0c, iu: 0x10, ino: 0x14, uid: 0x18, gid: 0x1a } as const;
const EXTENDED = { format: 0x00, xattrIcount: 0x02, mode: 0x04, nb: 0x06, size: 0x08, iu: 0x10, ino: 0x14, uid: 0x18, gid: 0x1c, mtime: 0x20, mtimeNsec: 0x28, nlink: 0x2c } as const;

/** i_format bits 5..15 must be 0; bit 4 (NLINK_1 / DOT_OMITTED) needs 48-bit images, which we refuse. */
const I_FORMAT_KNOWN_BITS = 0x0f;

export function inodeSizeBytes(isExtended: boolean): number {
  return isExtended ? EXTENDED_INODE_SIZE_BYTES : COMPACT_INODE_SIZE_BYTES;
}

/** Bytes of the inline xattr area selected by i_xattr_icount (0 means none). */
export function xattrIbodySizeBytes(xattrIcount: number): number {
  if (xattrIcount === 0) return 0;
  return XATTR_IBODY_HEADER_SIZE_BYTES + 4 * (xattrIcount - 1);
}

/** i_xattr_icount for an ibody of `sizeBytes` (a multiple of 4, at least 16, or 0). */
export function xattrIcountFor(sizeBytes: number): number {
  if (sizeBytes === 0) return 0;
  if (sizeBytes < XATTR_IBODY_HEADER_SIZE_BYTES + 4 || sizeBytes % 4 !== 0) {
    throw new FormatLimitError(`xattr ibody size ${sizeBytes} is not a multiple of 4 of at least 16`);
  }
  const icount = (sizeBytes - XATTR_IBODY_HEADER_SIZE_BYTES) / 4 + 1;
  if (icount > 0xffff) throw new FormatLimitError(`xattr ibody of ${sizeBytes} bytes exceeds the 16-bit icount`);
  return icount;
}

/**
 * Whether an inode can use the 32-byte compact form without losing anything. The compact form has
 * 16-bit ids and nlink, 32-bit size, and no timestamp of its own on kernels before 6.15 (they use
 * the superblock's epoch and fixed_nsec), so we require the time to equal the base exactly.
 */
export function fitsCompact(inode: Pick<Inode, 'uid' | 'gid' | 'nlink' | 'sizeBytes' | 'mtimeSec' | 'mtimeNsec'>, base: InodeTimeBase): boolean {
  return (
    inode.uid <= 0xffff &&
    inode.gid <= 0xffff &&
    inode.nlink <= 0xffff &&
    inode.sizeBytes <= 0xffffffff &&
    inode.mtimeSec === base.epochSec &&
    inode.mtimeNsec === base.fixedNsec
  );
}

export function encodeInode(inode: Inode): Buffer {
  const buf = Buffer.alloc(inodeSizeBytes(inode.isExtended));
  writeInode(buf, 0, inode);
  return buf;
}

/**
 * Writes an inode at `at` of `buf`, whose bytes there must be zero (the reserved fields are not
 * written): the image writer encodes thousands of inodes straight into the image this way.
 */
export function writeInode(buf: Buffer, at: number, inode: Inode): void {
  if (inode.dataLayout < 0 || inode.dataLayout > DATA_LAYOUT.CHUNK_BASED) throw new FormatLimitError(`bad data layout ${inode.dataLayout}`);
  const format = (inode.isExtended ? 1 : 0) | (inode.dataLayout << 1);
  if (inode.isExtended) {
    buf.writeUInt16LE(format, at + EXTENDED.format);
    buf.writeUInt16LE(inode.xattrIcount, at + EXTENDED.xattrIcount);
    buf.writeUInt16LE(inode.mode, at + EXTENDED.mode);
    buf.writeUInt16LE(0, at + EXTENDED.nb);
    writeSafeUInt64LE(buf, inode.sizeBytes, at + EXTENDED.size);
    buf.writeUInt32LE(inode.iu >>> 0, at + EXTENDED.iu);
    buf.writeUInt32LE(inode.ino >>> 0, at + EXTENDED.ino);
    buf.writeUInt32LE(inode.uid >>> 0, at + EXTENDED.uid);
    buf.writeUInt32LE(inode.gid >>> 0, at + EXTENDED.gid);
    buf.writeBigInt64LE(inode.mtimeSec, at + EXTENDED.mtime);
    buf.writeUInt32LE(inode.mtimeNsec, at + EXTENDED.mtimeNsec);
    buf.writeUInt32LE(inode.nlink >>> 0, at + EXTENDED.nlink);
    return;
  }
  if (inode.uid > 0xffff || inode.gid > 0xffff || inode.nlink > 0xffff || inode.sizeBytes > 0xffffffff) {
    throw new FormatLimitError('inode fields do not fit the compact form');
  }
  buf.writeUInt16LE(format, at + COMPACT.format);
  buf.writeUInt16LE(inode.xattrIcount, at + COMPACT.xattrIcount);
  buf.writeUInt16LE(inode.mode, at + COMPACT.mode);
  buf.writeUInt16LE(inode.nlink, at + COMPACT.nlink);
  buf.writeUInt32LE(inode.sizeBytes, at + COMPACT.size);
  // i_mtime stays 0: pre-6.15 kernels ignore it and 6.15+ add it to the epoch.
  buf.writeUInt32LE(0, at + COMPACT.mtime);
  buf.writeUInt32LE(inode.iu >>> 0, at + COMPACT.iu);
  buf.writeUInt32LE(inode.ino >>> 0, at + COMPACT.ino);
  buf.writeUInt16LE(inode.uid, at + COMPACT.uid);
  buf.writeUInt16LE(inode.gid, at + COMPACT.gid);
}

/** Reads the i_format word (offset 0 of both forms) to learn the inode's size before reading it. */
export function peekInodeIsExtended(firstTwoBytes: Uint8Array, nid: number): boolean {
  if (firstTwoBytes.length < 2) throw new CorruptImageError('truncated inode', { structure: 'inode', nid });
  const format = firstTwoBytes[0]! | (firstTwoBytes[1]! << 8);
  if ((format & ~I_FORMAT_KNOWN_BITS) !== 0) {
    throw new CorruptImageError(`unknown i_format bits 0x${format.toString(16)}`, { structure: 'inode', nid });
  }
  return (format & 1) === 1;
}

/**
 * Decodes an inode from `bytes` (at least 32 or 64 bytes as `peekInodeIsExtended` says) and checks
 * what does not depend on its data: format bits, layout, file type, size sign, xattr icount.
 */
export function decodeInode(bytes: Uint8Array, nid: number, base: InodeTimeBase): Inode {
  const where = { structure: 'inode', nid };
  const isExtended = peekInodeIsExtended(bytes, nid);
  const need = inodeSizeBytes(isExtended);
  if (bytes.length < need) throw new CorruptImageError(`truncated: ${bytes.length} of ${need} bytes`, where);
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, need);
  const format = buf.readUInt16LE(0);
  const dataLayout = (format >> 1) & 0x7;
  if (dataLayout > DATA_LAYOUT.CHUNK_BASED) throw new CorruptImageError(`invalid data layout ${dataLayout}`, where);
  let inode: Inode;
  if (isExtended) {
    const size = buf.readBigUInt64LE(EXTENDED.size);
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new CorruptImageError(`size ${size} too large`, where);
    inode = {
      isExtended,
      dataLayout,
      xattrIcount: buf.readUInt16LE(EXTENDED.xattrIcount),
      mode: buf.readUInt16LE(EXTENDED.mode),
      nlink: buf.readUInt32LE(EXTENDED.nlink),
      sizeBytes: Number(size),
      iu: buf.readUInt32LE(EXTENDED.iu),
      ino: buf.readUInt32LE(EXTENDED.ino),
      uid: buf.readUInt32LE(EXTENDED.uid),
      gid: buf.readUInt32LE(EXTENDED.gid),
      mtimeSec: buf.readBigInt64LE(EXTENDED.mtime),
      mtimeNsec: buf.readUInt32LE(EXTENDED.mtimeNsec),
    };
  } else {
    inode = {
      isExtended,
      dataLayout,
      xattrIcount: buf.readUInt16LE(COMPACT.xattrIcount),
      mode: buf.readUInt16LE(COMPACT.mode),
      nlink: buf.readUInt16LE(COMPACT.nlink),
      sizeBytes: buf.readUInt32LE(COMPACT.size),
      iu: buf.readUInt32LE(COMPACT.iu),
      ino: buf.readUInt32LE(COMPACT.ino),
      uid: buf.readUInt16LE(COMPACT.uid),
      gid: buf.readUInt16LE(COMPACT.gid),
      // Linux 6.15+ adds the compact i_mtime to the epoch; older writers leave it 0.
      mtimeSec: base.epochSec + BigInt(buf.readUInt32LE(COMPACT.mtime)),
      mtimeNsec: base.fixedNsec,
    };
  }
  if (inode.xattrIcount === 1) throw new CorruptImageError('xattr icount 1 (a bare header) is invalid', where);
  if (fileTypeOfMode(inode.mode) === undefined) {
    throw new CorruptImageError(`invalid file type in mode 0${inode.mode.toString(8)}`, where);
  }
  return inode;
}

export type FileKind = 'reg' | 'dir' | 'lnk' | 'chr' | 'blk' | 'fifo' | 'sock';

const KIND_BY_IFMT: ReadonlyMap<number, FileKind> = new Map([
  [S_IFREG, 'reg'],
  [S_IFDIR, 'dir'],
  [S_IFLNK, 'lnk'],
  [S_IFCHR, 'chr'],
  [S_IFBLK, 'blk'],
  [S_IFIFO, 'fifo'],
  [S_IFSOCK, 'sock'],
]);
const IFMT_BY_KIND: Record<FileKind, number> = { reg: S_IFREG, dir: S_IFDIR, lnk: S_IFLNK, chr: S_IFCHR, blk: S_IFBLK, fifo: S_IFIFO, sock: S_IFSOCK };

const DIRENT_TYPE_BY_KIND: Record<FileKind, number> = {
  reg: FILE_TYPE.REG,
  dir: FILE_TYPE.DIR,
  lnk: FILE_TYPE.SYMLINK,
  chr: FILE_TYPE.CHRDEV,
  blk: FILE_TYPE.BLKDEV,
  fifo: FILE_TYPE.FIFO,
  sock: FILE_TYPE.SOCK,
};

/** The dirent file_type that must accompany an inode of this kind. */
export function direntFileTypeOfKind(kind: FileKind): number {
  return DIRENT_TYPE_BY_KIND[kind];
}

export function fileTypeOfMode(mode: number): FileKind | undefined {
  return KIND_BY_IFMT.get(mode & S_IFMT);
}

export function ifmtOfKind(kind: FileKind): number {
  return IFMT_BY_KIND[kind];
}

/** Linux "new" dev_t encoding that EROFS stores in i_u for device inodes. */
export function encodeRdev(major: number, minor: number): number {
  if (major > 0xfff || minor > 0xfffff) throw new FormatLimitError(`device ${major}:${minor} does not fit 32-bit dev_t`);
  return ((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

export function decodeRdev(value: number): { major: number; minor: number } {
  return { major: (value >>> 8) & 0xfff, minor: (value & 0xff) | ((value >>> 12) & 0xfff00) };
}
