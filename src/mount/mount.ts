import { randomBytes } from 'node:crypto';
import { access, mkdir, realpath, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { ErofsImage } from '../read/index.js';
import { ArtifactNotFoundError, InvalidMountOptionError, MountpointError, NotMountedError, NotRootError } from './errors.js';
import { chooseMechanism, DEFAULT_DOMAIN_ID, erofsMountArgv, factsNeeded, overlayMountArgv, type MechanismFacts, type MechanismRequest } from './mechanism.js';
import { readMountinfo, topMountAt } from './mountinfo.js';
import { probeInodeShare, probeOverlay } from './probe.js';
import { MOUNTS_SUBDIR, OBJECTS_SUBDIR, Runtime, withRuntime } from './runtime.js';
import { loadState, type Mechanism, type MountRecord, type SharedRecord } from './state.js';

/** Where mount state lives unless `--runtime-dir` says otherwise (/run: gone at reboot, like the mounts). */
export const DEFAULT_RUNTIME_DIR = '/run/mkfs-erofs-ts';

export interface MountOptions {
  /** auto (default): inode_share if the kernel has it, else overlay object indexes, else plain with a warning. */
  mechanism?: MechanismRequest;
  /** A plain EROFS mount with the blobs as devices: no probing, no sharing. */
  noShare?: boolean;
  runtimeDir?: string;
  /** The store holding `blobs/sha256/<digest>` and `objects/<digest>.erofs`; default: the image's directory (where `build` puts them unless given --store). */
  store?: string;
  /** Trusted domain for inode_share (default mkfs-erofs-ts): only images mounted with the same one share. */
  domainId?: string;
}

export interface MountResult {
  mountpoint: string;
  metadataImage: string;
  mechanism: Mechanism;
  /** Why this mechanism (the probe's verdict). */
  reason: string;
  warnings: string[];
  /** Loop devices of the blobs, in device-table order (shared with other mounts). */
  blobDevices: string[];
  /** Overlay: the object index mounts stacked as data-only layers, and which of them this mount reused. */
  objectIndexes: { digest: string; mountpoint: string; reused: boolean }[];
}

export function requireRoot(action: string): void {
  // mount(2) and loop-control need CAP_SYS_ADMIN in the initial namespaces; uid 0 is how that is normally had.
  if (typeof process.getuid === 'function' && process.getuid() !== 0) throw new NotRootError(action);
}

function checkRuntimeDir(runtimeDir: string): string {
  const dir = resolve(runtimeDir);
  // The overlay's lowerdir lists paths under it; the legacy mount data string cannot escape these.
  if (/[:,\\\s]/.test(dir)) throw new InvalidMountOptionError('--runtime-dir', `"${dir}" must not contain ':', ',', '\\' or white space (overlayfs layer paths are given in mount options)`);
  return dir;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

interface ImageFacts {
  path: string;
  /** Device-table tags (sha256 hex of each blob), slot order. */
  tags: string[];
  hasFingerprints: boolean;
}

/**
 * EROFS_FEATURE_COMPAT_ISHARE_XATTRS: the superblock names the xattr prefix that holds page cache
 * fingerprints. (src/format has it as FEATURE_COMPAT.ISHARE_XATTRS; src/mount reads images only
 * through src/read, which exposes the raw superblock field but not the constant.)
 */
const ISHARE_XATTRS_COMPAT_BIT = 0x20;

async function readImageFacts(metadataImage: string): Promise<ImageFacts> {
  const path = await realpath(metadataImage);
  // Only the superblock and device table are needed; blobs are not opened (blobDirs empty).
  const image = await ErofsImage.open(path, { blobDirs: [] });
  try {
    return {
      path,
      tags: image.devices.map((d) => d.tag),
      hasFingerprints: (image.superblock.featureCompat & ISHARE_XATTRS_COMPAT_BIT) !== 0,
    };
  } finally {
    await image.close();
  }
}

async function checkMountpoint(mountpoint: string): Promise<string> {
  let path: string;
  try {
    path = await realpath(mountpoint);
  } catch {
    throw new MountpointError(resolve(mountpoint), 'no such directory; create it first');
  }
  if (!(await stat(path)).isDirectory()) throw new MountpointError(path, 'not a directory');
  const top = topMountAt(await readMountinfo(), path);
  // Mounting over an existing mount would hide it, and after a crash we could not tell whose mount is on top.
  if (top !== undefined) throw new MountpointError(path, `already a mount point (${top.fstype} ${top.source}); unmount it or choose another directory`);
  return path;
}

/**
 * Mounts a metadata image read-only at `mountpoint` with page cache sharing (see MountOptions).
 * Everything it sets up is recorded in the runtime directory's state; on failure all of it is
 * undone before the error is thrown.
 */
export async function mountImage(metadataImage: string, mountpoint: string, options: MountOptions = {}): Promise<MountResult> {
  requireRoot('erofs mount');
  const runtimeDir = checkRuntimeDir(options.runtimeDir ?? DEFAULT_RUNTIME_DIR);
  const image = await readImageFacts(metadataImage);
  const store = resolve(options.store ?? dirname(image.path));
  const blobFiles: string[] = [];
  for (const tag of image.tags) {
    const file = join(store, 'blobs', 'sha256', tag);
    if (!/^[0-9a-f]{64}$/.test(tag) || !(await exists(file))) {
      throw new ArtifactNotFoundError(`blob ${tag || '(empty tag)'} of ${image.path}`, file, 'pass --store DIR, the store the image was built into');
    }
    blobFiles.push(await realpath(file));
  }
  const requested = await realpath(mountpoint).catch(() => resolve(mountpoint));

  return withRuntime(runtimeDir, async (runtime) => {
    const clash = runtime.state.mounts.find((m) => m.mountpoint === requested);
    if (clash !== undefined) throw new MountpointError(requested, `already mounted by erofs mount (${clash.metadataImage}); erofs umount it first`);
    const target = await checkMountpoint(mountpoint);
    const id = randomBytes(8).toString('hex');
    const record: MountRecord = {
      key: `mount:${id}`,
      id,
      status: 'setting-up',
      pid: process.pid,
      steps: [],
      uses: [],
      mountpoint: target,
      metadataImage: image.path,
      store,
      mechanism: 'plain',
      createdAt: new Date().toISOString(),
      layers: [],
      warnings: [],
    };
    runtime.state.mounts.push(record);
    await runtime.save();
    try {
      const result = await setUp(runtime, record, image, blobFiles, options);
      record.status = 'ready';
      await runtime.save();
      return result;
    } catch (error) {
      await runtime.teardown(record).catch((cleanupError: unknown) => {
        // Left as `tearing-down` in the state: the next mount, umount or --list finishes it.
        process.emitWarning(`erofs mount: cleanup after a failure also failed: ${String(cleanupError)}`);
      });
      throw error;
    }
  });
}

async function setUp(runtime: Runtime, record: MountRecord, image: ImageFacts, blobFiles: readonly string[], options: MountOptions): Promise<MountResult> {
  const blobs: SharedRecord[] = [];
  for (const [slot, file] of blobFiles.entries()) {
    const digest = image.tags[slot]!;
    blobs.push(await acquireBlob(runtime, record, digest, file));
  }
  const blobDevices = blobs.map((b) => b.path);
  const metaLoop = await runtime.attachLoop(record, image.path);

  const request = options.mechanism ?? 'auto';
  const facts: MechanismFacts = {};
  for (const fact of factsNeeded(request, options.noShare === true)) {
    if (fact === 'inodeShare') facts.inodeShare = await probeInodeShare(runtime, record, { source: metaLoop, devices: blobDevices, hasFingerprints: image.hasFingerprints });
    // auto stops at the first mechanism that works: no overlay probe when inode_share is there.
    if (fact === 'overlay' && facts.inodeShare?.available !== true) facts.overlay = await probeOverlay(runtime, record);
  }
  const decision = chooseMechanism(request, facts, { noShare: options.noShare });
  record.mechanism = decision.mechanism;
  record.warnings = decision.warnings;
  await runtime.save();

  const result: MountResult = {
    mountpoint: record.mountpoint,
    metadataImage: image.path,
    mechanism: decision.mechanism,
    reason: decision.reason,
    warnings: decision.warnings,
    blobDevices,
    objectIndexes: [],
  };
  if (decision.mechanism !== 'overlay') {
    const domain = decision.mechanism === 'inode-share' ? (options.domainId ?? DEFAULT_DOMAIN_ID) : undefined;
    await runtime.mount(record, record.mountpoint, 'erofs', erofsMountArgv({ source: metaLoop, target: record.mountpoint, devices: blobDevices, inodeShareDomain: domain }), ['erofs']);
    return result;
  }

  // Overlay: each blob's object index mounted once per host (reused when another image has it),
  // the metadata image mounted privately, and the overlay stacked on both.
  const dataLayers: string[] = [];
  for (const blob of blobs) {
    const objectIndex = join(record.store, 'objects', `${blob.digest}.erofs`);
    const reused = runtime.state.shared.some((s) => s.key === `objects:${blob.digest}` && s.status === 'ready');
    const objects = await acquireObjectIndex(runtime, record, blob, objectIndex);
    dataLayers.push(objects.path);
    result.objectIndexes.push({ digest: blob.digest, mountpoint: objects.path, reused });
  }
  const mountDir = join(runtime.dir, MOUNTS_SUBDIR, record.id);
  await mkdir(join(runtime.dir, MOUNTS_SUBDIR), { recursive: true, mode: 0o700 });
  await runtime.makeDir(record, mountDir);
  const metaDir = join(mountDir, 'meta');
  await runtime.makeDir(record, metaDir);
  await runtime.mount(record, metaDir, 'erofs', erofsMountArgv({ source: metaLoop, target: metaDir, devices: blobDevices }), ['erofs']);
  record.layers = [metaDir, ...dataLayers];
  await runtime.mount(record, record.mountpoint, 'overlay', overlayMountArgv(metaDir, dataLayers, record.mountpoint), ['overlayfs', 'overlay']);
  return result;
}

/** A blob's loop device, attached once per host. */
function acquireBlob(runtime: Runtime, user: MountRecord | SharedRecord, digest: string, file: string): Promise<SharedRecord> {
  return runtime.acquireShared(user, { key: `blob:${digest}`, kind: 'blob', digest, file }, async (record) => {
    record.path = await runtime.attachLoop(record, file);
    await runtime.save();
  });
}

/** A blob's object index, mounted once per host under the runtime directory with the blob as its device. */
async function acquireObjectIndex(runtime: Runtime, user: MountRecord, blob: SharedRecord, objectIndex: string): Promise<SharedRecord> {
  if (!(await exists(objectIndex))) {
    throw new ArtifactNotFoundError(`object index of blob ${blob.digest}`, objectIndex, 'rebuild the image into this store, or mount with --no-share');
  }
  const file = await realpath(objectIndex);
  return runtime.acquireShared(user, { key: `objects:${blob.digest}`, kind: 'objects', digest: blob.digest, file }, async (record) => {
    const blobRecord = await acquireBlob(runtime, record, blob.digest, blob.file);
    const loop = await runtime.attachLoop(record, file);
    await mkdir(join(runtime.dir, OBJECTS_SUBDIR), { recursive: true, mode: 0o755 });
    const dir = join(runtime.dir, OBJECTS_SUBDIR, blob.digest);
    await runtime.makeDir(record, dir);
    await runtime.mount(record, dir, 'erofs', erofsMountArgv({ source: loop, target: dir, devices: [blobRecord.path] }), ['erofs']);
    record.path = dir;
    await runtime.save();
  });
}

export interface UnmountOptions {
  runtimeDir?: string;
}

export interface UnmountResult {
  mountpoint: string;
  metadataImage: string;
  mechanism: Mechanism;
  /** Shared resources released because no other mount uses them any more. */
  released: string[];
}

/** Undoes exactly what `mountImage` did for `mountpoint`, releasing shared object indexes and blob devices no other mount uses. */
export async function unmountImage(mountpoint: string, options: UnmountOptions = {}): Promise<UnmountResult> {
  requireRoot('erofs umount');
  const runtimeDir = checkRuntimeDir(options.runtimeDir ?? DEFAULT_RUNTIME_DIR);
  const target = await realpath(mountpoint).catch(() => resolve(mountpoint));
  return withRuntime(runtimeDir, async (runtime) => {
    const record = runtime.state.mounts.find((m) => m.mountpoint === target);
    if (record === undefined) throw new NotMountedError(target, runtimeDir);
    const sharedBefore = new Set(runtime.state.shared.map((s) => s.key));
    // The visible mount first and without forcing: a busy mount is the user's to resolve, and then nothing has changed.
    let final = -1;
    record.steps.forEach((s, i) => {
      if (s.kind === 'mount' && s.target === target) final = i;
    });
    // (MountBusyError from here leaves the record as it was.)
    if (final >= 0) await runtime.undoStepsFrom(record, final, { lazy: false });
    await runtime.teardown(record);
    const left = new Set(runtime.state.shared.map((s) => s.key));
    return { mountpoint: target, metadataImage: record.metadataImage, mechanism: record.mechanism, released: [...sharedBefore].filter((k) => !left.has(k)) };
  });
}

export interface MountListing {
  runtimeDir: string;
  mounts: { mountpoint: string; metadataImage: string; mechanism: Mechanism; status: string; createdAt: string; objectIndexes: string[]; loopDevices: string[]; warnings: string[] }[];
  shared: { kind: 'blob' | 'objects'; digest: string; file: string; path: string; users: number }[];
  /** What reconciling cleaned up (crashed mounts, mounts removed by hand). */
  notes: string[];
}

function describe(runtimeDir: string, mounts: readonly MountRecord[], shared: readonly SharedRecord[], notes: string[]): MountListing {
  return {
    runtimeDir,
    mounts: mounts.map((m) => ({
      mountpoint: m.mountpoint,
      metadataImage: m.metadataImage,
      mechanism: m.mechanism,
      status: m.status,
      createdAt: m.createdAt,
      objectIndexes: m.uses.filter((k) => k.startsWith('objects:')).map((k) => k.slice('objects:'.length)),
      loopDevices: m.steps.flatMap((s) => (s.kind === 'loop' ? [s.device] : [])),
      warnings: m.warnings,
    })),
    shared: shared.map((s) => ({ kind: s.kind, digest: s.digest, file: s.file, path: s.path, users: s.users.length })),
    notes,
  };
}

/**
 * What `erofs mount` has mounted. As root, the state is reconciled first (so a crashed mount shows
 * up cleaned); otherwise it is only read.
 */
export async function listMounts(runtimeDir: string = DEFAULT_RUNTIME_DIR): Promise<MountListing> {
  const dir = checkRuntimeDir(runtimeDir);
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    if (!(await exists(dir))) return describe(dir, [], [], []);
    const { state } = await loadState(dir);
    return describe(dir, state.mounts, state.shared, []);
  }
  return withRuntime(dir, async (runtime) => describe(dir, runtime.state.mounts, runtime.state.shared, runtime.notes));
}
