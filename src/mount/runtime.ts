import { mkdir, readdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { KernelCommandError, MountBusyError } from './errors.js';
import { formatCommand, kernelLogMark, kernelMessageSince, runTool } from './exec.js';
import { acquireLock, type LockOptions } from './lock.js';
import { attachLoopDevice, detachLoopDevice, findFreeLoopDevice, listLoopDevices, sameBackingFile } from './loop.js';
import { readMountinfo, topMountAt } from './mountinfo.js';
import { LOCK_FILE, findHolder, holders, loadState, saveState, type Holder, type RuntimeState, type SharedRecord, type Step } from './state.js';

/** Where shared object index mounts and per-mount metadata mounts live, under the runtime directory. */
export const OBJECTS_SUBDIR = 'objects';
export const MOUNTS_SUBDIR = 'mounts';
export const PROBE_PREFIX = 'probe-';

/** How many times to pick another free loop device when a concurrent process takes ours first. */
const LOOP_ATTACH_ATTEMPTS = 20;

/**
 * The runtime directory, locked, with its state loaded and reconciled with the kernel. Every
 * kernel-side effect goes through `attachLoop`, `mount` or `makeDir`, which record it in the state
 * file before making it (see `Step`), so `teardown` and a later `reconcile` can undo exactly what
 * was done, also after a crash.
 */
export class Runtime {
  /** Things that were cleaned up while reconciling (for `--list` and debugging). */
  readonly notes: string[] = [];

  private constructor(
    readonly dir: string,
    public state: RuntimeState,
    private readonly unlock: () => Promise<void>,
  ) {}

  static async open(dir: string, lockOptions: LockOptions = {}): Promise<Runtime> {
    await mkdir(dir, { recursive: true, mode: 0o755 });
    const unlock = await acquireLock(join(dir, LOCK_FILE), lockOptions);
    try {
      const { state, stale } = await loadState(dir);
      const runtime = new Runtime(dir, state, unlock);
      await runtime.reconcile(stale);
      return runtime;
    } catch (error) {
      await unlock();
      throw error;
    }
  }

  async close(): Promise<void> {
    await this.unlock();
  }

  async save(): Promise<void> {
    await saveState(this.dir, this.state);
  }

  // ------------------------------------------------------------------ steps

  /** Attaches `file` (an absolute, canonical path) read-only to a free loop device and returns the device. */
  async attachLoop(holder: Holder, file: string): Promise<string> {
    for (let attempt = 0; attempt < LOOP_ATTACH_ATTEMPTS; attempt++) {
      const device = await findFreeLoopDevice();
      const step: Step = { kind: 'loop', device, file, attached: false };
      holder.steps.push(step);
      await this.save();
      if (await attachLoopDevice(device, file)) {
        step.attached = true;
        await this.save();
        return device;
      }
      // Another process attached that device between --find and our attach: nothing of ours is there.
      holder.steps.pop();
      await this.save();
    }
    throw new KernelCommandError(`losetup ${file}`, `no free loop device after ${LOOP_ATTACH_ATTEMPTS} attempts (other processes keep taking them)`);
  }

  /** Runs `mount argv` for `target`; on failure the error carries the kernel's reason from dmesg. */
  async mount(holder: Holder, target: string, fstype: string, argv: readonly string[], subsystems: readonly string[]): Promise<void> {
    const before = topMountAt(await readMountinfo(), target);
    const step: Step = { kind: 'mount', target, fstype, mountIdBefore: before?.mountId ?? null, mountId: null };
    holder.steps.push(step);
    await this.save();
    const mark = await kernelLogMark();
    const r = await runTool('mount', argv);
    const after = topMountAt(await readMountinfo(), target);
    const mounted = after !== undefined && after.mountId !== step.mountIdBefore && after.fstype === fstype;
    if (r.code !== 0 || !mounted) {
      if (!mounted) {
        holder.steps.pop();
        await this.save();
      }
      throw new KernelCommandError(formatCommand('mount', argv), r.stderr || r.stdout || 'the mount did not appear in /proc/self/mountinfo', await kernelMessageSince(mark, subsystems));
    }
    step.mountId = after.mountId;
    await this.save();
  }

  async makeDir(holder: Holder, path: string): Promise<void> {
    holder.steps.push({ kind: 'dir', path });
    await this.save();
    await mkdir(path, { mode: 0o700 });
  }

  /** Undoes `holder.steps[from..]`, newest first, dropping each from the record once undone. */
  async undoStepsFrom(holder: Holder, from: number, options: { lazy?: boolean } = {}): Promise<void> {
    while (holder.steps.length > from) {
      const step = holder.steps[holder.steps.length - 1]!;
      await undoStep(step, options.lazy ?? true);
      holder.steps.pop();
      await this.save();
    }
  }

  // ------------------------------------------------------------------ holders

  /**
   * Undoes everything `holder` did, removes it from the state and drops its references on shared
   * resources (each released when its last user goes). Status `tearing-down` is saved first, so an
   * interrupted teardown is finished by the next reconcile.
   */
  async teardown(holder: Holder, options: { lazy?: boolean } = {}): Promise<void> {
    holder.status = 'tearing-down';
    holder.pid = process.pid;
    await this.save();
    await this.undoStepsFrom(holder, 0, options);
    this.state.mounts = this.state.mounts.filter((m) => m.key !== holder.key);
    this.state.shared = this.state.shared.filter((s) => s.key !== holder.key);
    await this.save();
    for (const key of [...holder.uses].reverse()) await this.releaseUse(holder.key, key);
  }

  private async releaseUse(userKey: string, sharedKey: string): Promise<void> {
    const shared = this.state.shared.find((s) => s.key === sharedKey);
    if (shared === undefined) return;
    shared.users = shared.users.filter((k) => k !== userKey);
    await this.save();
    if (shared.users.length === 0) await this.teardown(shared);
  }

  /**
   * A reference on the shared resource `key` for `user`: the existing one (a second image reuses
   * a blob's loop device and object index mount), or a new one made by `create`.
   */
  async acquireShared(user: Holder, init: Pick<SharedRecord, 'key' | 'kind' | 'digest' | 'file'>, create: (record: SharedRecord) => Promise<void>): Promise<SharedRecord> {
    const existing = this.state.shared.find((s) => s.key === init.key);
    if (existing !== undefined && existing.status === 'ready') {
      if (!existing.users.includes(user.key)) existing.users.push(user.key);
      if (!user.uses.includes(init.key)) user.uses.push(init.key);
      await this.save();
      return existing;
    }
    const record: SharedRecord = { ...init, path: '', status: 'setting-up', pid: process.pid, steps: [], uses: [], users: [user.key] };
    this.state.shared.push(record);
    user.uses.push(init.key);
    await this.save();
    try {
      await create(record);
      record.status = 'ready';
      await this.save();
      return record;
    } catch (error) {
      user.uses = user.uses.filter((k) => k !== init.key);
      await this.teardown(record).catch((cleanupError: unknown) => this.notes.push(`cleanup of ${record.key} failed: ${String(cleanupError)}`));
      throw error;
    }
  }

  // ------------------------------------------------------------------ reconcile

  /**
   * Brings the state in line with the kernel: finishes what died half way (holders not `ready`),
   * forgets mounts someone unmounted by hand (releasing what they held), releases shared resources
   * nobody uses or that vanished, unmounts mounts under the runtime directory that no record
   * claims, and removes our empty directories that nothing uses.
   */
  async reconcile(stale: boolean): Promise<void> {
    if (stale) this.notes.push('state from an earlier boot discarded');
    for (const holder of holders(this.state)) {
      if (findHolder(this.state, holder.key) === undefined || holder.status === 'ready') continue;
      this.notes.push(`${holder.key}: left ${holder.status} by process ${holder.pid}; undone`);
      await this.teardown(holder);
    }
    const mountinfo = await readMountinfo();
    const isMounted = (step: Step) => step.kind === 'mount' && step.mountId !== null && mountinfo.some((e) => e.mountId === step.mountId && e.target === step.target);
    for (const record of [...this.state.mounts]) {
      const final = record.steps.filter((s) => s.kind === 'mount').pop();
      if (final !== undefined && isMounted(final)) continue;
      this.notes.push(`${record.mountpoint}: unmounted outside erofs umount; released what it held`);
      await this.teardown(record);
    }
    const loops = await listLoopDevices();
    const intact = (step: Step) =>
      step.kind === 'dir' || (step.kind === 'mount' ? isMounted(step) : loops.some((l) => l.device === step.device && sameBackingFile(l.backingFile, step.file)));
    for (let changed = true; changed; ) {
      changed = false;
      for (const shared of [...this.state.shared]) {
        if (findHolder(this.state, shared.key) === undefined) continue;
        const users = shared.users.filter((k) => findHolder(this.state, k) !== undefined);
        if (users.length !== shared.users.length) {
          shared.users = users;
          await this.save();
        }
        if (users.length === 0 || !shared.steps.every(intact)) {
          this.notes.push(`${shared.key}: ${users.length === 0 ? 'no longer used' : 'vanished'}; released`);
          await this.teardown(shared);
          changed = true;
        }
      }
    }
    await this.removeOrphans();
    await this.save();
  }

  /** Mounts and directories under the runtime directory that no record claims (a crash between mkdir and its record, or an older state). */
  private async removeOrphans(): Promise<void> {
    const steps = holders(this.state).flatMap((h) => h.steps);
    const claimedTargets = new Set(steps.flatMap((s) => (s.kind === 'mount' ? [s.target] : [])));
    const claimedDirs = new Set(steps.flatMap((s) => (s.kind === 'dir' ? [s.path] : s.kind === 'mount' ? [s.target] : [])));
    // Only our own subdirectories: the runtime directory may be shared with others (--runtime-dir /tmp).
    const prefixes = [join(this.dir, OBJECTS_SUBDIR) + '/', join(this.dir, MOUNTS_SUBDIR) + '/', join(this.dir, PROBE_PREFIX)];
    const ours = (target: string) => prefixes.some((p) => target.startsWith(p));
    // Deepest first, so a mount on top of another goes first.
    const orphans = (await readMountinfo()).filter((e) => ours(e.target) && !claimedTargets.has(e.target)).reverse();
    for (const entry of orphans) {
      this.notes.push(`orphan mount ${entry.target} (${entry.fstype}) unmounted`);
      await umount(entry.target, true);
    }
    const candidates: string[] = [];
    for (const sub of [OBJECTS_SUBDIR, MOUNTS_SUBDIR]) {
      for (const name of await readdir(join(this.dir, sub)).catch(() => [] as string[])) {
        const path = join(this.dir, sub, name);
        if (sub === MOUNTS_SUBDIR) for (const inner of await readdir(path).catch(() => [] as string[])) candidates.push(join(path, inner));
        candidates.push(path);
      }
    }
    for (const name of await readdir(this.dir).catch(() => [] as string[])) if (name.startsWith(PROBE_PREFIX)) candidates.push(join(this.dir, name));
    for (const path of candidates) {
      if (claimedDirs.has(path)) continue;
      // rmdir only: an orphan directory is empty unless something unexpected is in it, which we leave.
      await rmdir(path).catch(() => undefined);
    }
  }
}

async function umount(target: string, lazyIfBusy: boolean): Promise<void> {
  const r = await runTool('umount', [target]);
  if (r.code === 0 || /not mounted|no mount point/i.test(r.stderr)) return;
  if (/busy/i.test(r.stderr)) {
    if (!lazyIfBusy) throw new MountBusyError(target);
    // Detached now, freed when its last user goes: a half-made mount must not block the cleanup.
    const lazy = await runTool('umount', ['--lazy', target]);
    if (lazy.code === 0) return;
    throw new KernelCommandError(formatCommand('umount', ['--lazy', target]), lazy.stderr);
  }
  throw new KernelCommandError(formatCommand('umount', [target]), r.stderr);
}

async function undoStep(step: Step, lazyIfBusy: boolean): Promise<void> {
  switch (step.kind) {
    case 'loop':
      await detachLoopDevice(step.device, step.file);
      return;
    case 'dir':
      await rmdir(step.path).catch((error: NodeJS.ErrnoException) => {
        if (!['ENOENT', 'ENOTEMPTY', 'EEXIST', 'EBUSY'].includes(error.code ?? '')) throw error;
      });
      return;
    case 'mount': {
      const top = topMountAt(await readMountinfo(), step.target);
      if (top === undefined) return;
      const ours = step.mountId !== null ? top.mountId === step.mountId : top.mountId !== step.mountIdBefore && top.fstype === step.fstype;
      if (ours) await umount(step.target, lazyIfBusy);
      return;
    }
  }
}

/** Runs `fn` with the runtime directory locked and reconciled; unlocks afterwards whatever happens. */
export async function withRuntime<T>(dir: string, fn: (runtime: Runtime) => Promise<T>, lockOptions: LockOptions = {}): Promise<T> {
  const runtime = await Runtime.open(dir, lockOptions);
  try {
    return await fn(runtime);
  } finally {
    await runtime.close();
  }
}
