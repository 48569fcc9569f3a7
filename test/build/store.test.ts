import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { build, buildImage, type BuildResult } from '../../src/build/build.js';
import { makeTar, writeLayout } from '../oci/helpers.js';
import { sharingEligibility } from '../../src/format/eligibility.js';
import { ErofsImage } from '../../src/read/index.js';
import { withKernelMount } from '../helpers/kernel.js';
import { withTempDir } from '../helpers/tmp.js';
import { assertTreesEqual, snapshotTree } from '../helpers/tree.js';
import { SOURCE_VS_IMAGE } from './readerCheck.js';

const MiB = 1 << 20;

/** Chunk bits and devices of each path, as our reader decodes them from the written image. */
async function chunkLayout(result: BuildResult, paths: string[]): Promise<Map<string, { chunkBits: number; count: number; devices: number[]; eligible: boolean }>> {
  const image = await ErofsImage.open(result.metadataImage, { devices: result.blobs });
  try {
    const out = new Map<string, { chunkBits: number; count: number; devices: number[]; eligible: boolean }>();
    for (const path of paths) {
      const nid = await image.lookup(path);
      const st = await image.stat(nid);
      const map = await image.chunkMap(nid);
      out.set(path, {
        chunkBits: st.chunk!.chunkBits,
        count: map.length,
        devices: [...new Set(map.filter((c) => c.blkaddr !== null).map((c) => c.deviceId))],
        eligible: sharingEligibility(map, st.sizeBytes).eligible,
      });
    }
    return out;
  } finally {
    await image.close();
  }
}

test('tune policy: files with nothing to deduplicate become one chunk; deduplicating files keep the base size', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src');
    await mkdir(src);
    const shared = randomBytes(2 * MiB);
    await writeFile(join(src, 'unique-5m'), randomBytes(5 * MiB + 123));
    await writeFile(join(src, 'unique-small'), randomBytes(6000));
    await writeFile(join(src, 'a-original'), shared);
    await writeFile(join(src, 'b-copy-plus'), Buffer.concat([shared, randomBytes(MiB)]));
    const tuned = await buildImage({ kind: 'directory', path: src }, { outputDir: join(dir, 'tune'), chunkSizeBytes: MiB });
    const layout = await chunkLayout(tuned, ['unique-5m', 'unique-small', 'a-original', 'b-copy-plus']);
    // 5 MiB + 123 bytes: one 8 MiB chunk (the smallest power of two that holds it).
    assert.deepEqual(layout.get('unique-5m'), { chunkBits: 23, count: 1, devices: [1], eligible: true });
    assert.deepEqual(layout.get('unique-small'), { chunkBits: 13, count: 1, devices: [1], eligible: true });
    // Written first, all new: one chunk. Its copy reuses its 1 MiB chunks, so it keeps 1 MiB chunks.
    assert.equal(layout.get('a-original')!.count, 1);
    assert.deepEqual(layout.get('b-copy-plus'), { chunkBits: 20, count: 3, devices: [1], eligible: true });
    assert.equal(tuned.chunks.chunksReused, 2);

    const fixed = await buildImage({ kind: 'directory', path: src }, { outputDir: join(dir, 'fixed'), chunkSizeBytes: MiB, policy: 'fixed' });
    const fixedLayout = await chunkLayout(fixed, ['unique-5m']);
    assert.deepEqual(fixedLayout.get('unique-5m'), { chunkBits: 20, count: 6, devices: [1], eligible: true });

    // The report's eligibility numbers are what the per-file verdicts above add up to.
    const total = Object.values(tuned.sharing).reduce((sum, c) => ({ files: sum.files + c.files, eligible: sum.eligible + c.eligibleFiles }), { files: 0, eligible: 0 });
    assert.deepEqual(total, { files: 4, eligible: 4 });
    // Both read back identical to the source through the kernel.
    const expected = await snapshotTree(src);
    for (const result of [tuned, fixed]) {
      assertTreesEqual(expected, await withKernelMount(result.metadataImage, result.blobs, (m) => snapshotTree(m)), SOURCE_VS_IMAGE);
    }
  });
});

test('a shared store: a second build of overlapping content writes only the new chunks and references the old blob', async () => {
  await withTempDir(async (dir) => {
    const store = join(dir, 'store');
    const base = join(dir, 'base');
    const derived = join(dir, 'derived');
    await mkdir(base);
    await mkdir(derived);
    const common = randomBytes(3 * MiB);
    await writeFile(join(base, 'lib.so'), common);
    await writeFile(join(derived, 'lib.so'), common);
    await writeFile(join(derived, 'app'), randomBytes(MiB + 7));
    const first = await buildImage({ kind: 'directory', path: base }, { outputDir: join(dir, 'out1'), storeDir: store, chunkSizeBytes: MiB });
    const second = await buildImage({ kind: 'directory', path: derived }, { outputDir: join(dir, 'out2'), storeDir: store, chunkSizeBytes: MiB });
    assert.equal(second.chunks.bytesReused, 3 * MiB, 'lib.so is referenced, not written again');
    assert.equal(second.chunks.bytesWritten, MiB + 7);
    assert.equal(second.blobs.length, 2);
    assert.equal(second.blobs[0], first.blobs[0], "the base build's blob is device 1 of the derived image");
    const layout = await chunkLayout(second, ['lib.so', 'app']);
    assert.deepEqual(layout.get('lib.so')!.devices, [1]);
    assert.deepEqual(layout.get('app')!.devices, [2]);
    assertTreesEqual(await snapshotTree(derived), await withKernelMount(second.metadataImage, second.blobs, (m) => snapshotTree(m)), SOURCE_VS_IMAGE);
    // A rebuild of the base writes nothing new at all.
    const again = await buildImage({ kind: 'directory', path: base }, { outputDir: join(dir, 'out3'), storeDir: store, chunkSizeBytes: MiB });
    assert.equal(again.chunks.bytesWritten, 0);
    assert.deepEqual(again.blobs, first.blobs);
  });
});

test('the chunk list records streamed chunks (over 4 MiB) so that a later build reuses them', async () => {
  await withTempDir(async (dir) => {
    const store = join(dir, 'store');
    const source = join(dir, 'source');
    await mkdir(source);
    // 16 MiB chunks with the fixed policy: a file of 24 MiB + 5 bytes is a 16 MiB chunk and a tail of
    // 8 MiB + 5, both streamed through in pieces; a small file is one whole chunk, read at once.
    const big = randomBytes(24 * MiB + 5);
    await writeFile(join(source, 'big'), big);
    await writeFile(join(source, 'small'), randomBytes(100));
    const options = { storeDir: store, chunkSizeBytes: 16 * MiB, policy: 'fixed' as const };
    const first = await buildImage({ kind: 'directory', path: source }, { ...options, outputDir: join(dir, 'out1') });
    const blob = first.blobs[0]!.split('/').pop()!;
    // The store's record format (44 bytes: BLAKE3, u64 length, u32 block address), read independently.
    const records = await readFile(join(store, 'chunks', `${blob}.chunks`));
    assert.equal(records.length, 3 * 44);
    const lengths = [0, 1, 2].map((i) => Number(records.readBigUInt64LE(i * 44 + 32)));
    const blkaddrs = [0, 1, 2].map((i) => records.readUInt32LE(i * 44 + 40));
    assert.deepEqual(lengths.sort((a, b) => a - b), [100, 8 * MiB + 5, 16 * MiB]);
    assert.deepEqual(new Set(blkaddrs).size, 3, 'each chunk at its own block address');
    const again = await buildImage({ kind: 'directory', path: source }, { ...options, outputDir: join(dir, 'out2') });
    assert.equal(again.chunks.bytesWritten, 0, 'every chunk, streamed or not, is found in the chunk list');
    assert.equal(again.chunks.chunksReused, 3);
    assert.deepEqual(again.blobs, first.blobs);
    assertTreesEqual(await snapshotTree(source), await withKernelMount(again.metadataImage, again.blobs, (m) => snapshotTree(m)), SOURCE_VS_IMAGE);
  });
});

test('two builds into one store at the same time both succeed and leave a consistent store', async () => {
  await withTempDir(async (dir) => {
    const store = join(dir, 'store');
    const sources = [join(dir, 'a'), join(dir, 'b')];
    const common = randomBytes(8 * MiB);
    for (const [i, src] of sources.entries()) {
      await mkdir(src);
      for (let f = 0; f < 20; f++) await writeFile(join(src, `f${f}`), Buffer.concat([common.subarray(0, (f + 1) * 256 * 1024), randomBytes(1000 + i)]));
    }
    const runBuild = (src: string, out: string) =>
      new Promise<{ code: number | null; output: string }>((resolve) => {
        const child = spawn('node', ['bin/run.js', 'build', src, '-o', out, '--store', store, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let output = '';
        child.stdout.on('data', (c: Buffer) => (output += c.toString()));
        child.stderr.on('data', (c: Buffer) => (output += c.toString()));
        child.on('close', (code) => resolve({ code, output }));
      });
    const results = await Promise.all(sources.map((src, i) => runBuild(src, join(dir, `out${i}`))));
    for (const r of results) assert.equal(r.code, 0, r.output);
    for (const [i, r] of results.entries()) {
      const report = JSON.parse(r.output) as BuildResult;
      assertTreesEqual(await snapshotTree(sources[i]!), await withKernelMount(report.metadataImage, report.blobs, (m) => snapshotTree(m)), SOURCE_VS_IMAGE);
    }
    // No temporary files remain, and every chunk list belongs to a blob that exists.
    const blobNames = await readdir(join(store, 'blobs', 'sha256'));
    assert.deepEqual(blobNames.filter((n) => n.startsWith('.')), []);
    for (const list of await readdir(join(store, 'chunks'))) {
      assert.ok(!list.startsWith('.'), `temporary chunk list ${list} left behind`);
      await stat(join(store, 'blobs', 'sha256', list.replace(/\.chunks$/, '')));
    }
  });
});

test('builds are reproducible: the same source gives byte-identical metadata images and blobs', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src');
    await mkdir(join(src, 'sub'), { recursive: true });
    await writeFile(join(src, 'sub', 'a'), randomBytes(100_000));
    await writeFile(join(src, 'b'), 'b');
    const one = await buildImage({ kind: 'directory', path: src }, { outputDir: join(dir, 'one') });
    const two = await buildImage({ kind: 'directory', path: src }, { outputDir: join(dir, 'two') });
    assert.ok((await readFile(one.metadataImage)).equals(await readFile(two.metadataImage)));
    assert.deepEqual(one.blobDigests, two.blobDigests);
    // The UUID is derived from the content, not left zero.
    assert.notDeepEqual((await readFile(one.metadataImage)).subarray(1024 + 0x30, 1024 + 0x40), Buffer.alloc(16));
  });
});

test('one build of a directory and then an image reuses the directory\'s chunks for the image', async () => {
  await withTempDir(async (dir) => {
    const content = randomBytes(2 * MiB + 5);
    const src = join(dir, 'src');
    await mkdir(src);
    await writeFile(join(src, 'lib.so'), content);
    const layout = join(dir, 'layout');
    await writeLayout(layout, [{ tag: 'img', layers: [{ tar: makeTar([{ name: 'lib.so', data: content }]), compression: 'gzip' }] }]);
    const report = await build([src, `${layout}:img`], { outputDir: join(dir, 'out') });
    const [fromDir, fromImage] = report.images;
    assert.equal(fromDir!.chunks.bytesWritten, content.length);
    assert.equal(fromImage!.chunks.bytesWritten, 0, 'the image writes nothing the directory already stored');
    assert.deepEqual(fromImage!.blobs, fromDir!.blobs);
  });
});
