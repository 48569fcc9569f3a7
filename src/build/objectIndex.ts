import { chunkArrayOffsetBytes, encodeChunkFormat, writeChunkIndexes, type ChunkIndex } from '../format/chunk.js';
import { CHUNK_INDEX_SIZE_BYTES, DATA_LAYOUT, FILE_TYPE, INODE_SLOT_SIZE_BYTES, NULL_ADDR } from '../format/constants.js';
import { directorySizeBytes, encodeDirectoryKeys } from '../format/dirent.js';
import { FormatLimitError } from '../format/errors.js';
import { fitsCompact, ifmtOfKind, inodeSizeBytes, writeInode } from '../format/inode.js';
import { alignUp, checkChunkedData, metadataAreaLayout, placeInlineTail, writeImageHeader, type MetadataImageOptions } from './metadata.js';

/**
 * Object indexes: page cache sharing on kernels without EROFS sharing (6.5+), through overlayfs
 * data-only lower layers. Each blob gets one small EROFS image (mounted once per host) listing every
 * file object whose data lives in that blob as `/<2 hex>/<sha256 hex of the content>`, mapped onto the
 * blob (its only device) by chunk indexes. Metadata images mark each eligible file with overlayfs
 * metacopy + redirect xattrs naming its object, so a sharing mount reads (and mmaps) the data through
 * the object's inode: one page cache for every image holding the file.
 */
export { OVERLAY_METACOPY_XATTR, OVERLAY_REDIRECT_XATTR } from '../format/constants.js';

export function objectPath(contentSha256Hex: string): string {
  return `/${contentSha256Hex.slice(0, 2)}/${contentSha256Hex}`;
}

const SLASH = 0x2f;

/** {@link objectPath} of each digest as bytes, views of one buffer (see fingerprintValues for why). */
export function objectPathValues(contentSha256Hexes: readonly string[]): Buffer[] {
  let total = 0;
  for (const hex of contentSha256Hexes) total += 4 + hex.length;
  const slab = Buffer.allocUnsafeSlow(total);
  let at = 0;
  return contentSha256Hexes.map((hex) => {
    const start = at;
    slab[at] = SLASH;
    slab.write(hex, at + 1, 2, 'latin1');
    slab[at + 3] = SLASH;
    slab.write(hex, at + 4, hex.length, 'latin1');
    at += 4 + hex.length;
    return slab.subarray(start, at);
  });
}

/** An object as tests and tools describe it: chunk indexes with every data chunk on device 1 (the blob). */
export interface ObjectEntry {
  contentSha256Hex: string;
  sizeBytes: number;
  chunkBits: number;
  chunks: ChunkIndex[];
}

/** Permissions of the object index's directories and files (what mounts of it show). */
const DIR_PERMISSIONS = 0o755;
const OBJECT_PERMISSIONS = 0o444;
/** Owner 0, mtime 0: the epoch every inode of the index fits compactly against. */
const EPOCH = { epochSec: 0n, fixedNsec: 0 } as const;
const COMPACT_DIR_BYTES = inodeSizeBytes(false);

/**
 * The object index image of one blob, built as the blob's files are chunked: each object's inode
 * (with its chunk indexes) is encoded when it is added, in the order added, so that what is left
 * when the blob ends is sorting the names and writing the directories. It is built on the chunk
 * thread, which knows each file's chunks and content digest as it finishes it, and has the CPU to
 * spare at the end of a layer, while the main thread plans the image.
 *
 * Layout: superblock and device table (the blob, device 1), the root directory's inode (its blocks
 * plain, so its slot before the objects has a fixed size), the objects' inodes in the order added,
 * one directory inode per two-hex prefix (`/<2 hex>/<hex>`, the last partial block inline where it
 * fits), then the directories' blocks. Every inode is compact (owner 0, mtime 0) unless an object's
 * size needs the extended form. Directories are 0755 and objects 0444.
 */
export class ObjectIndexBuilder {
  private readonly blockSizeBytes: number;
  /** The objects' inode slots, from the first one on: `used` bytes, zeros between inodes. */
  private slots = Buffer.alloc(64 << 10);
  private used = 0;
  private readonly hexes: string[] = [];
  /** Offset of each object's inode in `slots`. */
  private readonly offsets: number[] = [];
  private readonly listed = new Set<string>();
  private anyChunked = false;

  constructor(private readonly blockSizeBits: number) {
    this.blockSizeBytes = 2 ** blockSizeBits;
  }

  get count(): number {
    return this.hexes.length;
  }

  /**
   * Adds the object of a file whose every data chunk lies in the blob (device 1), unless an object
   * with that content is listed already (the first one stays).
   */
  add(contentSha256Hex: string, sizeBytes: number, chunkBits: number, chunks: readonly ChunkIndex[]): void {
    if (this.listed.has(contentSha256Hex)) return;
    const chunked = sizeBytes > 0;
    if (chunked) checkChunkedData({ sizeBytes, chunkBits, chunks }, this.blockSizeBits, 1);
    const isExtended = !fitsCompact({ uid: 0, gid: 0, nlink: 1, sizeBytes, mtimeSec: 0n, mtimeNsec: 0 }, EPOCH);
    const at = this.used;
    const headEnd = at + inodeSizeBytes(isExtended);
    const chunksAt = chunked ? chunkArrayOffsetBytes(headEnd, INDEXED) : headEnd;
    const end = alignUp(chunked ? chunksAt + chunks.length * CHUNK_INDEX_SIZE_BYTES : headEnd, INODE_SLOT_SIZE_BYTES);
    if (end > this.slots.length) {
      const grown = Buffer.alloc(Math.max(end, this.slots.length * 2));
      this.slots.copy(grown, 0, 0, this.used);
      this.slots = grown;
    }
    // Inode numbers: the root is 1, objects follow in the order added, directories after them.
    const iu = chunked ? encodeChunkFormat({ chunkBlkbits: chunkBits - this.blockSizeBits, hasIndexes: true }) : 0;
    writeInode(this.slots, at, { isExtended, dataLayout: chunked ? DATA_LAYOUT.CHUNK_BASED : DATA_LAYOUT.FLAT_PLAIN, xattrIcount: 0, mode: ifmtOfKind('reg') | OBJECT_PERMISSIONS, nlink: 1, sizeBytes, iu, ino: this.hexes.length + 2, uid: 0, gid: 0, mtimeSec: 0n, mtimeNsec: 0 });
    if (chunked) writeChunkIndexes(this.slots, chunksAt, chunks);
    this.anyChunked ||= chunked;
    this.listed.add(contentSha256Hex);
    this.hexes.push(contentSha256Hex);
    this.offsets.push(at);
    this.used = end;
  }

  /** The content digests listed, in byte order (the blob's object list). */
  sortedDigests(): string[] {
    return [...this.hexes].sort();
  }

  /** The image, for the blob `blobDigest` of `blobBlocks` blocks. */
  finish(blobDigest: string, blobBlocks: number): Buffer {
    const blockSizeBytes = this.blockSizeBytes;
    const options: MetadataImageOptions = { blockSizeBits: this.blockSizeBits, devices: [{ tag: blobDigest, blocks: blobBlocks }], volumeName: 'erofs-objects', uuid: Buffer.from(blobDigest.slice(0, 32), 'hex') };
    // Hex digests are ASCII: string order is byte order, as directories need.
    const hexes = this.hexes;
    const order = hexes.map((_, i) => i).sort((a, b) => (hexes[a]! < hexes[b]! ? -1 : 1));
    const prefixes: string[] = [];
    /** Position in `order` of each prefix directory's first object, then order.length. */
    const firstObject: number[] = [];
    for (let k = 0; k < order.length; k++) {
      const prefix = hexes[order[k]!]!.slice(0, 2);
      if (prefix !== prefixes[prefixes.length - 1]) {
        prefixes.push(prefix);
        firstObject.push(k);
      }
    }
    firstObject.push(order.length);

    const { longPrefixTableOffsetBytes, firstInodeOffsetBytes } = metadataAreaLayout(1, []);
    const rootAt = firstInodeOffsetBytes;
    const objectsAt = rootAt + COMPACT_DIR_BYTES;
    const nidOfObject = (i: number) => (objectsAt + this.offsets[i]!) / INODE_SLOT_SIZE_BYTES;
    const rootNid = rootAt / INODE_SLOT_SIZE_BYTES;
    if (rootNid > 0xffff) throw new FormatLimitError(`root nid ${rootNid} does not fit 16 bits`);

    // The directories: the root (plain: its slot is fixed before the objects), then one per prefix,
    // placed after the objects with their last partial block inline where it fits, as the general
    // planner places them.
    type Dir = { at: number; names: string[]; nids: number[]; types: number[]; nlink: number; ino: number; sizeBytes: number; inline: boolean; startBlkaddr: number };
    const sizeOf = (names: readonly string[]) =>
      directorySizeBytes(
        names.map((name) => name.length),
        blockSizeBytes,
      );
    const rootNames = ['.', '..', ...prefixes];
    const root: Dir = { at: rootAt, names: rootNames, nids: [rootNid, rootNid], types: [FILE_TYPE.DIR, FILE_TYPE.DIR], nlink: 2 + prefixes.length, ino: 1, sizeBytes: sizeOf(rootNames), inline: false, startBlkaddr: 0 };
    const dirs: Dir[] = [root];
    let pos = alignUp(objectsAt + this.used, INODE_SLOT_SIZE_BYTES);
    for (let d = 0; d < prefixes.length; d++) {
      const names = ['.', '..'];
      const nids = [0, rootNid];
      const types: number[] = [FILE_TYPE.DIR, FILE_TYPE.DIR];
      for (let k = firstObject[d]!; k < firstObject[d + 1]!; k++) {
        const i = order[k]!;
        names.push(hexes[i]!);
        nids.push(nidOfObject(i));
        types.push(FILE_TYPE.REG);
      }
      const sizeBytes = sizeOf(names);
      const tailBytes = sizeBytes % blockSizeBytes;
      let inline = false;
      if (tailBytes > 0) ({ offsetBytes: pos, inlineTail: inline } = placeInlineTail(pos, COMPACT_DIR_BYTES, tailBytes, blockSizeBytes));
      nids[0] = pos / INODE_SLOT_SIZE_BYTES;
      root.nids.push(nids[0]);
      root.types.push(FILE_TYPE.DIR);
      dirs.push({ at: pos, names, nids, types, nlink: 2, ino: hexes.length + 2 + d, sizeBytes, inline, startBlkaddr: 0 });
      pos = alignUp(pos + COMPACT_DIR_BYTES + (inline ? tailBytes : 0), INODE_SLOT_SIZE_BYTES);
    }
    // No xattrs; directory blocks after the metadata, in inode order.
    const xattrBlkaddr = Math.floor(alignUp(pos, 4) / blockSizeBytes);
    let nextBlock = Math.ceil(alignUp(pos, 4) / blockSizeBytes);
    for (const dir of dirs) {
      const blocks = Math.floor(dir.sizeBytes / blockSizeBytes) + (!dir.inline && dir.sizeBytes % blockSizeBytes > 0 ? 1 : 0);
      if (blocks > 0) {
        dir.startBlkaddr = nextBlock;
        nextBlock += blocks;
      }
    }
    const totalBlocks = Math.max(nextBlock, 1);

    const image = Buffer.alloc(totalBlocks * blockSizeBytes);
    this.slots.copy(image, objectsAt, 0, this.used);
    for (const dir of dirs) {
      if (!fitsCompact({ uid: 0, gid: 0, nlink: dir.nlink, sizeBytes: dir.sizeBytes, mtimeSec: 0n, mtimeNsec: 0 }, EPOCH)) throw new FormatLimitError(`object index directory of ${dir.sizeBytes} bytes needs an extended inode`);
      const bytes = encodeDirectoryKeys(dir.names, dir.nids, dir.types, blockSizeBytes);
      const fullBytes = Math.floor(dir.sizeBytes / blockSizeBytes) * blockSizeBytes;
      bytes.copy(image, dir.startBlkaddr * blockSizeBytes, 0, dir.inline ? fullBytes : bytes.length);
      if (dir.inline) bytes.copy(image, dir.at + COMPACT_DIR_BYTES, fullBytes);
      const iu = dir.inline ? (fullBytes > 0 ? dir.startBlkaddr : NULL_ADDR) : dir.startBlkaddr;
      writeInode(image, dir.at, { isExtended: false, dataLayout: dir.inline ? DATA_LAYOUT.FLAT_INLINE : DATA_LAYOUT.FLAT_PLAIN, xattrIcount: 0, mode: ifmtOfKind('dir') | DIR_PERMISSIONS, nlink: dir.nlink, sizeBytes: dir.sizeBytes, iu, ino: dir.ino, uid: 0, gid: 0, mtimeSec: 0n, mtimeNsec: 0 });
    }
    writeImageHeader(image, { blockSizeBits: this.blockSizeBits, rootNid, inodeCount: 1 + hexes.length + prefixes.length, epoch: EPOCH, totalBlocks, xattrBlkaddr, longPrefixTableOffsetBytes, anyChunked: this.anyChunked }, options);
    return image;
  }
}

const INDEXED = { chunkBlkbits: 0, hasIndexes: true } as const;
