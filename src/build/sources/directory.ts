import { closeSync, constants as fsConstants, lstatSync, openSync, readdirSync, readlinkSync, readSync, type BigIntStats } from 'node:fs';
import type { RegularData, DirNode, NodeAttrs, TreeNode } from '../tree.js';
import { nameKey } from '../tree.js';
import type { ReadAt } from '../chunker.js';

export class SourceReadError extends Error {
  readonly code = 'ERR_SOURCE_READ';
  constructor(readonly sourcePath: string, problem: string) {
    super(`${sourcePath}: ${problem}`);
    this.name = 'SourceReadError';
  }
}

/**
 * Turns a regular file's bytes into tree data (chunks in a blob, or bytes kept inline), and
 * possibly xattrs derived from the content (fingerprints).
 */
export type RegularFileSink = (sourcePath: string, readAt: ReadAt, sizeBytes: number) => { data: RegularData; xattrs: [string, Buffer][] } | Promise<{ data: RegularData; xattrs: [string, Buffer][] }>;

function attrsOf(stat: BigIntStats, xattrs: Map<string, Buffer>): NodeAttrs {
  const mtimeNs = stat.mtimeNs;
  let mtimeSec = mtimeNs / 1_000_000_000n;
  let mtimeNsec = Number(mtimeNs % 1_000_000_000n);
  if (mtimeNsec < 0) {
    // Times before 1970: keep nanoseconds positive, as struct timespec does.
    mtimeSec -= 1n;
    mtimeNsec += 1_000_000_000;
  }
  return { permissions: Number(stat.mode) & 0o7777, uid: Number(stat.uid), gid: Number(stat.gid), mtimeSec, mtimeNsec, xattrs };
}

/** fs-xattr (a native addon), loaded by the first directory read: image builds never need it, and loading it took about 25 ms of every start. */
let fsXattr: typeof import('fs-xattr') | undefined;

/** O_PATH (not exported by node): a handle on the entry itself, even a symlink, without opening it. */
const O_PATH = 0o10000000;

/**
 * Xattrs of the entry itself. fs-xattr takes paths and follows symlinks, so we go through
 * /proc/self/fd of an O_PATH|O_NOFOLLOW handle: that names the entry (symlinks included) and
 * works for names that are not valid UTF-8.
 */
function readXattrs(pathBytes: Buffer, openFd?: number): Map<string, Buffer> {
  const { getAttributeSync, listAttributesSync } = fsXattr!;
  const xattrs = new Map<string, Buffer>();
  const fd = openFd ?? openSync(pathBytes, O_PATH | fsConstants.O_NOFOLLOW);
  const fdPath = `/proc/self/fd/${fd}`;
  try {
    let names: string[];
    try {
      names = listAttributesSync(fdPath);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOTSUP') return xattrs;
      throw error;
    }
    for (const name of names.sort()) {
      try {
        xattrs.set(Buffer.from(name, 'utf8').toString('latin1'), getAttributeSync(fdPath, name));
      } catch (error) {
        // Gone between list and get, or unreadable in this namespace (user.* on special files).
        if (!['ENODATA', 'EPERM'].includes((error as NodeJS.ErrnoException).code ?? '')) throw error;
      }
    }
    return xattrs;
  } finally {
    if (openFd === undefined) closeSync(fd);
  }
}

/**
 * Reads a directory tree from the file system: types, permissions, owners, nanosecond mtimes,
 * xattrs (not on symlinks), device numbers, and hardlinks (one node per inode). Regular file data
 * goes through `sink` as it is met, so no file is held in memory.
 */
export async function readDirectoryTree(rootPath: string, sink: RegularFileSink): Promise<DirNode> {
  fsXattr ??= await import('fs-xattr');
  const rootBytes = Buffer.from(rootPath);
  let rootStat: BigIntStats;
  try {
    rootStat = lstatSync(rootBytes, { bigint: true });
  } catch (error) {
    const err = error as NodeJS.ErrnoException;
    throw new SourceReadError(rootPath, err.code === 'ENOENT' ? 'no such directory' : err.message);
  }
  if (!rootStat.isDirectory()) throw new SourceReadError(rootPath, 'not a directory');
  const root: DirNode = { kind: 'dir', children: new Map(), ...attrsOf(rootStat, readXattrs(rootBytes)) };
  const hardlinks = new Map<string, TreeNode>();
  const pending: { dir: DirNode; pathBytes: Buffer }[] = [{ dir: root, pathBytes: rootBytes }];
  while (pending.length > 0) {
    const { dir, pathBytes } = pending.pop()!;
    const names = readdirSync(pathBytes, { encoding: 'buffer' }).sort(Buffer.compare);
    for (const name of names) {
      const childPath = Buffer.concat([pathBytes, Buffer.from('/'), name]);
      const stat = lstatSync(childPath, { bigint: true });
      const linkKey = `${stat.dev}:${stat.ino}`;
      if (!stat.isDirectory() && stat.nlink > 1n) {
        const existing = hardlinks.get(linkKey);
        if (existing !== undefined) {
          dir.children.set(nameKey(name), existing);
          continue;
        }
      }
      const node = await nodeFor(childPath, stat, sink);
      if (node.kind === 'dir') pending.push({ dir: node, pathBytes: childPath });
      else if (stat.nlink > 1n) hardlinks.set(linkKey, node);
      dir.children.set(nameKey(name), node);
    }
  }
  return root;
}

async function nodeFor(pathBytes: Buffer, stat: BigIntStats, sink: RegularFileSink): Promise<TreeNode> {
  const display = pathBytes.toString();
  if (stat.isSymbolicLink()) {
    return { kind: 'lnk', target: readlinkSync(pathBytes, { encoding: 'buffer' }), ...attrsOf(stat, readXattrs(pathBytes)) };
  }
  if (stat.isFile()) {
    // Synchronous reads: files are converted one at a time, and a thread-pool round trip per read
    // cost more than the read (see BlobWriter).
    const fd = openSync(pathBytes, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    try {
      const attrs = attrsOf(stat, readXattrs(pathBytes, fd));
      const readAt: ReadAt = (buffer, offset, length, position) => readSync(fd, buffer, offset, length, position);
      const { data, xattrs } = await sink(display, readAt, Number(stat.size));
      for (const [name, value] of xattrs) attrs.xattrs.set(name, value);
      return { kind: 'reg', data, ...attrs };
    } finally {
      closeSync(fd);
    }
  }
  const attrs = attrsOf(stat, readXattrs(pathBytes));
  if (stat.isDirectory()) return { kind: 'dir', children: new Map(), ...attrs };
  if (stat.isCharacterDevice() || stat.isBlockDevice()) {
    const rdev = Number(stat.rdev);
    // glibc dev_t layout: major in bits 8..19 and 32..43, minor in bits 0..7 and 20..31.
    const major = ((rdev >>> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
    const minor = (rdev & 0xff) | ((rdev >>> 12) & ~0xff);
    return { kind: stat.isCharacterDevice() ? 'chr' : 'blk', rdevMajor: major, rdevMinor: minor, ...attrs };
  }
  if (stat.isFIFO()) return { kind: 'fifo', ...attrs };
  if (stat.isSocket()) return { kind: 'sock', ...attrs };
  throw new SourceReadError(display, 'unknown file type');
}
