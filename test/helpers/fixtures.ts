import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, ftruncateSync, lchownSync, linkSync, mkdirSync, openSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { runChecked } from './exec.js';

export type FixtureKind =
  | 'file-size' // regular file of an interesting size, random content
  | 'file-dedup' // content identical to (or sharing a chunk with) another file
  | 'file-zero' // all-zero content written out (not sparse)
  | 'file-sparse' // holes made with truncate / positioned writes
  | 'dir'
  | 'symlink'
  | 'chr'
  | 'blk'
  | 'fifo'
  | 'sock'
  | 'name' // an unusual file name
  | 'big-dir'
  | 'deep'
  | 'hardlink'
  | 'xattr'
  | 'owner'
  | 'mode'
  | 'mtime';

export interface FixtureEntry {
  /** Relative to the tree root, '/'-separated (the form {@link snapshotTree} uses). */
  path: string;
  kind: FixtureKind;
  note: string;
}

export interface TreeDescription {
  root: string;
  chunkSizeBytes: number;
  /** Everything created on purpose, in creation order; a path appears once per kind it covers. */
  entries: FixtureEntry[];
  /** The same, grouped: kind -> paths. */
  byKind: Record<FixtureKind, string[]>;
  /** Optional xattrs the kernel refused to set here (the tree is valid without them). */
  refusedXattrs: Array<{ path: string; name: string; reason: string }>;
}

export interface FullTreeOptions {
  /** Entries in `bigdir/` (default 20000). */
  bigDirEntries?: number;
  /** Chunk size C around which file sizes are chosen: C-1, C, C+1, 3C+5 (default 1 MiB). */
  chunkSizeBytes?: number;
  /** Directory levels under `deep/` (default 60). */
  depth?: number;
  /**
   * Length of the longest names (default 255, the EROFS limit). erofs-utils 1.5's mkfs.erofs cannot
   * build a tree with a 255-byte name at all ("Could not format the device: [Error 2]"), so tests that
   * feed it the tree pass 254.
   */
  longestNameBytes?: number;
}

const SEC = 1_000_000_000n;

/**
 * A valid VFS_CAP_REVISION_2 `security.capability` value (20 bytes, little endian): magic 0x02000000
 * with VFS_CAP_FLAGS_EFFECTIVE, permitted = CAP_NET_BIND_SERVICE (bit 10), nothing inheritable. The
 * kernel validates this xattr's format, so a random value would be refused.
 */
export const CAP_NET_BIND_SERVICE_V2 = Buffer.from('0100000200040000000000000000000000000000', 'hex');

// Special files, xattrs (never following symlinks, which fs-xattr does) and nanosecond times (which
// fs.utimes rounds through a double) are done by python3, in one process per phase.
const PY_SPECIAL_FILES = String.raw`
import json, os, socket, stat, sys
plan = json.load(sys.stdin)
os.chdir(plan["root"])  # socket paths must stay under 108 bytes, so bind relative names
for path, kind, major, minor in plan["nodes"]:
    if kind == "chr":
        os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(major, minor))
    elif kind == "blk":
        os.mknod(path, 0o644 | stat.S_IFBLK, os.makedev(major, minor))
    elif kind == "fifo":
        os.mkfifo(path, 0o644)
    elif kind == "sock":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()  # the socket file stays
    else:
        raise SystemExit("unknown node kind " + kind)
`;

const PY_XATTRS_AND_TIMES = String.raw`
import json, os, sys
plan = json.load(sys.stdin)
os.chdir(plan["root"])
refused = []
for path, name, value, optional in plan["xattrs"]:
    try:
        os.setxattr(path, name, bytes.fromhex(value), follow_symlinks=False)
    except OSError as e:
        if not optional:
            raise SystemExit("setxattr %s %s: %s" % (path, name, e))
        refused.append({"path": path, "name": name, "reason": e.strerror})
for path, ns in plan["times"]:
    os.utime(path, ns=(int(ns), int(ns)), follow_symlinks=False)
print(json.dumps(refused))
`;

/** Collects what to create, applies it in the order metadata needs, and describes the result. */
class TreeBuilder {
  readonly entries: FixtureEntry[] = [];
  private readonly nodes: Array<[string, string, number, number]> = [];
  private readonly links: Array<[string, string]> = [];
  private readonly owners: Array<[string, number, number]> = [];
  private readonly modes: Array<[string, number]> = [];
  private readonly xattrs: Array<[string, string, string, boolean]> = [];
  private readonly times = new Map<string, bigint>();
  private readonly dirs = new Set<string>(['.']);

  constructor(readonly root: string) {
    mkdirSync(root, { recursive: true });
  }

  abs(rel: string): string {
    return rel === '.' ? this.root : join(this.root, rel);
  }

  note(kind: FixtureKind, path: string, note: string): void {
    this.entries.push({ path, kind, note });
  }

  dir(rel: string): string {
    mkdirSync(this.abs(rel), { recursive: true });
    for (let d = rel; d !== '.' && d !== ''; d = dirname(d)) this.dirs.add(d);
    return rel;
  }

  file(rel: string, content: Buffer | string, kind?: FixtureKind, note = ''): string {
    this.dir(dirname(rel));
    writeFileSync(this.abs(rel), content);
    if (kind) this.note(kind, rel, note);
    return rel;
  }

  /** A file of `sizeBytes` whose only data are `extents` ([offset, length] of random bytes); the rest are holes. */
  sparse(rel: string, sizeBytes: number, extents: Array<[number, number]>, note: string): string {
    this.dir(dirname(rel));
    const fd = openSync(this.abs(rel), 'w');
    try {
      for (const [offset, length] of extents) writeSync(fd, randomBytes(length), 0, length, offset);
      ftruncateSync(fd, sizeBytes);
    } finally {
      closeSync(fd);
    }
    this.note('file-sparse', rel, note);
    return rel;
  }

  symlink(rel: string, target: string, note: string): string {
    this.dir(dirname(rel));
    symlinkSync(target, this.abs(rel));
    this.note('symlink', rel, note);
    return rel;
  }

  /** Created later by python3 (mknod, mkfifo, bind). */
  node(rel: string, kind: 'chr' | 'blk' | 'fifo' | 'sock', note: string, major = 0, minor = 0): string {
    this.dir(dirname(rel));
    this.nodes.push([rel, kind, major, minor]);
    this.note(kind, rel, note);
    return rel;
  }

  hardlink(existing: string, rel: string, note: string): string {
    this.dir(dirname(rel));
    this.links.push([existing, rel]);
    this.note('hardlink', rel, note);
    return rel;
  }

  chown(rel: string, uid: number, gid: number, note?: string): void {
    this.owners.push([rel, uid, gid]);
    if (note !== undefined) this.note('owner', rel, note);
  }

  chmod(rel: string, mode: number, note?: string): void {
    this.modes.push([rel, mode]);
    if (note !== undefined) this.note('mode', rel, note);
  }

  xattr(rel: string, name: string, value: Buffer | string, note?: string, optional = false): void {
    this.xattrs.push([rel, name, Buffer.from(value).toString('hex'), optional]);
    if (note !== undefined) this.note('xattr', rel, note);
  }

  mtime(rel: string, ns: bigint, note?: string): void {
    this.times.set(rel, ns);
    if (note !== undefined) this.note('mtime', rel, note);
  }

  async finish(chunkSizeBytes: number): Promise<TreeDescription> {
    const python = async (script: string, plan: unknown): Promise<string> =>
      (await runChecked('python3', ['-c', script], { input: JSON.stringify(plan) })).stdout;

    await python(PY_SPECIAL_FILES, { root: this.root, nodes: this.nodes });
    for (const [existing, rel] of this.links) linkSync(this.abs(existing), this.abs(rel));
    // chown before chmod: chown clears setuid/setgid on regular files. Both before xattrs: chown
    // also drops security.capability.
    for (const [rel, uid, gid] of this.owners) lchownSync(this.abs(rel), uid, gid);
    for (const [rel, mode] of this.modes) chmodSync(this.abs(rel), mode);

    // Directory times last of all, once nothing is created in them any more. Directories without an
    // explicit time get distinct ones with nanoseconds, so a writer that drops them is caught.
    let i = 0n;
    for (const dir of [...this.dirs].sort()) {
      if (!this.times.has(dir)) this.times.set(dir, 1_650_000_000n * SEC + i * 1_000_003_001n + 123n);
      i++;
    }
    const times = [...this.times].map(([rel, ns]) => [rel, ns.toString()]);
    const refused = JSON.parse(await python(PY_XATTRS_AND_TIMES, { root: this.root, xattrs: this.xattrs, times })) as TreeDescription['refusedXattrs'];

    const byKind = {} as Record<FixtureKind, string[]>;
    for (const e of this.entries) (byKind[e.kind] ??= []).push(e.path);
    return { root: this.root, chunkSizeBytes, entries: this.entries, byKind, refusedXattrs: refused };
  }
}

/**
 * Creates under `root` (made if missing) a tree covering what an EROFS writer must preserve:
 *  - types: regular, directory, symlinks (short; 300-byte target; dangling; to a directory), char devices 1:3, 259:300 and
 *    4095:1048575 (largest new_encode_dev), block devices 7:200 and 259:0, fifo, unix socket;
 *  - names: 1 byte, `longestNameBytes` (255) bytes (ASCII and 2-byte UTF-8), bytes sorting before '.' ("!bang", "-dash",
 *    " space", "+plus"), UTF-8 (Latin, CJK, emoji), a backslash, a tab and a newline;
 *  - `bigdir/` with `bigDirEntries` entries (mostly empty files, a few subdirectories and symlinks);
 *  - `deep/`: `depth` nested directories;
 *  - hardlinks: 3 names of one inode across directories (with an xattr), 2 names of a fifo;
 *  - xattrs: user.* short, 200-byte name, 3000-byte value, empty value, 30 on one file, the same
 *    name+value on 5 files (shared-xattr candidate), on directories, trusted.overlay.opaque=y,
 *    trusted.* on a symlink and a fifo (user.* is not allowed there), security.capability (valid v2),
 *    and an arbitrary security.* (optional: see refusedXattrs);
 *  - sizes 0, 1, 4095, 4096, 4097, C-1, C, C+1, 3C+5 (random); identical copies, a file sharing only its
 *    first chunk, an all-zero file; sparse files with a hole at the start, middle, end, and wholly;
 *  - owners 0, 1000, 65535, 70000 (needs an extended inode), mixed uid/gid;
 *  - modes 000, 4755, 2755, 7777, 1777 and 2775 directories, a 000 directory with content;
 *  - mtimes with nanoseconds, before 1970 (with and without a fraction), 0, after 2038, equal pairs,
 *    on a symlink; all directories get nanosecond mtimes, set last.
 */
export async function makeFullTree(root: string, opts: FullTreeOptions = {}): Promise<TreeDescription> {
  const C = opts.chunkSizeBytes ?? 1 << 20;
  const bigDirEntries = opts.bigDirEntries ?? 20000;
  const depth = opts.depth ?? 60;
  const longest = opts.longestNameBytes ?? 255;
  if (!Number.isInteger(longest) || longest < 2 || longest > 255) throw new Error(`longestNameBytes must be in [2, 255], got ${longest}`);
  if (!Number.isInteger(C) || C < 2) throw new Error(`chunkSizeBytes must be an integer >= 2, got ${C}`);
  const t = new TreeBuilder(root);

  // --- sizes, dedup, zeros, sparse
  for (const [name, size] of [
    ['empty', 0], ['one', 1], ['4095', 4095], ['4096', 4096], ['4097', 4097],
    ['chunk-minus-1', C - 1], ['chunk', C], ['chunk-plus-1', C + 1], ['3chunks-plus-5', 3 * C + 5],
  ] as const) {
    t.file(`sizes/${name}`, randomBytes(size), 'file-size', `${size} random bytes`);
  }
  const shared = randomBytes(2 * C + 17);
  t.file('dedup/copy-a', shared, 'file-dedup', 'same content as copy-b and sub/copy-c');
  t.file('dedup/copy-b', shared, 'file-dedup', 'same content as copy-a');
  t.file('dedup/sub/copy-c', shared, 'file-dedup', 'same content as copy-a');
  t.file('dedup/first-chunk-shared', Buffer.concat([shared.subarray(0, C), randomBytes(C + 3)]), 'file-dedup', 'first C bytes equal copy-a');
  t.file('dedup/zeros', Buffer.alloc(2 * C + 1), 'file-zero', `${2 * C + 1} zero bytes, written (not sparse)`);
  t.sparse('sparse/hole-start', 3 * C, [[2 * C, C]], 'hole [0, 2C), data [2C, 3C)');
  t.sparse('sparse/hole-middle', 3 * C, [[0, C], [2 * C, C]], 'data [0, C), hole [C, 2C), data [2C, 3C)');
  t.sparse('sparse/hole-end', 3 * C + 100, [[0, C]], 'data [0, C), hole to 3C+100');
  t.sparse('sparse/all-hole', 4 * C, [], 'size 4C, no data at all');

  // --- every file type
  t.file('types/regular', 'regular file\n');
  t.dir('types/dir');
  t.note('dir', 'types/dir', 'empty directory');
  t.symlink('types/symlink-short', 'regular', 'short target');
  const longTarget = `${'long-target-segment/'.repeat(14)}${'x'.repeat(20)}`; // 300 bytes
  t.symlink('types/symlink-long', longTarget, `${longTarget.length}-byte target`);
  t.symlink('types/symlink-dangling', '/nonexistent/target', 'absolute, dangling');
  t.symlink('types/symlink-to-dir', 'dir', 'points at a directory (walkers must not follow it)');
  t.node('types/chr-null', 'chr', 'char 1:3', 1, 3);
  t.node('types/chr-259-300', 'chr', 'char 259:300', 259, 300);
  t.node('types/chr-max', 'chr', 'char 4095:1048575, the largest new_encode_dev can hold', 4095, 1048575);
  t.node('types/blk-loop', 'blk', 'block 7:200', 7, 200);
  t.node('types/blk-259-0', 'blk', 'block 259:0', 259, 0);
  t.node('types/fifo', 'fifo', 'fifo');
  t.node('types/socket', 'sock', 'unix socket');

  // --- names
  const longUtf8Name = 'é'.repeat(Math.floor(longest / 2)) + (longest % 2 === 1 ? 'z' : '');
  const names: Array<[string, string]> = [
    ['x', '1-byte name'],
    ['n'.repeat(longest), `${longest}-byte ASCII name`],
    [longUtf8Name, `${longest}-byte UTF-8 name (2-byte characters)`],
    ['!bang', "sorts before '.'"],
    ['-dash', "sorts before '.'"],
    [' space', "sorts before '.'"],
    ['+plus', "sorts before '.'"],
    ['.hidden', 'dot file'],
    ['ünïcödé', 'UTF-8 Latin'],
    ['日本語のファイル', 'UTF-8 CJK'],
    ['😀emoji', 'UTF-8 4-byte'],
    ['back\\slash', 'backslash (getfattr quotes it)'],
    ['tab\tname', 'tab'],
    ['new\nline', 'newline'],
  ];
  for (const [name, note] of names) {
    t.file(`names/${name}`, `${note}\n`, 'name', note);
  }
  // xattrs on oddly named files exercise the parsing of getfattr's quoted names.
  t.xattr('names/back\\slash', 'user.odd', 'b');
  t.xattr('names/new\nline', 'user.odd', 'n');
  t.xattr(`names/${longUtf8Name}`, 'user.odd', 'e');

  // --- big directory (sync calls: ~20000 creations in well under a second)
  t.dir('bigdir');
  t.note('big-dir', 'bigdir', `${bigDirEntries} entries`);
  for (let i = 0; i < bigDirEntries; i++) {
    // Names of varying lengths, so dirents and name areas fill blocks unevenly.
    const name = `e${String(i).padStart(5, '0')}${'_'.repeat(i % 37)}`;
    const rel = `bigdir/${name}`;
    if (i % 1000 === 999) mkdirSync(t.abs(rel));
    else if (i % 1000 === 500) symlinkSync(`../sizes/one`, t.abs(rel));
    else closeSync(openSync(t.abs(rel), 'w'));
  }

  // --- deep nesting
  let deep = 'deep';
  for (let level = 1; level <= depth; level++) deep += `/l${String(level).padStart(2, '0')}`;
  t.file(`${deep}/leaf`, 'deep leaf\n', 'deep', `${depth} levels below deep/`);

  // --- hardlinks
  t.file('links/a/one', randomBytes(5000));
  t.note('hardlink', 'links/a/one', 'first of 3 names of one inode');
  t.hardlink('links/a/one', 'links/b/two', 'second name, other directory');
  t.hardlink('links/a/one', 'links/three', 'third name, parent directory');
  t.xattr('links/a/one', 'user.linked', 'xattrs belong to the inode');
  t.node('links/fifo-a', 'fifo', 'hardlinked fifo');
  t.hardlink('links/fifo-a', 'links/fifo-b', 'second name of a fifo');

  // --- xattrs
  t.file('xattrs/short', 's');
  t.xattr('xattrs/short', 'user.short', 'v', 'user.short=v');
  t.file('xattrs/long-name', 'l');
  const longName = `user.${'n'.repeat(195)}`;
  t.xattr('xattrs/long-name', longName, 'value', '200-byte name');
  t.file('xattrs/long-value', 'l');
  t.xattr('xattrs/long-value', 'user.big', randomBytes(3000), '3000-byte value');
  t.file('xattrs/empty-value', 'e');
  t.xattr('xattrs/empty-value', 'user.empty', '', 'empty value');
  t.file('xattrs/many', 'm');
  for (let i = 0; i < 30; i++) t.xattr('xattrs/many', `user.attr${String(i).padStart(2, '0')}`, 'v'.repeat(i));
  t.note('xattr', 'xattrs/many', '30 user.* attributes, values 0..29 bytes');
  for (let i = 1; i <= 5; i++) {
    const rel = t.file(`xattrs/shared-${i}`, `shared ${i}\n`);
    t.xattr(rel, 'user.shared', 'the same name and value on five files', 'shared candidate');
    t.xattr(rel, 'user.own', `only mine ${i}`);
  }
  t.dir('xattrs/dir');
  t.xattr('xattrs/dir', 'user.on-dir', 'directory attribute', 'user.* on a directory');
  t.dir('xattrs/opaque-dir');
  t.file('xattrs/opaque-dir/inside', 'i');
  t.xattr('xattrs/opaque-dir', 'trusted.overlay.opaque', 'y', 'overlayfs opaque directory');
  t.file('xattrs/trusted', 't');
  t.xattr('xattrs/trusted', 'trusted.test', 'trusted value', 'trusted.*');
  t.symlink('xattrs/symlink', 'short', 'symlink with an xattr');
  t.xattr('xattrs/symlink', 'trusted.on-symlink', 'l', 'trusted.* on a symlink (user.* is refused on symlinks)');
  t.node('xattrs/fifo', 'fifo', 'fifo with an xattr');
  t.xattr('xattrs/fifo', 'trusted.on-fifo', 'f', 'trusted.* on a fifo');
  t.file('xattrs/capability', '#!/bin/true\n');
  t.xattr('xattrs/capability', 'security.capability', CAP_NET_BIND_SERVICE_V2, 'security.capability v2, cap_net_bind_service=ep');
  t.file('xattrs/security-other', 's');
  t.xattr('xattrs/security-other', 'security.erofs-test', 'arbitrary', 'arbitrary security.* (optional)', true);
  t.file('xattrs/mixed', 'm');
  t.xattr('xattrs/mixed', 'user.mixed', 'u');
  t.xattr('xattrs/mixed', 'trusted.mixed', 't');
  t.xattr('xattrs/mixed', 'security.capability', CAP_NET_BIND_SERVICE_V2, 'user.*, trusted.* and security.* together');

  // --- owners
  for (const [name, uid, gid] of [['root', 0, 0], ['u1000', 1000, 1000], ['u65535', 65535, 65535], ['u70000', 70000, 70000], ['mixed', 70000, 0], ['mixed2', 0, 70000]] as const) {
    t.file(`owners/${name}`, `${uid}:${gid}\n`);
    t.chown(`owners/${name}`, uid, gid, `uid ${uid} gid ${gid}`);
  }
  t.dir('owners/dir-70000');
  t.chown('owners/dir-70000', 70000, 70000, 'directory 70000:70000');
  t.symlink('owners/link-1000', 'root', 'symlink owned by 1000');
  t.chown('owners/link-1000', 1000, 1000, 'symlink 1000:1000 (lchown)');

  // --- modes
  for (const [name, mode] of [['000', 0o000], ['0600', 0o600], ['setuid', 0o4755], ['setgid', 0o2755], ['all', 0o7777], ['setuid-noexec', 0o4644]] as const) {
    t.file(`modes/${name}`, `${name}\n`);
    t.chmod(`modes/${name}`, mode, `0${mode.toString(8)}`);
  }
  t.file('modes/setuid-70000', 'x');
  t.chown('modes/setuid-70000', 70000, 70000);
  t.chmod('modes/setuid-70000', 0o6755, '06755 owned by 70000');
  t.dir('modes/sticky-dir');
  t.chmod('modes/sticky-dir', 0o1777, 'sticky directory 01777');
  t.dir('modes/setgid-dir');
  t.chmod('modes/setgid-dir', 0o2775, 'setgid directory 02775');
  t.file('modes/dir-000/inside', 'hidden\n');
  t.chmod('modes/dir-000', 0o000, 'directory 0000 with content');
  t.chmod('.', 0o755);

  // --- mtimes
  const times: Array<[string, bigint, string]> = [
    ['ns', 1_700_000_000n * SEC + 123_456_789n, 'nanoseconds'],
    ['negative', -123_456_789n * SEC + 987_654_321n, '1966, with nanoseconds'],
    ['negative-whole', -86_400n * SEC, '1969-12-31, whole seconds'],
    ['minus-half', -SEC / 2n, '-0.5 s'],
    ['epoch', 0n, '0'],
    ['y2100', 4_102_444_800n * SEC + 1n, 'after 2038 (needs 64-bit time)'],
    ['equal-a', 1_600_000_000n * SEC + 500_000_000n, 'equal to equal-b'],
    ['equal-b', 1_600_000_000n * SEC + 500_000_000n, 'equal to equal-a'],
  ];
  for (const [name, ns, note] of times) {
    t.file(`times/${name}`, `${note}\n`);
    t.mtime(`times/${name}`, ns, note);
  }
  t.symlink('times/symlink', 'ns', 'symlink with an mtime');
  t.mtime('times/symlink', 1_500_000_000n * SEC + 999_999_999n, 'symlink mtime with nanoseconds');
  t.dir('times/dir-negative');
  t.mtime('times/dir-negative', -1n * SEC + 1n, 'directory mtime before 1970');
  t.mtime('links/a/one', 1_234_567_890n * SEC + 42n, 'hardlinked inode');
  t.mtime('types/chr-null', 1_111_111_111n * SEC + 111n, 'device mtime');

  return t.finish(C);
}

/** A quick tree with one or two of each kind (regular, empty, dir, symlink, devices, fifo, socket, hardlink, xattrs, odd mode/owner/mtime). */
export async function makeSmallTree(root: string): Promise<TreeDescription> {
  const t = new TreeBuilder(root);
  t.file('hello.txt', 'hello, world\n', 'file-size', '13 bytes');
  t.file('empty', '', 'file-size', 'empty');
  t.file('data.bin', randomBytes(10_000), 'file-size', '10000 random bytes');
  t.file('dir/nested/file', 'nested\n', 'file-size', 'nested file');
  t.note('dir', 'dir/nested', 'nested directory');
  t.symlink('link', 'hello.txt', 'relative target');
  t.node('null', 'chr', 'char 1:3', 1, 3);
  t.node('loop', 'blk', 'block 7:0', 7, 0);
  t.node('fifo', 'fifo', 'fifo');
  t.node('socket', 'sock', 'unix socket');
  t.hardlink('hello.txt', 'dir/hello-link', 'second name of hello.txt');
  t.xattr('hello.txt', 'user.greeting', 'hi', 'user.*');
  t.xattr('dir', 'trusted.overlay.opaque', 'y', 'trusted.* on a directory');
  t.chown('data.bin', 70000, 1000, 'uid 70000 gid 1000');
  t.chmod('data.bin', 0o4750, '04750');
  t.chmod('.', 0o755);
  t.mtime('hello.txt', 1_700_000_000n * SEC + 123_456_789n, 'nanoseconds');
  t.mtime('empty', -SEC / 2n, 'before 1970');
  return t.finish(1 << 20);
}
