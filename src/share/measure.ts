import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { MemoryCgroup, findMemoryCgroup, type MemoryCgroupHierarchy } from './cgroup.js';
import { MeasureError, MeasureNotRootError } from './errors.js';

/**
 * Measured sharing, the RFC's experiment: start the images' containers one after the other (each
 * image mounted, CMD run in a chroot of it inside a memory cgroup of its own) and record the page
 * cache each one added. Once with sharing off (plain mounts), once with sharing on, each starting
 * from a dropped page cache, so the first container pays for everything and a later one only for
 * what it does not share.
 */

/** How the measurement mounts an image (the command wires in src/mount; share itself only reads images). */
export interface Mounter {
  mount(metadataImage: string, mountpoint: string, sharing: boolean): Promise<{ mechanism: string }>;
  unmount(mountpoint: string): Promise<void>;
}

export interface RunMeasurement {
  image: string;
  mechanism: string;
  /** Page cache charged to the container's cgroup: what this start added. */
  addedPageCacheBytes: number;
  /** Cross-check by another means: the host's Cached + Buffers before and after (other activity on the host adds noise). */
  meminfoDeltaBytes: number;
  durationMs: number;
}

export interface ScenarioMeasurement {
  sharing: boolean;
  mechanism: string;
  runs: RunMeasurement[];
}

export interface MeasureReport {
  command: string;
  cgroup: MemoryCgroupHierarchy;
  scenarios: ScenarioMeasurement[];
  /**
   * Per later image: its added page cache as a percentage of the first container's, sharing off
   * and on (the RFC's 150 MB -> 7 MB is 4.7%).
   */
  laterToFirstPercent: { sharingOff: number[]; sharingOn: number[] };
  /** 100 minus the largest sharing-on percentage above: what --min-shared compares. */
  sharedPercent: number;
}

export interface MeasureOptions {
  /** Shell command run with the image's /bin/sh in a chroot of the mount. */
  command: string;
  mounter: Mounter;
  /** Where the temporary mount points go (default: the system temp directory). */
  workDir?: string;
  onProgress?: (message: string) => void;
}

async function meminfoCacheBytes(): Promise<number> {
  const text = await readFile('/proc/meminfo', 'utf8');
  const kib = (name: string) => Number(text.match(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm'))?.[1] ?? 0);
  // Block device pages (the metadata images' inodes and directories) count as Buffers, file pages as Cached.
  return (kib('Cached') + kib('Buffers')) * 1024;
}

/** Writes back dirty pages and drops the clean page cache, dentries and inodes: every scenario starts cold. */
async function dropCaches(): Promise<void> {
  await runQuiet('sync', []);
  await writeFile('/proc/sys/vm/drop_caches', '3\n');
}

function runQuiet(command: string, args: readonly string[]): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { stdio: 'ignore' });
    child.on('error', reject);
    child.on('close', (code) => resolvePromise(code ?? -1));
  });
}

/**
 * Runs `command` in a chroot of `root` inside `cgroup`. The child is a host shell that waits on
 * stdin until it is in the cgroup and only then execs chroot, so everything the container reads is
 * charged to the cgroup and nothing it reads is missed.
 */
async function runInCgroup(cgroup: MemoryCgroup, root: string, command: string): Promise<{ code: number; output: string }> {
  const child = spawn('/bin/sh', ['-c', 'read _ && exec chroot "$0" /bin/sh -c "$1"', root, command], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/root', LC_ALL: 'C' },
  });
  const output: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => output.push(b));
  child.stderr.on('data', (b: Buffer) => output.push(b));
  const exited = new Promise<number>((resolvePromise, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolvePromise(code ?? (signal ? 128 : -1)));
  });
  try {
    if (child.pid === undefined) throw new MeasureError('cannot start /bin/sh');
    await cgroup.addProcess(child.pid);
  } catch (error) {
    child.kill('SIGKILL');
    await exited.catch(() => undefined);
    throw error;
  }
  child.stdin.end('go\n');
  const code = await exited;
  return { code, output: Buffer.concat(output).toString('utf8') };
}

export async function measureSharing(images: readonly string[], options: MeasureOptions): Promise<MeasureReport> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) throw new MeasureNotRootError();
  if (images.length < 2) throw new MeasureError('give at least two images (the first container and a later one)');
  const hierarchy = await findMemoryCgroup();
  const work = await mkdtemp(join(options.workDir ?? tmpdir(), 'erofs-measure-'));
  const progress = options.onProgress ?? (() => undefined);
  const scenarios: ScenarioMeasurement[] = [];
  try {
    for (const sharing of [false, true]) {
      const mountpoints: string[] = [];
      const runs: RunMeasurement[] = [];
      const mechanisms = new Set<string>();
      try {
        await dropCaches();
        // The host's chroot binary is read before the container's cgroup exists, so it is not charged to the container.
        await runQuiet('chroot', ['--version']);
        for (const [index, image] of images.entries()) {
          const mountpoint = join(work, `${sharing ? 'shared' : 'plain'}-${index + 1}`);
          await mkdir(mountpoint);
          mountpoints.push(mountpoint);
          const { mechanism } = await options.mounter.mount(resolve(image), mountpoint, sharing);
          mechanisms.add(mechanism);
          progress(`sharing ${sharing ? 'on' : 'off'}: container ${index + 1} (${basename(image)}, ${mechanism})`);
          const cgroup = await MemoryCgroup.create(hierarchy, `mkfs-erofs-ts-measure-${process.pid}-${randomBytes(4).toString('hex')}`);
          try {
            const cachedBefore = await meminfoCacheBytes();
            const started = performance.now();
            const result = await runInCgroup(cgroup, mountpoint, options.command);
            const durationMs = performance.now() - started;
            const cachedAfter = await meminfoCacheBytes();
            if (result.code !== 0) {
              const last = result.output.trim().split('\n').slice(-3).join(' | ');
              throw new MeasureError(`the command exited ${result.code} in ${basename(image)}: ${last || 'no output'}`);
            }
            const stat = await cgroup.memoryStat();
            runs.push({
              image: resolve(image),
              mechanism,
              addedPageCacheBytes: stat.pageCacheBytes,
              meminfoDeltaBytes: cachedAfter - cachedBefore,
              durationMs: Math.round(durationMs),
            });
          } finally {
            await cgroup.remove();
          }
        }
      } finally {
        for (const mountpoint of [...mountpoints].reverse()) {
          await options.mounter.unmount(mountpoint).catch(() => undefined);
          await rmdir(mountpoint).catch(() => undefined);
        }
      }
      scenarios.push({ sharing, mechanism: [...mechanisms].join('+'), runs });
    }
  } finally {
    await rmdir(work).catch(() => undefined);
  }
  const percentages = (scenario: ScenarioMeasurement) => {
    const first = scenario.runs[0]?.addedPageCacheBytes ?? 0;
    return scenario.runs.slice(1).map((r) => (first === 0 ? 0 : (r.addedPageCacheBytes / first) * 100));
  };
  const sharingOff = percentages(scenarios[0]!);
  const sharingOn = percentages(scenarios[1]!);
  return {
    command: options.command,
    cgroup: hierarchy,
    scenarios,
    laterToFirstPercent: { sharingOff, sharingOn },
    sharedPercent: 100 - Math.max(...sharingOn),
  };
}

/** The host-wide delta matches the cgroup's within 1 MiB or 10% (it can only be larger: it also sees other processes). */
export function crossCheckAgrees(run: RunMeasurement): boolean {
  return Math.abs(run.meminfoDeltaBytes - run.addedPageCacheBytes) <= Math.max(2 ** 20, run.addedPageCacheBytes * 0.1);
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** The RFC's table: rows sharing off / on, a column per container, and the later/first ratio. */
export function formatMeasureTable(report: MeasureReport): string[] {
  const containers = report.scenarios[0]?.runs.length ?? 0;
  const ordinal = (i: number) => (i === 0 ? 'first' : i === 1 ? 'second' : i === 2 ? 'third' : `#${i + 1}`);
  const header = ['', ...Array.from({ length: containers }, (_, i) => `${ordinal(i)} container`), 'later/first'];
  const rows = report.scenarios.map((s) => {
    const ratios = (s.sharing ? report.laterToFirstPercent.sharingOn : report.laterToFirstPercent.sharingOff).map((p) => `${p.toFixed(1)}%`).join(', ');
    return [`sharing ${s.sharing ? 'on' : 'off'} (${s.mechanism})`, ...s.runs.map((r) => mib(r.addedPageCacheBytes)), ratios];
  });
  const widths = header.map((_, c) => Math.max(...[header, ...rows].map((row) => (row[c] ?? '').length)));
  const line = (row: string[]) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd();
  const out = [line(header), ...rows.map(line)];
  out.push('');
  out.push(`page cache added per container, from the container's memory cgroup (cgroup v${report.cgroup.version} ${report.cgroup.version === 1 ? 'memory.stat cache' : 'memory.stat file'});`);
  out.push(`cross-check, host Cached+Buffers delta: ${report.scenarios.map((s) => `sharing ${s.sharing ? 'on' : 'off'} ${s.runs.map((r) => mib(r.meminfoDeltaBytes)).join(' / ')}`).join('; ')}`);
  const noisy = report.scenarios.flatMap((s) => s.runs).filter((r) => !crossCheckAgrees(r));
  if (noisy.length > 0) out.push(`  (${noisy.length} run(s) disagree: the host delta also counts whatever else ran meanwhile; the cgroup figure counts only the container)`);
  out.push(`command: ${report.command}`);
  return out;
}
