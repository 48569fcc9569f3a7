import assert from 'node:assert/strict';
import { FINGERPRINT_XATTR_NAME } from '../../src/format/constants.js';
import { snapshotImage } from '../helpers/imageTree.js';
import { OVERLAY_METACOPY_XATTR, OVERLAY_REDIRECT_XATTR } from '../../src/build/objectIndex.js';
import { assertTreesEqual, type DiffOptions, type TreeSnapshot } from '../helpers/tree.js';

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

/** Comparing a source tree with an image of it: the object redirects are the only xattrs the build adds. */
export const SOURCE_VS_IMAGE: DiffOptions = {
  ignore: (_path, field) => field === `xattrs.${OVERLAY_METACOPY_XATTR}` || field === `xattrs.${OVERLAY_REDIRECT_XATTR}`,
};

/**
 * Files the build marked for overlay page cache sharing carry an empty metacopy xattr and a redirect
 * to `/<2 hex>/<sha256 of the content>`, the digest taken from the source tree. Returns how many.
 */
export function assertObjectRedirects(source: TreeSnapshot, image: TreeSnapshot): number {
  let redirected = 0;
  for (const [path, entry] of image) {
    const redirect = entry.xattrs[OVERLAY_REDIRECT_XATTR];
    if (redirect === undefined) continue;
    const expected = source.get(path);
    assert.equal(expected?.type, 'reg', `${path}: only regular files are redirected`);
    const sha = expected!.sha256!;
    assert.equal(Buffer.from(redirect, 'hex').toString(), `/${sha.slice(0, 2)}/${sha}`, `${path}: redirect names its content's object`);
    assert.equal(entry.xattrs[OVERLAY_METACOPY_XATTR], '', `${path}: metacopy marker`);
    redirected++;
  }
  return redirected;
}
