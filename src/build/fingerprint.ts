import { FINGERPRINT_XATTR_NAME } from '../format/constants.js';
import type { XattrLongPrefix } from '../format/xattr.js';
import type { MetadataImageOptions } from './metadata.js';

/**
 * Linux 7.0+ shares page cache between inodes whose fingerprint xattr is equal (mount options
 * `inode_share,domain_id=ID`). mkfs.erofs (erofs-utils 1.9.2+) `--xattr-inode-digest` stores it
 * as `erofs.fingerprint.v1`: a name with no short prefix, so it lives behind long prefix 0 (base
 * index 0, the whole name as infix, empty suffix), hidden from listxattr; the value is `sha256:`
 * plus the 32 raw digest bytes of the content. Same bytes as mkfs.erofs, so our images share
 * with theirs too.
 */
export const FINGERPRINT_PREFIX: XattrLongPrefix = { baseIndex: 0, infix: Buffer.from(FINGERPRINT_XATTR_NAME, 'latin1') };

/** Image options that declare the fingerprint prefix and point the superblock's ishare id at it. */
export const FINGERPRINT_IMAGE_OPTIONS: Pick<MetadataImageOptions, 'longXattrPrefixes' | 'ishareXattrPrefixId'> = {
  longXattrPrefixes: [FINGERPRINT_PREFIX],
  ishareXattrPrefixId: 0,
};

const FINGERPRINT_VALUE_PREFIX = Buffer.from('sha256:', 'latin1');
const FINGERPRINT_VALUE_BYTES = FINGERPRINT_VALUE_PREFIX.length + 32;

/**
 * The fingerprint xattr values of files with these content digests (64 hex digits each), as views
 * of one buffer: one allocation for all the files of an image, where a Buffer per digest and per
 * value cost three per file in the finish of a build, which nothing runs beside.
 */
export function fingerprintValues(contentSha256Hexes: readonly string[]): Buffer[] {
  const slab = Buffer.allocUnsafeSlow(contentSha256Hexes.length * FINGERPRINT_VALUE_BYTES);
  return contentSha256Hexes.map((hex, i) => {
    const at = i * FINGERPRINT_VALUE_BYTES;
    slab.set(FINGERPRINT_VALUE_PREFIX, at);
    if (slab.write(hex, at + FINGERPRINT_VALUE_PREFIX.length, 32, 'hex') !== 32) throw new Error(`internal: content digest ${JSON.stringify(hex)} is not 64 hex digits`);
    return slab.subarray(at, at + FINGERPRINT_VALUE_BYTES);
  });
}
