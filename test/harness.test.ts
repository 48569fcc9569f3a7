// Proves the test helpers against an independent EROFS writer: Debian's erofs-utils 1.5 `mkfs.erofs`
// builds images of the full fixture tree, the kernel mounts them, and the mounted tree must equal the
// source tree in every field snapshotTree records. If this file fails, suspect the helpers (or the
// machine), not src/.
//
// What erofs-utils 1.5 preserves, as read back through the Linux 6.18 kernel: everything snapshotTree
// compares — contents (including sparse and all-zero files), modes with setuid/setgid/sticky, uid/gid
// above 65535, nanosecond mtimes, mtimes before 1970 and after 2038, nlink, hardlinks (also of fifos),
// devices up to 4095:1048575, sockets, symlink targets of 300 bytes, and user.*, trusted.* and
// security.* xattrs (empty, 3000-byte and 200-byte-name ones included). So no field is ignored below.
// The one thing it cannot do is build a tree holding a 255-byte file name: mkfs.erofs 1.5 fails with
// "Could not format the device: [Error 2] No such file or directory" (a name buffer one byte short,
// fixed in later erofs-utils), so the fixture's longest names are 254 bytes here.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { runChecked } from './helpers/exec.js';
import { makeFullTree, makeSmallTree } from './helpers/fixtures.js';
import { assertFsckClean, assertNoLeaks, fsckErofs, leakCheck, withKernelMount, withLoopDevices } from './helpers/kernel.js';
import { withTempDir } from './helpers/tmp.js';
import { assertTreesEqual, diffTrees, snapshotTree, type EntrySnapshot, type TreeSnapshot } from './helpers/tree.js';

/** Runs `fn` in a temp dir and asserts that no loop device or mount involving it (or the mount points it reports) is left. */
async function withLeakCheck(fn: (dir: string, mountpoints: string[]) => Promise<void>): Promise<void> {
  const before = await leakCheck();
  const mountpoints: string[] = [];
  let dir = '';
  await withTempDir(async (d) => {
    dir = d;
    await fn(d, mountpoints);
  });
  assertNoLeaks(before, await leakCheck(), [dir, ...mountpoints]);
  for (const m of mountpoints) assert.equal(existsSync(m), false, `mount point ${m} was not removed`);
  assert.equal(existsSync(dir), false, `temp dir ${dir} was not removed`);
}

test('mkfs.erofs 1.5 images mount and read back equal to their source tree', async (t) => {
  await withLeakCheck(async (dir, mountpoints) => {
    const src = join(dir, 'src');
    const desc = await makeFullTree(src, { bigDirEntries: 3000, chunkSizeBytes: 65536, longestNameBytes: 254 });
    const expected = await snapshotTree(src);

    // The snapshot must really contain what the fixture claims, or an equal comparison proves nothing.
    assert.equal(expected.get('bigdir')?.type, 'dir');
    assert.equal([...expected.keys()].filter((p) => p.startsWith('bigdir/')).length, 3000);
    for (const kind of ['chr', 'blk', 'fifo', 'sock', 'symlink'] as const) {
      for (const p of desc.byKind[kind]) assert.ok(expected.has(p), `${kind} ${p} missing from the source snapshot`);
    }
    assert.equal(expected.get('types/chr-259-300')?.rdev, '259:300');
    assert.equal(expected.get('types/socket')?.type, 'sock');
    assert.equal(expected.get('types/symlink-long')?.target?.length, 300);
    assert.equal(expected.get('times/negative')?.mtime, '-123456789.987654321');
    assert.equal(expected.get('times/minus-half')?.mtime, '-1.500000000');
    assert.equal(expected.get('owners/u70000')?.uid, 70000);
    assert.equal(expected.get('modes/all')?.mode, 0o7777);
    assert.equal(expected.get('links/b/two')?.linkGroup, 'links/a/one');
    assert.equal(expected.get('links/fifo-b')?.linkGroup, 'links/fifo-a');
    assert.equal(Object.keys(expected.get('xattrs/many')?.xattrs ?? {}).length, 30);
    assert.equal(expected.get('xattrs/long-value')?.xattrs['user.big']?.length, 6000);
    assert.equal(expected.get('xattrs/empty-value')?.xattrs['user.empty'], '');
    assert.equal(expected.get('xattrs/opaque-dir')?.xattrs['trusted.overlay.opaque'], '79');
    assert.equal(expected.get('xattrs/symlink')?.xattrs['trusted.on-symlink'], '6c');
    assert.equal(expected.get('xattrs/capability')?.xattrs['security.capability'], '0100000200040000000000000000000000000000');
    assert.equal(expected.get('names/new\nline')?.xattrs['user.odd'], '6e');
    assert.equal(expected.get('sparse/all-hole')?.sizeBytes, 4 * 65536);
    if (desc.refusedXattrs.length > 0) t.diagnostic(`xattrs refused by this kernel: ${JSON.stringify(desc.refusedXattrs)}`);

    const variants: Array<{ name: string; args: string[]; blobs: string[] }> = [
      { name: 'plain (flat inline layout)', args: [], blobs: [] },
      { name: 'chunk-based, 4096-byte chunks in a blob device', args: ['--chunksize=4096', `--blobdev=${join(dir, 'blob.img')}`], blobs: [join(dir, 'blob.img')] },
    ];
    for (const [i, variant] of variants.entries()) {
      await t.test(variant.name, async () => {
        const image = join(dir, `image-${i}.erofs`);
        await runChecked('mkfs.erofs', ['--quiet', ...variant.args, image, src]);
        // --extract (with no directory) makes fsck read and check every file's data too.
        await assertFsckClean(image, variant.blobs, ['--extract']);
        if (variant.blobs.length > 0) {
          assert.ok((await stat(variant.blobs[0] as string)).size > 0, 'mkfs.erofs wrote no data into the blob');
          // Without its blob the image is incomplete; fsckErofs must report that, not hide it.
          const missing = await fsckErofs(image, []);
          assert.notEqual(missing.code, 0, `fsck.erofs accepted a blob-backed image without its blob:\n${missing.output}`);
        }
        const actual = await withKernelMount(image, variant.blobs, async (mountpoint) => {
          mountpoints.push(mountpoint);
          return snapshotTree(mountpoint);
        });
        assertTreesEqual(expected, actual);
      });
    }
  });
});

test('withKernelMount reports the kernel log when the kernel refuses an image', async () => {
  await withLeakCheck(async (dir) => {
    const image = join(dir, 'zeros.img');
    await writeFile(image, Buffer.alloc(65536));
    let ran = false;
    await assert.rejects(
      withKernelMount(image, [], async () => {
        ran = true;
      }),
      (err: Error) => {
        assert.match(err.message, /kernel refused to mount/);
        assert.match(err.message, /recent kernel messages mentioning erofs:\n.*erofs/);
        assert.match(err.message, /cannot find valid erofs superblock/);
        return true;
      },
    );
    assert.equal(ran, false);
  });
});

test('withLoopDevices detaches what it attached when fn throws or a later losetup fails', async () => {
  await withLeakCheck(async (dir) => {
    const file = join(dir, 'a.img');
    await writeFile(file, Buffer.alloc(8192));
    let seen: string[] = [];
    await assert.rejects(
      withLoopDevices([file, file], async (devs) => {
        seen = devs;
        const now = await leakCheck();
        for (const dev of devs) assert.ok(now.loopDevices.some((l) => l.device === dev && l.backingFile === file), `${dev} not attached`);
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal(seen.length, 2);
    assert.equal(new Set(seen).size, 2);
    // The second losetup fails: the first device must still be detached.
    await assert.rejects(withLoopDevices([file, join(dir, 'does-not-exist')], async () => undefined), /losetup/);
  });
});

test('snapshotTree and diffTrees record and report every field', async () => {
  await withTempDir(async (dir) => {
    const desc = await makeSmallTree(join(dir, 'src'));
    const snap = await snapshotTree(desc.root);
    const get = (p: string): EntrySnapshot => {
      const e = snap.get(p);
      assert.ok(e, `${p} missing`);
      return e;
    };
    assert.deepEqual([...snap.keys()], [...snap.keys()].sort());
    assert.equal(get('.').type, 'dir');
    assert.equal(get('.').mode, 0o755);
    assert.equal(get('hello.txt').mtime, '1700000000.123456789');
    assert.equal(get('hello.txt').sha256, createHash('sha256').update('hello, world\n').digest('hex'));
    assert.equal(get('hello.txt').linkGroup, 'dir/hello-link');
    assert.equal(get('dir/hello-link').linkGroup, 'dir/hello-link');
    assert.equal(get('hello.txt').nlink, 2);
    assert.equal(get('empty').mtime, '-1.500000000');
    assert.equal(get('data.bin').mode, 0o4750);
    assert.equal(get('data.bin').uid, 70000);
    assert.equal(get('data.bin').sizeBytes, 10000);
    assert.equal(get('link').target, 'hello.txt');
    assert.equal(get('link').sizeBytes, undefined);
    assert.equal(get('null').rdev, '1:3');
    assert.equal(get('loop').type, 'blk');
    assert.equal(get('fifo').type, 'fifo');
    assert.equal(get('socket').type, 'sock');
    assert.deepEqual(get('hello.txt').xattrs, { 'user.greeting': '6869' });
    assert.deepEqual(get('dir').xattrs, { 'trusted.overlay.opaque': '79' });
    assert.equal(get('dir').nlink, 3);

    assert.deepEqual(diffTrees(snap, snap), []);
    const changed: TreeSnapshot = new Map([...snap].map(([p, e]) => [p, { ...e, xattrs: { ...e.xattrs } }]));
    changed.delete('empty');
    changed.set('extra', { ...get('hello.txt'), path: 'extra' });
    changed.set('hello.txt', { ...get('hello.txt'), mode: 0o600, mtime: '1700000000.123456780', xattrs: { 'user.greeting': '6868', 'user.new': '' } });
    changed.set('null', { ...get('null'), rdev: '1:5' });
    changed.set('link', { ...get('link'), type: 'reg' });
    assert.deepEqual(diffTrees(snap, changed), [
      'missing: empty (reg)',
      'extra: extra (reg)',
      'hello.txt: mode expected 0644, actual 0600',
      'hello.txt: mtime expected "1700000000.123456789", actual "1700000000.123456780"',
      'hello.txt: xattr user.greeting expected 0x6869, actual 0x6868',
      'hello.txt: xattr user.new extra (0x)',
      'link: type expected lnk, actual reg',
      'null: rdev expected "1:3", actual "1:5"',
    ]);
    const ignored = diffTrees(snap, changed, {
      ignore: (path, field) => field === 'presence' || field === 'mtime' || field === 'xattrs.user.new' || path === 'link' || path === 'null',
    });
    assert.deepEqual(ignored, ['hello.txt: mode expected 0644, actual 0600', 'hello.txt: xattr user.greeting expected 0x6869, actual 0x6868']);
    assert.throws(() => assertTreesEqual(snap, changed), /trees differ in 8 place\(s\)[^]*missing: empty/);
  });
});
