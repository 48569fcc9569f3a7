import {
  EROFS_SUPER_MAGIC,
  FEATURE_COMPAT,
  FEATURE_INCOMPAT,
  MAX_BLOCK_SIZE_BITS,
  MIN_BLOCK_SIZE_BITS,
  SUPERBLOCK_EXTSLOT_SIZE_BYTES,
  SUPERBLOCK_OFFSET_BYTES,
  SUPERBLOCK_SIZE_BYTES,
} from './constants.js';
import { crc32cRaw } from './crc32c.js';
import { CorruptImageError, FormatLimitError, UnsupportedFeatureError } from './errors.js';

/** The EROFS superblock (struct erofs_super_block), 128 bytes at byte 1024 of the primary device. */
export interface Superblock {
  checksum: number;
  featureCompat: number;
  blkszbits: number;
  sbExtslots: number;
  rootNid: number;
  inos: bigint;
  /** Base seconds for compact inode timestamps (older name build_time). */
  epochSec: bigint;
  fixedNsec: number;
  /** Size of the primary device in blocks. */
  blocks: number;
  metaBlkaddr: number;
  xattrBlkaddr: number;
  uuid: Buffer;
  volumeName: Buffer;
  featureIncompat: number;
  availableComprAlgs: number;
  extraDevices: number;
  /** Device table position in 128-byte units. */
  devtSlotoff: number;
  dirblkbits: number;
  xattrPrefixCount: number;
  /** Long xattr prefix table position in 4-byte units. */
  xattrPrefixStart: number;
  packedNid: bigint;
  xattrFilterReserved: number;
  ishareXattrPrefixId: number;
  buildTimeSec: number;
  rootNid8b: bigint;
}

/** Incompat bits an uncompressed reader understands; others are refused like the kernel does. */
export const READABLE_FEATURE_INCOMPAT =
  FEATURE_INCOMPAT.ZERO_PADDING |
  FEATURE_INCOMPAT.COMPR_CFGS |
  FEATURE_INCOMPAT.CHUNKED_FILE |
  FEATURE_INCOMPAT.DEVICE_TABLE |
  FEATURE_INCOMPAT.ZTAILPACKING |
  FEATURE_INCOMPAT.FRAGMENTS |
  FEATURE_INCOMPAT.XATTR_PREFIXES;

const OFF = {
  magic: 0x00,
  checksum: 0x04,
  featureCompat: 0x08,
  blkszbits: 0x0c,
  sbExtslots: 0x0d,
  rootNid: 0x0e,
  inos: 0x10,
  epoch: 0x18,
  fixedNsec: 0x20,
  blocks: 0x24,
  metaBlkaddr: 0x28,
  xattrBlkaddr: 0x2c,
  uuid: 0x30,
  volumeName: 0x40,
  featureIncompat: 0x50,
  availableComprAlgs: 0x54,
  extraDevices: 0x56,
  devtSlotoff: 0x58,
  dirblkbits: 0x5a,
  xattrPrefixCount: 0x5b,
  xattrPrefixStart: 0x5c,
  packedNid: 0x60,
  xattrFilterReserved: 0x68,
  ishareXattrPrefixId: 0x69,
  buildTime: 0x6c,
  rootNid8b: 0x70,
} as const;

export function defaultSuperblock(): Superblock {
  return {
    checksum: 0,
    featureCompat: FEATURE_COMPAT.MTIME,
    blkszbits: 12,
    sbExtslots: 0,
    rootNid: 0,
    inos: 0n,
    epochSec: 0n,
    fixedNsec: 0,
    blocks: 0,
    metaBlkaddr: 0,
    xattrBlkaddr: 0,
    uuid: Buffer.alloc(16),
    volumeName: Buffer.alloc(16),
    featureIncompat: 0,
    availableComprAlgs: 0,
    extraDevices: 0,
    devtSlotoff: 0,
    dirblkbits: 0,
    xattrPrefixCount: 0,
    xattrPrefixStart: 0,
    packedNid: 0n,
    xattrFilterReserved: 0,
    ishareXattrPrefixId: 0,
    buildTimeSec: 0,
    rootNid8b: 0n,
  };
}

export function encodeSuperblock(sb: Superblock): Buffer {
  if (sb.rootNid > 0xffff) throw new FormatLimitError(`root nid ${sb.rootNid} does not fit 16 bits`);
  if (sb.uuid.length !== 16) throw new FormatLimitError('uuid must be 16 bytes');
  // Some kernels refuse a label without a terminating NUL inside its 16 bytes.
  if (sb.volumeName.length > 16 || (sb.volumeName.length === 16 && sb.volumeName[15] !== 0)) {
    throw new FormatLimitError('volume name must be at most 15 bytes');
  }
  const buf = Buffer.alloc(SUPERBLOCK_SIZE_BYTES);
  buf.writeUInt32LE(EROFS_SUPER_MAGIC, OFF.magic);
  buf.writeUInt32LE(sb.checksum >>> 0, OFF.checksum);
  buf.writeUInt32LE(sb.featureCompat >>> 0, OFF.featureCompat);
  buf.writeUInt8(sb.blkszbits, OFF.blkszbits);
  buf.writeUInt8(sb.sbExtslots, OFF.sbExtslots);
  buf.writeUInt16LE(sb.rootNid, OFF.rootNid);
  buf.writeBigUInt64LE(sb.inos, OFF.inos);
  buf.writeBigInt64LE(sb.epochSec, OFF.epoch);
  buf.writeUInt32LE(sb.fixedNsec, OFF.fixedNsec);
  buf.writeUInt32LE(sb.blocks, OFF.blocks);
  buf.writeUInt32LE(sb.metaBlkaddr, OFF.metaBlkaddr);
  buf.writeUInt32LE(sb.xattrBlkaddr, OFF.xattrBlkaddr);
  sb.uuid.copy(buf, OFF.uuid);
  sb.volumeName.copy(buf, OFF.volumeName);
  buf.writeUInt32LE(sb.featureIncompat >>> 0, OFF.featureIncompat);
  buf.writeUInt16LE(sb.availableComprAlgs, OFF.availableComprAlgs);
  buf.writeUInt16LE(sb.extraDevices, OFF.extraDevices);
  buf.writeUInt16LE(sb.devtSlotoff, OFF.devtSlotoff);
  buf.writeUInt8(sb.dirblkbits, OFF.dirblkbits);
  buf.writeUInt8(sb.xattrPrefixCount, OFF.xattrPrefixCount);
  buf.writeUInt32LE(sb.xattrPrefixStart, OFF.xattrPrefixStart);
  buf.writeBigUInt64LE(sb.packedNid, OFF.packedNid);
  buf.writeUInt8(sb.xattrFilterReserved, OFF.xattrFilterReserved);
  buf.writeUInt8(sb.ishareXattrPrefixId, OFF.ishareXattrPrefixId);
  buf.writeUInt32LE(sb.buildTimeSec, OFF.buildTime);
  buf.writeBigUInt64LE(sb.rootNid8b, OFF.rootNid8b);
  return buf;
}

/**
 * Decodes and validates the superblock. `bytes` starts at byte 1024 of the image and holds at least
 * 128 bytes. Rules are the kernel's mount-time checks (erofs_read_superblock).
 */
export function decodeSuperblock(bytes: Uint8Array): Superblock {
  const where = { structure: 'superblock', offsetBytes: SUPERBLOCK_OFFSET_BYTES };
  if (bytes.length < SUPERBLOCK_SIZE_BYTES) {
    throw new CorruptImageError(`truncated: ${bytes.length} of ${SUPERBLOCK_SIZE_BYTES} bytes`, where);
  }
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = buf.readUInt32LE(OFF.magic);
  if (magic !== EROFS_SUPER_MAGIC) {
    throw new CorruptImageError(`bad magic 0x${magic.toString(16)} (not an EROFS image)`, where);
  }
  const sb: Superblock = {
    checksum: buf.readUInt32LE(OFF.checksum),
    featureCompat: buf.readUInt32LE(OFF.featureCompat),
    blkszbits: buf.readUInt8(OFF.blkszbits),
    sbExtslots: buf.readUInt8(OFF.sbExtslots),
    rootNid: buf.readUInt16LE(OFF.rootNid),
    inos: buf.readBigUInt64LE(OFF.inos),
    epochSec: buf.readBigInt64LE(OFF.epoch),
    fixedNsec: buf.readUInt32LE(OFF.fixedNsec),
    blocks: buf.readUInt32LE(OFF.blocks),
    metaBlkaddr: buf.readUInt32LE(OFF.metaBlkaddr),
    xattrBlkaddr: buf.readUInt32LE(OFF.xattrBlkaddr),
    uuid: Buffer.from(buf.subarray(OFF.uuid, OFF.uuid + 16)),
    volumeName: Buffer.from(buf.subarray(OFF.volumeName, OFF.volumeName + 16)),
    featureIncompat: buf.readUInt32LE(OFF.featureIncompat),
    availableComprAlgs: buf.readUInt16LE(OFF.availableComprAlgs),
    extraDevices: buf.readUInt16LE(OFF.extraDevices),
    devtSlotoff: buf.readUInt16LE(OFF.devtSlotoff),
    dirblkbits: buf.readUInt8(OFF.dirblkbits),
    xattrPrefixCount: buf.readUInt8(OFF.xattrPrefixCount),
    xattrPrefixStart: buf.readUInt32LE(OFF.xattrPrefixStart),
    packedNid: buf.readBigUInt64LE(OFF.packedNid),
    xattrFilterReserved: buf.readUInt8(OFF.xattrFilterReserved),
    ishareXattrPrefixId: buf.readUInt8(OFF.ishareXattrPrefixId),
    buildTimeSec: buf.readUInt32LE(OFF.buildTime),
    rootNid8b: buf.readBigUInt64LE(OFF.rootNid8b),
  };
  if (sb.blkszbits < MIN_BLOCK_SIZE_BITS || sb.blkszbits > MAX_BLOCK_SIZE_BITS) {
    throw new CorruptImageError(`block size bits ${sb.blkszbits} outside ${MIN_BLOCK_SIZE_BITS}..${MAX_BLOCK_SIZE_BITS}`, where);
  }
  if (sb.dirblkbits !== 0) throw new CorruptImageError(`dirblkbits ${sb.dirblkbits} is not 0`, where);
  if (SUPERBLOCK_SIZE_BYTES + SUPERBLOCK_EXTSLOT_SIZE_BYTES * sb.sbExtslots > 4096 - SUPERBLOCK_OFFSET_BYTES) {
    throw new CorruptImageError(`${sb.sbExtslots} superblock extension slots do not fit`, where);
  }
  const unknown = sb.featureIncompat & ~READABLE_FEATURE_INCOMPAT;
  if (unknown & FEATURE_INCOMPAT.BIT48) throw new UnsupportedFeatureError('48-bit block addresses (INCOMPAT_48BIT)');
  if (unknown & FEATURE_INCOMPAT.METABOX) throw new UnsupportedFeatureError('metadata compression (INCOMPAT_METABOX)');
  if (unknown !== 0) {
    throw new CorruptImageError(`unknown incompatible feature bits 0x${unknown.toString(16)}`, where);
  }
  if (sb.featureCompat & FEATURE_COMPAT.ISHARE_XATTRS && sb.xattrPrefixCount > 0) {
    if ((sb.ishareXattrPrefixId & 0x7f) >= sb.xattrPrefixCount) {
      throw new CorruptImageError(`ishare xattr prefix id ${sb.ishareXattrPrefixId} >= prefix count ${sb.xattrPrefixCount}`, where);
    }
  }
  return sb;
}

/** Byte range that the superblock checksum covers: from 1024 to the end of the block holding it. */
export function checksumRangeBytes(blkszbits: number): { startBytes: number; lengthBytes: number } {
  const blockSizeBytes = 1 << blkszbits;
  const lengthBytes = blockSizeBytes > SUPERBLOCK_OFFSET_BYTES ? blockSizeBytes - SUPERBLOCK_OFFSET_BYTES : blockSizeBytes;
  return { startBytes: SUPERBLOCK_OFFSET_BYTES, lengthBytes };
}

/**
 * CRC32C of the checksummed range with the checksum field counted as zero, seeded with ~0 and not
 * inverted, exactly what the kernel compares against `checksum`. `region` is that range
 * (starting at the superblock).
 */
export function computeSuperblockChecksum(region: Uint8Array): number {
  const copy = Buffer.from(region);
  copy.writeUInt32LE(0, OFF.checksum);
  return crc32cRaw(0xffffffff, copy);
}

export function superblockSizeBytes(sb: Pick<Superblock, 'sbExtslots'>): number {
  return SUPERBLOCK_SIZE_BYTES + SUPERBLOCK_EXTSLOT_SIZE_BYTES * sb.sbExtslots;
}

/** Offsets of fields that writers patch in place after emitting (checksum last). */
export const SUPERBLOCK_CHECKSUM_FIELD_OFFSET = OFF.checksum;
export const SUPERBLOCK_UUID_FIELD_OFFSET = OFF.uuid;
