import { randomBytes } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StateCorruptError } from './errors.js';

/** How a mount shares page cache (see mechanism.ts). */
export type Mechanism = 'inode-share' | 'overlay' | 'plain';

/**
 * One kernel-side effect, recorded *before* it is made (an intent) and completed after, so that a
 * process killed at any point leaves a record of everything it might have done:
 * - `loop`: `device` is chosen first (`losetup --find`), then `file` attached to exactly it; undo
 *   detaches the device only if it still serves `file`.
 * - `mount`: `mountIdBefore` is the mount on top at `target` before; after mount(8) succeeds,
 *   `mountId` is ours. Undo unmounts the top mount at `target` when it is ours (or, for an
 *   unfinished step, when it is new and of `fstype`).
 * - `dir`: a directory we created; undo removes it if empty.
 */
export type Step =
  | { kind: 'loop'; device: string; file: string; attached: boolean }
  | { kind: 'mount'; target: string; fstype: string; mountIdBefore: number | null; mountId: number | null }
  | { kind: 'dir'; path: string };

export type HolderStatus = 'setting-up' | 'ready' | 'tearing-down';

/** Something that owns steps and may use shared resources: an image mount or a shared resource. */
export interface Holder {
  /** `mount:<id>`, `blob:<digest>` or `objects:<digest>`. */
  key: string;
  status: HolderStatus;
  /** The process acting on it (diagnostics: a holder not `ready` was left by a process that died). */
  pid: number;
  steps: Step[];
  /** Keys of the shared resources it holds a reference on, in the order taken. */
  uses: string[];
}

/** What `erofs mount` did for one image. */
export interface MountRecord extends Holder {
  id: string;
  mountpoint: string;
  metadataImage: string;
  store: string;
  mechanism: Mechanism;
  createdAt: string;
  /** Overlay: the layers stacked (metadata mount, then the object index mounts, data-only). */
  layers: string[];
  warnings: string[];
}

/**
 * A resource mounted or attached once per host and shared by every image that needs it: a blob's
 * loop device (`blob:`), or a blob's object index mount (`objects:`). Released when `users` is empty.
 */
export interface SharedRecord extends Holder {
  kind: 'blob' | 'objects';
  digest: string;
  /** The backing file (blob, or object index image). */
  file: string;
  /** blob: the loop device; objects: the mount directory. */
  path: string;
  /** Keys of the holders using it. */
  users: string[];
}

export interface RuntimeState {
  version: 1;
  /** /proc/sys/kernel/random/boot_id when written: after a reboot no loop device or mount of it exists any more. */
  bootId: string;
  mounts: MountRecord[];
  shared: SharedRecord[];
}

export const STATE_FILE = 'state.json';
export const LOCK_FILE = 'lock';

export async function currentBootId(): Promise<string> {
  return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => 'unknown')).trim();
}

export function emptyState(bootId: string): RuntimeState {
  return { version: 1, bootId, mounts: [], shared: [] };
}

/**
 * Reads the state file. Missing: empty. From an earlier boot: empty, and `stale` says so (its loop
 * devices and mounts are gone, only directories may remain).
 */
export async function loadState(runtimeDir: string): Promise<{ state: RuntimeState; stale: boolean }> {
  const path = join(runtimeDir, STATE_FILE);
  const bootId = await currentBootId();
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { state: emptyState(bootId), stale: false };
    throw error;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new StateCorruptError(path, `not JSON (${(error as Error).message})`);
  }
  const state = parsed as Partial<RuntimeState>;
  if (state === null || typeof state !== 'object' || state.version !== 1 || !Array.isArray(state.mounts) || !Array.isArray(state.shared) || typeof state.bootId !== 'string') {
    throw new StateCorruptError(path, 'not a version 1 state file of erofs mount');
  }
  if (state.bootId !== bootId) return { state: emptyState(bootId), stale: true };
  return { state: state as RuntimeState, stale: false };
}

/**
 * Replaces the state file atomically (temporary name, then rename), so a reader or a process killed
 * mid-write sees the old or the new state, never half of one. No fsync: a machine crash takes every
 * loop device and mount with it, and the boot id voids the file.
 */
export async function saveState(runtimeDir: string, state: RuntimeState): Promise<void> {
  const path = join(runtimeDir, STATE_FILE);
  const temp = join(runtimeDir, `.${STATE_FILE}.${process.pid}.${randomBytes(4).toString('hex')}`);
  try {
    await writeFile(temp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o644 });
    await rename(temp, path);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/** Every holder, mounts first. */
export function holders(state: RuntimeState): Holder[] {
  return [...state.mounts, ...state.shared];
}

export function findHolder(state: RuntimeState, key: string): Holder | undefined {
  return holders(state).find((h) => h.key === key);
}
