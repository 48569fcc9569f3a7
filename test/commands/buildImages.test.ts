import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { TYPEFLAG } from '../../src/oci/tarHeader.js';
import { run } from '../helpers/exec.js';
import { withKernelMount } from '../helpers/kernel.js';
import { withTempDir } from '../helpers/tmp.js';
import { makeTar, writeLayout, type TestLayer } from '../oci/helpers.js';

/** Files (not directories) under `dir`, relative. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => !e.isDirectory()).map((e) => join(e.parentPath ?? e.path, e.name).slice(dir.length + 1));
}

/** Every chunk list in a store belongs to a blob that is there, and no temporary file remains. */
async function assertStoreConsistent(store: string): Promise<void> {
  for (const file of await filesUnder(store)) assert.ok(!file.split('/').pop()!.startsWith('.tmp'), `temporary file left: ${file}`);
  for (const list of await readdir(join(store, 'chunks')).catch(() => [] as string[])) {
    await stat(join(store, 'blobs', 'sha256', list.replace(/\.chunks$/, '')));
  }
}

const goodTar = () =>
  makeTar([
    { name: 'etc/', typeflag: TYPEFLAG.dir, mode: 0o755 },
    { name: 'etc/hostname', data: 'box\n' },
  ]);

async function layoutWith(dir: string, layers: TestLayer[]): Promise<string> {
  const layout = join(dir, 'layout');
  await writeLayout(layout, [{ tag: 'img', layers }]);
  return layout;
}

const BAD_INPUTS: { name: string; layers: () => TestLayer[]; error: RegExp; noBlob?: boolean }[] = [
  { name: 'a wrong layer digest', layers: () => [{ tar: goodTar(), compression: 'gzip', digest: `sha256:${'0'.repeat(64)}` }], error: /missing|digest/i },
  { name: 'a wrong diff_id', layers: () => [{ tar: goodTar(), compression: 'gzip', diffId: `sha256:${'1'.repeat(64)}` }], error: /sha256:1111.*sha256:|diff_id/ },
  { name: 'an unknown media type', layers: () => [{ tar: goodTar(), compression: 'none', mediaType: 'application/x-weird' }], error: /application\/x-weird/ },
  { name: 'a truncated gzip layer', layers: () => [{ tar: goodTar(), compression: 'gzip', truncateTo: 40 } as TestLayer], error: /gzip|truncated|digest|size/i },
  { name: 'a path escaping the root', layers: () => [{ tar: makeTar([{ name: '../escape', data: 'x' }]), compression: 'none' }], error: /escape|\.\./ },
  { name: 'an absolute name', layers: () => [{ tar: makeTar([{ name: '/etc/passwd', data: 'x' }]), compression: 'none' }], error: /absolute/ },
  {
    name: 'a hardlink to a missing target',
    layers: () => [{ tar: makeTar([{ name: 'link', typeflag: TYPEFLAG.hardlink, linkName: 'nowhere' }]), compression: 'none' }],
    error: /hardlink target "nowhere" does not exist/,
  },
  { name: 'a truncated tar', layers: () => [{ tar: goodTar().subarray(0, 700), compression: 'none' }], error: /truncated/i },
  { name: 'a missing blob', layers: () => [{ tar: goodTar(), compression: 'gzip', omit: true }], error: /missing|not found|no such/i },
  // What EROFS cannot store, after a file with data (so a blob is being written): refused at the
  // entry, named, and no blob of the layer stays.
  ...[
    { name: 'an xattr in no EROFS namespace', entry: { name: 'f', data: 'abc', pax: [['SCHILY.xattr.foo.bar', 'v']] as Array<[string, string]> }, error: /entry "f": xattr "foo\.bar" is in no namespace EROFS can store$/ },
    { name: 'an xattr value over 64 KiB', entry: { name: 'f', data: 'abc', pax: [['SCHILY.xattr.user.big', 'v'.repeat(70_000)]] as Array<[string, string]> }, error: /entry "f": xattr "user\.big" has a value of 70000 bytes, over 65535$/ },
    { name: 'a symlink target longer than a block', entry: { name: 's', typeflag: TYPEFLAG.symlink, pax: [['linkpath', 't'.repeat(5000)]] as Array<[string, string]> }, error: /entry "s": symlink target of 5000 bytes, over the 4095 /  },
    { name: 'a device number beyond dev_t', entry: { name: 'd', typeflag: TYPEFLAG.chr, devMajor: 4096, devMinor: 1 }, error: /entry "d": device 4096:1 does not fit 32-bit dev_t$/ },
  ].map(({ name, entry, error }) => ({ name, layers: (): TestLayer[] => [{ tar: makeTar([{ name: 'data.bin', data: randomBytes(64 << 10) }, entry]), compression: 'gzip' }], error, noBlob: true })),
];

for (const bad of BAD_INPUTS) {
  test(`build: ${bad.name} is one clear error, exit 2, no image, a consistent store`, async () => {
    await withTempDir(async (dir) => {
      const layers = bad.layers();
      const truncateTo = (layers[0] as TestLayer & { truncateTo?: number }).truncateTo;
      const layout = await layoutWith(dir, layers);
      if (truncateTo !== undefined) {
        // Cut the stored layer blob itself (the manifest still names its full digest and size).
        const blobs = join(layout, 'blobs', 'sha256');
        for (const name of await readdir(blobs)) {
          const path = join(blobs, name);
          const bytes = await readFile(path);
          if (bytes[0] === 0x1f && bytes[1] === 0x8b) await writeFile(path, bytes.subarray(0, truncateTo));
        }
      }
      const out = join(dir, 'out');
      const result = await run('node', ['bin/run.js', 'build', `${layout}:img`, '-o', out]);
      assert.equal(result.code, 2, result.output);
      const lines = result.stderr.trim().split('\n');
      assert.equal(lines.length, 1, result.stderr);
      assert.match(lines[0]!, bad.error);
      assert.ok(lines[0]!.includes(layout) || /layer/.test(lines[0]!), `the message names the input: ${lines[0]}`);
      const outputs = await filesUnder(out);
      assert.deepEqual(outputs.filter((f) => f.endsWith('.erofs') && !f.startsWith('objects/')), [], 'no metadata image');
      assert.deepEqual(outputs.filter((f) => f === 'index.json' || f.endsWith('.report.json')), [], 'no layout entry or report');
      await assertStoreConsistent(out);
      if (bad.noBlob === true) assert.deepEqual(outputs, [], 'the layer failed before its blob was complete: nothing is left');
    });
  });
}

test('build: a lone gzip tarball that is corrupt or cut short is one clear error with either gzip decoder (igzip, zlib), exit 2, no image; a bad MKFS_EROFS_TS_GUNZIP too', async () => {
  await withTempDir(async (dir) => {
    // More than one piece of input and one batch of output, so the damage lies past the first call.
    const tar = makeTar([{ name: 'data', data: Buffer.from(randomBytes(3 << 20).toString('hex')) }]);
    const good = gzipSync(tar);
    const badCrc = Buffer.from(good);
    badCrc[good.length - 8] = badCrc[good.length - 8]! ^ 0xff;
    const cases: [string, Buffer, RegExp][] = [
      ['bad-crc.tar.gz', badCrc, /: corrupt gzip stream \(/],
      ['cut.tar.gz', good.subarray(0, good.length >> 1), /: truncated gzip stream/],
    ];
    for (const decoder of ['isal', 'zlib']) {
      for (const [name, bytes, problem] of cases) {
        const layer = join(dir, name);
        await writeFile(layer, bytes);
        const out = join(dir, `out-${decoder}-${name}`);
        const result = await run('env', [`MKFS_EROFS_TS_GUNZIP=${decoder}`, 'node', 'bin/run.js', 'build', layer, '-o', out]);
        assert.equal(result.code, 2, `${decoder} ${name}: ${result.output}`);
        const lines = result.stderr.trim().split('\n');
        assert.equal(lines.length, 1, result.stderr);
        assert.ok(lines[0]!.includes(layer), `the message names the layer: ${lines[0]}`);
        assert.match(lines[0]!, problem);
        const outputs = await filesUnder(out);
        assert.deepEqual(outputs.filter((f) => (f.endsWith('.erofs') && !f.startsWith('objects/')) || f === 'index.json' || f.endsWith('.report.json')), [], `${decoder} ${name}: no image, layout entry or report`);
        await assertStoreConsistent(out);
      }
    }
    const layer = join(dir, 'good.tar.gz');
    await writeFile(layer, good);
    const out = join(dir, 'out-setting');
    const result = await run('env', ['MKFS_EROFS_TS_GUNZIP=pigz', 'node', 'bin/run.js', 'build', layer, '-o', out]);
    assert.equal(result.code, 2, result.output);
    assert.deepEqual(result.stderr.trim().split('\n'), ['mkfs-erofs-ts: error: MKFS_EROFS_TS_GUNZIP: must be isal or zlib, not "pigz"']);
    assert.deepEqual((await filesUnder(out)).filter((f) => f.endsWith('.erofs') || f === 'index.json'), []);
  });
});

test('build: a name repeated in one layer takes the later entry (as Docker and containerd do)', async () => {
  await withTempDir(async (dir) => {
    const layout = await layoutWith(dir, [
      { tar: makeTar([{ name: 'f', data: 'first' }, { name: 'f', data: 'second' }, { name: 'caf\xe9', data: 'latin1 name, not UTF-8' }]), compression: 'zstd' },
    ]);
    const out = join(dir, 'out');
    const result = await run('node', ['bin/run.js', 'build', `${layout}:img`, '-o', out, '--json']);
    assert.equal(result.code, 0, result.output);
    const report = JSON.parse(result.stdout) as { metadataImage: string; blobs: string[] };
    await withKernelMount(report.metadataImage, report.blobs, async (mountpoint) => {
      assert.equal(await readFile(join(mountpoint, 'f'), 'utf8'), 'second');
      // The raw byte 0xe9 survives as a name byte.
      const names = await readdir(mountpoint, { encoding: 'buffer' });
      assert.ok(names.some((n) => n.equals(Buffer.from('caf\xe9', 'latin1'))), `names: ${names.map((n) => n.toString('hex'))}`);
    });
  });
});

test('build: a later layer cut off mid-file, after a layer larger than the chunk thread\'s buffers: one error; the first blob is whole in the store, with its chunk list and object index, and dedups the next build', async () => {
  await withTempDir(async (dir) => {
    // 40 MiB of incompressible data is more than the main thread's batch buffers hold, so the
    // chunk thread is still working on the first layer while the second is read.
    const big = randomBytes(40 << 20);
    const firstTar = makeTar([
      { name: 'data/', typeflag: TYPEFLAG.dir, mode: 0o755 },
      { name: 'data/big', data: big },
      ...Array.from({ length: 200 }, (_, i) => ({ name: `data/small-${i}`, data: `file ${i}\n`.repeat(i + 1) })),
    ]);
    const secondTar = makeTar([{ name: 'more', data: randomBytes(8 << 20) }]);
    // Cut in the middle of the second layer's only file: the chunk thread waits for bytes that never come.
    const layout = await layoutWith(dir, [
      { tar: firstTar, compression: 'none' },
      { tar: secondTar.subarray(0, 512 + (3 << 20)), compression: 'none' },
    ]);
    const store = join(dir, 'store');
    const result = await run('node', ['bin/run.js', 'build', `${layout}:img`, '-o', join(dir, 'out'), '--store', store]);
    assert.equal(result.code, 2, result.output);
    assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
    assert.match(result.stderr, /truncated/i);
    await assertStoreConsistent(store);
    const blobs = await readdir(join(store, 'blobs', 'sha256'));
    assert.equal(blobs.length, 1, `one blob (the first layer's): ${blobs}`);
    const blob = await readFile(join(store, 'blobs', 'sha256', blobs[0]!));
    assert.equal(createHash('sha256').update(blob).digest('hex'), blobs[0], 'the blob is named by the digest of its bytes');
    assert.ok(blob.length >= big.length, `the blob holds the first layer's data (${blob.length} bytes)`);
    await stat(join(store, 'chunks', `${blobs[0]}.chunks`));
    await stat(join(store, 'objects', `${blobs[0]}.erofs`));
    // The store is usable: the first layer alone, built again into it, writes nothing new.
    const again = await layoutWith(join(dir, 'again'), [{ tar: firstTar, compression: 'gzip' }]);
    const rebuilt = await run('node', ['bin/run.js', 'build', `${again}:img`, '-o', join(dir, 'out2'), '--store', store, '--json']);
    assert.equal(rebuilt.code, 0, rebuilt.output);
    const report = JSON.parse(rebuilt.stdout) as { chunks: { bytesWritten: number; bytesReused: number }; blobs: string[] };
    assert.equal(report.chunks.bytesWritten, 0, 'nothing written again');
    assert.ok(report.chunks.bytesReused >= big.length);
    assert.deepEqual(report.blobs.map((b) => b.split('/').pop()), blobs);
  });
});

test('build: a corrupt chunk list in the store is one clear error naming the store, and nothing is written', async () => {
  await withTempDir(async (dir) => {
    const layout = await layoutWith(dir, [{ tar: goodTar(), compression: 'none' }]);
    const store = join(dir, 'store');
    const first = await run('node', ['bin/run.js', 'build', `${layout}:img`, '-o', join(dir, 'a'), '--store', store]);
    assert.equal(first.code, 0, first.output);
    const [list] = await readdir(join(store, 'chunks'));
    await writeFile(join(store, 'chunks', list!), Buffer.alloc(45));
    const result = await run('node', ['bin/run.js', 'build', `${layout}:img`, '-o', join(dir, 'b'), '--store', store]);
    assert.equal(result.code, 2, result.output);
    const lines = result.stderr.trim().split('\n');
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0]!, new RegExp(`store ${store}: chunk list ${list} is corrupt`));
    assert.deepEqual((await filesUnder(join(dir, 'b'))).filter((f) => f.endsWith('.erofs')), [], 'no metadata image');
    await assertStoreConsistent(store);
  });
});

test('build: a zstd layer expanding 2000-fold (768 MiB of zeros) converts in memory far below its size; the file reads back as zeros', async () => {
  await withTempDir(async (dir) => {
    const zeros = Buffer.alloc(768 << 20);
    const layout = await layoutWith(dir, [{ tar: makeTar([{ name: 'zeros', data: zeros }, { name: 'after', data: 'still here\n' }]), compression: 'zstd' }]);
    const out = join(dir, 'out');
    // In a process of its own, to read its peak memory (threads included) at the end.
    const script = `
      import { build } from ${JSON.stringify(new URL('../../src/build/build.js', import.meta.url).href)};
      const report = await build([process.argv[2]], { outputDir: process.argv[3] });
      const { readFileSync } = await import('node:fs');
      // VmHWM, not getrusage's maxRSS, which counts the parent's memory at fork.
      const maxRssKb = Number(/VmHWM:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
      console.log(JSON.stringify({ maxRssKb, image: report.images[0] }));`;
    const scriptPath = join(dir, 'build.mjs');
    await writeFile(scriptPath, script);
    const result = await run('node', [scriptPath, `${layout}:img`, out]);
    assert.equal(result.code, 0, result.output);
    const { maxRssKb, image } = JSON.parse(result.stdout) as { maxRssKb: number; image: { metadataImage: string; blobs: string[]; chunks: { holeChunks: number } } };
    // Decompressed output waits for the converter (it is never gathered whole in memory).
    assert.ok(maxRssKb < 400 * 1024, `peak RSS ${Math.round(maxRssKb / 1024)} MiB for 768 MiB of layer data`);
    assert.equal(image.chunks.holeChunks, 768, 'every 1 MiB chunk of zeros is a hole');
    await withKernelMount(image.metadataImage, image.blobs, async (mountpoint) => {
      const st = await stat(join(mountpoint, 'zeros'));
      assert.equal(st.size, zeros.length);
      const handle = await open(join(mountpoint, 'zeros'));
      try {
        const probe = Buffer.alloc(1 << 20, 0xff);
        for (const position of [0, 300 << 20, (768 << 20) - probe.length]) {
          await handle.read(probe, 0, probe.length, position);
          assert.ok(probe.every((b) => b === 0), `zeros at ${position}`);
        }
      } finally {
        await handle.close();
      }
      assert.equal(await readFile(join(mountpoint, 'after'), 'utf8'), 'still here\n');
    });
  });
});

test('the library builds from a script given with node --input-type=module -e (its worker threads do not inherit those flags)', async () => {
  await withTempDir(async (dir) => {
    const layout = await layoutWith(dir, [{ tar: goodTar(), compression: 'gzip' }]);
    const out = join(dir, 'out');
    const script = `
      import { build } from ${JSON.stringify(new URL('../../src/build/build.js', import.meta.url).href)};
      const report = await build([${JSON.stringify(`${layout}:img`)}], { outputDir: ${JSON.stringify(out)} });
      console.log(report.images[0].metadataImage);`;
    const result = await run('node', ['--input-type=module', '-e', script]);
    assert.equal(result.code, 0, result.output);
    const report = JSON.parse(await readFile(join(out, 'img.report.json'), 'utf8')) as { metadataImage: string; blobs: string[] };
    assert.equal(result.stdout.trim(), report.metadataImage);
    await withKernelMount(report.metadataImage, report.blobs, async (mountpoint) => {
      assert.equal(await readFile(join(mountpoint, 'etc/hostname'), 'utf8'), 'box\n');
    });
  });
});
