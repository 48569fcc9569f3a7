import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { runChecked } from './exec.js';

export type EntryType = 'reg' | 'dir' | 'lnk' | 'chr' | 'blk' | 'fifo' | 'sock';

/**
 * What a tree comparison looks at for one path. Times other than mtime, sizes of non-regular files,
 * inode numbers and block counts are deliberately absent: they legitimately differ between a source
 * tree and the same tree read back from an image.
 */
export interface EntrySnapshot {
  /** Relative to the snapshot root, '/'-separated, no leading './'. The root itself is '.'. */
  path: string;
  type: EntryType;
  /** Permission bits plus setuid/setgid/sticky (`st_mode & 0o7777`). */
  mode: number;
  uid: number;
  gid: number;
  /** "SEC.NSEC" like a timespec: SEC may be negative, NSEC is always 9 digits in [0, 1e9). */
  mtime: string;
  nlink: number;
  /** "MAJOR:MINOR", character and block devices only. */
  rdev?: string;
  /** Regular files only. */
  sizeBytes?: number;
  /** Hex SHA-256 of the content, regular files only. */
  sha256?: string;
  /** Symlinks only. */
  target?: string;
  /** Every extended attribute of the entry itself (symlinks not followed): name -> hex value ('' when empty), keys sorted. */
  xattrs: Record<string, string>;
  /**
   * Hardlink identity, non-directories with nlink > 1 only: the smallest path (JS string order) in this
   * tree with the same (st_dev, st_ino). Two entries are hardlinks of each other iff their linkGroup is equal.
   */
  linkGroup?: string;
}

export type TreeSnapshot = Map<string, EntrySnapshot>;

const TYPE_BY_FORMAT: ReadonlyMap<number, EntryType> = new Map([
  [0o100000, 'reg'],
  [0o040000, 'dir'],
  [0o120000, 'lnk'],
  [0o020000, 'chr'],
  [0o060000, 'blk'],
  [0o010000, 'fifo'],
  [0o140000, 'sock'],
]);

const NS_PER_SEC = 1_000_000_000n;

/** Nanoseconds since the epoch as "SEC.NSEC" with a floored SEC, as the kernel's timespec holds it. */
export function formatMtime(ns: bigint): string {
  let sec = ns / NS_PER_SEC; // truncates towards zero
  let nsec = ns % NS_PER_SEC;
  if (nsec < 0n) {
    sec -= 1n;
    nsec += NS_PER_SEC;
  }
  return `${sec}.${nsec.toString().padStart(9, '0')}`;
}

/** glibc's dev_t split (gnu_dev_major/minor). */
export function formatRdev(rdev: bigint): string {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** Runs `worker` over `items` with at most `limit` in flight. */
async function forEachLimited<T>(items: readonly T[], limit: number, worker: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await worker(item);
    }
  });
  await Promise.all(lanes);
}

const SHA256_OF_NOTHING = createHash('sha256').digest('hex');

/** Streams large files (never whole in memory); small ones are read in one call, which is much cheaper per file. */
async function sha256File(path: string, sizeBytes: number): Promise<string> {
  if (sizeBytes === 0) return SHA256_OF_NOTHING;
  const hash = createHash('sha256');
  if (sizeBytes <= 1 << 20) hash.update(await readFile(path));
  else await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

/** Undoes getfattr's quoting of names: a backslash and three octal digits stand for one byte. */
function unquoteGetfattr(latin1: string): string {
  const bytes = latin1.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
  return Buffer.from(bytes, 'latin1').toString('utf8');
}

/**
 * Every xattr of every entry under `root` (absolute, no trailing slash), keyed by relative path, from
 * a single recursive `getfattr -h -d -m - -e hex --absolute-names -R` (`-m -` includes the trusted.*
 * and security.* namespaces that the default pattern hides; `-h` reads a symlink's own attributes).
 */
async function readAllXattrs(root: string): Promise<Map<string, Record<string, string>>> {
  // latin1 keeps the raw bytes of file names; getfattr escapes only control characters and '\'.
  const { stdout } = await runChecked('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '-R', root], { encoding: 'latin1' });
  const result = new Map<string, Record<string, string>>();
  let current: Record<string, string> | undefined;
  for (const line of stdout.split('\n')) {
    if (line === '') {
      current = undefined;
    } else if (line.startsWith('# file: ')) {
      const abs = unquoteGetfattr(line.slice('# file: '.length));
      let rel: string;
      if (abs === root) rel = '.';
      else if (abs.startsWith(`${root}/`)) rel = abs.slice(root.length + 1);
      else throw new Error(`getfattr reported a path outside ${root}: ${abs}`);
      current = {};
      result.set(rel, current);
    } else if (current !== undefined) {
      // NAME=0xHEX; an empty value prints as "NAME=0x" (older attr: a bare "NAME"). The value never
      // contains '=', the name might, so split at the last one.
      const eq = line.lastIndexOf('=');
      const name = unquoteGetfattr(eq < 0 ? line : line.slice(0, eq));
      const value = eq < 0 ? '' : line.slice(eq + 1);
      if (value !== '' && !/^0x[0-9a-f]*$/.test(value)) throw new Error(`unexpected getfattr value for ${name}: ${value.slice(0, 80)}`);
      current[name] = value.replace(/^0x/, '');
    } else {
      throw new Error(`unexpected getfattr output line: ${JSON.stringify(line)}`);
    }
  }
  return result;
}

/**
 * Snapshot of the tree under `root` (lstat-based: symlinks are recorded, never followed; mount points
 * below root are walked into like directories). Keys are paths relative to root, the root itself being
 * '.'; see {@link EntrySnapshot} for the fields. File names must be valid UTF-8.
 */
export async function snapshotTree(root: string): Promise<TreeSnapshot> {
  const absRoot = resolve(root);
  const snapshot: TreeSnapshot = new Map();
  const identities = new Map<string, string[]>(); // "dev:ino" -> paths, non-directories with nlink > 1
  const regularFiles: EntrySnapshot[] = [];

  const visit = async (rel: string): Promise<string[]> => {
    const abs = rel === '.' ? absRoot : join(absRoot, rel);
    const st = await lstat(abs, { bigint: true });
    const format = Number(st.mode & 0o170000n);
    const type = TYPE_BY_FORMAT.get(format);
    if (type === undefined) throw new Error(`${abs}: unknown file type 0o${format.toString(8)}`);
    const entry: EntrySnapshot = {
      path: rel,
      type,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtime: formatMtime(st.mtimeNs),
      nlink: Number(st.nlink),
      xattrs: {},
    };
    if (type === 'chr' || type === 'blk') entry.rdev = formatRdev(st.rdev);
    if (type === 'reg') {
      entry.sizeBytes = Number(st.size);
      regularFiles.push(entry);
    }
    if (type === 'lnk') entry.target = await readlink(abs);
    if (type !== 'dir' && st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      const group = identities.get(key);
      if (group) group.push(rel);
      else identities.set(key, [rel]);
    }
    snapshot.set(rel, entry);
    if (type !== 'dir') return [];
    const names = await readdir(abs);
    return names.map((name) => (rel === '.' ? name : `${rel}/${name}`));
  };

  // Breadth-first, one level at a time, with bounded parallelism (a 20000-entry directory is one level).
  let level = ['.'];
  while (level.length > 0) {
    const next: string[] = [];
    await forEachLimited(level, 32, async (rel) => {
      for (const child of await visit(rel)) next.push(child);
    });
    level = next;
  }

  await forEachLimited(regularFiles, 8, async (entry) => {
    entry.sha256 = await sha256File(join(absRoot, entry.path), entry.sizeBytes ?? 0);
  });

  for (const paths of identities.values()) {
    const smallest = paths.reduce((a, b) => (b < a ? b : a));
    for (const p of paths) (snapshot.get(p) as EntrySnapshot).linkGroup = smallest;
  }

  for (const [rel, attrs] of await readAllXattrs(absRoot)) {
    const entry = snapshot.get(rel);
    if (!entry) throw new Error(`getfattr listed ${rel}, which the walk of ${absRoot} did not find`);
    entry.xattrs = Object.fromEntries(Object.entries(attrs).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  // Sorted keys make iteration (and therefore diff output) deterministic.
  return new Map([...snapshot.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** The fields compared, in report order; `xattrs` is compared per attribute. */
const FIELDS = ['type', 'mode', 'uid', 'gid', 'mtime', 'nlink', 'rdev', 'sizeBytes', 'sha256', 'target', 'linkGroup'] as const;

export interface DiffOptions {
  /**
   * Return true to skip a difference. `field` is a key of {@link EntrySnapshot} ('mode', 'mtime', ...),
   * 'xattrs' (all attributes of the path), `xattrs.NAME` (one attribute), or 'presence' (the path is
   * missing or extra).
   */
  ignore?: (path: string, field: string) => boolean;
}

function show(field: string, value: unknown): string {
  if (value === undefined) return '(none)';
  if (field === 'mode' && typeof value === 'number') return value.toString(8).padStart(4, '0');
  if (typeof value === 'string') {
    const s = JSON.stringify(value);
    return s.length > 90 ? `${s.slice(0, 80)}..." (${value.length} chars)` : s;
  }
  return String(value);
}

function showHex(hex: string): string {
  return hex.length <= 80 ? `0x${hex}` : `0x${hex.slice(0, 64)}... (${hex.length / 2} bytes)`;
}

/**
 * Readable differences between two snapshots, one per line, in path order: "missing: PATH (TYPE)",
 * "extra: PATH (TYPE)", "PATH: FIELD expected X, actual Y", "PATH: xattr NAME ...". Empty when equal.
 * A type mismatch is reported alone (the other fields would only repeat it).
 */
export function diffTrees(expected: TreeSnapshot, actual: TreeSnapshot, opts: DiffOptions = {}): string[] {
  const ignore = opts.ignore ?? (() => false);
  const out: string[] = [];
  const paths = [...new Set([...expected.keys(), ...actual.keys()])].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const path of paths) {
    const e = expected.get(path);
    const a = actual.get(path);
    if (!e || !a) {
      if (!ignore(path, 'presence')) out.push(e ? `missing: ${path} (${e.type})` : `extra: ${path} (${(a as EntrySnapshot).type})`);
      continue;
    }
    if (e.type !== a.type) {
      if (!ignore(path, 'type')) out.push(`${path}: type expected ${e.type}, actual ${a.type}`);
      continue;
    }
    for (const field of FIELDS) {
      if (e[field] !== a[field] && !ignore(path, field)) {
        out.push(`${path}: ${field} expected ${show(field, e[field])}, actual ${show(field, a[field])}`);
      }
    }
    if (ignore(path, 'xattrs')) continue;
    const names = [...new Set([...Object.keys(e.xattrs), ...Object.keys(a.xattrs)])].sort();
    for (const name of names) {
      const ev = e.xattrs[name];
      const av = a.xattrs[name];
      if (ev === av || ignore(path, `xattrs.${name}`)) continue;
      if (av === undefined) out.push(`${path}: xattr ${name} missing (expected ${showHex(ev as string)})`);
      else if (ev === undefined) out.push(`${path}: xattr ${name} extra (${showHex(av)})`);
      else out.push(`${path}: xattr ${name} expected ${showHex(ev)}, actual ${showHex(av)}`);
    }
  }
  return out;
}

/** Throws with the first 100 lines of {@link diffTrees} (and how many more there are) unless it is empty. */
export function assertTreesEqual(expected: TreeSnapshot, actual: TreeSnapshot, opts: DiffOptions = {}): void {
  const diffs = diffTrees(expected, actual, opts);
  if (diffs.length === 0) return;
  const shown = diffs.slice(0, 100);
  const more = diffs.length > shown.length ? `\n... and ${diffs.length - shown.length} more` : '';
  throw new Error(`trees differ in ${diffs.length} place(s) (expected vs actual):\n${shown.join('\n')}${more}`);
}
