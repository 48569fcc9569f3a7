import {
  DATA_LAYOUT,
  CHUNK_INDEX_SIZE_BYTES,
  DEVICE_SLOT_SIZE_BYTES,
  FEATURE_COMPAT,
  FEATURE_INCOMPAT,
  FILE_TYPE,
  INODE_SLOT_SIZE_BYTES,
  NULL_ADDR,
  SUPERBLOCK_OFFSET_BYTES,
  SUPERBLOCK_SIZE_BYTES,
} from '../format/constants.js';
import { encodeChunkFormat, writeChunkIndexes, chunkArrayOffsetBytes, chunkCount, type ChunkIndex } from '../format/chunk.js';
import { encodeDeviceSlot } from '../format/device.js';
import { directorySizeBytes, encodeDirectoryKeys } from '../format/dirent.js';
import { FormatLimitError } from '../format/errors.js';
import { direntFileTypeOfKind, writeInode, encodeRdev, fitsCompact, ifmtOfKind, inodeSizeBytes, xattrIcountFor, type InodeTimeBase } from '../format/inode.js';
import { checksumRangeBytes, computeSuperblockChecksum, defaultSuperblock, encodeSuperblock, SUPERBLOCK_CHECKSUM_FIELD_OFFSET, SUPERBLOCK_UUID_FIELD_OFFSET } from '../format/superblock.js';
import {
  xattrFilterBit,
  encodeXattrEntry,
  writeXattrIbody,
  xattrEntrySizeBytes,
  encodeXattrLongPrefix,
  filterKeyOf,
  splitXattrName,
  xattrIbodyContentSizeBytes,
  xattrLongPrefixTableSizeBytes,
  type XattrEntry,
  type XattrLongPrefix,
} from '../format/xattr.js';
import { nameBytes, regularSizeBytes, type DirNode, type TreeNode } from './tree.js';

export interface BlobDevice {
  /** Device-table tag: the blob's sha256 hex digest by convention. */
  tag: string;
  blocks: number;
}

export interface MetadataImageOptions {
  blockSizeBits?: number;
  /** Extra devices in device-id order (id 1 first). */
  devices?: readonly BlobDevice[];
  uuid?: Buffer;
  volumeName?: string;
  /** Base time of compact inodes. Default: the most common mtime, so most inodes can be compact. */
  epoch?: InodeTimeBase;
  longXattrPrefixes?: readonly XattrLongPrefix[];
  /** Long prefix number whose xattr is the page cache sharing fingerprint (sets COMPAT_ISHARE_XATTRS). */
  ishareXattrPrefixId?: number;
  /** An xattr (name and value) used by at least this many inodes is stored once and shared. */
  sharedXattrMinInodes?: number;
}

type DataPlan =
  | { kind: 'none'; iu: number }
  | { kind: 'flat'; bytes: Buffer | null; sizeBytes: number; fullBlocks: number; tailBytes: number; inlineTail: boolean; startBlkaddr: number }
  /** Chunk indexes are encoded straight into the image when it is emitted. */
  | { kind: 'chunks'; chunkBits: number; chunks: readonly ChunkIndex[] };

/** Everything decided about one inode before any byte is written. */
export interface InodePlan {
  node: TreeNode;
  nid: number;
  ino: number;
  offsetBytes: number;
  isExtended: boolean;
  nlink: number;
  sizeBytes: number;
  parent: InodePlan | undefined;
  /** A directory's child names in byte order (latin1 keys, "." and ".." included). */
  childNames: string[] | undefined;
  sharedXattrIds: number[];
  inlineXattrs: XattrEntry[];
  xattrFilter: number;
  ibodySizeBytes: number;
  data: DataPlan;
}

export interface MetadataImagePlan {
  blockSizeBits: number;
  inodes: InodePlan[];
  rootNid: number;
  epoch: InodeTimeBase;
  longPrefixTableOffsetBytes: number;
  sharedXattrs: XattrEntry[];
  sharedXattrOffsetBytes: number;
  xattrBlkaddr: number;
  totalBlocks: number;
  /** Position of each node in `inodes`. */
  indexOf: Map<TreeNode, number>;
}

const DEVICE_TABLE_SLOTOFF = (SUPERBLOCK_OFFSET_BYTES + SUPERBLOCK_SIZE_BYTES) / DEVICE_SLOT_SIZE_BYTES;

export function alignUp(value: number, unit: number): number {
  return Math.ceil(value / unit) * unit;
}

/** Refuses chunk indexes the format cannot hold for a non-empty file on `deviceCount` blob devices. */
export function checkChunkedData(data: { sizeBytes: number; chunkBits: number; chunks: readonly ChunkIndex[] }, blockSizeBits: number, deviceCount: number): void {
  if (data.chunkBits < blockSizeBits) throw new FormatLimitError(`chunk size 2^${data.chunkBits} is below the block size`);
  const expected = chunkCount(data.sizeBytes, data.chunkBits);
  if (data.chunks.length !== expected) throw new FormatLimitError(`file of ${data.sizeBytes} bytes needs ${expected} chunks, got ${data.chunks.length}`);
  for (const chunk of data.chunks) {
    if (chunk.blkaddr !== null && chunk.deviceId > deviceCount) throw new FormatLimitError(`chunk on device ${chunk.deviceId}, but only ${deviceCount} devices`);
  }
}

/**
 * Inodes in breadth-first order from the root, so a directory's children sit next to each other.
 * Per inode (by position): its link count, its parent's position, and for directories the child
 * names sorted. Arrays by position, not maps by node: this runs once per inode of every image.
 */
function collectInodes(root: DirNode): { order: TreeNode[]; indexOf: Map<TreeNode, number>; refs: number[]; parentIndex: number[]; childNames: (string[] | undefined)[] } {
  const order: TreeNode[] = [root];
  const indexOf = new Map<TreeNode, number>([[root, 0]]);
  const refs = [1];
  const parentIndex = [0];
  const childNames: (string[] | undefined)[] = [];
  for (let i = 0; i < order.length; i++) {
    const node = order[i]!;
    if (node.kind !== 'dir') {
      childNames.push(undefined);
      continue;
    }
    // Keys hold names as latin1 (one char per byte): the default string order is byte order.
    const names = ['.', '..'];
    for (const key of node.children.keys()) names.push(key);
    names.sort();
    childNames.push(names);
    for (const key of names) {
      if (key === '.' || key === '..') continue;
      const child = node.children.get(key)!;
      const seen = indexOf.get(child);
      if (seen !== undefined) {
        if (child.kind === 'dir') throw new FormatLimitError(`directory "${key}" is linked twice (directories cannot be hardlinked)`);
        refs[seen]!++;
        continue;
      }
      indexOf.set(child, order.length);
      order.push(child);
      refs.push(1);
      parentIndex.push(i);
    }
  }
  return { order, indexOf, refs, parentIndex, childNames };
}

function mostCommonMtime(nodes: readonly TreeNode[]): InodeTimeBase {
  // Counted per nanoseconds, then per seconds (bigint keys by value): no string per node.
  const counts = new Map<number, Map<bigint, number>>();
  let best: InodeTimeBase = { epochSec: 0n, fixedNsec: 0 };
  let bestCount = 0;
  for (const node of nodes) {
    let bySec = counts.get(node.mtimeNsec);
    if (bySec === undefined) {
      bySec = new Map();
      counts.set(node.mtimeNsec, bySec);
    }
    const count = (bySec.get(node.mtimeSec) ?? 0) + 1;
    bySec.set(node.mtimeSec, count);
    if (count > bestCount) {
      bestCount = count;
      best = { epochSec: node.mtimeSec, fixedNsec: node.mtimeNsec };
    }
  }
  return best;
}

/** Plans the whole image: nids, inode forms, xattr placement, data blocks. No bytes are produced. */
export function planMetadataImage(root: DirNode, options: MetadataImageOptions = {}): MetadataImagePlan {
  const blockSizeBits = options.blockSizeBits ?? 12;
  const blockSizeBytes = 2 ** blockSizeBits;
  const devices = options.devices ?? [];
  const longPrefixes = options.longXattrPrefixes ?? [];
  const sharedMin = options.sharedXattrMinInodes ?? 2;
  const { order, indexOf, refs, parentIndex, childNames } = collectInodes(root);
  const epoch = options.epoch ?? mostCommonMtime(order);

  // Xattrs: split each distinct name once (a tree has few), then share any (name, value) used by
  // enough inodes. Values are counted per name, keyed by their bytes as a latin1 string: this loop
  // runs for every xattr of every inode, and one string key of name and value together (a
  // concatenation to flatten and hash per entry) was most of the planning time.
  interface NameStats {
    nameIndex: number;
    suffix: Buffer;
    filterBit: number;
    /** Inodes using each value, and the shared-area index of values that are shared. */
    uses: Map<string, number>;
    sharedIndex: Map<string, number>;
  }
  const statsOf = new Map<string, NameStats>();
  const statsFor = (name: string) => {
    let stats = statsOf.get(name);
    if (stats === undefined) {
      const stored = splitXattrName(nameBytes(name), longPrefixes);
      const key = filterKeyOf(stored, longPrefixes);
      stats = { ...stored, filterBit: xattrFilterBit(key.baseIndex, key.name), uses: new Map(), sharedIndex: new Map() };
      statsOf.set(name, stats);
    }
    return stats;
  };
  interface PlannedXattr {
    stats: NameStats;
    value: Buffer;
    valueKey: string;
  }
  const NO_XATTRS: PlannedXattr[] = [];
  const entriesAt: PlannedXattr[][] = new Array(order.length);
  for (let i = 0; i < order.length; i++) {
    const xattrs = order[i]!.xattrs;
    if (xattrs.size === 0) {
      entriesAt[i] = NO_XATTRS;
      continue;
    }
    const names: string[] = [];
    for (const name of xattrs.keys()) names.push(name);
    if (names.length > 1) names.sort();
    const entries: PlannedXattr[] = [];
    for (const name of names) {
      const stats = statsFor(name);
      const value = xattrs.get(name)!;
      const valueKey = value.toString('latin1');
      stats.uses.set(valueKey, (stats.uses.get(valueKey) ?? 0) + 1);
      entries.push({ stats, value, valueKey });
    }
    entriesAt[i] = entries;
  }
  const sharedXattrs: XattrEntry[] = [];
  const sharedOffsets: number[] = [];
  let sharedAreaBytes = 0;

  const plans: InodePlan[] = new Array(order.length);
  for (let i = 0; i < order.length; i++) {
    const node = order[i]!;
    const entries = entriesAt[i]!;
    const sharedIdx: number[] = [];
    const inline: XattrEntry[] = [];
    let present = 0;
    for (const { stats, value, valueKey } of entries) {
      present |= 1 << stats.filterBit;
      const entry = { nameIndex: stats.nameIndex, suffix: stats.suffix, value };
      if (stats.uses.get(valueKey)! >= sharedMin && sharedIdx.length < 255) {
        let index = stats.sharedIndex.get(valueKey);
        if (index === undefined) {
          index = sharedXattrs.length;
          stats.sharedIndex.set(valueKey, index);
          sharedXattrs.push(entry);
          sharedOffsets.push(sharedAreaBytes);
          sharedAreaBytes += xattrEntrySizeBytes(stats.suffix.length, value.length);
        }
        sharedIdx.push(index);
      } else {
        inline.push(entry);
      }
    }
    let nlink: number;
    if (node.kind === 'dir') {
      nlink = 2;
      for (const child of node.children.values()) if (child.kind === 'dir') nlink++;
    } else {
      nlink = refs[i]!;
    }
    const names = childNames[i];
    const sizeBytes = plannedSizeBytes(node, blockSizeBytes, names);
    plans[i] = {
      node,
      nid: 0,
      ino: i + 1,
      offsetBytes: 0,
      isExtended: !fitsCompact({ uid: node.uid, gid: node.gid, nlink, sizeBytes, mtimeSec: node.mtimeSec, mtimeNsec: node.mtimeNsec }, epoch),
      nlink,
      sizeBytes,
      parent: undefined,
      childNames: names,
      sharedXattrIds: sharedIdx, // indexes for now; turned into ids once the shared area is placed
      inlineXattrs: inline,
      // h_name_filter: a set bit means no name hashes there (computeXattrFilter's rule).
      xattrFilter: entries.length === 0 ? 0 : ~present >>> 0,
      ibodySizeBytes: xattrIbodyContentSizeBytes(sharedIdx.length, inline),
      data: initialDataPlan(node, sizeBytes, blockSizeBits, devices.length),
    };
  }
  for (let i = 0; i < plans.length; i++) plans[i]!.parent = plans[parentIndex[i]!];

  // Metadata area: superblock, device table, long prefixes, then inodes (32-byte slots).
  const { longPrefixTableOffsetBytes, firstInodeOffsetBytes } = metadataAreaLayout(devices.length, longPrefixes);
  let pos = firstInodeOffsetBytes;
  for (const plan of plans) {
    const headBytes = inodeSizeBytes(plan.isExtended) + plan.ibodySizeBytes;
    const data = plan.data;
    if (data.kind === 'flat' && data.inlineTail) {
      const placed = placeInlineTail(pos, headBytes, data.tailBytes, blockSizeBytes);
      pos = placed.offsetBytes;
      data.inlineTail = placed.inlineTail;
    }
    plan.offsetBytes = pos;
    plan.nid = pos / INODE_SLOT_SIZE_BYTES;
    let end = pos + headBytes;
    if (data.kind === 'flat' && data.inlineTail) end += data.tailBytes;
    if (data.kind === 'chunks') end = chunkArrayOffsetBytes(end, { chunkBlkbits: 0, hasIndexes: true }) + data.chunks.length * CHUNK_INDEX_SIZE_BYTES;
    pos = alignUp(end, INODE_SLOT_SIZE_BYTES);
  }
  const rootNid = plans[0]!.nid;
  if (rootNid > 0xffff) throw new FormatLimitError(`root nid ${rootNid} does not fit 16 bits (too many devices or prefixes)`);

  // Shared xattrs follow the inodes; ids count 4-byte units from xattr_blkaddr.
  const sharedXattrOffsetBytes = alignUp(pos, 4);
  const xattrBlkaddr = Math.floor(sharedXattrOffsetBytes / blockSizeBytes);
  const sharedIds = sharedOffsets.map((offset) => (sharedXattrOffsetBytes + offset - xattrBlkaddr * blockSizeBytes) / 4);
  for (const plan of plans) plan.sharedXattrIds = plan.sharedXattrIds.map((index) => sharedIds[index]!);
  pos = sharedXattrOffsetBytes + sharedAreaBytes;

  // Data blocks (directory blocks, flat files, tails that could not be inlined) after metadata.
  let nextBlock = Math.ceil(pos / blockSizeBytes);
  for (const plan of plans) {
    const data = plan.data;
    if (data.kind !== 'flat') continue;
    const blocks = data.fullBlocks + (!data.inlineTail && data.tailBytes > 0 ? 1 : 0);
    if (blocks > 0) {
      data.startBlkaddr = nextBlock;
      nextBlock += blocks;
    }
  }
  return {
    blockSizeBits,
    inodes: plans,
    rootNid,
    epoch,
    longPrefixTableOffsetBytes,
    sharedXattrs,
    sharedXattrOffsetBytes,
    xattrBlkaddr,
    totalBlocks: Math.max(nextBlock, 1),
    indexOf,
  };
}

/**
 * Where an inode whose head (inode and xattrs) is `headBytes` and whose data ends in an inline tail
 * of `tailBytes` goes, at `pos` or later. The kernel refuses an inline tail crossing a block; like mkfs
 * we also avoid one starting exactly on a block boundary: the inode moves to a fresh block, or the
 * tail is not inlined.
 */
export function placeInlineTail(pos: number, headBytes: number, tailBytes: number, blockSizeBytes: number): { offsetBytes: number; inlineTail: boolean } {
  const tailStart = pos + headBytes;
  if (tailStart % blockSizeBytes !== 0 && (tailStart % blockSizeBytes) + tailBytes <= blockSizeBytes) return { offsetBytes: pos, inlineTail: true };
  if (headBytes + tailBytes <= blockSizeBytes) return { offsetBytes: alignUp(pos, blockSizeBytes), inlineTail: true };
  return { offsetBytes: pos, inlineTail: false };
}

/** Where the inodes start: after the superblock, the device table and the long prefix table. */
export function metadataAreaLayout(deviceCount: number, longPrefixes: readonly XattrLongPrefix[]): { longPrefixTableOffsetBytes: number; firstInodeOffsetBytes: number } {
  const longPrefixTableOffsetBytes = alignUp(SUPERBLOCK_OFFSET_BYTES + SUPERBLOCK_SIZE_BYTES + deviceCount * DEVICE_SLOT_SIZE_BYTES, 4);
  return { longPrefixTableOffsetBytes, firstInodeOffsetBytes: alignUp(longPrefixTableOffsetBytes + xattrLongPrefixTableSizeBytes(longPrefixes), INODE_SLOT_SIZE_BYTES) };
}

function plannedSizeBytes(node: TreeNode, blockSizeBytes: number, childNames: readonly string[] | undefined): number {
  switch (node.kind) {
    case 'dir':
      return directorySizeBytes(
        childNames!.map((name) => name.length),
        blockSizeBytes,
      );
    case 'lnk':
      return node.target.length;
    case 'reg':
      return regularSizeBytes(node.data);
    default:
      return 0;
  }
}

function flatPlan(bytes: Buffer | null, sizeBytes: number, blockSizeBytes: number): DataPlan {
  const tailBytes = sizeBytes % blockSizeBytes;
  return {
    kind: 'flat',
    bytes,
    sizeBytes,
    fullBlocks: Math.floor(sizeBytes / blockSizeBytes),
    tailBytes,
    inlineTail: tailBytes > 0,
    startBlkaddr: 0,
  };
}

function initialDataPlan(node: TreeNode, sizeBytes: number, blockSizeBits: number, deviceCount: number): DataPlan {
  const blockSizeBytes = 2 ** blockSizeBits;
  switch (node.kind) {
    case 'dir':
      return flatPlan(null, sizeBytes, blockSizeBytes);
    case 'lnk':
      if (node.target.length === 0 || node.target.length >= blockSizeBytes) {
        throw new FormatLimitError(`symlink target of ${node.target.length} bytes (must be 1..${blockSizeBytes - 1})`);
      }
      return flatPlan(node.target, sizeBytes, blockSizeBytes);
    case 'reg': {
      const data = node.data;
      if (data.kind === 'inline') return flatPlan(data.bytes, sizeBytes, blockSizeBytes);
      if (data.sizeBytes === 0) return { kind: 'none', iu: 0 };
      checkChunkedData(data, blockSizeBits, deviceCount);
      return { kind: 'chunks', chunkBits: data.chunkBits, chunks: data.chunks };
    }
    case 'chr':
    case 'blk':
      return { kind: 'none', iu: encodeRdev(node.rdevMajor, node.rdevMinor) };
    default:
      return { kind: 'none', iu: 0 };
  }
}

/** Emits the planned image as one buffer (metadata only: its size grows with file count, not bytes). */
export function emitMetadataImage(plan: MetadataImagePlan, options: MetadataImageOptions = {}): Buffer {
  const blockSizeBytes = 2 ** plan.blockSizeBits;
  const image = Buffer.alloc(plan.totalBlocks * blockSizeBytes);
  let anyChunked = false;

  for (const inode of plan.inodes) {
    const node = inode.node;
    const data = inode.data;
    let dataLayout: number = DATA_LAYOUT.FLAT_PLAIN;
    let iu = 0;
    let tail: Buffer | undefined;
    if (data.kind === 'none') {
      iu = data.iu;
    } else if (data.kind === 'chunks') {
      anyChunked = true;
      dataLayout = DATA_LAYOUT.CHUNK_BASED;
      iu = encodeChunkFormat({ chunkBlkbits: data.chunkBits - plan.blockSizeBits, hasIndexes: true });
    } else {
      const bytes = data.bytes ?? encodeDirectoryOf(inode, plan, blockSizeBytes);
      if (bytes.length !== data.sizeBytes) throw new Error(`internal: planned ${data.sizeBytes} bytes, encoded ${bytes.length}`);
      const fullBytes = data.fullBlocks * blockSizeBytes;
      bytes.copy(image, data.startBlkaddr * blockSizeBytes, 0, data.inlineTail ? fullBytes : bytes.length);
      if (data.inlineTail) {
        dataLayout = DATA_LAYOUT.FLAT_INLINE;
        tail = bytes.subarray(fullBytes);
        iu = data.fullBlocks > 0 ? data.startBlkaddr : NULL_ADDR;
      } else {
        iu = data.sizeBytes > 0 ? data.startBlkaddr : 0;
      }
    }
    let at = inode.offsetBytes;
    writeInode(image, at, {
      isExtended: inode.isExtended,
      dataLayout,
      xattrIcount: xattrIcountFor(inode.ibodySizeBytes),
      mode: ifmtOfKind(node.kind) | (node.permissions & 0o7777),
      nlink: inode.nlink,
      sizeBytes: inode.sizeBytes,
      iu,
      ino: inode.ino,
      uid: node.uid,
      gid: node.gid,
      mtimeSec: node.mtimeSec,
      mtimeNsec: node.mtimeNsec,
    });
    at += inodeSizeBytes(inode.isExtended);
    if (inode.ibodySizeBytes > 0) {
      writeXattrIbody(image, at, { nameFilter: inode.xattrFilter, sharedIds: inode.sharedXattrIds, entries: inode.inlineXattrs });
      at += inode.ibodySizeBytes;
    }
    if (tail !== undefined) tail.copy(image, at);
    if (data.kind === 'chunks') writeChunkIndexes(image, chunkArrayOffsetBytes(at, { chunkBlkbits: 0, hasIndexes: true }), data.chunks);
  }

  let sharedAt = plan.sharedXattrOffsetBytes;
  for (const entry of plan.sharedXattrs) {
    const encoded = encodeXattrEntry(entry);
    encoded.copy(image, sharedAt);
    sharedAt += encoded.length;
  }
  writeImageHeader(image, { ...plan, inodeCount: plan.inodes.length, anyChunked }, options);
  return image;
}

/** What the superblock, device table and long prefix table of an image say about its layout. */
export interface ImageHeader {
  blockSizeBits: number;
  rootNid: number;
  inodeCount: number;
  epoch: InodeTimeBase;
  totalBlocks: number;
  xattrBlkaddr: number;
  longPrefixTableOffsetBytes: number;
  anyChunked: boolean;
}

/** Writes the device table, the long prefix table and the superblock (with its checksum) into `image`. */
export function writeImageHeader(image: Buffer, plan: ImageHeader, options: MetadataImageOptions): void {
  const devices = options.devices ?? [];
  const longPrefixes = options.longXattrPrefixes ?? [];
  let prefixAt = plan.longPrefixTableOffsetBytes;
  for (const prefix of longPrefixes) {
    const encoded = encodeXattrLongPrefix(prefix);
    encoded.copy(image, prefixAt);
    prefixAt += encoded.length;
  }
  let uniaddr = plan.totalBlocks;
  devices.forEach((device, i) => {
    encodeDeviceSlot({ tag: device.tag, blocks: device.blocks, uniaddr }).copy(image, (DEVICE_TABLE_SLOTOFF + i) * DEVICE_SLOT_SIZE_BYTES);
    uniaddr += device.blocks;
  });

  const sb = defaultSuperblock();
  sb.featureCompat = FEATURE_COMPAT.SB_CHKSUM | FEATURE_COMPAT.MTIME | FEATURE_COMPAT.XATTR_FILTER;
  if (options.ishareXattrPrefixId !== undefined) {
    if (options.ishareXattrPrefixId >= longPrefixes.length) throw new FormatLimitError('ishare prefix id names no long prefix');
    sb.featureCompat |= FEATURE_COMPAT.ISHARE_XATTRS;
    sb.ishareXattrPrefixId = options.ishareXattrPrefixId;
  }
  if (plan.anyChunked) sb.featureIncompat |= FEATURE_INCOMPAT.CHUNKED_FILE;
  if (devices.length > 0) {
    sb.featureIncompat |= FEATURE_INCOMPAT.DEVICE_TABLE;
    sb.extraDevices = devices.length;
    sb.devtSlotoff = DEVICE_TABLE_SLOTOFF;
  }
  if (longPrefixes.length > 0) {
    // PLAIN_XATTR_PFX: the table sits in the primary device, not in a packed inode (as mkfs 1.9 marks it).
    sb.featureCompat |= FEATURE_COMPAT.PLAIN_XATTR_PFX;
    sb.featureIncompat |= FEATURE_INCOMPAT.XATTR_PREFIXES;
    sb.xattrPrefixCount = longPrefixes.length;
    sb.xattrPrefixStart = plan.longPrefixTableOffsetBytes / 4;
  }
  sb.blkszbits = plan.blockSizeBits;
  sb.rootNid = plan.rootNid;
  sb.inos = BigInt(plan.inodeCount);
  sb.epochSec = plan.epoch.epochSec;
  sb.fixedNsec = plan.epoch.fixedNsec;
  sb.blocks = plan.totalBlocks;
  sb.xattrBlkaddr = plan.xattrBlkaddr;
  if (options.uuid !== undefined) sb.uuid = options.uuid;
  if (options.volumeName !== undefined) sb.volumeName = Buffer.from(options.volumeName);
  encodeSuperblock(sb).copy(image, SUPERBLOCK_OFFSET_BYTES);
  const range = checksumRangeBytes(plan.blockSizeBits);
  const checksum = computeSuperblockChecksum(image.subarray(range.startBytes, range.startBytes + range.lengthBytes));
  image.writeUInt32LE(checksum, SUPERBLOCK_OFFSET_BYTES + SUPERBLOCK_CHECKSUM_FIELD_OFFSET);
}

function encodeDirectoryOf(inode: InodePlan, plan: MetadataImagePlan, blockSizeBytes: number): Buffer {
  const node = inode.node as DirNode;
  const names = inode.childNames!;
  const nids: number[] = new Array(names.length);
  const fileTypes: number[] = new Array(names.length);
  for (let k = 0; k < names.length; k++) {
    const key = names[k]!;
    if (key === '.') {
      nids[k] = inode.nid;
      fileTypes[k] = FILE_TYPE.DIR;
    } else if (key === '..') {
      nids[k] = inode.parent!.nid;
      fileTypes[k] = FILE_TYPE.DIR;
    } else {
      const child = node.children.get(key)!;
      nids[k] = plan.inodes[plan.indexOf.get(child)!]!.nid;
      fileTypes[k] = direntFileTypeOfKind(child.kind);
    }
  }
  return encodeDirectoryKeys(names, nids, fileTypes, blockSizeBytes);
}

/**
 * Sets the volume UUID of an emitted image in place and recomputes the superblock checksum, so a
 * UUID derived from the image's own bytes costs one emit, not two.
 */
export function setVolumeUuid(image: Buffer, uuid: Buffer, blockSizeBits: number): void {
  if (uuid.length !== 16) throw new FormatLimitError('uuid must be 16 bytes');
  uuid.copy(image, SUPERBLOCK_OFFSET_BYTES + SUPERBLOCK_UUID_FIELD_OFFSET);
  const range = checksumRangeBytes(blockSizeBits);
  image.writeUInt32LE(computeSuperblockChecksum(image.subarray(range.startBytes, range.startBytes + range.lengthBytes)), SUPERBLOCK_OFFSET_BYTES + SUPERBLOCK_CHECKSUM_FIELD_OFFSET);
}

/** Plans and emits in one go. */
export function writeMetadataImage(root: DirNode, options: MetadataImageOptions = {}): Buffer {
  return emitMetadataImage(planMetadataImage(root, options), options);
}
