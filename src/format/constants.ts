/** EROFS on-disk constants (uncompressed subset). Values from Linux fs/erofs/erofs_fs.h. */

export const EROFS_SUPER_MAGIC = 0xe0f5e1e2;
/** The superblock starts after 1024 bytes left free for a boot sector. */
export const SUPERBLOCK_OFFSET_BYTES = 1024;
export const SUPERBLOCK_SIZE_BYTES = 128;
export const SUPERBLOCK_EXTSLOT_SIZE_BYTES = 16;

/** nids count 32-byte slots from meta_blkaddr. */
export const INODE_SLOT_BITS = 5;
export const INODE_SLOT_SIZE_BYTES = 1 << INODE_SLOT_BITS;
export const COMPACT_INODE_SIZE_BYTES = 32;
export const EXTENDED_INODE_SIZE_BYTES = 64;

export const DEVICE_SLOT_SIZE_BYTES = 128;
export const DIRENT_SIZE_BYTES = 12;
export const CHUNK_INDEX_SIZE_BYTES = 8;
export const BLOCK_MAP_ENTRY_SIZE_BYTES = 4;
export const XATTR_IBODY_HEADER_SIZE_BYTES = 12;
export const XATTR_ENTRY_HEADER_SIZE_BYTES = 4;

export const MIN_BLOCK_SIZE_BITS = 9;
/** x86-64 page size: the kernel refuses blocks larger than a page. */
export const MAX_BLOCK_SIZE_BITS = 12;
export const DEFAULT_BLOCK_SIZE_BITS = 12;

/** "No block": a hole in a chunk index or block map, or no full blocks for an inline inode. */
export const NULL_ADDR = 0xffffffff;

export const FEATURE_COMPAT = {
  SB_CHKSUM: 0x01,
  MTIME: 0x02,
  XATTR_FILTER: 0x04,
  SHARED_EA_IN_METABOX: 0x08,
  PLAIN_XATTR_PFX: 0x10,
  ISHARE_XATTRS: 0x20,
} as const;

export const FEATURE_INCOMPAT = {
  ZERO_PADDING: 0x001,
  COMPR_CFGS: 0x002,
  CHUNKED_FILE: 0x004,
  DEVICE_TABLE: 0x008,
  ZTAILPACKING: 0x010,
  FRAGMENTS: 0x020,
  XATTR_PREFIXES: 0x040,
  BIT48: 0x080,
  METABOX: 0x100,
} as const;

export const DATA_LAYOUT = {
  FLAT_PLAIN: 0,
  COMPRESSED_FULL: 1,
  FLAT_INLINE: 2,
  COMPRESSED_COMPACT: 3,
  CHUNK_BASED: 4,
} as const;
export type DataLayout = (typeof DATA_LAYOUT)[keyof typeof DATA_LAYOUT];

/** Dirent file_type values (same numbering as the kernel's FT_*). */
export const FILE_TYPE = {
  UNKNOWN: 0,
  REG: 1,
  DIR: 2,
  CHRDEV: 3,
  BLKDEV: 4,
  FIFO: 5,
  SOCK: 6,
  SYMLINK: 7,
} as const;

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export const CHUNK_FORMAT = {
  BLKBITS_MASK: 0x1f,
  INDEXES: 0x20,
  BIT48: 0x40,
} as const;
/** mkfs caps the chunk-size exponent above the block size at 31 (5 bits allow it). */
export const MAX_CHUNK_BLKBITS = 31;

export const XATTR_INDEX = {
  USER: 1,
  POSIX_ACL_ACCESS: 2,
  POSIX_ACL_DEFAULT: 3,
  TRUSTED: 4,
  LUSTRE: 5,
  SECURITY: 6,
} as const;
/** e_name_index with this bit set names a long prefix: index & 0x7f is its number. */
export const XATTR_LONG_PREFIX_FLAG = 0x80;
export const XATTR_LONG_PREFIX_MASK = 0x7f;
export const XATTR_FILTER_SEED = 0x25bbe08f;
export const XATTR_FILTER_BITS = 32;
export const MAX_XATTR_NAME_SUFFIX_BYTES = 255;
export const MAX_XATTR_VALUE_BYTES = 65535;
export const MAX_SHARED_XATTRS_PER_INODE = 255;

export const MAX_NAME_BYTES = 255;
/** The name of the page cache sharing fingerprint xattr that mkfs.erofs --xattr-inode-digest writes. */
export const FINGERPRINT_XATTR_NAME = 'erofs.fingerprint.v1';
/** overlayfs xattrs our metadata images carry on files whose data an object index holds. */
export const OVERLAY_METACOPY_XATTR = 'trusted.overlay.metacopy';
export const OVERLAY_REDIRECT_XATTR = 'trusted.overlay.redirect';
