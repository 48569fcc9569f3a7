import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runChecked } from '../helpers/exec.js';
import {
  DEVICE_SLOT_SIZE_BYTES,
  SUPERBLOCK_CHECKSUM_FIELD_OFFSET,
  SUPERBLOCK_OFFSET_BYTES,
  checksumRangeBytes,
  computeSuperblockChecksum,
  decodeSuperblock,
  encodeDeviceSlot,
  type DeviceSlot,
} from '../../src/format/index.js';

/** An image made by the reference mkfs.erofs (erofs-utils 1.5 here) and its blob, if any. */
export interface MkfsImage {
  name: string;
  image: string;
  blobs: string[];
}

/**
 * The variants the reader must handle, as `mkfs.erofs` options: flat layouts (-T0: every inode gets
 * time 0, mostly compact inodes), per-file times (extended inodes), chunk-based files on a blob with
 * 4 KiB and 64 KiB chunks (8-byte indexes, device 1), a 4-byte block map without blob, and 8-byte
 * indexes on device 0.
 */
export const MKFS_VARIANTS: Readonly<Record<string, { args: string[]; blob: boolean }>> = {
  plain: { args: ['-T0'], blob: false },
  'per-file-mtime': { args: [], blob: false },
  'blob-4k': { args: ['--chunksize=4096'], blob: true },
  'blob-64k': { args: ['--chunksize=65536'], blob: true },
  'block-map': { args: ['--chunksize=4096'], blob: false },
  'indexes-dev0': { args: ['--chunksize=8192', '-Eforce-chunk-indexes'], blob: false },
};

export async function mkfsErofs(dir: string, name: string, source: string, variant = MKFS_VARIANTS[name]): Promise<MkfsImage> {
  if (variant === undefined) throw new Error(`unknown mkfs variant ${name}`);
  const image = join(dir, `${name}.erofs`);
  const blobs = variant.blob ? [join(dir, `${name}.blob`)] : [];
  await runChecked('mkfs.erofs', ['--quiet', ...variant.args, ...blobs.map((b) => `--blobdev=${b}`), image, source]);
  return { name, image, blobs };
}

/**
 * Rewrites the superblock checksum of an image held in memory (after a test patched block 0), the
 * way an attacker would, so a mutation reaches the parser. Works on broken superblocks too: it only
 * needs the block size bits (a bad value is taken as 4 KiB) and does nothing when the range is cut.
 */
export function fixSuperblockChecksum(bytes: Buffer): void {
  if (bytes.length < SUPERBLOCK_OFFSET_BYTES + 128) return;
  const bits = bytes[SUPERBLOCK_OFFSET_BYTES + 0x0c]!;
  const range = checksumRangeBytes(bits >= 9 && bits <= 12 ? bits : 12);
  if (range.startBytes + range.lengthBytes > bytes.length) return;
  const checksum = computeSuperblockChecksum(bytes.subarray(range.startBytes, range.startBytes + range.lengthBytes));
  bytes.writeUInt32LE(checksum, SUPERBLOCK_OFFSET_BYTES + SUPERBLOCK_CHECKSUM_FIELD_OFFSET);
}

/**
 * erofs-utils 1.5 leaves its device slot all zero. Writes a real one (what newer mkfs and our writer
 * write) into a copy of the image: slot `index` gets `slot`, and the checksum is recomputed.
 */
export async function patchDeviceSlot(image: string, out: string, index: number, slot: DeviceSlot): Promise<void> {
  const bytes = await readFile(image);
  const sb = decodeSuperblock(bytes.subarray(SUPERBLOCK_OFFSET_BYTES, SUPERBLOCK_OFFSET_BYTES + 128));
  encodeDeviceSlot(slot).copy(bytes, sb.devtSlotoff * DEVICE_SLOT_SIZE_BYTES + index * DEVICE_SLOT_SIZE_BYTES);
  fixSuperblockChecksum(bytes);
  await writeFile(out, bytes);
}
