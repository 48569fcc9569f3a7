import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FuseMountResult, FuseUnmountResult } from '../../src/fuse/client.js';
import { readMountinfo } from '../../src/mount/mountinfo.js';
import { ErofsImage } from '../../src/read/index.js';
import { run, runChecked } from '../helpers/exec.js';
import { TEMP_DIR_PREFIX } from '../helpers/tmp.js';
import { cli, cliJson } from '../mount/helpers.js';
import { fixSuperblockChecksum } from '../read/mkfsImages.js';

interface BuildJson {
  metadataImage: string;
  blobs: string[];
}

/** A test's own directory and FUSE runtime directory, and everything needed to undo what it mounted. */
interface Sandbox {
  dir: string;
  runtimeDir: string;
  daemonPids: () => Promise<number[]>;
  fuseMounts: () => Promise<string[]>;
  mount: (image: string, name: string) => Promise<{ mnt: string; result: FuseMountResult }>;
  umount: (mnt: string) => Promise<FuseUnmountResult>;
  assertReleased: () => Promise<void>;
}

/**
 * Runs `fn` in a fresh temp directory with its own runtime directory. Afterwards (also on failure) every
 * FUSE mount under the directory is undone the way a user would (erofs umount, then umount -l), a daemon
 * this test started is killed by its pid if it is still there, and the directory is removed only when
 * nothing is mounted under it.
 */
async function withSandbox(fn: (sb: Sandbox) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), TEMP_DIR_PREFIX));
  const runtimeDir = join(dir, 'runtime');
  await mkdir(runtimeDir);
  const mounted: string[] = [];
  const startedDaemons = new Set<number>();

  const fuseMounts = async (): Promise<string[]> =>
    (await readMountinfo()).filter((e) => e.fstype.startsWith('fuse') && e.target.startsWith(`${dir}/`)).map((e) => e.target);
  const daemonPids = async (): Promise<number[]> => {
    // Only looks (pgrep), never signals by name: the daemon of this test's own runtime directory.
    const r = await run('pgrep', ['-f', `daemonMain.js ${runtimeDir}$`]);
    return r.stdout.split('\n').filter((l) => l.trim() !== '').map(Number);
  };
  const sb: Sandbox = {
    dir,
    runtimeDir,
    daemonPids,
    fuseMounts,
    mount: async (image, name) => {
      const mnt = join(dir, name);
      await mkdir(mnt, { recursive: true });
      const result = await cliJson<FuseMountResult>(['mount', '--fuse', image, mnt, '--runtime-dir', runtimeDir]);
      mounted.push(mnt);
      startedDaemons.add(result.daemonPid);
      return { mnt, result };
    },
    umount: async (mnt) => {
      const result = await cliJson<FuseUnmountResult>(['umount', mnt, '--runtime-dir', runtimeDir]);
      mounted.splice(mounted.indexOf(mnt), 1);
      return result;
    },
    assertReleased: async () => {
      assert.deepEqual(await fuseMounts(), [], 'no FUSE mount (root or bind) left');
      for (let i = 0; i < 50 && (await daemonPids()).length > 0; i++) await sleep(100);
      assert.deepEqual(await daemonPids(), [], 'the daemon has exited');
    },
  };
  try {
    await fn(sb);
  } finally {
    for (const mnt of [...mounted].reverse()) await cli(['umount', mnt, '--runtime-dir', runtimeDir]);
    for (const target of (await fuseMounts()).reverse()) await run('umount', ['-l', target]);
    for (let i = 0; i < 30 && (await daemonPids()).length > 0; i++) await sleep(100);
    for (const pid of await daemonPids()) {
      if (startedDaemons.has(pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    const left = (await readMountinfo()).filter((e) => e.target.startsWith(`${dir}/`));
    if (left.length > 0) {
      process.stderr.write(`robustness: still mounted under ${dir}: ${left.map((e) => e.target).join(', ')}; not removing it\n`);
    } else if (process.env['KEEP_TEST_TMP'] !== '1') {
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    }
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function dropCaches(): Promise<void> {
  await writeFile('/proc/sys/vm/drop_caches', '3\n');
}

test('a corrupt chunk index: EIO for that file, the others read back byte-identical, the daemon keeps serving', async () => {
  await withSandbox(async (sb) => {
    const src = join(sb.dir, 'src');
    await mkdir(src);
    const files: Record<string, Buffer> = {
      'a.bin': randomBytes(300_000),
      'b.bin': randomBytes(310_000),
      'notes.txt': Buffer.from('a small text file\nwith two lines\n'),
    };
    for (const [name, data] of Object.entries(files)) await writeFile(join(src, name), data);
    const out = join(sb.dir, 'out');
    const built = await cliJson<BuildJson>(['build', src, '-o', out, '--chunk-size', '64K']);

    // Corrupt b.bin's first chunk index: blkaddr (bytes 4..8 of the 8-byte index) far beyond the blob.
    const image = await ErofsImage.open(built.metadataImage);
    let arrayOffsetBytes: number;
    try {
      const st = await image.stat(await image.lookup('b.bin'));
      assert.equal(st.dataLayout, 'chunk-based');
      assert.ok(st.chunk !== null && st.chunk.hasIndexes && st.chunk.entrySizeBytes === 8, 'b.bin has 8-byte chunk indexes');
      arrayOffsetBytes = st.chunk.arrayOffsetBytes;
    } finally {
      await image.close();
    }
    const bytes = await readFile(built.metadataImage);
    bytes.writeUInt32LE(0x7fffffff, arrayOffsetBytes + 4);
    // The superblock checksum covers block 0; fixing it always is harmless when the index lies beyond it.
    fixSuperblockChecksum(bytes);
    // Next to the original, so the blob is found in out/blobs/sha256 as for the real image.
    const corrupt = join(out, 'corrupt.erofs');
    await writeFile(corrupt, bytes);

    const { mnt } = await sb.mount(corrupt, 'mnt-corrupt');
    await assert.rejects(readFile(join(mnt, 'b.bin')), { code: 'EIO' }, 'the corrupted file fails with EIO');
    assert.deepEqual(await readFile(join(mnt, 'a.bin')), files['a.bin'], 'a.bin byte-identical');
    assert.deepEqual(await readFile(join(mnt, 'notes.txt')), files['notes.txt'], 'notes.txt byte-identical');
    await assert.rejects(readFile(join(mnt, 'b.bin')), { code: 'EIO' }, 'still EIO on a second try');
    await dropCaches();
    assert.deepEqual(await readFile(join(mnt, 'a.bin')), files['a.bin'], 'a good file still reads (cold) after the failures');
    assert.equal((await sb.daemonPids()).length, 1, 'one daemon, still running');

    const u = await sb.umount(mnt);
    assert.equal(u.daemonStopped, true, 'the last umount stops the daemon');
    await sb.assertReleased();
  });
});

test('readers interrupted (SIGINT/SIGKILL) mid cold read leave the daemon serving correct bytes', async (t) => {
  await withSandbox(async (sb) => {
    const src = join(sb.dir, 'src');
    await mkdir(src);
    const big = join(src, 'big');
    await runChecked('bash', ['-c', `head -c ${200 * 1024 * 1024} /dev/urandom > '${big}'`]);
    const want = await sha256File(big);
    const built = await cliJson<BuildJson>(['build', src, '-o', join(sb.dir, 'out'), '--chunk-size', '64K']);
    const { mnt, result } = await sb.mount(built.metadataImage, 'mnt-big');
    const file = join(mnt, 'big');

    let interruptedMidRead = 0;
    for (let round = 0; round < 4; round++) {
      await dropCaches();
      const children = Array.from({ length: 6 }, (_, i) => {
        const child = i % 2 === 0
          ? spawn('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M'], { stdio: 'ignore' })
          : spawn('cat', [file], { stdio: ['ignore', 'ignore', 'ignore'] });
        const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
        return { child, exited, signal: (i + round) % 2 === 0 ? 'SIGINT' : 'SIGKILL' } as const;
      });
      await sleep(100);
      for (const c of children) c.child.kill(c.signal);
      const outcomes = await Promise.race([
        Promise.all(children.map((c) => c.exited)),
        sleep(15_000, undefined, { ref: false }),
      ]);
      // A reader still there after the timeout must not outlive the test (nor keep the mount busy).
      for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
      assert.ok(outcomes !== undefined, 'every interrupted reader exited within 15 s (no reader stuck in the FUSE mount)');
      interruptedMidRead += outcomes.filter((o) => o.signal !== null).length;
      assert.deepEqual(await sb.daemonPids(), [result.daemonPid], `round ${round}: the same daemon still runs`);
    }
    t.diagnostic(`${interruptedMidRead} of 24 readers died of their signal mid-read`);
    assert.ok(interruptedMidRead > 0, 'at least one reader was killed while reading');

    await dropCaches();
    assert.equal(await sha256File(file), want, 'a full cold read after the interrupts is correct');
    assert.deepEqual(await sb.daemonPids(), [result.daemonPid]);

    const u = await sb.umount(mnt);
    assert.equal(u.daemonStopped, true);
    await sb.assertReleased();
  });
});
