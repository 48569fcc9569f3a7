import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { MountListing, MountResult, UnmountResult } from '../../src/mount/index.js';
import { readMountinfo } from '../../src/mount/mountinfo.js';
import { run, runChecked } from '../helpers/exec.js';
import { assertNoLeaks, leakCheck, type LeakSnapshot } from '../helpers/kernel.js';
import { realImages } from '../helpers/realImages.js';
import { CLI, assertOneLineError, buildRealPair, cli, cliJson, readState, type BuiltImages } from './helpers.js';

let built: BuiltImages & { cleanup: () => Promise<void> };
let baseline: LeakSnapshot;

before(async () => {
  const real = await realImages();
  built = await buildRealPair(real.gzipLayout);
  baseline = await leakCheck();
});

after(async () => {
  await built?.cleanup();
});

async function mountpoint(name: string): Promise<string> {
  const path = join(built.dir, name);
  await mkdir(path, { recursive: true });
  return path;
}

const rt = () => ['--runtime-dir', built.runtimeDir];

/** Nothing of ours is left: no loop device on our files, no mount under our directory, an empty state. */
async function assertAllReleased(): Promise<void> {
  assertNoLeaks(baseline, await leakCheck(), [built.dir]);
  const state = await readState(built.runtimeDir);
  assert.deepEqual(state.mounts, [], 'no mount records left');
  assert.deepEqual(state.shared, [], 'no shared records left');
  for (const sub of ['objects', 'mounts']) {
    assert.deepEqual(await readdir(join(built.runtimeDir, sub)).catch(() => []), [], `${sub}/ is empty`);
  }
  assert.equal(await access(join(built.runtimeDir, 'lock')).then(() => true, () => false), false, 'the lock is released');
}

async function fincorePages(file: string): Promise<number> {
  const { stdout } = await runChecked('fincore', ['-J', '-b', file]);
  return Number((JSON.parse(stdout) as { fincore: Array<{ pages: number | string }> }).fincore[0]!.pages);
}

async function sha256(file: string): Promise<string> {
  return createHash('sha256').update(await readFile(file)).digest('hex');
}

test('two images mounted at once share their common object index; umount of one leaves the other working', async () => {
  const mntV1 = await mountpoint('mnt-v1');
  const mntBase = await mountpoint('mnt-base');
  const baseBlob = built.base.blobDigests[0]!.replace('sha256:', '');
  const v1Own = built.v1.blobDigests[1]!.replace('sha256:', '');
  assert.equal(built.v1.blobDigests[0], built.base.blobDigests[0], 'v1 has the base layer blob as device 1');

  const first = await cliJson<MountResult>(['mount', built.v1.metadataImage, mntV1, ...rt()]);
  assert.equal(first.mechanism, 'overlay', `this kernel (6.18) shares through overlay: ${first.reason}`);
  assert.deepEqual(first.objectIndexes.map((o) => [o.digest, o.reused]), [[baseBlob, false], [v1Own, false]]);
  const second = await cliJson<MountResult>(['mount', built.base.metadataImage, mntBase, ...rt()]);
  assert.equal(second.mechanism, 'overlay');
  assert.deepEqual(second.objectIndexes.map((o) => [o.digest, o.reused]), [[baseBlob, true]], 'base reuses the object index v1 mounted');
  assert.deepEqual(second.blobDevices, [first.blobDevices[0]], 'and the same blob loop device');

  // In the kernel: the common object index is mounted once and its blob attached once.
  const objectMounts = (await readMountinfo()).filter((e) => e.target.startsWith(join(built.runtimeDir, 'objects') + '/'));
  assert.equal(objectMounts.length, 2, 'two object indexes for three blob references');
  const loops = (await leakCheck()).loopDevices;
  assert.equal(loops.filter((l) => l.backingFile === built.base.blobs[0]).length, 1, 'one loop device for the common blob');

  // A file of the base layer, read through one image and then the other: its pages are cached
  // once, in the object's inode; the metadata images' own inodes for it stay empty.
  const file = 'usr/bin/bash';
  const digest = await sha256(join(mntBase, file));
  const object = join(built.runtimeDir, 'objects', baseBlob, digest.slice(0, 2), digest);
  assert.equal(await sha256(join(mntV1, file)), digest, 'both images show the same bash');
  assert.ok((await fincorePages(object)) > 0, 'the object inode holds the data');
  const state = await readState(built.runtimeDir);
  for (const record of state.mounts as unknown as Array<{ layers: string[] }>) {
    assert.equal(await fincorePages(join(record.layers[0]!, file)), 0, 'no page cache in the metadata image inode');
  }

  const unmounted = await cliJson<UnmountResult>(['umount', mntV1, ...rt()]);
  assert.deepEqual(unmounted.released.sort(), [`blob:${v1Own}`, `objects:${v1Own}`].sort(), 'only what v1 alone used is released');
  const remaining = await cliJson<MountListing>(['mount', '--list', ...rt()]);
  assert.deepEqual(remaining.mounts.map((m) => m.mountpoint), [mntBase]);
  assert.deepEqual(remaining.shared.filter((s) => s.kind === 'objects').map((s) => [s.digest, s.users]), [[baseBlob, 1]]);
  // The other mount still works, reads and execs included.
  assert.equal(await sha256(join(mntBase, file)), digest);
  const shell = await run('chroot', [mntBase, '/bin/sh', '-c', 'ls /usr/bin | wc -l && cat /etc/debian_version']);
  assert.equal(shell.code, 0, shell.output);

  await cliJson<UnmountResult>(['umount', mntBase, ...rt()]);
  await assertAllReleased();
});

test('two invocations at once cooperate through the lock: both mount, the common object index once', async () => {
  const mntA = await mountpoint('mnt-concurrent-a');
  const mntB = await mountpoint('mnt-concurrent-b');
  const baseBlob = built.base.blobDigests[0]!.replace('sha256:', '');
  const [a, b] = await Promise.all([
    cliJson<MountResult>(['mount', built.v1.metadataImage, mntA, ...rt()]),
    cliJson<MountResult>(['mount', built.base.metadataImage, mntB, ...rt()]),
  ]);
  const reuses = [...a.objectIndexes, ...b.objectIndexes].filter((o) => o.digest === baseBlob).map((o) => o.reused);
  assert.deepEqual(reuses.sort(), [false, true], 'one mounted the common object index, the other reused it');
  const objectMounts = (await readMountinfo()).filter((e) => e.target.startsWith(join(built.runtimeDir, 'objects') + '/'));
  assert.equal(objectMounts.length, 2);
  await Promise.all([cliJson(['umount', mntA, ...rt()]), cliJson(['umount', mntB, ...rt()])]);
  await assertAllReleased();
});

test('20 mount/umount cycles (overlay and plain) leave no loop device, mount or state behind', async () => {
  const mnt = await mountpoint('mnt-cycles');
  for (let cycle = 0; cycle < 20; cycle++) {
    const plain = cycle % 4 === 3;
    const mounted = await cliJson<MountResult>(['mount', built.v1.metadataImage, mnt, ...rt(), ...(plain ? ['--no-share'] : [])]);
    assert.equal(mounted.mechanism, plain ? 'plain' : 'overlay');
    assert.ok((await readdir(join(mnt, 'usr', 'bin'))).includes('python3'), `cycle ${cycle}: the tree is there`);
    await cliJson<UnmountResult>(['umount', mnt, ...rt()]);
  }
  await assertAllReleased();
});

/** Sum of recorded steps over every holder: grows as a mount makes progress. */
async function stepsRecorded(): Promise<number> {
  const state = await readState(built.runtimeDir);
  return [...state.mounts, ...state.shared].reduce((n, h) => n + h.steps.length, 0);
}

test('a mount killed (SIGKILL) at any point is cleaned up by the next command', async () => {
  const mnt = await mountpoint('mnt-killed');
  // A full overlay mount of v1 records about 14 steps (3 loops, 2 object index mounts with their
  // loops and directories, the metadata mount, the overlay); kill it at several of them.
  let interrupted = 0;
  for (const [killAt, next] of [[1, 'list'], [3, 'mount'], [6, 'list'], [9, 'mount'], [12, 'list'], [14, 'mount']] as const) {
    const child = spawn('node', [CLI, 'mount', built.v1.metadataImage, mnt, ...rt()], { stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    let done = false;
    void exited.then(() => (done = true));
    while (!done && (await stepsRecorded()) < killAt) await sleep(2);
    child.kill('SIGKILL');
    await exited;
    const state = await readState(built.runtimeDir);
    if ([...state.mounts, ...state.shared].some((h) => h.status !== 'ready')) interrupted++;
    if (next === 'list') {
      const listing = await cliJson<MountListing>(['mount', '--list', ...rt()]);
      const finished = listing.mounts.length > 0;
      // Killed before it finished: cleaned up now. (At the last step it may have finished: then it is a good mount.)
      if (finished) assert.deepEqual(listing.mounts.map((m) => m.status), ['ready']);
      else assert.ok(listing.notes.length > 0 || killAt === 1, `kill at ${killAt}: the list says what it cleaned up`);
      if (finished) await cliJson(['umount', mnt, ...rt()]);
    } else {
      // The next mount of the same mount point works and is complete.
      const again = await cli(['mount', built.v1.metadataImage, mnt, ...rt(), '--json']);
      if (again.code !== 0) {
        // Only acceptable failure: the killed one had finished, so the mount point is taken.
        assert.match(again.stderr, /already mounted by erofs mount/, again.output);
      }
      assert.ok((await readdir(join(mnt, 'usr', 'bin'))).includes('python3'));
      await cliJson(['umount', mnt, ...rt()]);
    }
    await assertAllReleased();
  }
  assert.ok(interrupted >= 4, `only ${interrupted} of 6 kills hit a mount half way`);
});

test('umount of a busy mount refuses with one line and changes nothing; a mount removed by hand is released by the next command', async () => {
  const mnt = await mountpoint('mnt-busy');
  await cliJson<MountResult>(['mount', built.v1.metadataImage, mnt, ...rt()]);
  const holder = spawn('sleep', ['30'], { cwd: mnt, stdio: 'ignore' });
  try {
    await sleep(100);
    assertOneLineError(await cli(['umount', mnt, ...rt()]), /target is busy/);
    assert.ok((await readdir(join(mnt, 'usr'))).includes('bin'), 'still mounted and working');
  } finally {
    holder.kill('SIGKILL');
    await new Promise((resolve) => holder.on('exit', resolve));
  }
  // Unmounted behind our back: the next command notices and releases the rest.
  await runChecked('umount', [mnt]);
  const listing = await cliJson<MountListing>(['mount', '--list', ...rt()]);
  assert.deepEqual(listing.mounts, []);
  assert.ok(listing.notes.some((n) => n.includes('unmounted outside erofs umount')), listing.notes.join('\n'));
  await assertAllReleased();
});

test('inode_share is detected as unavailable on this kernel by a probe mount; forcing it is a clear error that leaves nothing', async () => {
  const mnt = await mountpoint('mnt-forced');
  const forced = await cli(['mount', built.v1.metadataImage, mnt, ...rt(), '--mechanism', 'inode-share']);
  assertOneLineError(forced, /mechanism inode-share is not available here: the kernel \(.*\) refused inode_share \(erofs: Unknown parameter 'inode_share'\)/);
  await assertAllReleased();
  const capabilities = JSON.parse(await readFile(join(built.runtimeDir, 'capabilities.json'), 'utf8')) as { inodeShare: { available: boolean } };
  assert.equal(capabilities.inodeShare.available, false);
  // Forcing overlay works; the error above left the mount point usable.
  const overlay = await cliJson<MountResult>(['mount', built.v1.metadataImage, mnt, ...rt(), '--mechanism', 'overlay']);
  assert.equal(overlay.mechanism, 'overlay');
  await cliJson(['umount', mnt, ...rt()]);
  await assertAllReleased();
});

test('mount errors are one clear line and leave nothing: not root, missing mount point, missing blob, unknown mount', async () => {
  const mnt = await mountpoint('mnt-errors');
  // As nobody: refused before anything is touched. (HOME: nobody cannot read root's oclif cache.)
  for (const args of [['mount', built.v1.metadataImage, mnt], ['umount', mnt]]) {
    const r = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'env', 'HOME=/nonexistent', 'node', CLI, ...args, ...rt()]);
    assertOneLineError(r, /needs root .*run it as root/);
  }
  assertOneLineError(await cli(['mount', built.v1.metadataImage, join(built.dir, 'nope'), ...rt()]), /nope: no such directory; create it first/);
  assertOneLineError(await cli(['umount', mnt, ...rt()]), /not mounted by erofs mount/);
  const elsewhere = join(built.dir, 'lonely');
  await mkdir(elsewhere, { recursive: true });
  await writeFile(join(elsewhere, 'v1.erofs'), await readFile(built.v1.metadataImage));
  assertOneLineError(await cli(['mount', join(elsewhere, 'v1.erofs'), mnt, ...rt()]), /blob [0-9a-f]{64} of .* not found at .*: pass --store DIR/);
  // With --store it mounts.
  await cliJson(['mount', join(elsewhere, 'v1.erofs'), mnt, ...rt(), '--store', join(built.dir, 'out')]);
  assertOneLineError(await cli(['mount', built.v1.metadataImage, mnt, ...rt()]), /already mounted by erofs mount/);
  await cliJson(['umount', mnt, ...rt()]);
  await assertAllReleased();
});
