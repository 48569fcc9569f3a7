import { access } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The bin/ directory of erofs-utils 1.9.4, which scripts/erofs-utils-reference.sh builds from Debian's
 * source (scripts/setup.sh runs it). Debian bookworm's 1.5 has no `fsck.erofs --xattr-inode-digest`
 * and cannot read long xattr name prefixes. Missing is an error, never a skip.
 */
export async function erofsUtils194Bin(): Promise<string> {
  const bin = join(process.env['EROFS_UTILS_REF_DIR'] ?? '/var/tmp/mkfs-erofs-ts-erofs-utils-1.9.4', 'bin');
  try {
    await access(join(bin, 'fsck.erofs'));
  } catch {
    throw new Error(`erofs-utils 1.9.4 is not in ${bin}: run scripts/setup.sh (it builds it with scripts/erofs-utils-reference.sh)`);
  }
  return bin;
}
