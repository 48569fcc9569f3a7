import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildImage } from '../../src/build/build.js';
import { FINGERPRINT_XATTR_NAME } from '../../src/format/constants.js';
import { ErofsImage } from '../../src/read/index.js';
import { erofsUtils194Bin } from '../helpers/erofsUtils.js';
import { run, runChecked } from '../helpers/exec.js';
import { withTempDir } from '../helpers/tmp.js';

const FIXTURES = join(process.cwd(), '..', 'shared', 'fixtures', 'fingerprint');

async function bytesAt(path: string, offsetBytes: number, lengthBytes: number): Promise<Buffer> {
  const file = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(lengthBytes);
    await file.read(buffer, 0, lengthBytes, offsetBytes);
    return buffer;
  } finally {
    await file.close();
  }
}

/**
 * Golden images from erofs-utils 1.9.3 (`mkfs.erofs --xattr-inode-digest`, see the fixture README):
 * building the same tree must give the same fingerprint bytes, the same feature bits, the same long
 * prefix record and ishare prefix id, and the same xattr name filter, so Linux 7.0 `inode_share`
 * treats our files and theirs alike.
 */
test('fingerprints equal those of mkfs.erofs 1.9.3 for the golden tree', async () => {
  await withTempDir(async (dir) => {
    const source = join(dir, 'src');
    await runChecked('mkdir', [source]);
    await runChecked('tar', ['-xf', join(FIXTURES, 'src.tar'), '-C', source]);
    const ours = await buildImage({ kind: 'directory', path: source }, { outputDir: join(dir, 'out'), chunkSizeBytes: 1 << 20 });
    const golden = await ErofsImage.open(join(FIXTURES, 'fpc.erofs'), { devices: [join(FIXTURES, 'fp-blob.img')] });
    const goldenFlat = await ErofsImage.open(join(FIXTURES, 'fp.erofs'));
    const mine = await ErofsImage.open(ours.metadataImage, { devices: ours.blobs });
    try {
      const [g, m] = [golden.superblock, mine.superblock];
      assert.equal(m.featureCompat, g.featureCompat, 'feature_compat (ISHARE_XATTRS, PLAIN_XATTR_PFX, ...)');
      assert.equal(m.featureIncompat, g.featureIncompat, 'feature_incompat');
      assert.equal(m.xattrPrefixCount, g.xattrPrefixCount);
      assert.equal(m.ishareXattrPrefixId, g.ishareXattrPrefixId);
      const goldenPrefix = await bytesAt(join(FIXTURES, 'fpc.erofs'), g.xattrPrefixStart * 4, 24);
      const ourPrefix = await bytesAt(ours.metadataImage, m.xattrPrefixStart * 4, 24);
      assert.ok(ourPrefix.equals(goldenPrefix), `prefix record ${ourPrefix.toString('hex')} != ${goldenPrefix.toString('hex')}`);

      for (const path of ['a', 'd/b', 'empty']) {
        const content = await readFile(join(source, path));
        const fingerprintOf = async (image: ErofsImage) => {
          const nid = await image.lookup(path);
          const xattr = (await image.listXattrs(nid)).find((x) => x.name.toString() === FINGERPRINT_XATTR_NAME);
          return { value: xattr?.value, filter: (await image.xattrLayout(nid))?.nameFilter };
        };
        const [theirs, flat, our] = [await fingerprintOf(golden), await fingerprintOf(goldenFlat), await fingerprintOf(mine)];
        assert.deepEqual(our.value, theirs.value, `${path}: fingerprint as in fpc.erofs`);
        assert.deepEqual(our.value, flat.value, `${path}: fingerprint as in fp.erofs`);
        // Our files also carry overlay xattrs, so our filter marks more names present; every name
        // mkfs.erofs marks present (the fingerprint's bit) must be present in ours too.
        if (theirs.filter !== undefined) assert.equal((our.filter ?? 0) & ~theirs.filter, 0, `${path}: name filter keeps the fingerprint's bit`);
        else assert.equal(our.value, undefined);
        if (content.length > 0) {
          const expected = Buffer.concat([Buffer.from('sha256:'), createHash('sha256').update(content).digest()]);
          assert.ok(our.value?.equals(expected), `${path}: value is "sha256:" + raw digest`);
        }
      }
    } finally {
      await Promise.all([golden.close(), goldenFlat.close(), mine.close()]);
    }
  });
});

/**
 * erofs-utils 1.9.4's own checker reads each file's data and compares it with the fingerprint xattr
 * (`fsck.erofs --xattr-inode-digest`): every layout a build makes must pass (one whole-file chunk,
 * base-size chunks with one reused from another file, a hole), and a byte changed in the blob must be
 * reported for the file that holds it, whose nid dump.erofs names.
 */
test('fsck.erofs 1.9.4 verifies every fingerprint of a chunked build and catches a changed data byte', async () => {
  const bin = await erofsUtils194Bin();
  await withTempDir(async (dir) => {
    const source = join(dir, 'src');
    await mkdir(join(source, 'd'), { recursive: true });
    const shared = randomBytes(1 << 20);
    const files: Record<string, Buffer> = {
      small: randomBytes(300_000),
      'd/big': randomBytes((3 << 20) + 12_345),
      dedupA: Buffer.concat([shared, randomBytes(5_000)]),
      'd/dedupB': Buffer.concat([shared, randomBytes(70_000)]),
      holey: Buffer.concat([randomBytes(1 << 20), Buffer.alloc(1 << 20), randomBytes(1_000)]),
      empty: Buffer.alloc(0),
    };
    for (const [path, bytes] of Object.entries(files)) await writeFile(join(source, path), bytes);
    const built = await buildImage({ kind: 'directory', path: source }, { outputDir: join(dir, 'out'), chunkSizeBytes: 1 << 20 });
    assert.equal(built.blobs.length, 1);
    const blobPath = built.blobs[0]!;
    const fsck = (blob: string) => run(join(bin, 'fsck.erofs'), ['--xattr-inode-digest', `--device=${blob}`, built.metadataImage]);

    const clean = await fsck(blobPath);
    assert.equal(clean.code, 0, `fsck.erofs --xattr-inode-digest on our build:\n${clean.output}`);

    // Change one byte inside d/big's data (found by its bytes, not by our reader) in a copy of the blob.
    const blob = await readFile(blobPath);
    const at = blob.indexOf(files['d/big']!.subarray(0, 64));
    assert.ok(at >= 0, "d/big's data is in the blob");
    blob[at + 100_000] = blob[at + 100_000]! ^ 0xff;
    const changed = join(dir, 'changed.blob');
    await writeFile(changed, blob);
    const caught = await fsck(changed);
    assert.notEqual(caught.code, 0, `fsck.erofs must fail on the changed blob:\n${caught.output}`);
    const mismatch = /digest MISMATCH @ nid (\d+)/.exec(caught.output);
    assert.ok(mismatch, `a digest mismatch is reported:\n${caught.output}`);
    const dump = await runChecked(join(bin, 'dump.erofs'), [`--device=${blobPath}`, '--path=/d/big', built.metadataImage]);
    const nid = /NID: (\d+)/.exec(dump.output)?.[1];
    assert.equal(mismatch[1], nid, 'the mismatch names d/big');
  });
});
