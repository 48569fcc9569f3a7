import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, truncate, writeFile } from 'node:fs/promises';
import { release } from 'node:os';
import { join } from 'node:path';
import { KernelCommandError } from './errors.js';
import { erofsMountArgv, overlayMountArgv, type MechanismFacts, type Verdict } from './mechanism.js';
import { hasOption, readMountinfo, topMountAt } from './mountinfo.js';
import { PROBE_PREFIX, type Runtime } from './runtime.js';
import { currentBootId, type Holder } from './state.js';

/**
 * What the running kernel can do, found by trying it rather than by its version string (distribution
 * kernels backport features, and a feature can be configured out):
 * - inode_share: mounting an image that has fingerprints with `inode_share,domain_id=`. Linux before
 *   7.0 refuses the unknown option; 7.0+ built without CONFIG_EROFS_FS_PAGE_CACHE_SHARE accepts it but
 *   only logs "not supported" and drops it. So the test is whether the option is still there in the
 *   mount's super options (/proc/self/mountinfo), which erofs prints only when it is in effect.
 * - overlay data-only layers (Linux 6.5+): a read-only overlay on a scratch tmpfs, one metacopy file
 *   redirected into a `::` data-only layer, read back through the overlay.
 * Verdicts are kept per boot in the runtime directory, so the probes run once.
 */

const CAPABILITIES_FILE = 'capabilities.json';

interface CapabilityCache extends MechanismFacts {
  bootId: string;
  kernelRelease: string;
}

async function loadCache(runtimeDir: string): Promise<CapabilityCache> {
  const bootId = await currentBootId();
  const fresh: CapabilityCache = { bootId, kernelRelease: release() };
  const text = await readFile(join(runtimeDir, CAPABILITIES_FILE), 'utf8').catch(() => undefined);
  if (text === undefined) return fresh;
  try {
    const cached = JSON.parse(text) as CapabilityCache;
    return cached.bootId === bootId && cached.kernelRelease === fresh.kernelRelease ? cached : fresh;
  } catch {
    return fresh;
  }
}

async function saveCache(runtimeDir: string, cache: CapabilityCache): Promise<void> {
  const path = join(runtimeDir, CAPABILITIES_FILE);
  const temp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`;
  await writeFile(temp, `${JSON.stringify(cache, null, 2)}\n`);
  await rename(temp, path).catch(async (error) => {
    await rm(temp, { force: true });
    throw error;
  });
}

/** The cached verdicts of this boot (empty before any probe ran). */
export async function cachedCapabilities(runtimeDir: string): Promise<CapabilityCache> {
  return loadCache(runtimeDir);
}

export interface InodeShareProbeTarget {
  /** Loop device of the metadata image, and of its blobs in device-table order. */
  source: string;
  devices: readonly string[];
  /** The image's superblock has the ishare_xattrs feature (its files carry erofs.fingerprint.v1). */
  hasFingerprints: boolean;
}

const INODE_SHARE_ADVICE = 'page cache sharing by fingerprint needs Linux 7.0+ built with CONFIG_EROFS_FS_PAGE_CACHE_SHARE';

/** Probes inode_share with the image about to be mounted (its probe mount is a step of `holder`, undone before returning). */
export async function probeInodeShare(runtime: Runtime, holder: Holder, target: InodeShareProbeTarget): Promise<Verdict> {
  if (!target.hasFingerprints) {
    return { available: false, reason: 'the image has no erofs.fingerprint.v1 xattrs (built with --no-fingerprints), which inode_share shares by' };
  }
  const cache = await loadCache(runtime.dir);
  if (cache.inodeShare !== undefined) return cache.inodeShare;
  const firstStep = holder.steps.length;
  const dir = join(runtime.dir, `${PROBE_PREFIX}${randomBytes(6).toString('hex')}`);
  let verdict: Verdict;
  try {
    await runtime.makeDir(holder, dir);
    try {
      await runtime.mount(holder, dir, 'erofs', erofsMountArgv({ source: target.source, target: dir, devices: target.devices, inodeShareDomain: 'mkfs-erofs-ts-probe' }), ['erofs']);
      const entry = topMountAt(await readMountinfo(), dir);
      verdict = entry !== undefined && hasOption(entry.superOptions, 'inode_share')
        ? { available: true, reason: `the kernel (${release()}) kept inode_share on a probe mount` }
        : { available: false, reason: `the kernel (${release()}) accepted but dropped inode_share on a probe mount; ${INODE_SHARE_ADVICE}` };
    } catch (error) {
      if (!(error instanceof KernelCommandError)) throw error;
      const said = error.kernelMessage ?? error.output.trim().split('\n')[0];
      verdict = { available: false, reason: `the kernel (${release()}) refused inode_share (${said}); ${INODE_SHARE_ADVICE}` };
    }
  } finally {
    await runtime.undoStepsFrom(holder, firstStep);
  }
  await saveCache(runtime.dir, { ...cache, inodeShare: verdict });
  return verdict;
}

const PROBE_DATA = Buffer.from('mkfs-erofs-ts: overlayfs data-only layer probe\n');

/** Probes overlayfs data-only lower layers with metacopy + redirect on a scratch tmpfs (steps of `holder`, undone before returning). */
export async function probeOverlay(runtime: Runtime, holder: Holder): Promise<Verdict> {
  const cache = await loadCache(runtime.dir);
  if (cache.overlay !== undefined) return cache.overlay;
  const firstStep = holder.steps.length;
  const dir = join(runtime.dir, `${PROBE_PREFIX}${randomBytes(6).toString('hex')}`);
  let verdict: Verdict;
  try {
    await runtime.makeDir(holder, dir);
    // tmpfs: trusted.* xattrs work there whatever filesystem holds the runtime directory.
    await runtime.mount(holder, dir, 'tmpfs', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'mkfs-erofs-ts-probe', dir], ['tmpfs']);
    const [meta, data, merged] = ['meta', 'data', 'merged'].map((name) => join(dir, name)) as [string, string, string];
    for (const sub of [meta, data, merged]) await mkdir(sub);
    await writeFile(join(data, 'object'), PROBE_DATA);
    // The metadata file holds no data, only the size, like the files of our metadata images.
    await writeFile(join(meta, 'file'), '');
    await truncate(join(meta, 'file'), PROBE_DATA.length);
    // Loaded here: the native addon would otherwise load with every command (oclif loads them all).
    const { setAttribute } = await import('fs-xattr');
    await setAttribute(join(meta, 'file'), 'trusted.overlay.metacopy', Buffer.alloc(0));
    await setAttribute(join(meta, 'file'), 'trusted.overlay.redirect', '/object');
    try {
      await runtime.mount(holder, merged, 'overlay', overlayMountArgv(meta, [data], merged), ['overlayfs', 'overlay']);
      const read = await readFile(join(merged, 'file')).catch((error: Error) => error);
      verdict = Buffer.isBuffer(read) && read.equals(PROBE_DATA)
        ? { available: true, reason: `overlayfs (${release()}) serves metacopy files from data-only lower layers` }
        : { available: false, reason: `overlayfs mounted data-only lower layers but did not follow the metacopy redirect (${Buffer.isBuffer(read) ? 'read other bytes' : read.message})` };
    } catch (error) {
      if (!(error instanceof KernelCommandError)) throw error;
      const said = error.kernelMessage ?? error.output.trim().split('\n')[0];
      verdict = { available: false, reason: `overlayfs (${release()}) refused data-only lower layers (${said}); they need Linux 6.5+` };
    }
  } finally {
    await runtime.undoStepsFrom(holder, firstStep);
  }
  await saveCache(runtime.dir, { ...cache, overlay: verdict });
  return verdict;
}
