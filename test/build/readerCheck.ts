import assert from 'node:assert/strict';
import { FINGERPRINT_XATTR_NAME } from '../../src/format/constants.js';
import { snapshotImage } from '../helpers/imageTree.js';
import { assertTreesEqual, type TreeSnapshot } from '../helpers/tree.js';

/** Our reader must return exactly the tree the kernel shows for the same image. */
export async function assertReaderMatches(metadataImage: string, blobs: readonly string[], mounted: TreeSnapshot): Promise<void> {
  assertTreesEqual(mounted, await snapshotImage(metadataImage, blobs));
}

/**
 * Every non-empty regular file carries `erofs.fingerprint.v1` = "sha256:" + the 32 raw bytes of the
 * SHA-256 of its content, where the digest comes from the source tree's snapshot (node:crypto over
 * the source files), not from the builder.
 */
export async function assertFingerprints(metadataImage: string, blobs: readonly string[], source: TreeSnapshot): Promise<void> {
  const image = await snapshotImage(metadataImage, blobs, { includeHidden: true });
  let checked = 0;
  for (const [path, entry] of source) {
    if (entry.type !== 'reg') continue;
    const value = image.get(path)?.xattrs[FINGERPRINT_XATTR_NAME];
    if (entry.sizeBytes === 0) {
      assert.equal(value, undefined, `${path}: empty files carry no fingerprint (as mkfs.erofs)`);
      checked++;
      continue;
    }
    assert.equal(value, Buffer.from('sha256:').toString('hex') + entry.sha256, `${path}: fingerprint`);
    checked++;
  }
  assert.ok(checked > 0, 'no regular file was checked');
}
