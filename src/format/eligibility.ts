/**
 * Page cache sharing eligibility of a regular file, from its chunk indexes alone. The rule (from the
 * 2023 RFC, and what our object indexes need): the file's whole data must live in one blob device.
 * A chunk never crosses a device, so a single-chunk file always qualifies.
 */
export type SharingEligibility =
  | { eligible: true; deviceId: number }
  | { eligible: false; reason: 'empty' | 'no data (all holes)' | 'data in the metadata image' | 'data spans several blobs' | 'not in the object index of its blob'; deviceIds: number[] };

export function sharingEligibility(chunks: readonly { deviceId: number; blkaddr: number | null }[], sizeBytes: number): SharingEligibility {
  if (sizeBytes === 0) return { eligible: false, reason: 'empty', deviceIds: [] };
  // Most files have their data on one device: found in one pass, without building the set below
  // (this runs for every file of every image, on the build's critical path).
  let only: number | undefined;
  for (const chunk of chunks) {
    if (chunk.blkaddr === null) continue;
    if (only === undefined) only = chunk.deviceId;
    else if (chunk.deviceId !== only) {
      only = -1;
      break;
    }
  }
  if (only !== undefined && only > 0) return { eligible: true, deviceId: only };
  const devices = [...new Set(chunks.filter((c) => c.blkaddr !== null).map((c) => c.deviceId))].sort((a, b) => a - b);
  if (devices.length === 0) return { eligible: false, reason: 'no data (all holes)', deviceIds: [] };
  if (devices.length > 1) return { eligible: false, reason: 'data spans several blobs', deviceIds: devices };
  if (devices[0] === 0) return { eligible: false, reason: 'data in the metadata image', deviceIds: devices };
  return { eligible: true, deviceId: devices[0]! };
}

/** Size classes the build report and `inspect` group files by. */
export function fileSizeClass(sizeBytes: number): string {
  if (sizeBytes === 0) return 'empty';
  if (sizeBytes < 4096) return 'under 4 KiB';
  if (sizeBytes < 1 << 20) return '4 KiB to 1 MiB';
  if (sizeBytes < 64 << 20) return '1 MiB to 64 MiB';
  return '64 MiB and more';
}

/** Per size class: how many files and bytes can share page cache, and why the others cannot. */
export interface SharingClass {
  files: number;
  bytes: number;
  eligibleFiles: number;
  eligibleBytes: number;
  ineligible: Record<string, { files: number; bytes: number }>;
}

/**
 * Adds one distinct regular inode to per-size-class totals: the shape of the build report, and of
 * `inspect`'s summary, which must agree with it.
 */
export function addToSharingClasses(classes: Record<string, SharingClass>, sizeBytes: number, verdict: { eligible: boolean; reason?: string }): void {
  const entry = (classes[fileSizeClass(sizeBytes)] ??= { files: 0, bytes: 0, eligibleFiles: 0, eligibleBytes: 0, ineligible: {} });
  entry.files++;
  entry.bytes += sizeBytes;
  if (verdict.eligible) {
    entry.eligibleFiles++;
    entry.eligibleBytes += sizeBytes;
  } else {
    const reason = (entry.ineligible[verdict.reason ?? 'unknown'] ??= { files: 0, bytes: 0 });
    reason.files++;
    reason.bytes += sizeBytes;
  }
}
