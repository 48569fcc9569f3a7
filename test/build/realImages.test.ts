import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { build, type BuildResult } from '../../src/build/build.js';
import { erofsUtils194Bin } from '../helpers/erofsUtils.js';
import { run } from '../helpers/exec.js';
import { assertFsckClean, withKernelMount } from '../helpers/kernel.js';
import { realImages } from '../helpers/realImages.js';
import { withTempDir } from '../helpers/tmp.js';
import { assertTreesEqual, snapshotTree, type TreeSnapshot } from '../helpers/tree.js';
import { SOURCE_VS_IMAGE, assertObjectRedirects, assertReaderMatches } from './readerCheck.js';

/**
 * umoci stores whole seconds (tar headers without PAX times), rounding to the nearest second, so
 * the expected trees are compared at that precision.
 */
function wholeSeconds(snapshot: TreeSnapshot): TreeSnapshot {
  const round = (mtime: string) => {
    const [sec, nsec] = mtime.split('.') as [string, string];
    return `${BigInt(sec) + (Number(nsec) >= 500_000_000 ? 1n : 0n)}.000000000`;
  };
  return new Map([...snapshot].map(([path, entry]) => [path, { ...entry, mtime: round(entry.mtime) }]));
}

async function assertMatchesTree(result: BuildResult, expectedTree: string): Promise<void> {
  const mounted = await withKernelMount(result.metadataImage, result.blobs, (mountpoint) => snapshotTree(mountpoint));
  const expected = await snapshotTree(expectedTree);
  assertTreesEqual(wholeSeconds(expected), wholeSeconds(mounted), {
    // The image root's own attributes come from the tool that packed it, not from the rootfs
    // directory; .made is make-real-oci.sh's marker, excluded when it packed the image.
    ignore: (path, field) => (path === '.' && ['mode', 'mtime', 'uid', 'gid'].includes(field)) || (path === '.made' && field === 'presence') || SOURCE_VS_IMAGE.ignore!(path, field),
  });
  assert.ok(assertObjectRedirects(expected, mounted) > 1000, 'most files are marked for overlay sharing');
  await assertReaderMatches(result.metadataImage, result.blobs, mounted);
}

test('real Debian images (OCI gzip layout, both tags): the kernel mount equals the unpacked trees', async () => {
  const real = await realImages();
  await withTempDir(async (dir) => {
    const out = join(dir, 'out');
    const report = await build([real.gzipLayout], { outputDir: out });
    const byName = new Map(report.images.map((i) => [i.name, i]));
    assert.deepEqual([...byName.keys()].sort(), ['base', 'v1']);
    const base = byName.get('base')!;
    const v1 = byName.get('v1')!;
    await assertMatchesTree(base, real.baseTree);
    await assertMatchesTree(v1, real.v1Tree);
    // v1 = base layer + its own layer: the base layer's blob is shared, v1 adds one blob.
    assert.deepEqual(base.blobs.length, 1);
    assert.deepEqual(v1.blobs.length, 2);
    assert.equal(v1.blobs[0], base.blobs[0]);
    // The report's sharing eligibility is what `erofs inspect` finds file by file in the image.
    for (const image of [base, v1]) {
      const inspected = await run('node', ['bin/run.js', 'inspect', image.metadataImage, '--json']);
      assert.equal(inspected.code, 0, inspected.output);
      assert.deepEqual((JSON.parse(inspected.stdout) as { sharing: unknown }).sharing, image.sharing, `${image.name}: report vs inspect`);
    }
    // erofs-utils 1.9.4's fsck reads the default images and checks every file's fingerprint against its data.
    const erofsUtils = await erofsUtils194Bin();
    for (const image of [base, v1]) {
      const checked = await run(join(erofsUtils, 'fsck.erofs'), ['--xattr-inode-digest', ...image.blobs.map((b) => `--device=${b}`), image.metadataImage]);
      assert.equal(checked.code, 0, `${image.name}: fsck.erofs 1.9.4 --xattr-inode-digest:\n${checked.output}`);
    }
    // Each blob's object index (written directly, not through the general planner) passes fsck.erofs,
    // and the kernel reads every object listed for the blob with content whose SHA-256 is its name.
    for (const blob of v1.blobs) {
      const digest = basename(blob);
      const index = join(out, 'objects', `${digest}.erofs`);
      await assertFsckClean(index, [blob]);
      const listed = (await readFile(join(out, 'objects', `${digest}.objects`), 'utf8')).split('\n').filter((line) => line !== '');
      assert.ok(listed.length > 1000, `${digest}: ${listed.length} objects`);
      const seen = await withKernelMount(index, [blob], async (mountpoint) => {
        const names: string[] = [];
        for (const prefix of await readdir(mountpoint)) {
          for (const name of await readdir(join(mountpoint, prefix))) {
            assert.equal(name.slice(0, 2), prefix, `${name} under ${prefix}`);
            assert.equal(createHash('sha256').update(await readFile(join(mountpoint, prefix, name))).digest('hex'), name, `object ${name}: content digest`);
            names.push(name);
          }
        }
        return names;
      });
      assert.deepEqual(seen.sort(), [...listed].sort(), `${digest}: the mounted index lists exactly the recorded objects`);
    }
    // The same images without fingerprints pass Debian's fsck.erofs (1.5 predates xattr prefixes).
    const plain = await build([`${real.gzipLayout}:v1`], { outputDir: join(dir, 'plain'), fingerprints: false });
    await assertFsckClean(plain.images[0]!.metadataImage, plain.images[0]!.blobs);
  });
});

test('real images: zstd layout and docker archives into one store reuse the base layer', async () => {
  const real = await realImages();
  await withTempDir(async (dir) => {
    const store = join(dir, 'store');
    const first = await build([real.dockerBase], { outputDir: join(dir, 'a'), storeDir: store });
    const second = await build([`${real.zstdLayout}:v1`], { outputDir: join(dir, 'b'), storeDir: store });
    const base = first.images[0]!;
    const v1 = second.images[0]!;
    await assertMatchesTree(v1, real.v1Tree);
    // The base layer's content is already in the store: the derived build writes no base bytes again.
    assert.equal(v1.blobs[0], base.blobs[0], 'base blob reused as device 1');
    assert.ok(v1.chunks.bytesReused >= base.chunks.bytesWritten, `reused ${v1.chunks.bytesReused} of ${base.chunks.bytesWritten}`);
    const docker = await build([real.dockerV1], { outputDir: join(dir, 'c'), storeDir: store });
    assert.equal(docker.images[0]!.chunks.bytesWritten, 0, 'a third conversion of the same content writes nothing');
    await assertMatchesTree(docker.images[0]!, real.v1Tree);
  });
});
