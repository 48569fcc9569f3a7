import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { lstat, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ImageSummary, PathReport } from '../../src/read/index.js';
import { run, runChecked } from '../helpers/exec.js';
import { makeSmallTree } from '../helpers/fixtures.js';
import { withKernelMount } from '../helpers/kernel.js';
import { TEMP_DIR_PREFIX } from '../helpers/tmp.js';
import { mkfsErofs, type MkfsImage } from '../read/mkfsImages.js';

/**
 * `erofs inspect` on images made by mkfs.erofs, checked against what dump.erofs and the kernel say
 * about the same image (never against our own reader), and on broken images.
 */
const RUN_JS = fileURLToPath(new URL('../../../bin/run.js', import.meta.url));

let dir = '';
let plain: MkfsImage;
let blob: MkfsImage;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), TEMP_DIR_PREFIX));
  const source = join(dir, 'src');
  await makeSmallTree(source);
  plain = await mkfsErofs(dir, 'plain', source);
  blob = await mkfsErofs(dir, 'blob-4k', source);
});

after(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true, maxRetries: 3 });
});

async function inspectJson<T>(args: string[]): Promise<T> {
  const r = await run('node', [RUN_JS, 'inspect', ...args, '--json']);
  assert.equal(r.code, 0, r.output);
  return JSON.parse(r.stdout) as T;
}

/** `Key: value` fields of dump.erofs output (several per line, separated by runs of spaces). */
function dumpFields(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    for (const m of line.matchAll(/([A-Za-z][A-Za-z ]*?):\s+(\S+)/g)) fields.set(m[1]!.trim(), m[2]!);
  }
  return fields;
}

describe('erofs inspect', () => {
  for (const which of ['plain', 'blob'] as const) {
    test(`${which} image summary agrees with dump.erofs -s and -S`, async () => {
      const image = which === 'plain' ? plain : blob;
      const deviceArgs = image.blobs.flatMap((b) => ['--device', b]);
      const dumpDeviceArgs = image.blobs.map((b) => `--device=${b}`);
      const summary = await inspectJson<ImageSummary>([image.image, ...deviceArgs]);
      const s = (await runChecked('dump.erofs', ['-s', ...dumpDeviceArgs, image.image])).stdout;
      const field = (name: string): string => {
        const m = new RegExp(`^${name}:\\s+(.*)$`, 'm').exec(s);
        assert.ok(m?.[1] !== undefined, `dump.erofs -s printed no "${name}"`);
        return m[1].trim();
      };
      assert.equal(summary.superblock.primaryBlocks, Number(field('Filesystem blocks')));
      assert.equal(summary.superblock.rootNid, Number(field('Filesystem root nid')));
      assert.equal(summary.superblock.inodeCount, Number(field('Filesystem inode count')));
      assert.equal(summary.superblock.metaBlkaddr, Number(field('Filesystem inode metadata start block')));
      assert.equal(summary.superblock.xattrBlkaddr, Number(field('Filesystem shared xattr metadata start block')));
      assert.equal(summary.superblock.uuid, field('Filesystem UUID'));
      assert.deepEqual([...summary.superblock.featureCompatNames, ...summary.superblock.featureIncompatNames].sort(), field('Filesystem features').split(/\s+/).sort());
      assert.equal(summary.superblock.blockSizeBytes, 4096);
      assert.equal(summary.devices.length, image.blobs.length);
      if (image.blobs.length > 0) assert.equal(summary.devices[0]?.path, image.blobs[0]);

      const stats = (await runChecked('dump.erofs', ['-S', ...dumpDeviceArgs, image.image])).stdout;
      const count = (name: string): number => Number(new RegExp(`^Filesystem ${name}:\\s+(\\d+)`, 'm').exec(stats)?.[1]);
      assert.equal(summary.counts.total, count('total file count'));
      assert.equal(summary.counts.reg, count('regular file count'));
      assert.equal(summary.counts.dir, count('directory count'));
      assert.equal(summary.counts.chr, count('char dev count'));
      assert.equal(summary.counts.blk, count('block dev count'));
      assert.equal(summary.counts.fifo, count('FIFO file count'));
      assert.equal(summary.counts.sock, count('SOCK file count'));
      assert.equal(summary.counts.lnk, count('symlink file count'));
      assert.equal(summary.regularFileBytes, count('total original file size'));
    });
  }

  test('a path: inode fields and chunk map agree with dump.erofs --path -e and the kernel', async () => {
    const deviceArgs = blob.blobs.flatMap((b) => ['--device', b]);
    for (const rel of ['data.bin', 'hello.txt', 'dir', 'link', 'null', 'empty']) {
      const report = await inspectJson<PathReport>([blob.image, rel, ...deviceArgs]);
      const dump = (await runChecked('dump.erofs', [`--path=/${rel}`, '-e', ...blob.blobs.map((b) => `--device=${b}`), blob.image])).stdout;
      const fields = dumpFields(dump);
      assert.equal(report.nid, Number(fields.get('NID')), `${rel} nid`);
      assert.equal(report.nlink, Number(fields.get('Links')), `${rel} nlink`);
      assert.equal(report.sizeBytes, Number(fields.get('Size')), `${rel} size`);
      assert.equal(report.uid, Number(fields.get('Uid')), `${rel} uid`);
      assert.equal(report.gid, Number(fields.get('Gid')), `${rel} gid`);
      assert.equal(['flat-plain', 'compressed-full', 'flat-inline', 'compressed-compact', 'chunk-based'].indexOf(report.dataLayout), Number(fields.get('Layout')), `${rel} layout`);
      // dump.erofs prints the permission bits only.
      assert.equal(parseInt(report.mode, 8) & 0o777, parseInt(fields.get('Access')?.split('/')[0] ?? '', 8), `${rel} mode`);
      if (report.dataLayout === 'chunk-based') {
        // " 0:  0..  4096 |  4096 :  8192..  12288 |  4096  # device 1"
        const extents = [...dump.matchAll(/^\s*\d+:\s+(\d+)\.\.\s*(\d+)\s*\|\s*\d+\s*:\s*(\d+)\.\.\s*\d+\s*\|\s*\d+(?:\s*# device (\d+))?/gm)].map((m) => ({
          fileOffsetBytes: Number(m[1]),
          physicalBytes: Number(m[3]),
          deviceId: Number(m[4] ?? 0),
        }));
        assert.ok(extents.length > 0, `dump.erofs printed no extents for ${rel}:\n${dump}`);
        assert.deepEqual(
          report.chunkMap.map((c) => ({ fileOffsetBytes: c.fileOffsetBytes, physicalBytes: (c.blkaddr ?? 0) * 4096, deviceId: c.deviceId })),
          extents,
          `${rel} chunk map`,
        );
        assert.equal(report.chunkSizeBytes, 4096);
        assert.deepEqual(report.devicesUsed, [1]);
      }
    }
    // The kernel's view of the same paths: mtime with nanoseconds, rdev, symlink target, xattrs.
    const reports = new Map<string, PathReport>();
    for (const rel of ['data.bin', 'hello.txt', 'null', 'link', 'dir']) reports.set(rel, await inspectJson<PathReport>([blob.image, rel, ...deviceArgs]));
    await withKernelMount(blob.image, blob.blobs, async (mountpoint) => {
      for (const [rel, report] of reports) {
        const st = await lstat(join(mountpoint, rel), { bigint: true });
        assert.equal(BigInt(report.mtimeSec) * 1_000_000_000n + BigInt(report.mtimeNsec), st.mtimeNs, `${rel} mtime`);
        assert.equal(report.nid, Number(st.ino), `${rel} ino`);
        assert.equal(parseInt(report.mode, 8), Number(st.mode), `${rel} st_mode`);
      }
      assert.equal(reports.get('null')?.rdev, '1:3');
      assert.equal(reports.get('link')?.symlinkTarget, 'hello.txt');
      const greeting = reports.get('hello.txt')?.xattrs.find((x) => x.name === 'user.greeting');
      const fromKernel = (await runChecked('getfattr', ['--only-values', '-n', 'user.greeting', join(mountpoint, 'hello.txt')])).stdout;
      assert.deepEqual(greeting && { value: greeting.value, encoding: greeting.encoding }, { value: fromKernel, encoding: 'text' });
      assert.equal(reports.get('dir')?.xattrs.find((x) => x.name === 'trusted.overlay.opaque')?.value, 'y');
    });
  });

  test('human output names the fields and summarizes the chunk map', async () => {
    const r = await run('node', [RUN_JS, 'inspect', blob.image, 'data.bin', '--device', blob.blobs[0]!]);
    assert.equal(r.code, 0, r.output);
    assert.match(r.stdout, /^nid:\s+\d+ \(extended inode/m);
    assert.match(r.stdout, /^chunks:\s+3 of 4096 bytes \(indexes\)/m);
    assert.match(r.stdout, /0\.\.10000 -> 1:\d+ \(3 chunks\)/);
    const summary = await run('node', [RUN_JS, 'inspect', plain.image]);
    assert.equal(summary.code, 0, summary.output);
    assert.match(summary.stdout, /^block size:\s+4096 bytes/m);
  });

  test('broken images and bad paths: non-zero exit, one line on stderr naming the image, no stack trace', async () => {
    const truncated = join(dir, 'truncated.erofs');
    await writeFile(truncated, (await readFile(plain.image)).subarray(0, 3000));
    const garbage = join(dir, 'garbage.erofs');
    await writeFile(garbage, Buffer.alloc(8192, 0x5a));
    const cases: Array<[string[], string]> = [
      [[truncated], truncated],
      [[garbage], garbage],
      [[plain.image, 'no/such/path'], plain.image],
      [[blob.image, 'data.bin', '--device', blob.blobs[0]!, '--device', blob.blobs[0]!], blob.image],
    ];
    for (const [args, image] of cases) {
      const r = await run('node', [RUN_JS, 'inspect', ...args]);
      assert.notEqual(r.code, 0, `inspect ${args.join(' ')} should fail`);
      const lines = r.stderr.trimEnd().split('\n');
      assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
      assert.ok(lines[0]!.includes(image), `stderr names ${image}: ${lines[0]}`);
      assert.doesNotMatch(r.stderr, /^\s+at /m);
      assert.equal(r.stdout, '');
    }
    // With --json: the same line on stderr; stdout holds no partial result (at most oclif's JSON error object).
    const json = await run('node', [RUN_JS, 'inspect', truncated, '--json']);
    assert.notEqual(json.code, 0);
    assert.equal(json.stderr.trimEnd().split('\n').length, 1, json.stderr);
    assert.ok(json.stderr.includes(truncated));
    if (json.stdout.trim() !== '') assert.ok('error' in (JSON.parse(json.stdout) as object), json.stdout);
  });
});
