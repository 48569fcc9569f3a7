import { createHash } from 'node:crypto';
import { ErofsImage } from '../../src/read/index.js';
import { formatMtime, type EntrySnapshot, type TreeSnapshot } from './tree.js';

export interface ImageSnapshotOptions {
  /**
   * Also record xattrs the kernel does not list (no namespace handler: the page cache fingerprint
   * `erofs.fingerprint.v1`, lustre.*). Off by default so the result compares equal to
   * `snapshotTree(mountpoint)`.
   */
  includeHidden?: boolean;
}

/**
 * The tree our reader sees, in the shape `snapshotTree` (test/helpers/tree.ts) gives for a mounted
 * image: same keys ('.' for the root), the same fields with the same formatting (mode & 07777,
 * "SEC.NSEC" mtimes, "MAJOR:MINOR" rdev, hex sha256 and xattr values, hardlink groups by nid, which
 * is what the kernel reports as st_ino). Compare the two with `assertTreesEqual`.
 */
export async function imageToSnapshot(image: ErofsImage, opts: ImageSnapshotOptions = {}): Promise<TreeSnapshot> {
  const snapshot: TreeSnapshot = new Map();
  const pathsByNid = new Map<number, string[]>();
  for await (const entry of image.walk()) {
    const { stat } = entry;
    const snap: EntrySnapshot = {
      path: entry.path,
      type: stat.kind,
      mode: stat.mode & 0o7777,
      uid: stat.uid,
      gid: stat.gid,
      mtime: formatMtime(stat.mtimeSec * 1_000_000_000n + BigInt(stat.mtimeNsec)),
      nlink: stat.nlink,
      xattrs: {},
    };
    if (stat.rdev !== null) snap.rdev = `${stat.rdev.major}:${stat.rdev.minor}`;
    if (stat.kind === 'reg') {
      snap.sizeBytes = stat.sizeBytes;
      const hash = createHash('sha256');
      for await (const piece of image.readPieces(entry.nid)) hash.update(piece);
      snap.sha256 = hash.digest('hex');
    }
    if (stat.kind === 'lnk') snap.target = (await image.readlink(entry.nid)).toString('utf8');
    const xattrs = (await image.listXattrs(entry.nid)).filter((x) => opts.includeHidden === true || !x.hidden);
    snap.xattrs = Object.fromEntries(
      xattrs.map((x) => [x.name.toString('utf8'), x.value.toString('hex')] as const).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    );
    if (stat.kind !== 'dir' && stat.nlink > 1) {
      const group = pathsByNid.get(entry.nid);
      if (group) group.push(entry.path);
      else pathsByNid.set(entry.nid, [entry.path]);
    }
    snapshot.set(entry.path, snap);
  }
  for (const paths of pathsByNid.values()) {
    const smallest = paths.reduce((a, b) => (b < a ? b : a));
    for (const p of paths) (snapshot.get(p) as EntrySnapshot).linkGroup = smallest;
  }
  return new Map([...snapshot.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Opens `metadataImage` with `devices` (device-table order), snapshots it, and closes it. */
export async function snapshotImage(metadataImage: string, devices: readonly string[] = [], opts: ImageSnapshotOptions = {}): Promise<TreeSnapshot> {
  const image = await ErofsImage.open(metadataImage, devices.length > 0 ? { devices } : {});
  try {
    return await imageToSnapshot(image, opts);
  } finally {
    await image.close();
  }
}
