import { mkdtemp, readFile, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatCommand, run, runChecked } from './exec.js';

/** Prefix of the mount points made by {@link withKernelMount}. */
export const MOUNTPOINT_PREFIX = 'erofs-mnt-';

/**
 * Runs `body`, then `cleanup` whatever happened. An error from `body` wins over one from `cleanup`
 * (the cleanup error is attached as `cause` of a wrapper only when `body` succeeded), so a failing
 * test reports its real reason rather than the teardown it disturbed.
 */
async function withCleanup<T>(body: () => Promise<T>, cleanup: () => Promise<void>): Promise<T> {
  let result: T;
  try {
    result = await body();
  } catch (err) {
    try {
      await cleanup();
    } catch (cleanupErr) {
      process.stderr.write(`cleanup after a failure also failed: ${String(cleanupErr)}\n`);
    }
    throw err;
  }
  await cleanup();
  return result;
}

/**
 * Attaches each file read-only to a free loop device (`losetup --find --show --read-only`), in order,
 * and runs `fn` with the device paths (same order as `paths`). Every device attached is detached
 * afterwards: when `fn` resolves or throws, and when a later `losetup` fails half way.
 */
export async function withLoopDevices<T>(paths: readonly string[], fn: (devs: string[]) => Promise<T>): Promise<T> {
  const devs: string[] = [];
  return withCleanup(
    async () => {
      for (const path of paths) {
        const { stdout } = await runChecked('losetup', ['--find', '--show', '--read-only', path]);
        const dev = stdout.trim();
        if (!dev.startsWith('/dev/')) throw new Error(`losetup printed no device for ${path}: ${JSON.stringify(stdout)}`);
        devs.push(dev);
      }
      return fn([...devs]);
    },
    async () => {
      const errors: string[] = [];
      // Reverse order, like a stack; each one is tried even if an earlier one failed.
      for (const dev of devs.reverse()) {
        const r = await run('losetup', ['--detach', dev]);
        if (r.code !== 0) errors.push(`losetup --detach ${dev}: ${r.output.trim()}`);
      }
      if (errors.length > 0) throw new Error(`could not detach loop devices:\n${errors.join('\n')}`);
    },
  );
}

/** The last `count` kernel log lines that mention erofs (or a loop device), oldest first. */
export async function recentErofsKernelMessages(count = 15): Promise<string[]> {
  const r = await run('dmesg', []);
  if (r.code !== 0) return [`(dmesg failed: ${r.output.trim()})`];
  return r.stdout.split('\n').filter((line) => /erofs/i.test(line)).slice(-count);
}

export interface KernelMountOptions {
  /** Extra `-o` options, appended after `ro` and the `device=` list (e.g. `['noacl']`). */
  mountOptions?: readonly string[];
}

/**
 * Mounts an EROFS metadata image with its blobs the way the kernel expects a multi-device image:
 * every file on its own read-only loop device, then
 * `mount -t erofs -o ro,device=/dev/loopA,device=/dev/loopB /dev/loopM MNT`.
 * The kernel assigns the `device=` options to device-table slots in option order, so `blobs` must be
 * given in device-table order (slot 1 first).
 *
 * `fn` runs with the mount point (a fresh directory `os.tmpdir()/erofs-mnt-XXXXXX`). Afterwards the
 * mount is unmounted (retried briefly while busy, then lazily with `umount -l`), the loop devices are
 * detached and the mount point is removed, also when `fn` throws. If the kernel refuses the mount,
 * the error carries mount's message and the recent erofs lines of `dmesg`, which say why.
 */
export async function withKernelMount<T>(
  metadataImage: string,
  blobs: readonly string[],
  fn: (mountpoint: string) => Promise<T>,
  options: KernelMountOptions = {},
): Promise<T> {
  return withLoopDevices([metadataImage, ...blobs], async (devs) => {
    const [primary, ...blobDevs] = devs;
    if (primary === undefined) throw new Error('unreachable: no loop device for the metadata image');
    const mountpoint = await mkdtemp(join(tmpdir(), MOUNTPOINT_PREFIX));
    return withCleanup(
      async () => {
        const opts = ['ro', ...blobDevs.map((d) => `device=${d}`), ...(options.mountOptions ?? [])].join(',');
        const args = ['-t', 'erofs', '-o', opts, primary, mountpoint];
        const r = await run('mount', args);
        if (r.code !== 0) {
          const dmesg = await recentErofsKernelMessages();
          const files = [metadataImage, ...blobs].map((f, i) => `  ${devs[i]} <- ${f}`).join('\n');
          throw new Error(
            `kernel refused to mount ${metadataImage}: ${formatCommand('mount', args)} exited ${r.code}: ${r.output.trim()}\n` +
              `loop devices:\n${files}\n` +
              `recent kernel messages mentioning erofs:\n${dmesg.length ? dmesg.join('\n') : '(none)'}`,
          );
        }
        return withCleanup(() => fn(mountpoint), () => unmount(mountpoint));
      },
      () => rmdir(mountpoint),
    );
  });
}

/** `umount`, retried for about 2 s while the target is busy, then `umount -l` (lazy) as a last resort. */
async function unmount(mountpoint: string): Promise<void> {
  let last = '';
  for (let attempt = 0; attempt < 20; attempt++) {
    const r = await run('umount', [mountpoint]);
    if (r.code === 0) return;
    last = r.output.trim();
    if (!/busy/i.test(last)) break;
    await sleep(100);
  }
  const lazy = await run('umount', ['-l', mountpoint]);
  if (lazy.code !== 0) throw new Error(`cannot unmount ${mountpoint}: ${last}; umount -l: ${lazy.output.trim()}`);
}

export interface FsckResult {
  code: number;
  /** stdout and stderr of fsck.erofs, interleaved. */
  output: string;
}

/**
 * Runs `fsck.erofs [--device=BLOB]... [extraArgs] IMAGE` (blobs in device-table order) and resolves
 * with its exit status and output; it does not judge them. `extraArgs` e.g. `['--extract']`, which
 * makes erofs-utils read every file's data as well.
 */
export async function fsckErofs(image: string, blobs: readonly string[] = [], extraArgs: readonly string[] = []): Promise<FsckResult> {
  const r = await run('fsck.erofs', [...blobs.map((b) => `--device=${b}`), ...extraArgs, image]);
  return { code: r.code, output: r.output };
}

/** {@link fsckErofs}, throwing with fsck's whole output unless it exits 0. */
export async function assertFsckClean(image: string, blobs: readonly string[] = [], extraArgs: readonly string[] = []): Promise<FsckResult> {
  const result = await fsckErofs(image, blobs, extraArgs);
  if (result.code !== 0) {
    throw new Error(`fsck.erofs exited ${result.code} for ${image} (devices: ${blobs.join(', ') || 'none'}):\n${result.output.trimEnd()}`);
  }
  return result;
}

export interface LoopDeviceInfo {
  device: string;
  /** As losetup reports it; ends with " (deleted)" when the file was removed while attached. */
  backingFile: string;
}

export interface MountInfo {
  fstype: string;
  source: string;
  target: string;
  options: string;
}

export interface LeakSnapshot {
  loopDevices: LoopDeviceInfo[];
  /** Mounts of type erofs, and overlay mounts (which our `erofs mount` stacks over erofs). */
  mounts: MountInfo[];
}

/** Undoes the octal escapes (`\040` for a space) of /proc/self/mountinfo. */
function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/**
 * The loop devices in use (`losetup -J -l`) and the erofs/overlay mounts (/proc/self/mountinfo) right
 * now, sorted. Take one before and one after a test and compare with {@link assertNoLeaks}.
 */
export async function leakCheck(): Promise<LeakSnapshot> {
  const { stdout } = await runChecked('losetup', ['-J', '-l']);
  // losetup prints nothing at all (not even `{}`) when no loop device is attached.
  const parsed = stdout.trim() === '' ? { loopdevices: [] } : (JSON.parse(stdout) as { loopdevices?: Array<Record<string, unknown>> });
  const loopDevices = (parsed.loopdevices ?? [])
    .map((d) => ({ device: String(d['name']), backingFile: String(d['back-file'] ?? '') }))
    .sort((a, b) => a.device.localeCompare(b.device, 'en', { numeric: true }));

  const mounts: MountInfo[] = [];
  for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    // id parent major:minor root target options [optional fields...] - fstype source superoptions
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const fstype = right[0] ?? '';
    if (fstype !== 'erofs' && fstype !== 'overlay') continue;
    mounts.push({
      fstype,
      source: unescapeMountinfo(right[1] ?? ''),
      target: unescapeMountinfo(left[4] ?? ''),
      options: right[2] ?? '',
    });
  }
  mounts.sort((a, b) => (a.target < b.target ? -1 : a.target > b.target ? 1 : 0));
  return { loopDevices, mounts };
}

/**
 * Throws, listing them, if `after` has loop devices or mounts that `before` did not. Other processes on
 * the machine (another engineer's test run) may attach loops meanwhile; pass `related` path prefixes
 * (a test's temp dir, its mount points) to count only what involves them.
 */
export function assertNoLeaks(before: LeakSnapshot, after: LeakSnapshot, related?: readonly string[]): void {
  const concerns = (...paths: string[]): boolean =>
    related === undefined || paths.some((p) => related.some((prefix) => p === prefix || p.startsWith(prefix.endsWith('/') ? prefix : `${prefix}/`)));
  const loopKey = (l: LoopDeviceInfo): string => `${l.device} <- ${l.backingFile}`;
  const mountKey = (m: MountInfo): string => `${m.fstype} ${m.source} on ${m.target}`;
  const oldLoops = new Set(before.loopDevices.map(loopKey));
  const oldMounts = new Set(before.mounts.map(mountKey));
  const leaks = [
    ...after.loopDevices.filter((l) => !oldLoops.has(loopKey(l)) && concerns(l.backingFile)).map((l) => `loop device ${loopKey(l)}`),
    ...after.mounts.filter((m) => !oldMounts.has(mountKey(m)) && concerns(m.target, m.source)).map((m) => `mount ${mountKey(m)}`),
  ];
  if (leaks.length > 0) throw new Error(`leaked ${leaks.length} kernel resource(s):\n${leaks.join('\n')}`);
}
