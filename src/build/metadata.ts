import {
  DATA_LAYOUT,
  CHUNK_INDEX_SIZE_BYTES,
  DEVICE_SLOT_SIZE_BYTES,
  FEATURE_COMPAT,
  FEATURE_INCOMPAT,
  FILE_TYPE,
  INODE_SLOT_SIZE_BYTES,
  MAX_SHARED_XATTRS_PER_INODE,
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
  xattrIbodySizeBytesFor,
  xattrLongPrefixTableSizeBytes,
  type XattrEntry,
  type XattrLongPrefix,
} from '../format/xattr.js';
import { nameBytes, regularSizeBytes, type DirNode, type RegularData, type TreeNode } from './tree.js';

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

/**
 * Everything decided about the inodes before any byte is written, one typed-array slot per inode
 * by position (breadth-first from the root): a plan of tens of thousands of inodes as a few arrays
 * rather than objects per inode, which cost memory and garbage collection at the end of every build.
 */
export interface MetadataImagePlan {
  blockSizeBits: number;
  /** Nodes by position. */
  order: TreeNode[];
  /** Position of each node in `order`. */
  indexOf: Map<TreeNode, number>;
  parentIndex: Int32Array;
  /** A directory's child names in byte order (latin1 keys, "." and ".." included); undefined for others. */
  childNames: (string[] | undefined)[];
  offsetBytes: Float64Array;
  sizeBytes: Float64Array;
  nlink: Uint32Array;
  /** {@link PLAN_EXTENDED} and {@link PLAN_INLINE_TAIL} bits. */
  flags: Uint8Array;
  ibodySizeBytes: Uint32Array;
  xattrFilter: Uint32Array;
  /** First block of a flat inode's data (directory blocks, symlink targets, inline files). */
  startBlkaddr: Float64Array;
  /** Inode i's xattrs are `xattrStart[i]` to `xattrStart[i + 1]` of the flat lists, in name order. */
  xattrStart: Uint32Array;
  xattrNameOf: NameStats[];
  xattrValue: Buffer[];
  /** Shared xattr id (4-byte units from xattr_blkaddr), or -1 for an xattr stored inline. */
  xattrSharedId: Float64Array;
  rootNid: number;
  epoch: InodeTimeBase;
  longPrefixTableOffsetBytes: number;
  sharedXattrs: XattrEntry[];
  sharedXattrOffsetBytes: number;
  xattrBlkaddr: number;
  totalBlocks: number;
}

const PLAN_EXTENDED = 1;
const PLAN_INLINE_TAIL = 2;

/** An xattr name as stored, split once per image (a tree has few distinct names). */
interface NameStats {
  nameIndex: number;
  suffix: Buffer;
  filterBit: number;
  /** Inodes using each value (keyed by its bytes as latin1), and the shared-area index of values that are shared. */
  uses: Map<string, number>;
  sharedIndex: Map<string, number>;
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
  const count = order.length;
  const epoch = options.epoch ?? mostCommonMtime(order);

  // Xattrs: split each distinct name once, then share any (name, value) used by enough inodes.
  // Values are counted per name, keyed by their bytes as a latin1 string: this loop runs for every
  // xattr of every inode, and one string key of name and value together (a concatenation to flatten
  // and hash per entry) was most of the planning time.
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
  const xattrStart = new Uint32Array(count + 1);
  const xattrNameOf: NameStats[] = [];
  const xattrValue: Buffer[] = [];
  /** Each xattr's value key, kept only while planning. */
  const valueKeys: string[] = [];
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    xattrStart[i] = xattrNameOf.length;
    const xattrs = order[i]!.xattrs;
    if (xattrs.size === 0) continue;
    names.length = 0;
    for (const name of xattrs.keys()) names.push(name);
    sortSmall(names);
    for (const name of names) {
      const stats = statsFor(name);
      const value = xattrs.get(name)!;
      const valueKey = value.toString('latin1');
      stats.uses.set(valueKey, (stats.uses.get(valueKey) ?? 0) + 1);
      xattrNameOf.push(stats);
      xattrValue.push(value);
      valueKeys.push(valueKey);
    }
  }
  xattrStart[count] = xattrNameOf.length;
  const xattrSharedId = new Float64Array(xattrNameOf.length);
  const sharedXattrs: XattrEntry[] = [];
  const sharedOffsets: number[] = [];
  let sharedAreaBytes = 0;

  const sizeBytes = new Float64Array(count);
  const nlink = new Uint32Array(count);
  const flags = new Uint8Array(count);
  const ibodySizeBytes = new Uint32Array(count);
  const xattrFilter = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    const node = order[i]!;
    let sharedCount = 0;
    let inlineCount = 0;
    let inlineBytes = 0;
    let present = 0;
    for (let x = xattrStart[i]!; x < xattrStart[i + 1]!; x++) {
      const stats = xattrNameOf[x]!;
      const value = xattrValue[x]!;
      const valueKey = valueKeys[x]!;
      present |= 1 << stats.filterBit;
      if (stats.uses.get(valueKey)! >= sharedMin && sharedCount < MAX_SHARED_XATTRS_PER_INODE) {
        let index = stats.sharedIndex.get(valueKey);
        if (index === undefined) {
          index = sharedXattrs.length;
          stats.sharedIndex.set(valueKey, index);
          sharedXattrs.push({ nameIndex: stats.nameIndex, suffix: stats.suffix, value });
          sharedOffsets.push(sharedAreaBytes);
          sharedAreaBytes += xattrEntrySizeBytes(stats.suffix.length, value.length);
        }
        xattrSharedId[x] = index; // an index for now; turned into an id once the shared area is placed
        sharedCount++;
      } else {
        xattrSharedId[x] = -1;
        inlineCount++;
        inlineBytes += xattrEntrySizeBytes(stats.suffix.length, value.length);
      }
    }
    // h_name_filter: a set bit means no name hashes there (computeXattrFilter's rule).
    xattrFilter[i] = sharedCount + inlineCount === 0 ? 0 : ~present >>> 0;
    ibodySizeBytes[i] = xattrIbodySizeBytesFor(sharedCount, inlineCount, inlineBytes);
    let links: number;
    if (node.kind === 'dir') {
      links = 2;
      for (const child of node.children.values()) if (child.kind === 'dir') links++;
    } else {
      links = refs[i]!;
    }
    nlink[i] = links;
    const size = plannedSizeBytes(node, blockSizeBytes, childNames[i]);
    sizeBytes[i] = size;
    checkData(node, blockSizeBits, devices.length);
    if (!fitsCompact({ uid: node.uid, gid: node.gid, nlink: links, sizeBytes: size, mtimeSec: node.mtimeSec, mtimeNsec: node.mtimeNsec }, epoch)) flags[i]! |= PLAN_EXTENDED;
    if (isFlat(node) && size % blockSizeBytes > 0) flags[i]! |= PLAN_INLINE_TAIL;
  }
  valueKeys.length = 0;
  // The counts keep a string per distinct value (a fingerprint per file): not needed to emit.
  for (const stats of statsOf.values()) {
    stats.uses.clear();
    stats.sharedIndex.clear();
  }

  // Metadata area: superblock, device table, long prefixes, then inodes (32-byte slots).
  const { longPrefixTableOffsetBytes, firstInodeOffsetBytes } = metadataAreaLayout(devices.length, longPrefixes);
  const offsetBytes = new Float64Array(count);
  let pos = firstInodeOffsetBytes;
  for (let i = 0; i < count; i++) {
    const headBytes = inodeSizeBytes((flags[i]! & PLAN_EXTENDED) !== 0) + ibodySizeBytes[i]!;
    const node = order[i]!;
    let end: number;
    if ((flags[i]! & PLAN_INLINE_TAIL) !== 0) {
      const tailBytes = sizeBytes[i]! % blockSizeBytes;
      const placed = placeInlineTail(pos, headBytes, tailBytes, blockSizeBytes);
      pos = placed.offsetBytes;
      if (!placed.inlineTail) flags[i]! &= ~PLAN_INLINE_TAIL;
      end = pos + headBytes + (placed.inlineTail ? tailBytes : 0);
    } else {
      const chunked = chunkedDataOf(node);
      end = chunked === undefined ? pos + headBytes : chunkArrayOffsetBytes(pos + headBytes, { chunkBlkbits: 0, hasIndexes: true }) + chunked.chunks.length * CHUNK_INDEX_SIZE_BYTES;
    }
    offsetBytes[i] = pos;
    pos = alignUp(end, INODE_SLOT_SIZE_BYTES);
  }
  const rootNid = offsetBytes[0]! / INODE_SLOT_SIZE_BYTES;
  if (rootNid > 0xffff) throw new FormatLimitError(`root nid ${rootNid} does not fit 16 bits (too many devices or prefixes)`);

  // Shared xattrs follow the inodes; ids count 4-byte units from xattr_blkaddr.
  const sharedXattrOffsetBytes = alignUp(pos, 4);
  const xattrBlkaddr = Math.floor(sharedXattrOffsetBytes / blockSizeBytes);
  for (let x = 0; x < xattrSharedId.length; x++) {
    const index = xattrSharedId[x]!;
    if (index >= 0) xattrSharedId[x] = (sharedXattrOffsetBytes + sharedOffsets[index]! - xattrBlkaddr * blockSizeBytes) / 4;
  }
  pos = sharedXattrOffsetBytes + sharedAreaBytes;

  // Data blocks (directory blocks, flat files, tails that could not be inlined) after metadata.
  const startBlkaddr = new Float64Array(count);
  let nextBlock = Math.ceil(pos / blockSizeBytes);
  for (let i = 0; i < count; i++) {
    if (!isFlat(order[i]!)) continue;
    const size = sizeBytes[i]!;
    const blocks = Math.floor(size / blockSizeBytes) + ((flags[i]! & PLAN_INLINE_TAIL) === 0 && size % blockSizeBytes > 0 ? 1 : 0);
    if (blocks > 0) {
      startBlkaddr[i] = nextBlock;
      nextBlock += blocks;
    }
  }
  return {
    blockSizeBits,
    order,
    indexOf,
    parentIndex: Int32Array.from(parentIndex),
    childNames,
    offsetBytes,
    sizeBytes,
    nlink,
    flags,
    ibodySizeBytes,
    xattrFilter,
    startBlkaddr,
    xattrStart,
    xattrNameOf,
    xattrValue,
    xattrSharedId,
    rootNid,
    epoch,
    longPrefixTableOffsetBytes,
    sharedXattrs,
    sharedXattrOffsetBytes,
    xattrBlkaddr,
    totalBlocks: Math.max(nextBlock, 1),
  };
}

/**
 * Sorts a few strings by code unit, as `Array.prototype.sort` does by default, without the work
 * array that sort allocates per call (an inode's xattr names: usually one to three).
 */
function sortSmall(names: string[]): void {
  if (names.length > 16) {
    names.sort();
    return;
  }
  for (let i = 1; i < names.length; i++) {
    const name = names[i]!;
    let j = i - 1;
    while (j >= 0 && names[j]! > name) {
      names[j + 1] = names[j]!;
      j--;
    }
    names[j + 1] = name;
  }
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

/** Whether an inode's data is stored flat in the metadata image: directories, symlinks, inline files. */
function isFlat(node: TreeNode): boolean {
  return node.kind === 'dir' || node.kind === 'lnk' || (node.kind === 'reg' && node.data.kind === 'inline');
}

/** The chunk indexes of a non-empty chunk-based file (an empty one has none: its layout is flat, no data). */
function chunkedDataOf(node: TreeNode): Extract<RegularData, { kind: 'chunks' }> | undefined {
  return node.kind === 'reg' && node.data.kind === 'chunks' && node.data.sizeBytes > 0 ? node.data : undefined;
}

/** Refuses data the format cannot hold: symlink targets outside 1..block size - 1, bad chunk indexes. */
function checkData(node: TreeNode, blockSizeBits: number, deviceCount: number): void {
  const blockSizeBytes = 2 ** blockSizeBits;
  if (node.kind === 'lnk' && (node.target.length === 0 || node.target.length >= blockSizeBytes)) {
    throw new FormatLimitError(`symlink target of ${node.target.length} bytes (must be 1..${blockSizeBytes - 1})`);
  }
  const chunked = chunkedDataOf(node);
  if (chunked !== undefined) checkChunkedData(chunked, blockSizeBits, deviceCount);
}

/** Emits the planned image as one buffer (metadata only: its size grows with file count, not bytes). */
export function emitMetadataImage(plan: MetadataImagePlan, options: MetadataImageOptions = {}): Buffer {
  const blockSizeBytes = 2 ** plan.blockSizeBits;
  const image = Buffer.alloc(plan.totalBlocks * blockSizeBytes);
  let anyChunked = false;
  const nidOf = (position: number) => plan.offsetBytes[position]! / INODE_SLOT_SIZE_BYTES;

  for (let i = 0; i < plan.order.length; i++) {
    const node = plan.order[i]!;
    const sizeBytes = plan.sizeBytes[i]!;
    const isExtended = (plan.flags[i]! & PLAN_EXTENDED) !== 0;
    let dataLayout: number = DATA_LAYOUT.FLAT_PLAIN;
    let iu = 0;
    let tail: Buffer | undefined;
    const chunked = chunkedDataOf(node);
    if (chunked !== undefined) {
      anyChunked = true;
      dataLayout = DATA_LAYOUT.CHUNK_BASED;
      iu = encodeChunkFormat({ chunkBlkbits: chunked.chunkBits - plan.blockSizeBits, hasIndexes: true });
    } else if (isFlat(node)) {
      const bytes = flatBytesOf(plan, i, nidOf, blockSizeBytes);
      if (bytes.length !== sizeBytes) throw new Error(`internal: planned ${sizeBytes} bytes, encoded ${bytes.length}`);
      const fullBlocks = Math.floor(sizeBytes / blockSizeBytes);
      const fullBytes = fullBlocks * blockSizeBytes;
      const startBlkaddr = plan.startBlkaddr[i]!;
      const inlineTail = (plan.flags[i]! & PLAN_INLINE_TAIL) !== 0;
      bytes.copy(image, startBlkaddr * blockSizeBytes, 0, inlineTail ? fullBytes : bytes.length);
      if (inlineTail) {
        dataLayout = DATA_LAYOUT.FLAT_INLINE;
        tail = bytes.subarray(fullBytes);
        iu = fullBlocks > 0 ? startBlkaddr : NULL_ADDR;
      } else {
        iu = sizeBytes > 0 ? startBlkaddr : 0;
      }
    } else if (node.kind === 'chr' || node.kind === 'blk') {
      iu = encodeRdev(node.rdevMajor, node.rdevMinor);
    }
    let at = plan.offsetBytes[i]!;
    const ibodySizeBytes = plan.ibodySizeBytes[i]!;
    writeInode(image, at, {
      isExtended,
      dataLayout,
      xattrIcount: xattrIcountFor(ibodySizeBytes),
      mode: ifmtOfKind(node.kind) | (node.permissions & 0o7777),
      nlink: plan.nlink[i]!,
      sizeBytes,
      iu,
      ino: i + 1,
      uid: node.uid,
      gid: node.gid,
      mtimeSec: node.mtimeSec,
      mtimeNsec: node.mtimeNsec,
    });
    at += inodeSizeBytes(isExtended);
    if (ibodySizeBytes > 0) {
      const sharedIds: number[] = [];
      const entries: XattrEntry[] = [];
      for (let x = plan.xattrStart[i]!; x < plan.xattrStart[i + 1]!; x++) {
        const id = plan.xattrSharedId[x]!;
        if (id >= 0) sharedIds.push(id);
        else entries.push({ nameIndex: plan.xattrNameOf[x]!.nameIndex, suffix: plan.xattrNameOf[x]!.suffix, value: plan.xattrValue[x]! });
      }
      writeXattrIbody(image, at, { nameFilter: plan.xattrFilter[i]!, sharedIds, entries });
      at += ibodySizeBytes;
    }
    if (tail !== undefined) tail.copy(image, at);
    if (chunked !== undefined) writeChunkIndexes(image, chunkArrayOffsetBytes(at, { chunkBlkbits: 0, hasIndexes: true }), chunked.chunks);
  }

  let sharedAt = plan.sharedXattrOffsetBytes;
  for (const entry of plan.sharedXattrs) {
    const encoded = encodeXattrEntry(entry);
    encoded.copy(image, sharedAt);
    sharedAt += encoded.length;
  }
  writeImageHeader(image, { ...plan, inodeCount: plan.order.length, anyChunked }, options);
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

/** The bytes of a flat inode: its directory blocks, symlink target or inline file data. */
function flatBytesOf(plan: MetadataImagePlan, position: number, nidOf: (position: number) => number, blockSizeBytes: number): Buffer {
  const node = plan.order[position]!;
  if (node.kind === 'dir') return encodeDirectoryOf(plan, position, nidOf, blockSizeBytes);
  if (node.kind === 'lnk') return node.target;
  if (node.kind === 'reg' && node.data.kind === 'inline') return node.data.bytes;
  throw new Error(`internal: inode ${position} has no flat data`);
}

function encodeDirectoryOf(plan: MetadataImagePlan, position: number, nidOf: (position: number) => number, blockSizeBytes: number): Buffer {
  const node = plan.order[position] as DirNode;
  const names = plan.childNames[position]!;
  const nids: number[] = new Array(names.length);
  const fileTypes: number[] = new Array(names.length);
  for (let k = 0; k < names.length; k++) {
    const key = names[k]!;
    if (key === '.') {
      nids[k] = nidOf(position);
      fileTypes[k] = FILE_TYPE.DIR;
    } else if (key === '..') {
      nids[k] = nidOf(plan.parentIndex[position]!);
      fileTypes[k] = FILE_TYPE.DIR;
    } else {
      const child = node.children.get(key)!;
      nids[k] = nidOf(plan.indexOf.get(child)!);
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
