import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, link, open, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { askDaemon, type FuseMountResult, type FuseUnmountResult } from '../../src/fuse/client.js';
import { fusePaths } from '../../src/fuse/paths.js';
import { readMountinfo } from '../../src/mount/mountinfo.js';
import { run, runChecked } from '../helpers/exec.js';
import { assertNoLeaks, leakCheck, withKernelMount, type LeakSnapshot } from '../helpers/kernel.js';
import { realImages } from '../helpers/realImages.js';
import { assertTreesEqual, snapshotTree } from '../helpers/tree.js';
import { assertOneLineError, buildRealPair, cli, cliJson, type BuiltImages } from '../mount/helpers.js';
import { spawn } from 'node:child_process';

let built: BuiltImages & { cleanup: () => Promise<void> };
let baseline: LeakSnapshot;

before(async () => {
  const real = await realImages();
  built = await buildRealPair(real.gzipLayout);
  baseline = await leakCheck();
});

after(async () => {
  // A failed test may leave FUSE mounts: unmount them the way a user would before the helper's cleanup.
  for (const entry of await readMountinfo()) {
    if (entry.target.startsWith(`${built.dir}/`) && entry.fstype === 'fuse') await run('umount', ['-l', entry.target]);
  }
  await built?.cleanup();
});

const rt = (): string[] => ['--runtime-dir', built.runtimeDir];

async function mountpoint(name: string): Promise<string> {
  const path = join(built.dir, name);
  await mkdir(path, { recursive: true });
  return path;
}

async function fuseMounts(): Promise<string[]> {
  return (await readMountinfo()).filter((e) => e.fstype === 'fuse' && (e.target.startsWith(`${built.dir}/`))).map((e) => e.target);
}

async function daemonPids(): Promise<number[]> {
  // Only looks (pgrep), never signals by name: the daemon of this test's own runtime directory.
  const r = await run('pgrep', ['-f', `daemonMain.js ${built.runtimeDir}$`]);
  return r.stdout.split('\n').filter((l) => l.trim() !== '').map(Number);
}

async function fincorePages(file: string): Promise<number> {
  const { stdout } = await runChecked('fincore', ['-J', '-b', file]);
  return Number((JSON.parse(stdout) as { fincore: Array<{ pages: number | string }> }).fincore[0]!.pages);
}

async function assertAllReleased(): Promise<void> {
  assert.deepEqual(await fuseMounts(), [], 'no FUSE mount (root or bind) left');
  assertNoLeaks(baseline, await leakCheck(), [built.dir]);
  for (let i = 0; i < 50 && (await daemonPids()).length > 0; i++) await sleep(100);
  assert.deepEqual(await daemonPids(), [], 'the daemon has exited');
}

test('two real images over FUSE: same tree as the kernel mount, one page cache copy of shared files, python runs, writes fail', async () => {
  const mntBase = await mountpoint('fuse-base');
  const mntV1 = await mountpoint('fuse-v1');
  const first = await cliJson<FuseMountResult>(['mount', '--fuse', built.base.metadataImage, mntBase, ...rt()]);
  const second = await cliJson<FuseMountResult>(['mount', '--fuse', built.v1.metadataImage, mntV1, ...rt()]);
  try {
    assert.equal(first.reusedDaemon, false);
    assert.equal(second.reusedDaemon, true, 'one daemon serves both images');
    assert.equal(second.daemonPid, first.daemonPid);

    for (const [image, mnt] of [[built.v1, mntV1], [built.base, mntBase]] as const) {
      const expected = await withKernelMount(image.metadataImage, image.blobs, (kernelMnt) => snapshotTree(kernelMnt));
      assertTreesEqual(expected, await snapshotTree(mnt));
    }

    // Equal files are one inode of one superblock, so reading one path fills the other's cache.
    const shared = 'usr/bin/bash';
    const [a, b] = [join(mntBase, shared), join(mntV1, shared)];
    assert.equal((await stat(a)).ino, (await stat(b)).ino, 'same inode number through both mounts');
    await writeFile('/proc/sys/vm/drop_caches', '3\n');
    await readFile(a);
    const pagesA = await fincorePages(a);
    assert.ok(pagesA > 0, 'reading through base filled the cache');
    assert.equal(await fincorePages(b), pagesA, 'v1 sees the same cached pages before reading');
    await readFile(b);
    assert.equal(await fincorePages(b), pagesA, 'reading through v1 added no pages');

    // mmap and exec of shared libraries through FUSE.
    const py = await run('chroot', [mntV1, '/usr/bin/python3', '-c', 'import json, hashlib, sqlite3; print(json.dumps(hashlib.sha256(b"x").hexdigest()[:8]))']);
    assert.equal(py.code, 0, py.output);
    assert.equal(py.stdout.trim(), '"2d711642"');

    const touch = await run('touch', [join(mntV1, 'new-file')]);
    assert.notEqual(touch.code, 0);
    assert.match(touch.output, /Read-only file system/);
    await assert.rejects(open(join(mntV1, 'etc', 'passwd'), 'r+'), { code: 'EROFS' });
    await assert.rejects(writeFile(join(mntBase, 'etc', 'hostname'), 'x'), { code: 'EROFS' });
  } finally {
    const u1 = await cliJson<FuseUnmountResult>(['umount', mntBase, ...rt()]);
    assert.equal(u1.daemonStopped, false, 'v1 still served');
    const u2 = await cliJson<FuseUnmountResult>(['umount', mntV1, ...rt()]);
    assert.equal(u2.daemonStopped, true, 'the last umount stops the daemon');
  }
  await assertAllReleased();
});

test('nodes the kernel forgets are dropped by the daemon; files read back the same afterwards and shared files are still one inode', async () => {
  const mntBase = await mountpoint('fuse-forget-base');
  const mntV1 = await mountpoint('fuse-forget-v1');
  await cliJson<FuseMountResult>(['mount', '--fuse', built.base.metadataImage, mntBase, ...rt()]);
  await cliJson<FuseMountResult>(['mount', '--fuse', built.v1.metadataImage, mntV1, ...rt()]);
  const nodes = async (): Promise<number> => (await askDaemon(built.runtimeDir, { op: 'ping' }))?.nodes ?? -1;
  try {
    const before = await snapshotTree(mntV1);
    const held = await nodes();
    assert.ok(held > 1000, `after walking the tree the daemon holds a node per file (${held})`);
    // Dropping the kernel's dentry and inode caches makes it send FORGET for every node it held.
    await writeFile('/proc/sys/vm/drop_caches', '2\n');
    let left = await nodes();
    for (let i = 0; i < 100 && left > held / 10; i++) {
      await sleep(100);
      left = await nodes();
    }
    assert.ok(left >= 0 && left <= held / 10, `forgotten nodes are dropped: ${held} held before, ${left} after`);
    assertTreesEqual(before, await snapshotTree(mntV1));
    const shared = 'usr/bin/bash';
    assert.equal((await stat(join(mntBase, shared))).ino, (await stat(join(mntV1, shared))).ino, 'looked up again, the shared file is one inode');
  } finally {
    await cliJson<FuseUnmountResult>(['umount', mntBase, ...rt()]);
    await cliJson<FuseUnmountResult>(['umount', mntV1, ...rt()]);
  }
  await assertAllReleased();
});

test('nodes a plain READDIR makes are dropped: listing a large directory without stat leaves nothing held once the kernel forgets', async () => {
  const mnt = await mountpoint('fuse-readdir-nodes');
  await cliJson<FuseMountResult>(['mount', '--fuse', built.v1.metadataImage, mnt, ...rt()]);
  const nodes = async (): Promise<number> => (await askDaemon(built.runtimeDir, { op: 'ping' }))?.nodes ?? -1;
  try {
    await writeFile('/proc/sys/vm/drop_caches', '2\n');
    const dir = join(mnt, 'usr', 'bin');
    await stat(dir);
    const before = await nodes();
    // `ls -f` neither sorts nor stats: the kernel reads the first part of the directory with READDIRPLUS
    // (which references each entry) and, with no lookups in between, the rest with plain READDIR (which
    // references none, so it never sends FORGET for them).
    const listed = (await runChecked('ls', ['-f', dir])).stdout.split('\n').filter((l) => l !== '');
    const expected = (await withKernelMount(built.v1.metadataImage, built.v1.blobs, (k) => runChecked('ls', ['-f', join(k, 'usr', 'bin')]))).stdout.split('\n').filter((l) => l !== '');
    assert.deepEqual([...listed].sort(), [...expected].sort(), 'the listing is the kernel mount\'s');
    assert.ok(listed.length > 200, `a directory larger than one READDIRPLUS reply (${listed.length} entries)`);
    await writeFile('/proc/sys/vm/drop_caches', '2\n');
    let left = await nodes();
    for (let i = 0; i < 100 && left > before; i++) {
      await sleep(100);
      left = await nodes();
    }
    assert.ok(left >= 0 && left <= before, `the daemon holds ${left} nodes after the listing was forgotten, ${before} before it`);
    // Looked up after their READDIR nodes were dropped, the entries are served as before.
    const bash = await stat(join(dir, 'bash'));
    assert.ok(bash.isFile() && bash.size > 100_000);
  } finally {
    await cliJson<FuseUnmountResult>(['umount', mnt, ...rt()]);
  }
  await assertAllReleased();
});

test('a killed daemon is cleaned up by the next command', async () => {
  const mnt = await mountpoint('fuse-killed');
  const mounted = await cliJson<FuseMountResult>(['mount', '--fuse', built.v1.metadataImage, mnt, ...rt()]);
  assert.ok((await readFile(join(mnt, 'etc', 'os-release'), 'utf8')).includes('Debian'));
  process.kill(mounted.daemonPid, 'SIGKILL');
  for (let i = 0; i < 50 && (await daemonPids()).length > 0; i++) await sleep(100);
  // A name the kernel has not cached yet must go to the daemon, which is gone.
  await assert.rejects(stat(join(mnt, 'usr', 'sbin')), { code: 'ENOTCONN' }, 'the mount is dead without its daemon');

  // The next mount removes the dead mounts, starts a new daemon and serves again.
  const mnt2 = await mountpoint('fuse-after-kill');
  const again = await cliJson<FuseMountResult>(['mount', '--fuse', built.base.metadataImage, mnt2, ...rt()]);
  assert.ok(again.cleanedUp.includes(mnt), `cleaned up ${again.cleanedUp.join(', ')}`);
  assert.ok(again.cleanedUp.includes(fusePaths(built.runtimeDir).root));
  assert.ok((await readFile(join(mnt2, 'etc', 'os-release'), 'utf8')).includes('Debian'));
  const gone = await cli(['umount', mnt, ...rt()]);
  assert.notEqual(gone.code, 0, 'the dead mount is no longer recorded');
  await cliJson<FuseUnmountResult>(['umount', mnt2, ...rt()]);
  await assertAllReleased();

  // umount as the first command after a kill works too.
  const m3 = await cliJson<FuseMountResult>(['mount', '--fuse', built.v1.metadataImage, mnt, ...rt()]);
  process.kill(m3.daemonPid, 'SIGKILL');
  for (let i = 0; i < 50 && (await daemonPids()).length > 0; i++) await sleep(100);
  const u = await cliJson<FuseUnmountResult>(['umount', mnt, ...rt()]);
  assert.ok(u.cleanedUp.includes(mnt));
  await assertAllReleased();
});

test('many concurrent readers get the right bytes; interrupted readers and a busy umount leave the daemon serving', async () => {
  const mnt = await mountpoint('fuse-concurrent');
  await cliJson<FuseMountResult>(['mount', '--fuse', built.v1.metadataImage, mnt, ...rt()]);
  try {
    await writeFile('/proc/sys/vm/drop_caches', '3\n');
    const script = 'find usr/lib -type f -size +4k | head -400 | xargs -P 16 -n 20 sha256sum | sort -k2';
    const viaFuse = await runChecked('bash', ['-c', `cd ${mnt} && ${script}`]);
    const expected = await withKernelMount(built.v1.metadataImage, built.v1.blobs, (k) => runChecked('bash', ['-c', `cd ${k} && ${script}`]));
    assert.equal(viaFuse.stdout, expected.stdout);
    assert.ok(viaFuse.stdout.split('\n').length > 100);

    // Readers interrupted mid-read (signals while requests are in flight) leave the daemon serving.
    await writeFile('/proc/sys/vm/drop_caches', '3\n');
    const big = join(mnt, 'usr', 'bin', 'python3.11');
    await run('bash', ['-c', `for i in $(seq 20); do timeout -s INT 0.02 cat ${big} > /dev/null & timeout -s KILL 0.03 cat ${big} > /dev/null & done; wait`]);
    const after = await runChecked('sha256sum', [big]);
    const want = await withKernelMount(built.v1.metadataImage, built.v1.blobs, (k) => runChecked('sha256sum', [join(k, 'usr', 'bin', 'python3.11')]));
    assert.equal(after.stdout.split(' ')[0], want.stdout.split(' ')[0]);

    // Unmount while busy: a one-line error and nothing changed; it works once the user is gone.
    const holder = spawn('sleep', ['30'], { cwd: join(mnt, 'usr'), stdio: 'ignore' });
    await sleep(200);
    const busy = await cli(['umount', mnt, ...rt()]);
    holder.kill('SIGKILL');
    await new Promise((resolve) => holder.once('exit', resolve));
    assertOneLineError(busy, /target is busy/);
    assert.ok((await readFile(join(mnt, 'etc', 'os-release'), 'utf8')).includes('Debian'), 'still served after the refused umount');
  } finally {
    await cliJson<FuseUnmountResult>(['umount', mnt, ...rt()]);
  }
  await assertAllReleased();
});

test('an image whose blob is missing: EIO for the files it holds, the rest and other images keep being served', async () => {
  const broken = join(built.dir, 'broken');
  await mkdir(join(broken, 'blobs', 'sha256'), { recursive: true });
  const image = join(broken, 'v1.erofs');
  await copyFile(built.v1.metadataImage, image);
  // Only the base layer's blob: everything Python brought in has no bytes to read.
  const baseBlob = built.base.blobDigests[0]!.replace('sha256:', '');
  await link(built.base.blobs[0]!, join(broken, 'blobs', 'sha256', baseBlob));
  const mnt = await mountpoint('fuse-broken');
  const good = await mountpoint('fuse-good');
  await cliJson<FuseMountResult>(['mount', '--fuse', image, mnt, ...rt()]);
  await cliJson<FuseMountResult>(['mount', '--fuse', built.base.metadataImage, good, ...rt()]);
  try {
    await assert.rejects(readFile(join(mnt, 'usr', 'bin', 'python3.11')), { code: 'EIO' });
    assert.ok((await readFile(join(mnt, 'usr', 'bin', 'bash'))).length > 100_000, 'files of the present blob read fine');
    await assert.rejects(readFile(join(mnt, 'usr', 'bin', 'python3.11')), { code: 'EIO' }, 'still EIO, still serving');
    assert.ok((await readFile(join(good, 'etc', 'os-release'), 'utf8')).includes('Debian'), 'another image is unaffected');
  } finally {
    await cliJson<FuseUnmountResult>(['umount', mnt, ...rt()]);
    await cliJson<FuseUnmountResult>(['umount', good, ...rt()]);
  }
  await assertAllReleased();
});
