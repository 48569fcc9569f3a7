import { listAttributes, getAttribute } from 'fs-xattr';
import { constants as fsConstants, type BigIntStats } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
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
export type RegularFileSink = (sourcePath: string, readAt: ReadAt, sizeBytes: number) => Promise<{ data: RegularData; xattrs: [string, Buffer][] }>;

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

/** O_PATH (not exported by node): a handle on the entry itself, even a symlink, without opening it. */
const O_PATH = 0o10000000;

/**
 * Xattrs of the entry itself. fs-xattr takes paths and follows symlinks, so we go through
 * /proc/self/fd of an O_PATH|O_NOFOLLOW handle: that names the entry (symlinks included) and
 * works for names that are not valid UTF-8.
 */
async function readXattrs(pathBytes: Buffer, openFd?: number): Promise<Map<string, Buffer>> {
  const xattrs = new Map<string, Buffer>();
  const handle = openFd === undefined ? await open(pathBytes, O_PATH | fsConstants.O_NOFOLLOW) : undefined;
  const fdPath = `/proc/self/fd/${openFd ?? handle!.fd}`;
  try {
    let names: string[];
    try {
      names = await listAttributes(fdPath);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOTSUP') return xattrs;
      throw error;
    }
    for (const name of names.sort()) {
      try {
        xattrs.set(Buffer.from(name, 'utf8').toString('latin1'), await getAttribute(fdPath, name));
      } catch (error) {
        // Gone between list and get, or unreadable in this namespace (user.* on special files).
        if (!['ENODATA', 'EPERM'].includes((error as NodeJS.ErrnoException).code ?? '')) throw error;
      }
    }
    return xattrs;
  } finally {
    await handle?.close();
  }
}

/**
 * Reads a directory tree from the file system: types, permissions, owners, nanosecond mtimes,
 * xattrs (not on symlinks), device numbers, and hardlinks (one node per inode). Regular file data
 * goes through `sink` as it is met, so no file is held in memory.
 */
export async function readDirectoryTree(rootPath: string, sink: RegularFileSink): Promise<DirNode> {
  const rootBytes = Buffer.from(rootPath);
  const rootStat = await lstat(rootBytes, { bigint: true }).catch((error: NodeJS.ErrnoException) => {
    throw new SourceReadError(rootPath, error.code === 'ENOENT' ? 'no such directory' : error.message);
  });
  if (!rootStat.isDirectory()) throw new SourceReadError(rootPath, 'not a directory');
  const root: DirNode = { kind: 'dir', children: new Map(), ...attrsOf(rootStat, await readXattrs(rootBytes)) };
  const hardlinks = new Map<string, TreeNode>();
  const pending: { dir: DirNode; pathBytes: Buffer }[] = [{ dir: root, pathBytes: rootBytes }];
  while (pending.length > 0) {
    const { dir, pathBytes } = pending.pop()!;
    const names = (await readdir(pathBytes, { encoding: 'buffer' })).sort(Buffer.compare);
    for (const name of names) {
      const childPath = Buffer.concat([pathBytes, Buffer.from('/'), name]);
      const stat = await lstat(childPath, { bigint: true });
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
    return { kind: 'lnk', target: await readlink(pathBytes, { encoding: 'buffer' }), ...attrsOf(stat, await readXattrs(pathBytes)) };
  }
  if (stat.isFile()) {
    const handle = await open(pathBytes, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
    try {
      const attrs = attrsOf(stat, await readXattrs(pathBytes, handle.fd));
      const readAt: ReadAt = async (buffer, offset, length, position) => (await handle.read(buffer, offset, length, position)).bytesRead;
      const { data, xattrs } = await sink(display, readAt, Number(stat.size));
      for (const [name, value] of xattrs) attrs.xattrs.set(name, value);
      return { kind: 'reg', data, ...attrs };
    } finally {
      await handle.close();
    }
  }
  const attrs = attrsOf(stat, await readXattrs(pathBytes));
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
