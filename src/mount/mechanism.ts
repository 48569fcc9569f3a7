import { MechanismUnavailableError } from './errors.js';
import type { Mechanism } from './state.js';

/**
 * Choosing how a mount shares page cache, and the exact mount(8) arguments of each way. Pure
 * functions: what the kernel can do comes in as facts (found by the probes in probe.ts), so the
 * decision and the arguments are tested on any kernel, including the Linux 7.0 path that cannot run
 * on the 6.18 machines here.
 */

export type MechanismRequest = 'auto' | Mechanism;
export const MECHANISM_REQUESTS: readonly MechanismRequest[] = ['auto', 'inode-share', 'overlay', 'plain'];

/** Whether a mechanism works here, and why (or why not), in words a person can act on. */
export interface Verdict {
  available: boolean;
  reason: string;
}

export interface MechanismFacts {
  /** EROFS `inode_share,domain_id=` (Linux 7.0+): probed by mounting the image with the options. */
  inodeShare?: Verdict;
  /** overlayfs data-only lower layers with metacopy + redirect (Linux 6.5+): probed on a tmpfs. */
  overlay?: Verdict;
}

export interface MechanismDecision {
  mechanism: Mechanism;
  reason: string;
  /** Printed to the user: a mount that will share nothing says so. */
  warnings: string[];
}

/** Which facts `chooseMechanism` needs for a request (so probes run only when they matter). */
export function factsNeeded(request: MechanismRequest, noShare: boolean): (keyof MechanismFacts)[] {
  if (noShare || request === 'plain') return [];
  if (request === 'inode-share') return ['inodeShare'];
  if (request === 'overlay') return ['overlay'];
  return ['inodeShare', 'overlay'];
}

/**
 * auto: inode_share where the kernel has it (one page cache per fingerprint, nothing else to mount),
 * else overlay object indexes, else a plain mount with a warning. A forced mechanism the kernel
 * lacks is an error rather than a silent downgrade: the caller asked for that sharing.
 */
export function chooseMechanism(request: MechanismRequest, facts: MechanismFacts, options: { noShare?: boolean } = {}): MechanismDecision {
  if (options.noShare === true) return { mechanism: 'plain', reason: '--no-share: a plain EROFS mount with the blobs as devices', warnings: [] };
  if (request === 'plain') return { mechanism: 'plain', reason: 'forced with --mechanism plain', warnings: ['mechanism plain: this mount shares no page cache with other images'] };
  const need = (name: keyof MechanismFacts): Verdict => {
    const verdict = facts[name];
    if (verdict === undefined) throw new Error(`internal: chooseMechanism needs the ${name} probe`);
    return verdict;
  };
  if (request === 'inode-share' || request === 'overlay') {
    const verdict = need(request === 'inode-share' ? 'inodeShare' : 'overlay');
    if (!verdict.available) throw new MechanismUnavailableError(request, verdict.reason);
    return { mechanism: request, reason: verdict.reason, warnings: [] };
  }
  const inodeShare = need('inodeShare');
  if (inodeShare.available) return { mechanism: 'inode-share', reason: inodeShare.reason, warnings: [] };
  const overlay = need('overlay');
  if (overlay.available) return { mechanism: 'overlay', reason: `${overlay.reason} (inode_share: ${inodeShare.reason})`, warnings: [] };
  return {
    mechanism: 'plain',
    reason: 'no sharing mechanism available',
    warnings: [`nothing will be shared: inode_share: ${inodeShare.reason}; overlay: ${overlay.reason}`],
  };
}

/** The trusted domain of `inode_share`: inodes with equal fingerprints share page cache only within one domain. */
export const DEFAULT_DOMAIN_ID = 'mkfs-erofs-ts';

export interface ErofsMountSpec {
  /** Block device of the image (a loop device). */
  source: string;
  target: string;
  /** Block devices of the extra devices, in device-table order: the kernel assigns `device=` options to slots in option order. */
  devices: readonly string[];
  /** `inode_share` with this trusted domain (Linux 7.0+). */
  inodeShareDomain?: string;
}

/** mount(8) arguments for an EROFS image, read-only, with its blobs as extra devices. */
export function erofsMountArgv(spec: ErofsMountSpec): string[] {
  const options = ['ro', ...spec.devices.map((device) => `device=${device}`)];
  if (spec.inodeShareDomain !== undefined) options.push('inode_share', `domain_id=${spec.inodeShareDomain}`);
  return ['-t', 'erofs', '-o', options.join(','), spec.source, spec.target];
}

/** The overlay source shown in mountinfo, so our mounts are recognizable. */
export const OVERLAY_SOURCE = 'mkfs-erofs-ts';

/**
 * mount(8) arguments for the sharing overlay: the metadata mount as the only regular lower layer,
 * the object index mounts after `::` as data-only layers (Linux 6.5+), which overlayfs reaches only
 * through a metacopy file's absolute redirect; `redirect_dir=follow` lets it follow those redirects
 * without ever writing one. No upper layer: the mount is read-only.
 */
export function overlayMountArgv(metadataLayer: string, dataLayers: readonly string[], target: string): string[] {
  for (const layer of [metadataLayer, ...dataLayers]) assertPlainLayerPath(layer);
  const lowerdir = [metadataLayer, ...dataLayers].join('::');
  return ['-t', 'overlay', '-o', `ro,lowerdir=${lowerdir},metacopy=on,redirect_dir=follow`, OVERLAY_SOURCE, target];
}

/** `:` separates layers, `,` options, and the legacy mount data string has no escape for them. */
export function assertPlainLayerPath(path: string): void {
  if (/[:,\\\s]/.test(path)) throw new Error(`internal: overlay layer path has a separator character: ${path}`);
}
