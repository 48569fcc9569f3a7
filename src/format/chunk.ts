import {
  BLOCK_MAP_ENTRY_SIZE_BYTES,
  CHUNK_FORMAT,
  CHUNK_INDEX_SIZE_BYTES,
  MAX_CHUNK_BLKBITS,
  NULL_ADDR,
} from './constants.js';
import { CorruptImageError, FormatLimitError, UnsupportedFeatureError } from './errors.js';

/** The u16 chunk format stored in i_u of a CHUNK_BASED inode. */
export interface ChunkFormat {
  /** log2(chunk size / block size). */
  chunkBlkbits: number;
  /** 8-byte indexes with device ids (true) or 4-byte block map entries (false). */
  hasIndexes: boolean;
}

/** One chunk's location: device 0 is the primary image, k the k-th device-table slot. null blkaddr = hole. */
export interface ChunkIndex {
  deviceId: number;
  blkaddr: number | null;
}

export function encodeChunkFormat(format: ChunkFormat): number {
  if (!Number.isInteger(format.chunkBlkbits) || format.chunkBlkbits < 0 || format.chunkBlkbits > MAX_CHUNK_BLKBITS) {
    throw new FormatLimitError(`chunk size exponent ${format.chunkBlkbits} outside 0..${MAX_CHUNK_BLKBITS}`);
  }
  return format.chunkBlkbits | (format.hasIndexes ? CHUNK_FORMAT.INDEXES : 0);
}

export function decodeChunkFormat(iu: number, nid: number): ChunkFormat {
  const value = iu & 0xffff;
  if (value & CHUNK_FORMAT.BIT48) throw new UnsupportedFeatureError('48-bit chunk indexes');
  if ((iu >>> 16) !== 0 || (value & ~(CHUNK_FORMAT.BLKBITS_MASK | CHUNK_FORMAT.INDEXES)) !== 0) {
    throw new CorruptImageError(`unknown chunk format bits 0x${iu.toString(16)}`, { structure: 'inode', nid });
  }
  return { chunkBlkbits: value & CHUNK_FORMAT.BLKBITS_MASK, hasIndexes: (value & CHUNK_FORMAT.INDEXES) !== 0 };
}

export function chunkEntrySizeBytes(format: ChunkFormat): number {
  return format.hasIndexes ? CHUNK_INDEX_SIZE_BYTES : BLOCK_MAP_ENTRY_SIZE_BYTES;
}

/** Number of chunk entries covering a file: ceil(size / chunk size). */
export function chunkCount(sizeBytes: number, chunkBits: number): number {
  return Math.ceil(sizeBytes / 2 ** chunkBits);
}

/**
 * The chunk array follows the inode and its xattr ibody, aligned to the entry size
 * (erofs_inode_chunk_align in the kernel).
 */
export function chunkArrayOffsetBytes(afterXattrsOffsetBytes: number, format: ChunkFormat): number {
  const unit = chunkEntrySizeBytes(format);
  return Math.ceil(afterXattrsOffsetBytes / unit) * unit;
}

export function encodeChunkIndexes(indexes: readonly ChunkIndex[]): Buffer {
  const buf = Buffer.alloc(indexes.length * CHUNK_INDEX_SIZE_BYTES);
  writeChunkIndexes(buf, 0, indexes);
  return buf;
}

/** Writes 8-byte chunk indexes at `at` of `buf`, whose bytes there must be zero. */
export function writeChunkIndexes(buf: Buffer, at: number, indexes: readonly ChunkIndex[]): void {
  for (let i = 0; i < indexes.length; i++) {
    const index = indexes[i]!;
    const entryAt = at + i * CHUNK_INDEX_SIZE_BYTES;
    // startblk_hi (former "advise") stays 0 without 48-bit addressing; holes carry device 0.
    if (index.blkaddr === null) {
      buf.writeUInt32LE(NULL_ADDR, entryAt + 4);
      continue;
    }
    if (index.blkaddr >= NULL_ADDR) throw new FormatLimitError(`block address ${index.blkaddr} needs 48-bit addressing`);
    if (index.deviceId > 0xffff) throw new FormatLimitError(`device id ${index.deviceId} does not fit 16 bits`);
    buf.writeUInt16LE(index.deviceId, entryAt + 2);
    buf.writeUInt32LE(index.blkaddr, entryAt + 4);
  }
}

/**
 * Decodes `count` entries of either form. The device id is masked like the kernel does
 * (next power of two of extra devices + 1, minus one); the caller checks it against the table.
 */
export function decodeChunkEntries(bytes: Uint8Array, format: ChunkFormat, count: number, deviceIdMask: number, nid: number): ChunkIndex[] {
  const unit = chunkEntrySizeBytes(format);
  if (bytes.length < count * unit) {
    throw new CorruptImageError(`chunk array truncated: ${bytes.length} of ${count * unit} bytes`, { structure: 'chunk index', nid });
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: ChunkIndex[] = new Array(count);
  for (let i = 0; i < count; i++) {
    if (format.hasIndexes) {
      const blkaddr = view.getUint32(i * unit + 4, true);
      out[i] = blkaddr === NULL_ADDR ? { deviceId: 0, blkaddr: null } : { deviceId: view.getUint16(i * unit + 2, true) & deviceIdMask, blkaddr };
    } else {
      const blkaddr = view.getUint32(i * unit, true);
      out[i] = { deviceId: 0, blkaddr: blkaddr === NULL_ADDR ? null : blkaddr };
    }
  }
  return out;
}

/** The kernel's device id mask: next power of two above extra_devices, minus one. */
export function deviceIdMask(extraDevices: number): number {
  let mask = 1;
  while (mask < extraDevices + 1) mask <<= 1;
  return mask - 1;
}
