import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import {
  CorruptImageError,
  direntFileTypeOfKind,
  DATA_LAYOUT,
  DEVICE_SLOT_SIZE_BYTES,
  DOT,
  EXTENDED_INODE_SIZE_BYTES,
  DOTDOT,
  FEATURE_COMPAT,
  FEATURE_INCOMPAT,
  FILE_TYPE,
  INODE_SLOT_SIZE_BYTES,
  NULL_ADDR,
  MAX_XATTR_NAME_SUFFIX_BYTES,
  MAX_XATTR_VALUE_BYTES,
  SHORT_XATTR_PREFIXES,
  SUPERBLOCK_OFFSET_BYTES,
  SUPERBLOCK_SIZE_BYTES,
  UnsupportedFeatureError,
  XATTR_ENTRY_HEADER_SIZE_BYTES,
  XATTR_INDEX,
  XATTR_LONG_PREFIX_FLAG,
  XATTR_LONG_PREFIX_MASK,
  checksumRangeBytes,
  chunkArrayOffsetBytes,
  chunkCount,
  chunkEntrySizeBytes,
  compareNames,
  computeSuperblockChecksum,
  decodeChunkEntries,
  decodeChunkFormat,
  decodeDeviceSlot,
  decodeDirectoryBlock,
  decodeInode,
  decodeRdev,
  decodeSuperblock,
  decodeXattrEntry,
  decodeXattrIbody,
  decodeXattrLongPrefixes,
  deviceIdMask,
  fileTypeOfMode,
  inodeSizeBytes,
  joinXattrName,
  peekInodeIsExtended,
  superblockSizeBytes,
  xattrIbodySizeBytes,
  type ChunkFormat,
  type DeviceSlot,
  type Dirent,
  type FileKind,
  type Inode,
  type Superblock,
  type XattrLongPrefix,
} from '../format/index.js';
import { resolveDevices, type DeviceInfo, type ResolvedDevice } from './devices.js';
import { DeviceUnavailableError, PathNotFoundError } from './errors.js';
import { BlockCache, FileSource, Lru, type ByteSource } from './source.js';

export interface OpenOptions {
  /** Extra devices (blobs) in device-table order; their number must match the table. */
  devices?: readonly string[];
  /** Where to look for a device file named by its slot's tag. Default: the image's directory and `<imagedir>/blobs/sha256`. */
  blobDirs?: readonly string[];
  /** Check the superblock CRC32C when the image says it has one (default true). */
  verifyChecksum?: boolean;
  /** Metadata blocks cached per device (default 4096, i.e. 16 MiB with 4 KiB blocks). */
  cacheBlocks?: number;
  /** Deepest directory level `walk` and `lookup` descend to (default 2048: a 4 KiB path holds no more). */
  maxDepth?: number;
}

export type DataLayoutName = 'flat-plain' | 'compressed-full' | 'flat-inline' | 'compressed-compact' | 'chunk-based';
const LAYOUT_NAMES: readonly DataLayoutName[] = ['flat-plain', 'compressed-full', 'flat-inline', 'compressed-compact', 'chunk-based'];

export interface ChunkInfo {
  /** log2 of the chunk size in bytes (block size bits + the format's BLKBITS). */
  chunkBits: number;
  chunkSizeBytes: number;
  /** 8-byte chunk indexes with a device id (true) or a 4-byte block map (false). */
  hasIndexes: boolean;
  chunkCount: number;
  /** Where the index array starts in the primary image. */
  arrayOffsetBytes: number;
  entrySizeBytes: number;
}

/** What the kernel would report for an inode, plus where it lives. */
export interface ErofsStat {
  nid: number;
  kind: FileKind;
  /** Full st_mode, file type bits included. */
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: bigint;
  mtimeNsec: number;
  nlink: number;
  sizeBytes: number;
  /** Device number of character and block devices; null for other kinds. */
  rdev: { major: number; minor: number } | null;
  /** The on-disk i_ino (informational; the kernel reports the nid as st_ino). */
  ino: number;
  inodeForm: 'compact' | 'extended';
  inodeOffsetBytes: number;
  inodeSizeBytes: number;
  xattrIbodySizeBytes: number;
  dataLayout: DataLayoutName;
  /** First block of the contiguous data of a flat layout (null when it has no full block). */
  startBlkaddr: number | null;
  /** Bytes stored right after the inode (flat-inline only). */
  inlineTailBytes: number;
  chunk: ChunkInfo | null;
}

export interface DirEntry {
  name: Buffer;
  nid: number;
  /** The dirent's file_type (FILE_TYPE.*; 0 = unknown). */
  fileType: number;
}

export interface XattrRecord {
  /** The full name (prefix included). For `erofs.fingerprint.v1` this is the bare name: its long prefix has base index 0, no namespace. */
  name: Buffer;
  value: Buffer;
  /** e_name_index as stored (0x80 | n for long prefix n). */
  nameIndex: number;
  /** The stored remainder of the name after that prefix. */
  suffix: Buffer;
  /** Stored once in the shared area and referenced by id. */
  shared: boolean;
  /**
   * The kernel does not list it (no namespace handler: a long prefix based on index 0, like the page
   * cache fingerprint, or lustre.*), so getfattr on a mount does not show it.
   */
  hidden: boolean;
}

export interface XattrLayout {
  /** h_name_filter: a set bit means "no xattr hashes here". */
  nameFilter: number;
  sharedIds: number[];
  ibodySizeBytes: number;
}

export interface ChunkMapEntry {
  fileOffsetBytes: number;
  lengthBytes: number;
  deviceId: number;
  /** Block within that device; null for a hole. */
  blkaddr: number | null;
}

export interface WalkEntry {
  /** '/'-separated, relative to the root, which is '.'. Decoded as UTF-8 (see pathBytes for the exact bytes). */
  path: string;
  pathBytes: Buffer;
  nid: number;
  /** nid of the directory holding the entry (the root's own nid for the root). */
  parentNid: number;
  depth: number;
  stat: ErofsStat;
}

/** A decoded inode with where it is and what follows it. */
interface LoadedInode extends Inode {
  nid: number;
  kind: FileKind;
  offsetBytes: number;
  inodeSizeBytes: number;
  xattrIbodySizeBytes: number;
  /** First byte after the inode and its xattrs: inline tail or chunk array base. */
  afterXattrsBytes: number;
}

/** A piece of a file's data: zeros, bytes on a device, or bytes stored inline in the primary image. */
type Extent =
  | { kind: 'hole'; endBytes: number }
  | { kind: 'mapped'; endBytes: number; deviceId: number; physicalBytes: number }
  | { kind: 'inline'; endBytes: number; physicalBytes: number };

/** One read() returns a Buffer; larger requests must use createReadStream. */
export const MAX_READ_BYTES = 1 << 30;
const STREAM_PIECE_BYTES = 1 << 20;
/** Linux reads at most PAGE_SIZE - 1 bytes of a symlink target. */
const MAX_SYMLINK_BYTES = 4095;
const DEFAULT_MAX_DEPTH = 2048;
const DEFAULT_CACHE_BLOCKS = 4096;
const INODE_CACHE_ENTRIES = 65536;
const DIR_BLOCK_CACHE_ENTRIES = 1024;
/** A long prefix record is a u16 length plus at most 256 bytes, padded to 4. */
const MAX_PREFIX_RECORD_BYTES = 260;

/** Namespaces the kernel lists (it has a handler for them): user, the two ACLs, trusted, security. */
const LISTED_BASE_INDEXES: ReadonlySet<number> = new Set([
  XATTR_INDEX.USER,
  XATTR_INDEX.POSIX_ACL_ACCESS,
  XATTR_INDEX.POSIX_ACL_DEFAULT,
  XATTR_INDEX.TRUSTED,
  XATTR_INDEX.SECURITY,
]);

interface DeviceBackingState {
  info: DeviceInfo;
  cache?: BlockCache;
  /** Byte where device block 0 sits in its source (non-zero for flat devices). */
  baseBytes: number;
  limitBytes: number;
}

/**
 * An EROFS image opened for reading. Every structure is treated as hostile: offsets, counts and
 * lengths are checked against what they point into before anything is read or allocated, and every
 * failure is a CorruptImageError / UnsupportedFeatureError / DeviceUnavailableError naming the image.
 */
export class ErofsImage {
  readonly blockSizeBytes: number;
  readonly rootNid: number;
  /** Whether the superblock checksum was present and verified. */
  readonly checksumVerified: boolean;
  private readonly primaryCache: BlockCache;
  private readonly backings: DeviceBackingState[];
  private readonly inodes = new Lru<number, LoadedInode>(INODE_CACHE_ENTRIES);
  private readonly dirBlocks = new Lru<string, Dirent[]>(DIR_BLOCK_CACHE_ENTRIES);
  private readonly maxDepth: number;
  private readonly deviceIdMask: number;
  private closed = false;
  private prefixes: readonly XattrLongPrefix[] = [];

  private constructor(
    readonly path: string,
    readonly superblock: Superblock,
    private readonly primary: ByteSource,
    private readonly ownedSources: readonly ByteSource[],
    resolved: readonly ResolvedDevice[],
    init: { checksumVerified: boolean; cacheBlocks: number; maxDepth: number },
  ) {
    this.blockSizeBytes = 2 ** superblock.blkszbits;
    this.rootNid = superblock.rootNid;
    this.checksumVerified = init.checksumVerified;
    this.maxDepth = init.maxDepth;
    this.primaryCache = new BlockCache(primary, this.blockSizeBytes, init.cacheBlocks);
    this.deviceIdMask = deviceIdMask(resolved.length);
    this.backings = resolved.map((device) => {
      if (device.info.backing === 'file' && device.source !== undefined) {
        return { info: device.info, cache: new BlockCache(device.source, this.blockSizeBytes, init.cacheBlocks), baseBytes: 0, limitBytes: device.source.sizeBytes };
      }
      if (device.info.backing === 'flat') {
        return { info: device.info, cache: this.primaryCache, baseBytes: device.info.uniaddr * this.blockSizeBytes, limitBytes: device.info.blocks * this.blockSizeBytes };
      }
      return { info: device.info, baseBytes: 0, limitBytes: 0 };
    });
  }

  /** Long xattr name prefixes, by number (e.g. the page cache fingerprint's `erofs.fingerprint.v1`). */
  get longXattrPrefixes(): readonly XattrLongPrefix[] {
    return this.prefixes;
  }

  /** The extra devices and where their bytes come from, in device-table order. */
  get devices(): readonly DeviceInfo[] {
    return this.backings.map((b) => b.info);
  }

  /** Opens a metadata image file and its devices (see OpenOptions for how devices are found). */
  static async open(metadataImagePath: string, options: OpenOptions = {}): Promise<ErofsImage> {
    const primary = await FileSource.open(metadataImagePath);
    const imageDir = dirname(metadataImagePath);
    return ErofsImage.fromSources(primary, {
      ...options,
      devices: options.devices,
      blobDirs: options.blobDirs ?? [imageDir, join(imageDir, 'blobs', 'sha256')],
    });
  }

  /** Opens an image from already open sources (in-memory images in tests, block devices, ...). The image owns and closes them. */
  static async fromSources(
    primary: ByteSource,
    options: Omit<OpenOptions, 'devices'> & { devices?: readonly (string | ByteSource)[] } = {},
  ): Promise<ErofsImage> {
    const owned: ByteSource[] = [primary];
    try {
      return await ErofsImage.init(primary, owned, options);
    } catch (err) {
      for (const source of owned) await source.close().catch(() => undefined);
      // Explicit sources that were never adopted are still ours to close.
      for (const device of options.devices ?? []) if (typeof device !== 'string' && !owned.includes(device)) await device.close().catch(() => undefined);
      throw ErofsImage.withImage(err, primary.name);
    }
  }

  private static async init(
    primary: ByteSource,
    owned: ByteSource[],
    options: Omit<OpenOptions, 'devices'> & { devices?: readonly (string | ByteSource)[] },
  ): Promise<ErofsImage> {
    const name = primary.name;
    if (primary.sizeBytes < SUPERBLOCK_OFFSET_BYTES + SUPERBLOCK_SIZE_BYTES) {
      throw new CorruptImageError(`image of ${primary.sizeBytes} bytes is too small to hold a superblock`, { structure: 'superblock', offsetBytes: SUPERBLOCK_OFFSET_BYTES });
    }
    const base = Buffer.alloc(SUPERBLOCK_SIZE_BYTES);
    await primary.readInto(base, 0, SUPERBLOCK_SIZE_BYTES, SUPERBLOCK_OFFSET_BYTES);
    const sb = decodeSuperblock(base);
    if (SUPERBLOCK_OFFSET_BYTES + superblockSizeBytes(sb) > primary.sizeBytes) {
      throw new CorruptImageError(`superblock with ${sb.sbExtslots} extension slots runs past the end of the image`, { structure: 'superblock', offsetBytes: SUPERBLOCK_OFFSET_BYTES });
    }

    let checksumVerified = false;
    if (sb.featureCompat & FEATURE_COMPAT.SB_CHKSUM && options.verifyChecksum !== false) {
      const range = checksumRangeBytes(sb.blkszbits);
      if (range.startBytes + range.lengthBytes > primary.sizeBytes) {
        throw new CorruptImageError(`checksummed range ${range.startBytes}..${range.startBytes + range.lengthBytes} runs past the end of the image`, {
          structure: 'superblock',
          offsetBytes: SUPERBLOCK_OFFSET_BYTES,
        });
      }
      const region = Buffer.alloc(range.lengthBytes);
      await primary.readInto(region, 0, range.lengthBytes, range.startBytes);
      const computed = computeSuperblockChecksum(region);
      if (computed !== sb.checksum) {
        throw new CorruptImageError(`superblock checksum 0x${sb.checksum.toString(16)} does not match the computed 0x${computed.toString(16)}`, {
          structure: 'superblock',
          offsetBytes: SUPERBLOCK_OFFSET_BYTES + 4,
        });
      }
      checksumVerified = true;
    }

    const blockSizeBytes = 2 ** sb.blkszbits;
    // The kernel ignores the device table unless the incompat bit says it is valid.
    const slotCount = sb.featureIncompat & FEATURE_INCOMPAT.DEVICE_TABLE ? sb.extraDevices : 0;
    const slots: DeviceSlot[] = [];
    if (slotCount > 0) {
      const tableBytes = sb.devtSlotoff * DEVICE_SLOT_SIZE_BYTES;
      const lengthBytes = slotCount * DEVICE_SLOT_SIZE_BYTES;
      if (tableBytes + lengthBytes > primary.sizeBytes) {
        throw new CorruptImageError(`device table of ${slotCount} slots at byte ${tableBytes} runs past the end of the image (${primary.sizeBytes} bytes)`, {
          structure: 'device table',
          offsetBytes: tableBytes,
        });
      }
      const table = Buffer.alloc(lengthBytes);
      await primary.readInto(table, 0, lengthBytes, tableBytes);
      for (let i = 0; i < slotCount; i++) {
        const at = i * DEVICE_SLOT_SIZE_BYTES;
        slots.push(decodeDeviceSlot(table.subarray(at, at + DEVICE_SLOT_SIZE_BYTES), tableBytes + at));
      }
    }
    if (slotCount === 0 && (options.devices?.length ?? 0) > 0) {
      throw new DeviceUnavailableError(`${options.devices?.length} device(s) given but the image has no device table`, name);
    }
    const resolved = await resolveDevices(name, slots, primary, blockSizeBytes, { devices: options.devices, blobDirs: options.blobDirs });
    for (const device of resolved) if (device.source !== undefined) owned.push(device.source);

    const image = new ErofsImage(name, sb, primary, owned, resolved, {
      checksumVerified,
      cacheBlocks: Math.max(16, options.cacheBlocks ?? DEFAULT_CACHE_BLOCKS),
      maxDepth: options.maxDepth ?? DEFAULT_MAX_DEPTH,
    });
    image.prefixes = await image.readLongPrefixes();
    // The kernel refuses to mount when the root is not a directory.
    const root = await image.loadInode(sb.rootNid);
    if (root.kind !== 'dir') throw new CorruptImageError(`root nid ${sb.rootNid} is a ${root.kind}, not a directory`, { structure: 'superblock', offsetBytes: SUPERBLOCK_OFFSET_BYTES + 0x0e });
    return image;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const source of this.ownedSources) await source.close();
  }

  /** Adds the image name to our typed errors so every message says which image is bad. */
  private static withImage(err: unknown, image: string): unknown {
    if (err instanceof CorruptImageError) return err.inImage(image);
    if (err instanceof UnsupportedFeatureError && err.image === undefined) return new UnsupportedFeatureError(err.feature, image);
    return err;
  }

  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new Error(`${this.path}: image is closed`);
    try {
      return await fn();
    } catch (err) {
      throw ErofsImage.withImage(err, this.path);
    }
  }

  // ---------------------------------------------------------------- metadata access

  /** Bytes of the primary image, after checking that they exist. The result may be a view into the cache: do not modify it. */
  private async meta(positionBytes: number, lengthBytes: number, where: { structure: string; nid?: number }): Promise<Buffer> {
    if (!Number.isSafeInteger(positionBytes) || positionBytes < 0 || lengthBytes < 0 || positionBytes + lengthBytes > this.primary.sizeBytes) {
      throw new CorruptImageError(`${lengthBytes} bytes at byte ${positionBytes} lie outside the image (${this.primary.sizeBytes} bytes)`, where);
    }
    if (lengthBytes === 0) return Buffer.alloc(0);
    return this.primaryCache.read(positionBytes, lengthBytes);
  }

  private async readLongPrefixes(): Promise<XattrLongPrefix[]> {
    const sb = this.superblock;
    if (!(sb.featureIncompat & FEATURE_INCOMPAT.XATTR_PREFIXES) || sb.xattrPrefixCount === 0) return [];
    const startBytes = sb.xattrPrefixStart * 4;
    const where = { structure: 'long xattr prefix table', offsetBytes: startBytes };
    const wantedBytes = sb.xattrPrefixCount * MAX_PREFIX_RECORD_BYTES;
    let bytes: Buffer;
    // With fragments the table is data of the packed inode, unless PLAIN_XATTR_PFX keeps it in the primary device.
    if (sb.featureIncompat & FEATURE_INCOMPAT.FRAGMENTS && sb.packedNid !== 0n && !(sb.featureCompat & FEATURE_COMPAT.PLAIN_XATTR_PFX)) {
      if (sb.packedNid > BigInt(Number.MAX_SAFE_INTEGER)) throw new CorruptImageError(`packed nid ${sb.packedNid} out of range`, where);
      bytes = await this.readInternal(Number(sb.packedNid), startBytes, wantedBytes, true);
    } else {
      if (startBytes >= this.primary.sizeBytes) throw new CorruptImageError(`table starts past the end of the image (${this.primary.sizeBytes} bytes)`, where);
      bytes = await this.meta(startBytes, Math.min(wantedBytes, this.primary.sizeBytes - startBytes), where);
    }
    return decodeXattrLongPrefixes(bytes, sb.xattrPrefixCount, startBytes);
  }

  private async loadInode(nid: number): Promise<LoadedInode> {
    const cached = this.inodes.get(nid);
    if (cached !== undefined) return cached;
    const where = { structure: 'inode', nid };
    const metaBaseBytes = this.superblock.metaBlkaddr * this.blockSizeBytes;
    // Compare before multiplying: a hostile 64-bit nid must not lose precision into an in-range offset.
    if (!Number.isSafeInteger(nid) || nid < 0 || nid >= (this.primary.sizeBytes - metaBaseBytes) / INODE_SLOT_SIZE_BYTES) {
      throw new CorruptImageError(`nid ${nid} lies beyond the image (${this.primary.sizeBytes} bytes, meta_blkaddr ${this.superblock.metaBlkaddr})`, where);
    }
    const offsetBytes = metaBaseBytes + nid * INODE_SLOT_SIZE_BYTES;
    // One read covers either form; only an extended inode at the very end of the image is shorter.
    const head = await this.meta(offsetBytes, Math.min(EXTENDED_INODE_SIZE_BYTES, this.primary.sizeBytes - offsetBytes), where);
    const size = inodeSizeBytes(peekInodeIsExtended(head, nid));
    const inode = decodeInode(head, nid, this.superblock);
    const kind = fileTypeOfMode(inode.mode);
    if (kind === undefined) throw new CorruptImageError(`invalid file type in mode 0${inode.mode.toString(8)}`, where);
    const xattrBytes = xattrIbodySizeBytes(inode.xattrIcount);
    const afterXattrsBytes = offsetBytes + size + xattrBytes;
    if (afterXattrsBytes > this.primary.sizeBytes) {
      throw new CorruptImageError(`inode and its ${xattrBytes} bytes of xattrs run past the end of the image`, { ...where, offsetBytes });
    }
    // Spelled out: an object spread of the decoded inode costs ten times its decoding.
    const loaded: LoadedInode = {
      isExtended: inode.isExtended,
      dataLayout: inode.dataLayout,
      xattrIcount: inode.xattrIcount,
      mode: inode.mode,
      nlink: inode.nlink,
      sizeBytes: inode.sizeBytes,
      iu: inode.iu,
      ino: inode.ino,
      uid: inode.uid,
      gid: inode.gid,
      mtimeSec: inode.mtimeSec,
      mtimeNsec: inode.mtimeNsec,
      nid,
      kind,
      offsetBytes,
      inodeSizeBytes: size,
      xattrIbodySizeBytes: xattrBytes,
      afterXattrsBytes,
    };
    this.inodes.set(nid, loaded);
    return loaded;
  }

  private chunkInfo(inode: LoadedInode): ChunkInfo & { format: ChunkFormat } {
    const format = decodeChunkFormat(inode.iu, inode.nid);
    const chunkBits = this.superblock.blkszbits + format.chunkBlkbits;
    const count = chunkCount(inode.sizeBytes, chunkBits);
    const entrySizeBytes = chunkEntrySizeBytes(format);
    const arrayOffsetBytes = chunkArrayOffsetBytes(inode.afterXattrsBytes, format);
    // Checked here so that no later step allocates or reads on behalf of an impossible count.
    if (count > (this.primary.sizeBytes - arrayOffsetBytes) / entrySizeBytes) {
      throw new CorruptImageError(`${count} chunk entries for ${inode.sizeBytes} bytes in ${2 ** chunkBits}-byte chunks run past the end of the image`, {
        structure: 'chunk index',
        nid: inode.nid,
        offsetBytes: arrayOffsetBytes,
      });
    }
    return { format, chunkBits, chunkSizeBytes: 2 ** chunkBits, hasIndexes: format.hasIndexes, chunkCount: count, arrayOffsetBytes, entrySizeBytes };
  }

  private statOf(inode: LoadedInode): ErofsStat {
    const layout = LAYOUT_NAMES[inode.dataLayout] ?? 'flat-plain';
    const isData = inode.kind === 'reg' || inode.kind === 'dir' || inode.kind === 'lnk';
    let startBlkaddr: number | null = null;
    let inlineTailBytes = 0;
    let chunk: ChunkInfo | null = null;
    if (isData && inode.dataLayout === DATA_LAYOUT.FLAT_PLAIN) {
      startBlkaddr = inode.sizeBytes > 0 ? inode.iu : null;
    } else if (isData && inode.dataLayout === DATA_LAYOUT.FLAT_INLINE) {
      const fullBlocks = Math.max(0, Math.ceil(inode.sizeBytes / this.blockSizeBytes) - 1);
      startBlkaddr = fullBlocks > 0 ? inode.iu : null;
      inlineTailBytes = inode.sizeBytes - fullBlocks * this.blockSizeBytes;
    } else if (isData && inode.dataLayout === DATA_LAYOUT.CHUNK_BASED) {
      const info = this.chunkInfo(inode);
      chunk = {
        chunkBits: info.chunkBits,
        chunkSizeBytes: info.chunkSizeBytes,
        hasIndexes: info.hasIndexes,
        chunkCount: info.chunkCount,
        arrayOffsetBytes: info.arrayOffsetBytes,
        entrySizeBytes: info.entrySizeBytes,
      };
    }
    const rdev = inode.kind === 'chr' || inode.kind === 'blk' ? decodeRdev(inode.iu) : null;
    return {
      nid: inode.nid,
      kind: inode.kind,
      mode: inode.mode,
      uid: inode.uid,
      gid: inode.gid,
      mtimeSec: inode.mtimeSec,
      mtimeNsec: inode.mtimeNsec,
      nlink: inode.nlink,
      sizeBytes: inode.sizeBytes,
      rdev,
      ino: inode.ino,
      inodeForm: inode.isExtended ? 'extended' : 'compact',
      inodeOffsetBytes: inode.offsetBytes,
      inodeSizeBytes: inode.inodeSizeBytes,
      xattrIbodySizeBytes: inode.xattrIbodySizeBytes,
      dataLayout: layout,
      startBlkaddr,
      inlineTailBytes,
      chunk,
    };
  }

  // ---------------------------------------------------------------- data mapping

  /** The extent holding byte `positionBytes` (< i_size) of a file, as the kernel's erofs_map_blocks computes it. */
  private async mapAt(inode: LoadedInode, positionBytes: number, chunk: (ChunkInfo & { format: ChunkFormat }) | undefined): Promise<Extent> {
    const bs = this.blockSizeBytes;
    switch (inode.dataLayout) {
      case DATA_LAYOUT.FLAT_PLAIN:
        // Linux 6.15+ reads an all-ones start block as "no data" (zeros).
        if (inode.iu === NULL_ADDR) return { kind: 'hole', endBytes: inode.sizeBytes };
        return { kind: 'mapped', endBytes: inode.sizeBytes, deviceId: 0, physicalBytes: inode.iu * bs + positionBytes };
      case DATA_LAYOUT.FLAT_INLINE: {
        // The last block (even a whole one) is the inline tail, as in the kernel.
        const tailStartBytes = (Math.ceil(inode.sizeBytes / bs) - 1) * bs;
        if (positionBytes < tailStartBytes) {
          if (inode.iu === NULL_ADDR) return { kind: 'hole', endBytes: tailStartBytes };
          return { kind: 'mapped', endBytes: tailStartBytes, deviceId: 0, physicalBytes: inode.iu * bs + positionBytes };
        }
        const tailBytes = inode.sizeBytes - tailStartBytes;
        if ((inode.afterXattrsBytes % bs) + tailBytes > bs) {
          throw new CorruptImageError(`inline tail of ${tailBytes} bytes at byte ${inode.afterXattrsBytes} crosses a block boundary`, {
            structure: 'inline data',
            nid: inode.nid,
            offsetBytes: inode.afterXattrsBytes,
          });
        }
        return { kind: 'inline', endBytes: inode.sizeBytes, physicalBytes: inode.afterXattrsBytes + (positionBytes - tailStartBytes) };
      }
      case DATA_LAYOUT.CHUNK_BASED: {
        const info = chunk ?? this.chunkInfo(inode);
        const index = Math.floor(positionBytes / info.chunkSizeBytes);
        const chunkStartBytes = index * info.chunkSizeBytes;
        const entryBytes = await this.meta(info.arrayOffsetBytes + index * info.entrySizeBytes, info.entrySizeBytes, { structure: 'chunk index', nid: inode.nid });
        const [entry] = decodeChunkEntries(entryBytes, info.format, 1, this.deviceIdMask, inode.nid);
        const endBytes = Math.min(chunkStartBytes + info.chunkSizeBytes, inode.sizeBytes);
        if (entry === undefined || entry.blkaddr === null) return { kind: 'hole', endBytes };
        return { kind: 'mapped', endBytes, deviceId: entry.deviceId, physicalBytes: entry.blkaddr * bs + (positionBytes - chunkStartBytes) };
      }
      case DATA_LAYOUT.COMPRESSED_FULL:
      case DATA_LAYOUT.COMPRESSED_COMPACT:
        throw new UnsupportedFeatureError(`compressed data layout ${LAYOUT_NAMES[inode.dataLayout]} (nid ${inode.nid})`);
      default:
        throw new CorruptImageError(`invalid data layout ${inode.dataLayout}`, { structure: 'inode', nid: inode.nid });
    }
  }

  /**
   * Reads device bytes. Device 0 addresses inside a separately opened device's unified range are
   * redirected to it, as the kernel's erofs_map_dev does; every range is checked against the device's
   * size (its file, or its slot's range for flat devices) first.
   */
  private async readPhysical(target: Buffer, targetOffsetBytes: number, lengthBytes: number, deviceId: number, positionBytes: number, cached: boolean, nid: number): Promise<void> {
    const bs = this.blockSizeBytes;
    let backing: DeviceBackingState | undefined;
    let devicePositionBytes = positionBytes;
    if (deviceId === 0) {
      for (const candidate of this.backings) {
        const { uniaddr, blocks, backing: kind } = candidate.info;
        if (uniaddr === 0 || kind === 'flat') continue;
        const startBytes = uniaddr * bs;
        if (positionBytes >= startBytes && positionBytes < startBytes + blocks * bs) {
          backing = candidate;
          devicePositionBytes = positionBytes - startBytes;
          break;
        }
      }
    } else {
      backing = this.backings[deviceId - 1];
      if (backing === undefined) {
        throw new CorruptImageError(`chunk refers to device ${deviceId}, but the device table has ${this.backings.length} slot(s)`, { structure: 'chunk index', nid });
      }
    }
    let cache: BlockCache;
    let sourcePositionBytes: number;
    if (backing === undefined) {
      if (positionBytes + lengthBytes > this.primary.sizeBytes) {
        throw new CorruptImageError(`data at bytes ${positionBytes}..${positionBytes + lengthBytes} lies outside the primary image (${this.primary.sizeBytes} bytes)`, {
          structure: 'data',
          nid,
        });
      }
      cache = this.primaryCache;
      sourcePositionBytes = positionBytes;
    } else {
      const { info } = backing;
      if (backing.cache === undefined) throw new DeviceUnavailableError(`cannot read its data: ${info.reason ?? 'no device file'}`, this.path, info.deviceId, info.tag);
      if (devicePositionBytes + lengthBytes > backing.limitBytes) {
        throw new CorruptImageError(
          `data at bytes ${devicePositionBytes}..${devicePositionBytes + lengthBytes} lies outside device ${info.deviceId} (${backing.limitBytes} bytes${info.backing === 'flat' ? ', flat' : ''})`,
          { structure: 'data', nid },
        );
      }
      cache = backing.cache;
      sourcePositionBytes = backing.baseBytes + devicePositionBytes;
    }
    if (!Number.isSafeInteger(sourcePositionBytes + lengthBytes)) throw new CorruptImageError('data address out of range', { structure: 'data', nid });
    if (cached) (await cache.read(sourcePositionBytes, lengthBytes)).copy(target, targetOffsetBytes);
    else await cache.source.readInto(target, targetOffsetBytes, lengthBytes, sourcePositionBytes);
  }

  /** Fills `target` with file bytes from `positionBytes` (the caller has clamped the range to i_size). */
  private async readRange(inode: LoadedInode, positionBytes: number, target: Buffer, cached: boolean): Promise<void> {
    if (inode.kind !== 'reg' && inode.kind !== 'dir' && inode.kind !== 'lnk') return;
    const chunk = inode.dataLayout === DATA_LAYOUT.CHUNK_BASED ? this.chunkInfo(inode) : undefined;
    let done = 0;
    while (done < target.length) {
      const at = positionBytes + done;
      const extent = await this.mapAt(inode, at, chunk);
      const n = Math.min(extent.endBytes - at, target.length - done);
      if (n <= 0) throw new CorruptImageError(`no data mapped at byte ${at}`, { structure: 'data', nid: inode.nid });
      if (extent.kind === 'mapped') {
        await this.readPhysical(target, done, n, extent.deviceId, extent.physicalBytes, cached, inode.nid);
      } else if (extent.kind === 'inline') {
        (await this.meta(extent.physicalBytes, n, { structure: 'inline data', nid: inode.nid })).copy(target, done);
      } else {
        target.fill(0, done, done + n);
      }
      done += n;
    }
  }

  private async readInternal(nid: number, offsetBytes: number, lengthBytes: number, cached: boolean): Promise<Buffer> {
    const inode = await this.loadInode(nid);
    // Device and fifo inodes have no data of their own, whatever i_size says.
    if (inode.kind !== 'reg' && inode.kind !== 'dir' && inode.kind !== 'lnk') return Buffer.alloc(0);
    if (offsetBytes >= inode.sizeBytes || lengthBytes <= 0) return Buffer.alloc(0);
    const n = Math.min(lengthBytes, inode.sizeBytes - offsetBytes);
    const out = Buffer.alloc(n);
    await this.readRange(inode, offsetBytes, out, cached);
    return out;
  }

  // ---------------------------------------------------------------- public API

  async stat(nid: number): Promise<ErofsStat> {
    return this.guard(async () => this.statOf(await this.loadInode(nid)));
  }

  /**
   * Bytes `[offsetBytes, offsetBytes + lengthBytes)` of a file, cut at its size; holes read as
   * zeros. At most MAX_READ_BYTES per call: the length is the caller's, the size the image's, and
   * neither decides an allocation alone.
   */
  async read(nid: number, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0 || !Number.isSafeInteger(lengthBytes) || lengthBytes < 0) {
      throw new RangeError(`read(${nid}, ${offsetBytes}, ${lengthBytes}): offset and length must be non-negative integers`);
    }
    if (lengthBytes > MAX_READ_BYTES) throw new RangeError(`read of ${lengthBytes} bytes exceeds ${MAX_READ_BYTES}; use createReadStream`);
    return this.guard(() => this.readInternal(nid, offsetBytes, lengthBytes, false));
  }

  /** The file's bytes in pieces of at most `pieceBytes` (default 1 MiB), for files of any size. */
  async *readPieces(nid: number, pieceBytes = STREAM_PIECE_BYTES): AsyncGenerator<Buffer> {
    const { sizeBytes } = await this.stat(nid);
    for (let at = 0; at < sizeBytes; at += pieceBytes) {
      yield await this.read(nid, at, Math.min(pieceBytes, sizeBytes - at));
    }
  }

  /** A Readable over the file's bytes (backpressure comes from the async iterator: one piece at a time). */
  createReadStream(nid: number, options: { pieceBytes?: number } = {}): Readable {
    return Readable.from(this.readPieces(nid, options.pieceBytes), { objectMode: false });
  }

  async readlink(nid: number): Promise<Buffer> {
    return this.guard(async () => {
      const inode = await this.loadInode(nid);
      if (inode.kind !== 'lnk') throw new TypeError(`${this.path}: nid ${nid} is a ${inode.kind}, not a symlink`);
      if (inode.sizeBytes < 1 || inode.sizeBytes > MAX_SYMLINK_BYTES) {
        throw new CorruptImageError(`symlink target of ${inode.sizeBytes} bytes (must be 1..${MAX_SYMLINK_BYTES})`, { structure: 'symlink', nid });
      }
      return this.readInternal(nid, 0, inode.sizeBytes, true);
    });
  }

  /** One decoded directory block (cached: lookups probe the same blocks again and again). */
  private async dirBlock(inode: LoadedInode, index: number): Promise<Dirent[]> {
    const key = `${inode.nid}:${index}`;
    const cached = this.dirBlocks.get(key);
    if (cached !== undefined) return cached;
    const bs = this.blockSizeBytes;
    const maxsizeBytes = Math.min(bs, inode.sizeBytes - index * bs);
    const block = Buffer.alloc(maxsizeBytes);
    await this.readRange(inode, index * bs, block, true);
    const entries = decodeDirectoryBlock(block, maxsizeBytes, inode.nid, index);
    this.dirBlocks.set(key, entries);
    return entries;
  }

  /** Decoded blocks of a directory, with the checks that need more than one block. */
  private async readDirectory(nid: number): Promise<{ entries: Dirent[]; dotdotNid: number }> {
    const inode = await this.loadInode(nid);
    if (inode.kind !== 'dir') throw new TypeError(`${this.path}: nid ${nid} is a ${inode.kind}, not a directory`);
    const bs = this.blockSizeBytes;
    const blocks = Math.ceil(inode.sizeBytes / bs);
    const all: Dirent[] = [];
    for (let index = 0; index < blocks; index++) {
      const entries = await this.dirBlock(inode, index);
      const previous = all[all.length - 1];
      const first = entries[0];
      // Lookups binary-search over blocks, so order must hold across blocks too.
      if (previous !== undefined && first !== undefined && compareNames(previous.name, first.name) >= 0) {
        throw new CorruptImageError(`names out of order across blocks ("${previous.name.toString()}" before "${first.name.toString()}")`, {
          structure: `directory block ${index}`,
          nid,
        });
      }
      for (const entry of entries) all.push(entry);
    }
    const dot = all.find((e) => e.name.equals(DOT));
    const dotdot = all.find((e) => e.name.equals(DOTDOT));
    if (dot === undefined || dotdot === undefined) {
      throw new CorruptImageError(`directory has no "${dot === undefined ? '.' : '..'}" entry`, { structure: 'directory', nid });
    }
    if (dot.nid !== nid) throw new CorruptImageError(`"." points to nid ${dot.nid}, not to the directory itself`, { structure: 'directory', nid });
    for (const entry of [dot, dotdot]) {
      if (entry.fileType !== FILE_TYPE.DIR && entry.fileType !== FILE_TYPE.UNKNOWN) {
        throw new CorruptImageError(`"${entry.name.toString()}" has file type ${entry.fileType}, not a directory`, { structure: 'directory', nid });
      }
    }
    return { entries: all.filter((e) => e !== dot && e !== dotdot), dotdotNid: dotdot.nid };
  }

  /** Entries of a directory in stored (byte) order, without "." and "..". */
  async readdir(nid: number): Promise<DirEntry[]> {
    return this.guard(async () => (await this.readDirectory(nid)).entries.map((e) => ({ name: e.name, nid: e.nid, fileType: e.fileType })));
  }

  /** nid of `name` in a directory, by binary search over blocks then within the block (like the kernel). */
  private async lookupIn(dirNid: number, name: Buffer): Promise<number | undefined> {
    const inode = await this.loadInode(dirNid);
    const bs = this.blockSizeBytes;
    let low = 0;
    let high = Math.ceil(inode.sizeBytes / bs) - 1;
    while (low <= high) {
      const mid = Math.floor((low + high) / 2);
      const entries = await this.dirBlock(inode, mid);
      const first = entries[0];
      const last = entries[entries.length - 1];
      if (first === undefined || last === undefined) return undefined;
      if (compareNames(name, first.name) < 0) high = mid - 1;
      else if (compareNames(name, last.name) > 0) low = mid + 1;
      else return entries.find((e) => e.name.equals(name))?.nid;
    }
    return undefined;
  }

  /** nid of a '/'-separated path from the root. Symlinks are not followed (a symlink as last component is returned as is). */
  async lookup(path: string | Buffer): Promise<number> {
    const text = typeof path === 'string' ? path : path.toString('utf8');
    const bytes = typeof path === 'string' ? Buffer.from(path, 'utf8') : path;
    return this.guard(async () => {
      const components: Buffer[] = [];
      let start = 0;
      for (let i = 0; i <= bytes.length; i++) {
        if (i === bytes.length || bytes[i] === 0x2f) {
          const component = bytes.subarray(start, i);
          if (component.length > 0 && !component.equals(DOT)) components.push(component);
          start = i + 1;
        }
      }
      if (components.length > this.maxDepth) throw new PathNotFoundError(text, `more than ${this.maxDepth} components`, this.path);
      let nid = this.rootNid;
      for (const [i, component] of components.entries()) {
        const dir = await this.loadInode(nid);
        const sofar = (): string => components.slice(0, i).map((c) => c.toString('utf8')).join('/') || '/';
        if (dir.kind === 'lnk') throw new PathNotFoundError(text, `${sofar()} is a symlink (lookup does not follow symlinks)`, this.path);
        if (dir.kind !== 'dir') throw new PathNotFoundError(text, `${sofar()} is not a directory`, this.path);
        const next = await this.lookupIn(nid, component);
        if (next === undefined) throw new PathNotFoundError(text, `no entry "${component.toString('utf8')}" in ${sofar()}`, this.path);
        nid = next;
      }
      return nid;
    });
  }

  /** Where an inode's xattrs are: the inline header (filter, shared ids). null without xattrs. */
  async xattrLayout(nid: number): Promise<XattrLayout | null> {
    return this.guard(async () => {
      const inode = await this.loadInode(nid);
      if (inode.xattrIbodySizeBytes === 0) return null;
      const ibody = decodeXattrIbody(await this.meta(inode.offsetBytes + inode.inodeSizeBytes, inode.xattrIbodySizeBytes, { structure: 'inline xattrs', nid }), nid);
      return { nameFilter: ibody.nameFilter, sharedIds: ibody.sharedIds, ibodySizeBytes: inode.xattrIbodySizeBytes };
    });
  }

  private xattrRecord(nameIndex: number, suffix: Buffer, value: Buffer, shared: boolean, nid: number): XattrRecord {
    let baseIndex = nameIndex;
    if (nameIndex & XATTR_LONG_PREFIX_FLAG) {
      const prefix = this.longXattrPrefixes[nameIndex & XATTR_LONG_PREFIX_MASK];
      if (prefix === undefined) {
        throw new CorruptImageError(`xattr uses long prefix ${nameIndex & XATTR_LONG_PREFIX_MASK}, but the table has ${this.longXattrPrefixes.length}`, { structure: 'xattr entry', nid });
      }
      baseIndex = prefix.baseIndex;
    } else if (nameIndex === 0 || !SHORT_XATTR_PREFIXES.has(nameIndex)) {
      throw new CorruptImageError(`xattr name index ${nameIndex} is unknown`, { structure: 'xattr entry', nid });
    }
    const name = joinXattrName(nameIndex, suffix, this.longXattrPrefixes);
    return { name, value, nameIndex, suffix, shared, hidden: !LISTED_BASE_INDEXES.has(baseIndex) };
  }

  /** Every xattr of an inode: shared ones (resolved through xattr_blkaddr) first, then inline ones, as stored. */
  async listXattrs(nid: number): Promise<XattrRecord[]> {
    return this.guard(async () => {
      const inode = await this.loadInode(nid);
      if (inode.xattrIbodySizeBytes === 0) return [];
      const ibody = decodeXattrIbody(await this.meta(inode.offsetBytes + inode.inodeSizeBytes, inode.xattrIbodySizeBytes, { structure: 'inline xattrs', nid }), nid);
      const records: XattrRecord[] = [];
      const sharedBaseBytes = this.superblock.xattrBlkaddr * this.blockSizeBytes;
      for (const id of ibody.sharedIds) {
        const atBytes = sharedBaseBytes + id * 4;
        const where = { structure: `shared xattr ${id}`, nid };
        const header = await this.meta(atBytes, XATTR_ENTRY_HEADER_SIZE_BYTES, where);
        const lengthBytes = XATTR_ENTRY_HEADER_SIZE_BYTES + header[0]! + (header[2]! | (header[3]! << 8));
        // Bounded by the header's own fields: at most 4 + 255 + 65535 bytes.
        if (lengthBytes > XATTR_ENTRY_HEADER_SIZE_BYTES + MAX_XATTR_NAME_SUFFIX_BYTES + MAX_XATTR_VALUE_BYTES) throw new CorruptImageError('shared xattr too long', where);
        const { entry } = decodeXattrEntry(await this.meta(atBytes, lengthBytes, where), 0, lengthBytes, where);
        records.push(this.xattrRecord(entry.nameIndex, entry.suffix, entry.value, true, nid));
      }
      for (const entry of ibody.entries) records.push(this.xattrRecord(entry.nameIndex, entry.suffix, entry.value, false, nid));
      return records;
    });
  }

  /** Where each chunk of a chunk-based file lives (one entry per chunk, holes included); flat files give one or two extents on device 0. */
  async chunkMap(nid: number): Promise<ChunkMapEntry[]> {
    return this.guard(async () => {
      const inode = await this.loadInode(nid);
      const bs = this.blockSizeBytes;
      if (inode.sizeBytes === 0 || (inode.kind !== 'reg' && inode.kind !== 'dir' && inode.kind !== 'lnk')) return [];
      if (inode.dataLayout === DATA_LAYOUT.CHUNK_BASED) {
        const info = this.chunkInfo(inode);
        const bytes = await this.meta(info.arrayOffsetBytes, info.chunkCount * info.entrySizeBytes, { structure: 'chunk index', nid });
        return decodeChunkEntries(bytes, info.format, info.chunkCount, this.deviceIdMask, nid).map((entry, k) => ({
          fileOffsetBytes: k * info.chunkSizeBytes,
          lengthBytes: Math.min(info.chunkSizeBytes, inode.sizeBytes - k * info.chunkSizeBytes),
          deviceId: entry.deviceId,
          blkaddr: entry.blkaddr,
        }));
      }
      const out: ChunkMapEntry[] = [];
      let at = 0;
      while (at < inode.sizeBytes) {
        const extent = await this.mapAt(inode, at, undefined);
        if (extent.kind === 'mapped') out.push({ fileOffsetBytes: at, lengthBytes: extent.endBytes - at, deviceId: extent.deviceId, blkaddr: Math.floor(extent.physicalBytes / bs) });
        // Inline tails have no block of their own; report them as device 0 with no block address.
        else out.push({ fileOffsetBytes: at, lengthBytes: extent.endBytes - at, deviceId: 0, blkaddr: null });
        at = extent.endBytes;
      }
      return out;
    });
  }

  /**
   * Every entry of the tree, root first, in byte order of the full path ("a", "a-b", "a/c": a
   * directory's contents come where "name/" sorts among its siblings). Directory loops (a directory
   * reached twice), wrong "..", dirent types that disagree with the inode, and depth beyond maxDepth
   * are CorruptImageErrors.
   */
  async *walk(): AsyncGenerator<WalkEntry> {
    const steps = this.walkSteps();
    while (true) {
      let next: IteratorResult<WalkEntry>;
      try {
        if (this.closed) throw new Error(`${this.path}: image is closed`);
        next = await steps.next();
      } catch (err) {
        throw ErofsImage.withImage(err, this.path);
      }
      if (next.done) return;
      yield next.value;
    }
  }

  private async *walkSteps(): AsyncGenerator<WalkEntry> {
    type Pending = { key: Buffer; entry: WalkEntry; expand: boolean };
    const visited = new Set<number>();
    const rootStat = this.statOf(await this.loadInode(this.rootNid));
    const root: WalkEntry = { path: '.', pathBytes: Buffer.from('.'), nid: this.rootNid, parentNid: this.rootNid, depth: 0, stat: rootStat };
    yield root;
    // A stack of sorted work lists, one per open directory level, each with its read position.
    const stack: { items: Pending[]; next: number }[] = [{ items: [{ key: Buffer.alloc(0), entry: root, expand: true }], next: 0 }];
    while (stack.length > 0) {
      const level = stack[stack.length - 1]!;
      const item = level.items[level.next++];
      if (item === undefined) {
        stack.pop();
        continue;
      }
      if (!item.expand) {
        yield item.entry;
        continue;
      }
      const dir = item.entry;
      if (visited.has(dir.nid)) throw new CorruptImageError(`directory nid ${dir.nid} is reachable twice (a directory loop or hard-linked directory)`, { structure: 'directory', nid: dir.nid, path: dir.path });
      visited.add(dir.nid);
      if (dir.depth >= this.maxDepth) throw new CorruptImageError(`tree deeper than ${this.maxDepth} levels`, { structure: 'directory', nid: dir.nid, path: dir.path });
      const { entries, dotdotNid } = await this.readDirectory(dir.nid);
      if (dotdotNid !== dir.parentNid) {
        throw new CorruptImageError(`".." points to nid ${dotdotNid}, not to the parent nid ${dir.parentNid}`, { structure: 'directory', nid: dir.nid, path: dir.path });
      }
      const items: Pending[] = [];
      for (const dirent of entries) {
        const stat = this.statOf(await this.loadInode(dirent.nid));
        const pathBytes = dir.depth === 0 ? dirent.name : Buffer.concat([dir.pathBytes, Buffer.from('/'), dirent.name]);
        if (dirent.fileType !== FILE_TYPE.UNKNOWN && dirent.fileType !== direntFileTypeOfKind(stat.kind)) {
          throw new CorruptImageError(`dirent type ${dirent.fileType} disagrees with the inode's type (${stat.kind})`, { structure: 'directory', nid: dir.nid, path: pathBytes.toString('utf8') });
        }
        const entry: WalkEntry = { path: pathBytes.toString('utf8'), pathBytes, nid: dirent.nid, parentNid: dir.nid, depth: dir.depth + 1, stat };
        items.push({ key: dirent.name, entry, expand: false });
        if (stat.kind === 'dir') items.push({ key: Buffer.concat([dirent.name, Buffer.from('/')]), entry, expand: true });
      }
      items.sort((a, b) => compareNames(a.key, b.key));
      stack.push({ items, next: 0 });
    }
  }
}


