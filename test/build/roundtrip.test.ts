import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { buildImage, type BuildResult } from '../../src/build/build.js';
import { run } from '../helpers/exec.js';
import { makeFullTree, makeSmallTree } from '../helpers/fixtures.js';
import { assertFsckClean, assertNoLeaks, leakCheck, withKernelMount } from '../helpers/kernel.js';
import { withTempDir } from '../helpers/tmp.js';
import { assertTreesEqual, snapshotTree } from '../helpers/tree.js';
import { SOURCE_VS_IMAGE, assertFingerprints, assertObjectRedirects, assertReaderMatches } from './readerCheck.js';

/**
 * The ground truth for an image we write: the kernel mounts it, the mounted tree equals the source
 * (content, mode, owners, nanosecond mtimes, nlink, rdev, xattrs, link targets, hardlink groups),
 * fsck.erofs finds nothing wrong, and our reader returns the same tree as the kernel.
 */
async function assertImageMatchesSource(source: string, result: BuildResult, { expectObjects = true } = {}): Promise<void> {
  const expected = await snapshotTree(source);
  const mounted = await withKernelMount(result.metadataImage, result.blobs, (mountpoint) => snapshotTree(mountpoint));
  assertTreesEqual(expected, mounted, SOURCE_VS_IMAGE);
  const redirected = assertObjectRedirects(expected, mounted);
  if (expectObjects) assert.ok(redirected > 0, 'files are marked for overlay sharing');
  await assertReaderMatches(result.metadataImage, result.blobs, mounted);
  await assertFingerprints(result.metadataImage, result.blobs, expected);
  // Debian's fsck.erofs (erofs-utils 1.5) predates long xattr prefixes, which the fingerprint needs,
  // and refuses such images outright. So it checks the same tree built without fingerprints, which
  // differs only by those xattrs (and the kernel mounts that one too).
  const twin = await buildImage({ kind: 'directory', path: source }, {
    outputDir: join(dirname(result.metadataImage), 'no-fingerprints'),
    chunkSizeBytes: result.chunkSizeBytes,
    fingerprints: false,
  });
  await assertFsckClean(twin.metadataImage, twin.blobs);
  // --extract makes fsck.erofs decode every file's data through the chunk indexes as well.
  await withTempDir(async (extractTo) => {
    await assertFsckClean(twin.metadataImage, twin.blobs, [`--extract=${join(extractTo, 'x')}`]);
  });
  assertTreesEqual(expected, await withKernelMount(twin.metadataImage, twin.blobs, (mountpoint) => snapshotTree(mountpoint)), SOURCE_VS_IMAGE);
}

/** A temp dir for one case, and afterwards proof that no loop device backed by its files is left. */
async function withCheckedTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const before = await leakCheck();
  let used = '';
  await withTempDir(async (dir) => {
    used = dir;
    await fn(dir);
  });
  assertNoLeaks(before, await leakCheck(), [used]);
}

test('full tree (every file type, 20000-entry directory) through the CLI, 1 MiB chunks', async () => {
  await withCheckedTempDir(async (dir) => {
      const source = join(dir, 'src');
      await makeFullTree(source, { chunkSizeBytes: 1 << 20, bigDirEntries: 20000 });
      const out = join(dir, 'out');
      const cli = await run('node', ['bin/run.js', 'build', source, '-o', out, '--chunk-size', '1M', '--json']);
      assert.equal(cli.code, 0, cli.output);
      const result = JSON.parse(cli.stdout) as BuildResult;
      assert.equal(result.metadataImage, join(out, 'src.erofs'));
      assert.equal(result.blobs.length, 1);
      // copy-a, copy-b and sub/copy-c share content: their chunks are stored once.
      assert.ok(result.chunks.chunksReused >= 6, `expected reuse, got ${JSON.stringify(result.chunks)}`);
      await assertImageMatchesSource(source, result);
    });
});

for (const chunkSizeBytes of [4096, 65536]) {
  test(`full tree with ${chunkSizeBytes}-byte chunks`, async () => {
    await withCheckedTempDir(async (dir) => {
        const source = join(dir, 'src');
        await makeFullTree(source, { chunkSizeBytes, bigDirEntries: 1500 });
        const result = await buildImage({ kind: 'directory', path: source }, { outputDir: join(dir, 'out'), chunkSizeBytes });
        await assertImageMatchesSource(source, result);
      });
  });
}

test('large chunk sizes (16 MiB, 64 MiB): sizes around the chunk size, holes, tails', async () => {
  for (const chunkSizeBytes of [16 << 20, 64 << 20]) {
    await withCheckedTempDir(async (dir) => {
        const source = join(dir, 'src');
        await makeSmallTree(source);
        await mkdir(join(source, 'big'));
        const C = chunkSizeBytes;
        for (const [name, size] of [['minus-1', C - 1], ['plus-1', C + 1]] as const) {
          await writeFile(join(source, 'big', name), randomBytes(size));
        }
        // Mostly a hole: data only in the last 4097 bytes of 2C.
        const sparse = join(source, 'big', 'sparse');
        await writeFile(sparse, '');
        await truncate(sparse, 2 * C - 4097);
        await writeFile(sparse, randomBytes(4097), { flag: 'a' });
        // A copy: its first chunk (streamed, over 4 MiB) is found known only after it was written
        // tentatively, so it is taken back and the blob digest is recomputed from the file.
        await copyFile(join(source, 'big', 'plus-1'), join(source, 'big', 'copy-of-plus-1'));
        const result = await buildImage({ kind: 'directory', path: source }, { outputDir: join(dir, 'out'), chunkSizeBytes });
        assert.ok(result.chunks.holeChunks >= 1, 'the all-zero chunk of the sparse file is a hole');
        assert.ok(result.chunks.chunksReused >= 2, `the copy's chunks are reused (${result.chunks.chunksReused})`);
        for (const blob of result.blobs) {
          assert.equal(createHash('sha256').update(await readFile(blob)).digest('hex'), basename(blob), 'a blob is named by the sha256 of its bytes');
        }
        await assertImageMatchesSource(source, result);
      });
  }
});

test('a tree without file data needs no blob device', async () => {
  await withCheckedTempDir(async (dir) => {
    const source = join(dir, 'src');
    await mkdir(join(source, 'a', 'b'), { recursive: true });
    await writeFile(join(source, 'a', 'empty'), '');
    const result = await buildImage({ kind: 'directory', path: source }, { outputDir: join(dir, 'out') });
    assert.deepEqual(result.blobs, []);
    await assertImageMatchesSource(source, result, { expectObjects: false });
  });
});
