import { access, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MeasureError } from './errors.js';

/**
 * A memory cgroup to run one container command in, so that the page cache it adds is charged to it
 * alone: the kernel charges a page cache page to the cgroup of the task that first reads it, and
 * never again to another, which is exactly "what this container added".
 */
export interface MemoryCgroupHierarchy {
  version: 1 | 2;
  /** v1: the memory controller's mount; v2: the unified hierarchy's mount. */
  root: string;
}

export interface MemoryStat {
  /** Page cache charged (v1 `cache`, v2 `file`): file data, directories, block device (metadata) pages. */
  pageCacheBytes: number;
}

/** Finds the memory controller: v1 (a `cgroup` mount with the memory option) or v2 (`cgroup2` with memory in cgroup.controllers). */
export async function findMemoryCgroup(): Promise<MemoryCgroupHierarchy> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  let v2: string | undefined;
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const target = line.slice(0, sep).split(' ')[4] ?? '';
    const [fstype, , superOptions = ''] = line.slice(sep + 3).split(' ');
    if (fstype === 'cgroup' && superOptions.split(',').includes('memory')) return { version: 1, root: target };
    if (fstype === 'cgroup2' && v2 === undefined) v2 = target;
  }
  if (v2 !== undefined) {
    const controllers = await readFile(join(v2, 'cgroup.controllers'), 'utf8').catch(() => '');
    if (controllers.split(/\s+/).includes('memory')) return { version: 2, root: v2 };
  }
  throw new MeasureError('no memory cgroup controller found (neither a cgroup v1 memory mount nor cgroup2 with the memory controller)');
}

export class MemoryCgroup {
  private constructor(
    readonly hierarchy: MemoryCgroupHierarchy,
    readonly path: string,
  ) {}

  /** Makes a fresh cgroup `name` below the hierarchy's root (v2: enabling the memory controller for the root's children). */
  static async create(hierarchy: MemoryCgroupHierarchy, name: string): Promise<MemoryCgroup> {
    if (hierarchy.version === 2) {
      const control = join(hierarchy.root, 'cgroup.subtree_control');
      const enabled = await readFile(control, 'utf8').catch(() => '');
      if (!enabled.split(/\s+/).includes('memory')) await writeFile(control, '+memory');
    }
    const path = join(hierarchy.root, name);
    await mkdir(path);
    return new MemoryCgroup(hierarchy, path);
  }

  async addProcess(pid: number): Promise<void> {
    await writeFile(join(this.path, 'cgroup.procs'), `${pid}\n`);
  }

  async memoryStat(): Promise<MemoryStat> {
    const text = await readFile(join(this.path, 'memory.stat'), 'utf8');
    const values = new Map(text.split('\n').map((line) => line.split(' ') as [string, string]).map(([k, v]) => [k, Number(v)]));
    const cacheKey = this.hierarchy.version === 1 ? 'cache' : 'file';
    const pageCacheBytes = values.get(cacheKey);
    if (pageCacheBytes === undefined || Number.isNaN(pageCacheBytes)) throw new MeasureError(`${this.path}/memory.stat has no "${cacheKey}" line`);
    return { pageCacheBytes };
  }

  /** Kills what is left in it (a daemon the command started) and removes it; its charges move to the parent. */
  async remove(): Promise<void> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const procs = (await readFile(join(this.path, 'cgroup.procs'), 'utf8').catch(() => '')).split('\n').filter((l) => l !== '').map(Number);
      for (const pid of procs) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      try {
        await rmdir(this.path);
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
        if ((error as NodeJS.ErrnoException).code !== 'EBUSY') throw error;
      }
      await sleep(20);
    }
    const stillThere = await access(this.path).then(() => true, () => false);
    if (stillThere) throw new MeasureError(`cannot remove cgroup ${this.path}: processes keep running in it`);
  }
}
