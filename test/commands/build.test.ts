import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../helpers/exec.js';
import { withTempDir } from '../helpers/tmp.js';

const CLI = ['bin/run.js'];

/** Every file below `dir` (recursively), relative; directories alone do not count as output. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => !e.isDirectory()).map((e) => join(e.parentPath ?? e.path, e.name).slice(dir.length + 1));
}

function assertOneLineError(result: { code: number; stderr: string }, pattern: RegExp): void {
  assert.notEqual(result.code, 0, 'exit status must be non-zero');
  const lines = result.stderr.trim().split('\n').filter((l) => l.trim() !== '');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${result.stderr}`);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(result.stderr, /\bat .*\.js:\d+/, 'no stack trace');
}

test('build: a missing source directory is one clear error and writes nothing', async () => {
  await withTempDir(async (dir) => {
    const out = join(dir, 'out');
    const result = await run('node', [...CLI, 'build', join(dir, 'nope'), '-o', out]);
    assertOneLineError(result, /nope: no such file or directory/);
    assert.deepEqual(await filesUnder(out), []);
  });
});

test('build: an output directory or store that cannot be one is one clear error (a file in the way, under /proc: no hang)', async () => {
  await withTempDir(async (dir) => {
    const source = join(dir, 'src');
    await mkdir(source);
    await writeFile(join(source, 'f'), 'data\n');
    const file = join(dir, 'afile');
    await writeFile(file, 'x');
    const cases: Array<[string[], RegExp]> = [
      [['-o', file], /output directory .*afile: exists and is not a directory$/],
      [['-o', join(file, 'sub')], /output directory .*afile\/sub: a parent is not a directory$/],
      [['-o', join(dir, 'out'), '--store', file], /store .*afile: exists and is not a directory$/],
      // Node 20's recursive mkdir retried this forever, deaf to SIGTERM.
      [['-o', `/proc/mkfs-erofs-ts-test-${randomBytes(4).toString('hex')}`], /output directory \/proc\/mkfs-erofs-ts-test-\w+: cannot create .* \(its parent takes no new entries\)$/],
    ];
    for (const [args, error] of cases) {
      const result = await run('node', [...CLI, 'build', source, ...args]);
      assert.equal(result.code, 2, result.output);
      assertOneLineError(result, error);
    }
    assert.equal(await readFile(file, 'utf8'), 'x', 'the file in the way is untouched');
  });
});

test('build: a source name too long for a file name is cut, with a digest of the whole; --name that long is refused', async () => {
  await withTempDir(async (dir) => {
    const source = join(dir, 'n'.repeat(230));
    await mkdir(source);
    await writeFile(join(source, 'f'), 'data\n');
    const out = join(dir, 'out');
    const result = await run('node', [...CLI, 'build', source, '-o', out, '--json']);
    assert.equal(result.code, 0, result.output);
    const { name, metadataImage } = JSON.parse(result.stdout) as { name: string; metadataImage: string };
    assert.match(name, /^n{179}-[0-9a-f]{12}$/);
    assert.deepEqual((await filesUnder(out)).filter((f) => !f.includes('/')).sort(), ['index.json', `${name}.erofs`, `${name}.report.json`, 'oci-layout'].sort());
    assert.equal(metadataImage, join(out, `${name}.erofs`));

    const named = await run('node', [...CLI, 'build', source, '-o', join(dir, 'out2'), '--name', 'm'.repeat(240)]);
    assertOneLineError(named, /--name: is 240 bytes long; at most 200 /);
    assert.deepEqual(await filesUnder(join(dir, 'out2')), []);
  });
});

test('--json on failure: stdout is a JSON error with the code and message, exit 2, the same one line on stderr', async () => {
  await withTempDir(async (dir) => {
    const result = await run('node', [...CLI, 'build', join(dir, 'nope'), '-o', join(dir, 'out'), '--json']);
    assert.equal(result.code, 2, 'bad input exits 2 also under --json');
    assertOneLineError(result, /nope: no such file or directory/);
    const parsed = JSON.parse(result.stdout) as { error?: { code?: string; message?: string } };
    assert.equal(parsed.error?.code, 'ERR_INVALID_IMAGE_SOURCE');
    assert.match(parsed.error?.message ?? '', /nope: no such file or directory/);
    // inspect shares the error path: a file that is no EROFS image.
    await writeFile(join(dir, 'plain'), Buffer.alloc(8192, 0x41));
    const inspected = await run('node', [...CLI, 'inspect', join(dir, 'plain'), '--json']);
    assert.equal(inspected.code, 2);
    assert.equal((JSON.parse(inspected.stdout) as { error: { code: string } }).error.code, 'ERR_EROFS_CORRUPT');
  });
});

test('build: a file that is no image is refused', async () => {
  await withTempDir(async (dir) => {
    await writeFile(join(dir, 'file'), 'x');
    const result = await run('node', [...CLI, 'build', join(dir, 'file'), '-o', join(dir, 'out')]);
    assertOneLineError(result, /file: not an OCI image layout, OCI archive, docker archive or layer tarball/);
    assert.deepEqual(await filesUnder(join(dir, 'out')), []);
  });
});

for (const [flag, value, pattern] of [
  ['--chunk-size', '3000', /--chunk-size: 3000 must be a power of two from 4K to 8T$/],
  ['--chunk-size', '1X', /--chunk-size: "1X" is not a size/],
  ['--chunk-size', '2048', /--chunk-size: 2048 must be a power of two from 4K to 8T$/],
  ['--block-size', '8192', /--block-size: 8192 must be a power of two from 512 to 4K$/],
] as const) {
  test(`build: ${flag} ${value} is refused with the allowed range`, async () => {
    await withTempDir(async (dir) => {
      await mkdir(join(dir, 'src'));
      await writeFile(join(dir, 'src', 'f'), 'data');
      const result = await run('node', [...CLI, 'build', join(dir, 'src'), '-o', join(dir, 'out'), flag, value]);
      assertOneLineError(result, pattern);
      assert.deepEqual(await filesUnder(join(dir, 'out')), []);
    });
  });
}

test('build on a terminal: the spinner ends with the result, also on a terminal that reports 0 columns (ora hung there)', { timeout: 120_000 }, async () => {
  await withTempDir(async (dir) => {
    await mkdir(join(dir, 'tree'));
    await writeFile(join(dir, 'tree', 'file'), 'hello\n');
    for (const columns of [80, 0]) {
      const out = join(dir, `out-${columns}`);
      // script(1) gives the build a pseudo-terminal as stdin, stdout and stderr; stty sets its width.
      const command = `stty cols ${columns} rows 24; exec node ${CLI.join(' ')} build '${join(dir, 'tree')}' -o '${out}'`;
      const result = await run('script', ['-qec', command, '/dev/null']);
      assert.equal(result.code, 0, `${columns} columns: ${result.output}`);
      assert.match(result.output, /tree\.erofs/, `${columns} columns: the report names the image`);
      if (columns > 0) assert.match(result.output, /Built tree/, 'the spinner ends with the image built');
      assert.ok((await filesUnder(out)).includes('tree.erofs'));
    }
  });
});

test('build: SIGTERM in the middle removes the partial blob and writes no image', async () => {
  await withTempDir(async (dir) => {
    const source = join(dir, 'src');
    await mkdir(source);
    // Enough data that the build is still running when the signal arrives: the build reads about
    // 1 GB/s here, and the signal is sent as soon as its temporary blob appears.
    const blob = randomBytes(1 << 20);
    for (let i = 0; i < 1500; i++) await writeFile(join(source, `f${i}`), Buffer.concat([blob, randomBytes(64)]));
    const out = join(dir, 'out');
    const child = spawn('node', [...CLI, 'build', source, '-o', out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    // Wait until the temporary blob exists, i.e. the build is under way.
    const blobsDir = join(out, 'blobs', 'sha256');
    for (let i = 0; i < 1200 && (await readdir(blobsDir).catch(() => [])).length === 0; i++) await new Promise((r) => setTimeout(r, 5));
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    assert.notEqual(code, 0);
    assert.match(stderr, /interrupted by SIGTERM/);
    // No image, report or layout entry, and no temporary file. A layer blob completed before the
    // signal may stay in the store, but only whole: named by its true digest, with its chunk list.
    const left = await filesUnder(out);
    assert.deepEqual(left.filter((f) => f.endsWith('.erofs') && !f.startsWith('objects/')), []);
    assert.deepEqual(left.filter((f) => f === 'index.json' || f.endsWith('.report.json') || f.split('/').pop()!.startsWith('.tmp')), []);
    for (const blob of left.filter((f) => f.startsWith('blobs/sha256/'))) {
      const digest = blob.slice('blobs/sha256/'.length);
      assert.equal(createHash('sha256').update(await readFile(join(out, blob))).digest('hex'), digest, `${blob} is whole`);
      assert.ok(left.includes(`chunks/${digest}.chunks`), `${blob} has its chunk list`);
    }
  });
});
