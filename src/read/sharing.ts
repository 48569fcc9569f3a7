import { FINGERPRINT_XATTR_NAME, OVERLAY_REDIRECT_XATTR } from '../format/constants.js';
import { sharingEligibility } from '../format/eligibility.js';
import type { ChunkMapEntry, ErofsImage, ErofsStat } from './image.js';

/**
 * Whether a regular file's page cache can be shared, read back from an image: its data must live in
 * one blob (the RFC's rule) and, for stock kernels, be redirected to that blob's object index. The
 * same rule as the build report's, so the two can be compared file by file.
 */
export interface FileSharing {
  eligible: boolean;
  reason?: string;
  /** Device holding all the data, when there is exactly one. */
  deviceId?: number;
  blobTag?: string;
  /** The object (path in the blob's object index) the file is redirected to. */
  object?: string;
  /** `sha256:` + hex, from the erofs.fingerprint.v1 xattr (Linux 7.0+ inode_share). */
  fingerprint?: string;
}

export async function fileSharing(image: ErofsImage, nid: number, stat: ErofsStat, chunkMap?: readonly ChunkMapEntry[]): Promise<FileSharing> {
  const map = chunkMap ?? (await image.chunkMap(nid));
  const xattrs = await image.listXattrs(nid);
  const redirect = xattrs.find((x) => x.name.toString('latin1') === OVERLAY_REDIRECT_XATTR)?.value.toString('utf8');
  const fingerprintValue = xattrs.find((x) => x.name.toString('latin1') === FINGERPRINT_XATTR_NAME)?.value;
  const fingerprint = fingerprintValue !== undefined && fingerprintValue.length === 39 ? `sha256:${fingerprintValue.subarray(7).toString('hex')}` : undefined;
  const verdict = sharingEligibility(stat.chunk === null ? map.map((c) => ({ ...c, deviceId: 0 })) : map, stat.sizeBytes);
  const extra = fingerprint === undefined ? {} : { fingerprint };
  if (!verdict.eligible) return { eligible: false, reason: verdict.reason, ...extra };
  const blobTag = image.devices[verdict.deviceId - 1]?.tag;
  const where = { deviceId: verdict.deviceId, ...(blobTag === undefined ? {} : { blobTag }), ...extra };
  if (redirect === undefined) return { eligible: false, reason: 'not in the object index of its blob', ...where };
  return { eligible: true, object: redirect, ...where };
}

export type { SharingClass } from '../format/eligibility.js';
export { addToSharingClasses } from '../format/eligibility.js';
