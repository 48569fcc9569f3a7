import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import tar from 'tar-stream';
import { DeviceUnavailableError, ErofsImage } from '../../src/read/index.js';
import { FEATURE_COMPAT, FEATURE_INCOMPAT, FINGERPRINT_XATTR_NAME, computeXattrFilter, xattrFilterBit } from '../../src/format/index.js';
import { withKernelMount } from '../helpers/kernel.js';
import { withTempDir } from '../helpers/tmp.js';
import { assertTreesEqual, snapshotTree } from '../helpers/tree.js';
import { imageToSnapshot } from '../helpers/imageTree.js';

/**
 * Golden images made by erofs-utils 1.9.3 `mkfs.erofs --xattr-inode-digest` (see the fixture's
 * README): our reader must see the tree of src.tar, the kernel's view, and the page cache
 * fingerprints as mkfs wrote them.
 */
const FIXTURES = process.env['EROFS_FIXTURES'] ?? join(import.meta.dirname, '..', '..', '..', '..', 'shared', 'fixtures', 'fingerprint');
const FP = join(FIXTURES, 'fp.erofs');
const FPC = join(FIXTURES, 'fpc.erofs');
const FP_BLOB = join(FIXTURES, 'fp-blob.img');

interface TarEntry {
  type: 'reg' | 'dir' | 'lnk';
  mode: number;
  uid: number;
  gid: number;
  content?: Buffer;
  target?: string;
}

async function readTar(path: string): Promise<Map<string, TarEntry>> {
  const entries = new Map<string, TarEntry>();
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        const name = header.name.replace(/^\.\//, '').replace(/\/$/, '') || '.';
        const type = header.type === 'directory' ? 'dir' : header.type === 'symlink' ? 'lnk' : 'reg';
        const entry: TarEntry = { type, mode: header.mode ?? 0, uid: header.uid ?? 0, gid: header.gid ?? 0 };
        if (type === 'reg') entry.content = Buffer.concat(chunks);
        if (type === 'lnk') entry.target = header.linkname ?? '';
        entries.set(name, entry);
        next();
      });
      stream.resume();
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  extract.end(await readFile(path));
  await done;
  return entries;
}

async function withGolden<T>(path: string, devices: string[], fn: (image: ErofsImage) => Promise<T>): Promise<T> {
  const image = await ErofsImage.open(path, { devices });
  try {
    return await fn(image);
  } finally {
    await image.close();
  }
}

const fingerprintOf = (content: Buffer): Buffer => Buffer.concat([Buffer.from('sha256:'), createHash('sha256').update(content).digest()]);

for (const [name, path, devices] of [
  ['fp.erofs', FP, []],
  ['fpc.erofs + fp-blob.img', FPC, [FP_BLOB]],
] as const) {
  test(`${name}: same tree as src.tar, fingerprints are sha256: + raw digest, filter bits set`, async () => {
    const expected = await readTar(join(FIXTURES, 'src.tar'));
    await withGolden(path, [...devices], async (image) => {
      const seen = new Set<string>();
      for await (const entry of image.walk()) {
        seen.add(entry.path);
        const want = expected.get(entry.path);
        assert.ok(want !== undefined, `${entry.path} is not in src.tar`);
        assert.equal(entry.stat.kind, want.type, entry.path);
        assert.equal(entry.stat.mode & 0o7777, want.mode & 0o7777, `${entry.path} mode`);
        assert.equal(entry.stat.uid, want.uid);
        assert.equal(entry.stat.gid, want.gid);
        const xattrs = await image.listXattrs(entry.nid);
        if (want.type === 'lnk') assert.equal((await image.readlink(entry.nid)).toString(), want.target);
        if (want.type !== 'reg') {
          assert.deepEqual(xattrs, [], `${entry.path} has no xattrs`);
          continue;
        }
        const content = want.content ?? Buffer.alloc(0);
        assert.equal(entry.stat.sizeBytes, content.length);
        assert.ok((await image.read(entry.nid, 0, content.length + 1)).equals(content), `${entry.path} content`);
        if (content.length === 0) {
          // mkfs.erofs gives an empty file no fingerprint (nothing to share).
          assert.deepEqual(xattrs, []);
          continue;
        }
        assert.equal(xattrs.length, 1, `${entry.path} xattrs`);
        const [fp] = xattrs;
        assert.equal(fp?.name.toString(), FINGERPRINT_XATTR_NAME);
        assert.equal(fp?.hidden, true);
        assert.equal(fp?.shared, false);
        assert.equal(fp?.nameIndex, 0x80); // long prefix 0, empty suffix
        assert.equal(fp?.suffix.length, 0);
        assert.ok(fp?.value.equals(fingerprintOf(content)), `${entry.path} fingerprint`);
        assert.equal(fp?.value.length, 39);
        // The filter is computed over the full name under base index 0; bit 8 for this name.
        const layout = await image.xattrLayout(entry.nid);
        assert.equal(xattrFilterBit(0, Buffer.from(FINGERPRINT_XATTR_NAME)), 8);
        assert.equal(layout?.nameFilter, computeXattrFilter([{ baseIndex: 0, name: Buffer.from(FINGERPRINT_XATTR_NAME) }]));
        assert.equal(layout?.nameFilter, 0xfffffeff);
        assert.deepEqual(layout?.sharedIds, []);
      }
      assert.deepEqual([...seen].sort(), [...expected.keys()].sort());
    });
  });

  test(`${name}: superblock and prefix table as erofs-utils 1.9.3 writes them`, async () => {
    await withGolden(path, [...devices], async (image) => {
      const sb = image.superblock;
      assert.equal(sb.featureCompat, FEATURE_COMPAT.SB_CHKSUM | FEATURE_COMPAT.MTIME | FEATURE_COMPAT.XATTR_FILTER | FEATURE_COMPAT.PLAIN_XATTR_PFX | FEATURE_COMPAT.ISHARE_XATTRS);
      assert.equal(image.checksumVerified, true);
      assert.equal(sb.blkszbits, 12);
      assert.equal(sb.epochSec, 0n);
      assert.equal(sb.inos, 6n);
      assert.equal(sb.xattrPrefixCount, 1);
      assert.equal(sb.ishareXattrPrefixId, 0);
      assert.equal(sb.xattrFilterReserved, 0);
      assert.equal(sb.packedNid, 0n);
      assert.equal(image.longXattrPrefixes.length, 1);
      assert.equal(image.longXattrPrefixes[0]?.baseIndex, 0);
      assert.equal(image.longXattrPrefixes[0]?.infix.toString(), FINGERPRINT_XATTR_NAME);
      const raw = await readFile(path);
      // The record: u16 length 21 (base index + 20-byte infix), base 0, the name, one pad byte.
      assert.equal(raw.subarray(sb.xattrPrefixStart * 4, sb.xattrPrefixStart * 4 + 24).toString('hex'), `150000${Buffer.from(FINGERPRINT_XATTR_NAME).toString('hex')}00`);
      if (devices.length === 0) {
        assert.equal(sb.featureIncompat, FEATURE_INCOMPAT.XATTR_PREFIXES);
        assert.equal(sb.xattrPrefixStart * 4, 1152);
        assert.equal(sb.rootNid, 37);
        assert.equal(sb.blocks, 25);
      } else {
        assert.equal(sb.featureIncompat, FEATURE_INCOMPAT.CHUNKED_FILE | FEATURE_INCOMPAT.DEVICE_TABLE | FEATURE_INCOMPAT.XATTR_PREFIXES);
        assert.equal(sb.xattrPrefixStart * 4, 1280); // after the device slot at 1152
        assert.equal(sb.rootNid, 41);
        assert.equal(sb.blocks, 1);
        assert.equal(sb.extraDevices, 1);
        assert.equal(sb.devtSlotoff, 9);
        // erofs-utils 1.9.3 fills blocks and uniaddr, but leaves the tag empty.
        assert.deepEqual(
          image.devices.map((d) => [d.tag, d.blocks, d.uniaddr, d.backing]),
          [['', 26, 1, 'file']],
        );
        const b = await image.stat(await image.lookup('d/b'));
        assert.equal(b.chunk?.chunkSizeBytes, 1 << 20);
        assert.equal(b.chunk?.hasIndexes, true);
        assert.deepEqual(await image.chunkMap(b.nid), [{ fileOffsetBytes: 0, lengthBytes: 100000, deviceId: 1, blkaddr: 1 }]);
      }
    });
  });

  test(`${name}: the kernel mount shows the same tree (without the hidden fingerprint)`, async () => {
    const ours = await withGolden(path, [...devices], (image) => imageToSnapshot(image));
    const kernel = await withKernelMount(path, devices, (mountpoint) => snapshotTree(mountpoint));
    assertTreesEqual(kernel, ours);
    const withHidden = await withGolden(path, [...devices], (image) => imageToSnapshot(image, { includeHidden: true }));
    assert.equal(Object.keys(withHidden.get('d/b')?.xattrs ?? {}).join(), FINGERPRINT_XATTR_NAME);
  });
}

test('fpc.erofs without its blob: the empty-tag device is unavailable; meta+blob concatenated reads flat', async () => {
  await withTempDir(async (dir) => {
    const meta = join(dir, 'fpc.erofs');
    await copyFile(FPC, meta);
    await copyFile(FP_BLOB, join(dir, 'fp-blob.img'));
    await withGolden(meta, [], async (image) => {
      assert.equal(image.devices[0]?.backing, 'unavailable');
      await assert.rejects(image.read(await image.lookup('d/b'), 0, 1), (err: unknown) => err instanceof DeviceUnavailableError && err.message.includes(meta) && /device 1/.test(err.message));
    });
    // uniaddr 1 = the metadata image's one block: the concatenation is a flat image.
    const flat = join(dir, 'flat.erofs');
    await writeFile(flat, Buffer.concat([await readFile(FPC), await readFile(FP_BLOB)]));
    const ours = await withGolden(flat, [], async (image) => {
      assert.equal(image.devices[0]?.backing, 'flat');
      return imageToSnapshot(image);
    });
    const kernel = await withKernelMount(flat, [], (mountpoint) => snapshotTree(mountpoint));
    assertTreesEqual(kernel, ours);
  });
});
