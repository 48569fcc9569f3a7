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

export function fingerprintXattr(contentSha256: Buffer): [string, Buffer] {
  return [FINGERPRINT_XATTR_NAME, Buffer.concat([Buffer.from('sha256:', 'latin1'), contentSha256])];
}
