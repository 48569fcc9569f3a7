import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { DeviceUnavailableError, ErofsImage, PathNotFoundError, tagFileNames } from '../../src/read/index.js';
import { CorruptImageError, FILE_TYPE } from '../../src/format/index.js';
import { makeFullTree } from '../helpers/fixtures.js';
import { assertNoLeaks, leakCheck, withKernelMount, withLoopDevices, type LeakSnapshot } from '../helpers/kernel.js';
import { TEMP_DIR_PREFIX } from '../helpers/tmp.js';
import { assertTreesEqual, snapshotTree } from '../helpers/tree.js';
import { imageToSnapshot, snapshotImage } from '../helpers/imageTree.js';
import { MKFS_VARIANTS, fixSuperblockChecksum, mkfsErofs, patchDeviceSlot, type MkfsImage } from './mkfsImages.js';

// Files are sized around this chunk size (C-1, C, C+1, 3C+5, sparse 3C...), so both blob variants
// (4 KiB and 64 KiB chunks) get files of one, several and partial chunks.
const C = 65536;

let dir = '';
let source = '';
let leaksBefore: LeakSnapshot;
const images = new Map<string, MkfsImage>();

function imageOf(name: string): MkfsImage {
  const image = images.get(name);
  if (image === undefined) throw new Error(`image ${name} was not built`);
  return image;
}

/** Runs `fn` with the image open, and closes it whatever happens. */
async function withImage<T>(path: string, options: Parameters<typeof ErofsImage.open>[1], fn: (image: ErofsImage) => Promise<T>): Promise<T> {
  const image = await ErofsImage.open(path, options);
  try {
    return await fn(image);
  } finally {
    await image.close();
  }
}

before(async () => {
  leaksBefore = await leakCheck();
  dir = await mkdtemp(join(tmpdir(), TEMP_DIR_PREFIX));
  source = join(dir, 'src');
  // erofs-utils 1.5 cannot build a tree holding a 255-byte name, hence 254.
  await makeFullTree(source, { chunkSizeBytes: C, bigDirEntries: 20000, longestNameBytes: 254 });
  for (const name of Object.keys(MKFS_VARIANTS)) images.set(name, await mkfsErofs(dir, name, source));
});

after(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  assertNoLeaks(leaksBefore, await leakCheck(), [dir]);
});

describe('images made by mkfs.erofs read the same as the kernel mounts them', () => {
  for (const name of Object.keys(MKFS_VARIANTS)) {
    test(name, async () => {
      const { image, blobs } = imageOf(name);
      const started = Date.now();
      const ours = await snapshotImage(image, blobs);
      const readerMs = Date.now() - started;
      const kernel = await withKernelMount(image, blobs, (mountpoint) => snapshotTree(mountpoint));
      assert.ok(ours.size > 20000, `expected the whole tree, got ${ours.size} entries`);
      assertTreesEqual(kernel, ours);
      // Diagnostic only (the hang guard is the test runner's timeout): the 20000-entry directory.
      process.stderr.write(`# ${name}: reader snapshot of ${ours.size} entries in ${readerMs} ms\n`);
    });
  }
});

describe('reading', () => {
  test('ranges at arbitrary offsets match the source files, holes included', async () => {
    let seed = 12345;
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    for (const name of ['plain', 'blob-4k', 'blob-64k', 'block-map', 'indexes-dev0']) {
      const { image, blobs } = imageOf(name);
      await withImage(image, { devices: blobs }, async (erofs) => {
        for (const rel of ['sizes/3chunks-plus-5', 'sizes/chunk-plus-1', 'sizes/4097', 'sparse/hole-start', 'sparse/hole-middle', 'sparse/hole-end', 'sparse/all-hole', 'dedup/zeros', 'dedup/first-chunk-shared']) {
          const expected = await readFile(join(source, rel));
          const nid = await erofs.lookup(rel);
          assert.equal((await erofs.stat(nid)).sizeBytes, expected.length);
          for (let i = 0; i < 40; i++) {
            const offset = random(expected.length + 10);
            const length = random(3 * C);
            const got = await erofs.read(nid, offset, length);
            assert.ok(got.equals(expected.subarray(offset, offset + length)), `${name}:${rel} [${offset}, +${length}) differs`);
          }
          // Whole file through the stream, in pieces that do not line up with chunks.
          const hash = createHash('sha256');
          await pipeline(erofs.createReadStream(nid, { pieceBytes: 10007 }), hash);
          assert.equal(hash.digest('hex'), createHash('sha256').update(expected).digest('hex'), `${name}:${rel} stream`);
        }
      });
    }
  });

  test('stat reports the inode forms, layouts and chunk formats mkfs chose', async () => {
    await withImage(imageOf('plain').image, {}, async (erofs) => {
      const root = await erofs.stat(erofs.rootNid);
      assert.equal(root.kind, 'dir');
      assert.equal(root.mtimeSec, 0n); // -T0
      const big = await erofs.stat(await erofs.lookup('owners/u70000'));
      assert.equal(big.inodeForm, 'extended');
      assert.equal(big.uid, 70000);
      const file = await erofs.stat(await erofs.lookup('sizes/4097'));
      assert.equal(file.dataLayout, 'flat-inline');
      assert.equal(file.inlineTailBytes, 1);
      assert.equal((await erofs.stat(await erofs.lookup('sizes/4096'))).dataLayout, 'flat-plain');
      const dev = await erofs.stat(await erofs.lookup('types/chr-259-300'));
      assert.deepEqual(dev.rdev, { major: 259, minor: 300 });
    });
    await withImage(imageOf('block-map').image, {}, async (erofs) => {
      const info = (await erofs.stat(await erofs.lookup('sizes/3chunks-plus-5'))).chunk;
      assert.equal(info?.hasIndexes, false);
      assert.equal(info?.chunkSizeBytes, 4096);
      assert.equal(info?.chunkCount, Math.ceil((3 * C + 5) / 4096));
    });
    const { image, blobs } = imageOf('blob-64k');
    await withImage(image, { devices: blobs }, async (erofs) => {
      const nid = await erofs.lookup('sizes/3chunks-plus-5');
      const info = (await erofs.stat(nid)).chunk;
      assert.equal(info?.hasIndexes, true);
      assert.equal(info?.chunkSizeBytes, C);
      const map = await erofs.chunkMap(nid);
      assert.equal(map.length, 4);
      assert.equal(map.reduce((sum, c) => sum + c.lengthBytes, 0), 3 * C + 5);
      assert.ok(map.every((c) => c.deviceId === 1 && c.blkaddr !== null));
    });
  });

  test('readdir lists sorted entries without "." and ".."; lookup resolves paths without following symlinks', async () => {
    await withImage(imageOf('plain').image, {}, async (erofs) => {
      const names = (await erofs.readdir(erofs.rootNid)).map((e) => e.name);
      assert.ok(!names.some((n) => n.equals(Buffer.from('.')) || n.equals(Buffer.from('..'))));
      for (let i = 1; i < names.length; i++) assert.ok(Buffer.compare(names[i - 1]!, names[i]!) < 0);
      const big = await erofs.readdir(await erofs.lookup('bigdir'));
      assert.equal(big.length, 20000);
      assert.equal(big.filter((e) => e.fileType === FILE_TYPE.DIR).length, 20);
      assert.equal(await erofs.lookup('/'), erofs.rootNid);
      assert.equal(await erofs.lookup('./types/../types/regular'), await erofs.lookup('types/regular'));
      assert.equal(await erofs.lookup('bigdir/e19999' + '_'.repeat(19999 % 37)), big[big.length - 1]!.nid);
      await assert.rejects(erofs.lookup('types/nothing'), PathNotFoundError);
      await assert.rejects(erofs.lookup('types/regular/below'), /not a directory/);
      // types/symlink-short -> regular: as a last component it is returned, inside a path it is not followed.
      assert.equal((await erofs.stat(await erofs.lookup('types/symlink-short'))).kind, 'lnk');
      await assert.rejects(erofs.lookup(`bigdir/e00500${'_'.repeat(500 % 37)}/x`), /symlink/);
      assert.equal((await erofs.readlink(await erofs.lookup('types/symlink-long'))).length, 300);
    });
  });

  test('walk visits every path once, in byte order of the full path', async () => {
    await withImage(imageOf('plain').image, {}, async (erofs) => {
      const paths: Buffer[] = [];
      for await (const entry of erofs.walk()) paths.push(entry.pathBytes);
      assert.equal(paths[0]?.toString(), '.');
      for (let i = 2; i < paths.length; i++) assert.ok(Buffer.compare(paths[i - 1]!, paths[i]!) < 0, `${paths[i - 1]} before ${paths[i]}`);
    });
  });
});

describe('devices', () => {
  test('an erofs-utils 1.5 blob image without its blob: metadata reads, data fails naming the device', async () => {
    const { image, blobs } = imageOf('blob-4k');
    await withImage(image, {}, async (erofs) => {
      assert.equal(erofs.devices.length, 1);
      assert.equal(erofs.devices[0]?.backing, 'unavailable');
      assert.equal(erofs.devices[0]?.tag, '');
      const nid = await erofs.lookup('sizes/4097');
      assert.equal((await erofs.stat(nid)).sizeBytes, 4097);
      await assert.rejects(erofs.read(nid, 0, 10), (err: unknown) => err instanceof DeviceUnavailableError && /device 1 \(tag empty\)/.test(err.message) && err.message.includes(image));
    });
    await assert.rejects(ErofsImage.open(image, { devices: [blobs[0]!, blobs[0]!] }), DeviceUnavailableError);
    await assert.rejects(ErofsImage.open(imageOf('plain').image, { devices: [blobs[0]!] }), DeviceUnavailableError);
  });

  test('flat addressing: meta and blob concatenated, read like the kernel reads it without device=', async () => {
    const { image, blobs } = imageOf('blob-4k');
    const primaryBlocks = (await stat(image)).size / 4096;
    const blobBlocks = (await stat(blobs[0]!)).size / 4096;
    const patched = join(dir, 'flat-meta.erofs');
    await patchDeviceSlot(image, patched, 0, { tag: '', blocks: blobBlocks, uniaddr: primaryBlocks });
    const flat = join(dir, 'flat.erofs');
    await writeFile(flat, Buffer.concat([await readFile(patched), await readFile(blobs[0]!)]));
    const ours = await withImage(flat, {}, async (erofs) => {
      assert.equal(erofs.devices[0]?.backing, 'flat');
      return imageToSnapshot(erofs);
    });
    const kernel = await withKernelMount(flat, [], (mountpoint) => snapshotTree(mountpoint));
    assertTreesEqual(kernel, ours);
  });

  test('a device found by its tag in <imagedir>/blobs/sha256, never through an unsafe tag', async () => {
    const { image, blobs } = imageOf('blob-4k');
    const blob = await readFile(blobs[0]!);
    const digest = createHash('sha256').update(blob).digest('hex');
    const layout = join(dir, 'layout');
    await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
    await copyFile(blobs[0]!, join(layout, 'blobs', 'sha256', digest));
    const meta = join(layout, 'meta.erofs');
    await patchDeviceSlot(image, meta, 0, { tag: digest, blocks: blob.length / 4096, uniaddr: (await stat(image)).size / 4096 });
    const kernel = await withKernelMount(image, blobs, (mountpoint) => snapshotTree(mountpoint));
    const ours = await withImage(meta, {}, async (erofs) => {
      assert.equal(erofs.devices[0]?.backing, 'file');
      assert.equal(erofs.devices[0]?.path, join(layout, 'blobs', 'sha256', digest));
      return imageToSnapshot(erofs);
    });
    assertTreesEqual(kernel, ours);
    assert.deepEqual(tagFileNames('../../etc/passwd'), []);
    assert.deepEqual(tagFileNames('..'), []);
    assert.deepEqual(tagFileNames('a/b'), []);
    assert.deepEqual(tagFileNames(digest), [digest]);
  });

  test('device 0 addresses inside a device\'s unified range are redirected to it, as the kernel does', async () => {
    const { image, blobs } = imageOf('blob-4k');
    const primaryBlocks = (await stat(image)).size / 4096;
    const blobBlocks = (await stat(blobs[0]!)).size / 4096;
    const redirected = join(dir, 'redirect.erofs');
    await patchDeviceSlot(image, redirected, 0, { tag: '', blocks: blobBlocks, uniaddr: primaryBlocks });
    // Rewrite every chunk index of one file from (device 1, block b) to (device 0, block uniaddr + b).
    const rel = 'sizes/3chunks-plus-5';
    const { arrayOffsetBytes, count } = await withImage(redirected, { devices: blobs }, async (erofs) => {
      const info = (await erofs.stat(await erofs.lookup(rel))).chunk;
      assert.ok(info !== null && info.hasIndexes);
      return { arrayOffsetBytes: info.arrayOffsetBytes, count: info.chunkCount };
    });
    const bytes = await readFile(redirected);
    for (let k = 0; k < count; k++) {
      const at = arrayOffsetBytes + k * 8;
      assert.equal(bytes.readUInt16LE(at + 2), 1);
      bytes.writeUInt16LE(0, at + 2);
      bytes.writeUInt32LE(bytes.readUInt32LE(at + 4) + primaryBlocks, at + 4);
    }
    fixSuperblockChecksum(bytes);
    await writeFile(redirected, bytes);
    const expected = createHash('sha256').update(await readFile(join(source, rel))).digest('hex');
    const ours = await withImage(redirected, { devices: blobs }, async (erofs) => {
      const nid = await erofs.lookup(rel);
      assert.ok((await erofs.chunkMap(nid)).every((c) => c.deviceId === 0));
      return createHash('sha256').update(await erofs.read(nid, 0, 4 * C)).digest('hex');
    });
    assert.equal(ours, expected);
    const kernel = await withKernelMount(redirected, blobs, async (mountpoint) => createHash('sha256').update(await readFile(join(mountpoint, rel))).digest('hex'));
    assert.equal(kernel, expected);
  });

  test('a checksum mismatch is refused, and the check can be skipped', async () => {
    const bytes = await readFile(imageOf('plain').image);
    bytes[3000] = bytes[3000]! ^ 0xff;
    const bad = join(dir, 'bad-checksum.erofs');
    await writeFile(bad, bytes);
    await assert.rejects(ErofsImage.open(bad), (err: unknown) => err instanceof CorruptImageError && /checksum/.test(err.message) && err.message.startsWith(bad));
    await withImage(bad, { verifyChecksum: false }, async (erofs) => assert.equal(erofs.checksumVerified, false));
  });

  test('a loop block device works as the image (its size comes from sysfs, fstat says 0)', async () => {
    const { image } = imageOf('plain');
    const walkOf = async (erofs: ErofsImage): Promise<string[]> => {
      const out: string[] = [];
      for await (const entry of erofs.walk()) out.push(`${entry.path} ${entry.nid} ${entry.stat.sizeBytes}`);
      return out;
    };
    const fromFile = await withImage(image, {}, walkOf);
    const fromDevice = await withLoopDevices([image], async ([device]) => withImage(device!, {}, walkOf));
    assert.deepEqual(fromDevice, fromFile);
  });
});
