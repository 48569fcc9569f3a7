import { randomBytes } from 'node:crypto';
import { link, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { StateLockedError } from './errors.js';

/**
 * Who holds a lock: the PID and that process's start time (field 22 of /proc/PID/stat), so a PID
 * reused by an unrelated process after a crash does not look like the owner.
 */
interface LockOwner {
  pid: number;
  startTime: string;
}

async function processStartTime(pid: number): Promise<string | undefined> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  // The command name (field 2) is in parentheses and may contain spaces: count from the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return fields[19];
}

export async function isAlive(owner: LockOwner): Promise<boolean> {
  const startTime = await processStartTime(owner.pid);
  return startTime !== undefined && startTime === owner.startTime;
}

async function readOwner(path: string): Promise<LockOwner | undefined> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  const match = text?.match(/^(\d+) (\d+)\n$/);
  return match ? { pid: Number(match[1]), startTime: match[2]! } : undefined;
}

export interface LockOptions {
  /** How long to wait for a live owner before giving up (default 120 s: a mount takes well under that). */
  timeoutMs?: number;
}

/**
 * Takes the lock file `path`: created with O_EXCL and our PID + start time written into it. A lock
 * whose owner is dead (killed mid-mount) is taken over; a live owner is waited for. Returns the
 * release function.
 */
export async function acquireLock(path: string, options: LockOptions = {}): Promise<() => Promise<void>> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  const self: LockOwner = { pid: process.pid, startTime: (await processStartTime(process.pid)) ?? '0' };
  const started = Date.now();
  let delayMs = 10;
  for (;;) {
    try {
      const handle = await open(path, 'wx', 0o600);
      try {
        await handle.writeFile(`${self.pid} ${self.startTime}\n`);
      } finally {
        await handle.close();
      }
      return async () => {
        // Only remove it if it is still ours (it is, unless someone wrongly broke it).
        const owner = await readOwner(path);
        if (owner?.pid === self.pid && owner.startTime === self.startTime) await unlink(path).catch(() => undefined);
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = await readOwner(path);
    if (owner === undefined) {
      // Created but not yet written (the owner is between open and write), or written by a crash
      // that died right there: give a writer a moment, then treat the empty file as stale.
      const ageMs = await stat(path).then((s) => Date.now() - s.mtimeMs, () => 0);
      if (ageMs > 2000) await breakStaleLock(path, undefined);
    } else if (!(await isAlive(owner))) {
      await breakStaleLock(path, owner);
    } else if (Date.now() - started > timeoutMs) {
      throw new StateLockedError(path, owner.pid, Date.now() - started);
    }
    await sleep(delayMs);
    delayMs = Math.min(delayMs * 2, 200);
  }
}

/**
 * Removes a dead owner's lock. Renaming first makes the takeover atomic: of several processes that
 * saw the same dead owner, one renames the file and the others find nothing to rename. If what we
 * renamed turns out to be a newer, live owner's lock (it broke the stale one and locked between our
 * read and our rename), it is put back with link(), which cannot clobber a lock made meanwhile.
 */
async function breakStaleLock(path: string, seen: LockOwner | undefined): Promise<void> {
  const aside = `${path}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await rename(path, aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  const moved = await readOwner(aside);
  const same = seen === undefined ? moved === undefined : moved?.pid === seen.pid && moved.startTime === seen.startTime;
  if (!same && moved !== undefined && (await isAlive(moved))) await link(aside, path).catch(() => undefined);
  await unlink(aside).catch(() => undefined);
}
