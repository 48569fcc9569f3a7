import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build, type BuildResult } from '../../src/build/build.js';
import { listMounts, unmountImage, type MountResult } from '../../src/mount/index.js';
import { readMountinfo } from '../../src/mount/mountinfo.js';
import { formatMeasureTable, type MeasureReport, type SharingAnalysis } from '../../src/share/index.js';
import { run } from '../helpers/exec.js';
import { assertNoLeaks, leakCheck, type LeakSnapshot } from '../helpers/kernel.js';
import { TEMP_DIR_PREFIX } from '../helpers/tmp.js';
import { assertTreesEqual, snapshotTree, type TreeSnapshot } from '../helpers/tree.js';
import { cli, cliJson } from '../mount/helpers.js';
import { derivedImages, type DerivedImages } from './derivedImage.js';

/**
 * The RFC's experiment on real images: v1 (Debian + python3, python3-yaml, python3-requests, made
 * by debootstrap/apt/umoci) and v2 (v1 plus an application layer, made by umoci), converted by
 * `build` into one store, started one after the other with a Python startup command.
 */

let dir: string;
let images: DerivedImages;
let byName: Map<string, BuildResult>;
let runtimeDir: string;
let baseline: LeakSnapshot;

before(async () => {
  images = await derivedImages();
  dir = await mkdtemp(join(tmpdir(), TEMP_DIR_PREFIX));
  const report = await build([`${images.layout}:base`, `${images.layout}:v1`, `${images.layout}:v2`], { outputDir: join(dir, 'out') });
  byName = new Map(report.images.map((i) => [i.name, i]));
  runtimeDir = join(dir, 'runtime');
  baseline = await leakCheck();
});

after(async () => {
  if (dir === undefined) return;
  for (const mount of (await listMounts(runtimeDir)).mounts) await unmountImage(mount.mountpoint, { runtimeDir }).catch(() => undefined);
  const mounted = (await readMountinfo()).filter((e) => e.target.startsWith(`${dir}/`));
  if (mounted.length > 0) throw new Error(`still mounted: ${mounted.map((m) => m.target).join(', ')}`);
  if (process.env['KEEP_TEST_TMP'] !== '1') await rm(dir, { recursive: true, force: true });
});

const image = (name: string) => byName.get(name)!.metadataImage;

interface VerifyResult {
  static: SharingAnalysis;
  measured: MeasureReport | null;
  sharedPercent: number | null;
  pass: boolean;
}

test('static: v2 finds all but its application layer already held and shared; base -> v1 shares the base layer', async () => {
  const result = await cliJson<VerifyResult>(['verify-sharing', image('base'), image('v1'), image('v2')]);
  const [base, v1, v2] = result.static.images;
  assert.equal(base!.held.bytes, 0, 'the first image holds nothing earlier');
  assert.ok(v1!.eligible.bytes >= base!.total.bytes * 0.95, `v1 shares the base layer: ${v1!.eligible.bytes} of base's ${base!.total.bytes}`);
  assert.ok(v1!.new.bytes > 40 * 2 ** 20, 'Python is new in v1');
  assert.equal(v2!.eligible.bytes, v1!.total.bytes, 'everything v1 has, v2 shares');
  assert.equal(v2!.new.files, 3, 'the 3 application files are new');
  assert.ok(v2!.sharedPercent > 99.9, `v2 shares ${v2!.sharedPercent}%`);
  assert.equal(result.static.minSharedPercent, Math.min(v1!.sharedPercent, v2!.sharedPercent));
});

test('static with --trace: paths through symlinks are followed, missing ones reported, --min-shared sets the exit status', async () => {
  const trace = join(dir, 'startup.txt');
  // How a startup trace names files: through /usr/bin/python3 -> python3.11 and the merged-/usr /lib symlink.
  await writeFile(trace, ['# python startup', '/usr/bin/python3', '/lib/x86_64-linux-gnu/libc.so.6', '/usr/lib/python3/dist-packages/yaml/__init__.py', '/app/main.py', '/no/such/file', ''].join('\n'));
  const result = await cliJson<VerifyResult>(['verify-sharing', image('v1'), image('v2'), '--trace', trace]);
  const [v1, v2] = result.static.images;
  assert.deepEqual(v1!.traceMissing, ['/app/main.py', '/no/such/file']);
  assert.deepEqual(v2!.traceMissing, ['/no/such/file']);
  assert.equal(v2!.total.files, 4);
  assert.equal(v2!.eligible.files, 3, 'python, libc and yaml are shared');
  assert.equal(v2!.new.files, 1, 'the application file is new');
  const gated = await cli(['verify-sharing', image('v1'), image('v2'), '--trace', trace, '--min-shared', '100']);
  assert.equal(gated.code, 1, gated.output);
  assert.match(gated.stderr, /shared \d+\.\d% is under --min-shared 100%/);
  assert.equal((await cli(['verify-sharing', image('v1'), image('v2'), '--trace', trace, '--min-shared', '90'])).code, 0);
});

/** The source tree as umoci stores it (whole seconds, rounded) and without what the image root takes from elsewhere. */
function wholeSeconds(snapshot: TreeSnapshot): TreeSnapshot {
  const round = (mtime: string) => {
    const [sec, nsec] = mtime.split('.') as [string, string];
    return `${BigInt(sec) + (Number(nsec) >= 500_000_000 ? 1n : 0n)}.000000000`;
  };
  return new Map([...snapshot].map(([path, entry]) => [path, { ...entry, mtime: round(entry.mtime) }]));
}

const OVERLAY_XATTRS = ['trusted.overlay.metacopy', 'trusted.overlay.redirect'];

test('the sharing mount shows exactly the plain mount and the source tree, and runs Python from it (exec and mmap of shared libraries)', async () => {
  const shared = join(dir, 'mnt-shared');
  const plain = join(dir, 'mnt-plain');
  await mkdir(shared);
  await mkdir(plain);
  const a = await cliJson<MountResult>(['mount', image('v2'), shared, '--runtime-dir', runtimeDir]);
  assert.equal(a.mechanism, 'overlay');
  const b = await cliJson<MountResult>(['mount', image('v2'), plain, '--runtime-dir', runtimeDir, '--no-share']);
  assert.equal(b.mechanism, 'plain');
  try {
    const viaOverlay = await snapshotTree(shared);
    const viaPlain = await snapshotTree(plain);
    // overlayfs hides its own trusted.overlay.* xattrs; the plain mount shows the build's markers.
    let markers = 0;
    for (const entry of viaPlain.values()) {
      if (OVERLAY_XATTRS.every((x) => x in entry.xattrs)) markers++;
      for (const x of OVERLAY_XATTRS) delete entry.xattrs[x];
    }
    assert.ok(markers > 7000, `${markers} files carry the object markers`);
    for (const [path, entry] of viaOverlay) for (const x of OVERLAY_XATTRS) assert.ok(!(x in entry.xattrs), `${path}: ${x} visible through the overlay`);
    assertTreesEqual(viaPlain, viaOverlay);
    const source = wholeSeconds(await snapshotTree(images.v2Tree));
    assertTreesEqual(source, wholeSeconds(viaOverlay), {
      ignore: (path, field) => path === '.' && ['mode', 'mtime', 'uid', 'gid'].includes(field),
    });

    const python = await run('chroot', [shared, '/usr/bin/python3', '/app/main.py']);
    assert.equal(python.code, 0, python.output);
    assert.match(python.stdout, /^derived-app 2\.\d+\.\d+\n$/);
    // Reading by mmap gives the source's bytes too (the dynamic loader above mmapped the libraries).
    const mapped = ['usr/bin/python3.11', 'usr/lib/x86_64-linux-gnu/libcrypto.so.3', 'usr/lib/x86_64-linux-gnu/libc.so.6'];
    const script = `import hashlib, mmap, sys\nfor p in sys.argv[1:]:\n  f = open(p, 'rb'); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); print(hashlib.sha256(m).hexdigest())`;
    const hashes = await run('chroot', [shared, '/usr/bin/python3', '-c', script, ...mapped.map((p) => `/${p}`)]);
    assert.equal(hashes.code, 0, hashes.output);
    assert.deepEqual(hashes.stdout.trim().split('\n'), mapped.map((p) => source.get(p)!.sha256));
  } finally {
    await cliJson(['umount', shared, '--runtime-dir', runtimeDir]);
    await cliJson(['umount', plain, '--runtime-dir', runtimeDir]);
  }
  assertNoLeaks(baseline, await leakCheck(), [dir]);
});

test('measured: the second container adds at most 5% of the first one\'s page cache with sharing, about all of it without', async (t) => {
  const command = 'python3 -c "import yaml, requests"';
  const r = await cli(['verify-sharing', image('v1'), image('v2'), '--measure', '--run', command, '--min-shared', '95', '--json']);
  assert.equal(r.code, 0, r.output);
  const result = JSON.parse(r.stdout) as VerifyResult;
  const measured = result.measured!;
  for (const line of formatMeasureTable(measured)) t.diagnostic(line);
  const [off, on] = measured.scenarios;
  assert.equal(off!.mechanism, 'plain');
  assert.equal(on!.mechanism, 'overlay');
  const firstOff = off!.runs[0]!.addedPageCacheBytes;
  const firstOn = on!.runs[0]!.addedPageCacheBytes;
  assert.ok(firstOff > 8 * 2 ** 20 && firstOn > 8 * 2 ** 20, `the first container reads megabytes (${firstOff}, ${firstOn})`);
  const [offRatio] = measured.laterToFirstPercent.sharingOff;
  const [onRatio] = measured.laterToFirstPercent.sharingOn;
  assert.ok(onRatio! <= 5, `sharing on: the second container added ${onRatio!.toFixed(1)}% of the first's`);
  assert.ok(offRatio! >= 90, `sharing off: the second container added ${offRatio!.toFixed(1)}% of the first's (close to all of it)`);
  assert.equal(result.pass, true);
  assert.ok(result.sharedPercent! >= 95);
  assertNoLeaks(baseline, await leakCheck(), [dir]);
  const measureMounts = (await readMountinfo()).filter((e) => e.target.startsWith(join(tmpdir(), 'erofs-measure')));
  assert.deepEqual(measureMounts, [], 'the measurement unmounted everything');
});
