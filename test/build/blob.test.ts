import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, readlink, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BlobWriter } from '../../src/build/blob.js';
import { run, runChecked } from '../helpers/exec.js';
import { leakCheck, assertNoLeaks } from '../helpers/kernel.js';
import { withTempDir } from '../helpers/tmp.js';

// BlobWriter writes through the direct-write addon: O_DIRECT where the file system takes it, the
// page cache where it refuses (ramfs). Both must leave exactly the bytes written, in either case
// including chunks taken back and overwritten, and report a full disk as the error it is.

const BLOCK = 4096;
const O_DIRECT = 0o40000;

/** The open flags of this process's descriptor for `path` (from /proc/self/fdinfo). */
async function openFlags(path: string): Promise<number> {
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target !== path) continue;
    const info = await readFile(`/proc/self/fdinfo/${fd}`, 'utf8');
    return parseInt(/^flags:\s+([0-7]+)$/m.exec(info)![1]!, 8);
  }
  throw new Error(`no descriptor open for ${path}`);
}

/**
 * Writes chunks of many sizes the way the chunker does (pieces in order at the committed end, data
 * then padding), taking back every fourth one (written and hashed tentatively, then overwritten, which
 * makes the writer read the file back for its digest). Returns what the blob must hold.
 */
function writeChunks(writer: BlobWriter, count: number): Buffer {
  const committed: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const size = [1, 4095, 4096, 4097, 70000, 1 << 20, (1 << 20) + 17, 3 * (1 << 20) + 5][i % 8]! + (i % 3);
    const data = randomBytes(size);
    const start = writer.nextBlkaddr * BLOCK;
    // In uneven pieces, as a stream delivers them.
    for (let at = 0; at < size; ) {
      const piece = data.subarray(at, at + 1 + ((at * 7919 + i) % 300000));
      writer.writeAt(piece, start + at);
      writer.updateDigest(piece);
      at += piece.length;
    }
    if (i % 4 === 3) {
      writer.invalidateDigest();
      continue;
    }
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    writer.commitChunk(size);
    committed.push(data, Buffer.alloc(padded - size));
  }
  return Buffer.concat(committed);
}

async function writeAndCheck(dir: string, expectDirect: boolean): Promise<void> {
  const blobs = join(dir, 'blobs', 'sha256');
  const writer = await BlobWriter.create(BlobWriter.temporaryPath(blobs), BLOCK);
  const direct = ((await openFlags(writer.tempPath)) & O_DIRECT) !== 0;
  assert.equal(direct, expectDirect, `O_DIRECT on ${dir}`);
  const expected = writeChunks(writer, 24);
  const blob = await writer.finish();
  await blob.persisted;
  const stored = await readFile(blob.path);
  assert.equal(stored.length, expected.length);
  assert.ok(stored.equals(expected), 'blob bytes');
  assert.equal(blob.digest, createHash('sha256').update(expected).digest('hex'));
  assert.equal(blob.path, join(blobs, blob.digest));
  assert.deepEqual(await readdir(blobs), [blob.digest], 'no temporary file left');
}

test('on ext4 the blob is written with O_DIRECT and holds exactly the committed chunks, taken-back ones overwritten', async () => {
  await withTempDir(async (dir) => {
    assert.equal((await runChecked('stat', ['-f', '-c', '%T', dir])).stdout.trim(), 'ext2/ext3', 'the test directory is on ext4');
    await writeAndCheck(dir, true);
  });
});

/** Runs `fn` in a directory on a file system mounted with `mount ARGS`, unmounted afterwards whatever happens. */
async function withMount(dir: string, args: string[], fn: (mountpoint: string) => Promise<void>): Promise<void> {
  const mountpoint = join(dir, 'mnt');
  await mkdir(mountpoint);
  const before = await leakCheck();
  await runChecked('mount', [...args, mountpoint]);
  try {
    await fn(mountpoint);
  } finally {
    const umount = await run('umount', [mountpoint]);
    await rmdir(mountpoint);
    assert.equal(umount.code, 0, umount.output);
    assertNoLeaks(before, await leakCheck(), [dir]);
  }
}

test('on ramfs, which refuses O_DIRECT, the same writes go through the page cache with the same result', async () => {
  await withTempDir(async (dir) => {
    await withMount(dir, ['-t', 'ramfs', 'ramfs'], (mountpoint) => writeAndCheck(mountpoint, false));
  });
});

test('a full disk fails the blob with ENOSPC (from the writing thread), and abort leaves nothing behind', async () => {
  await withTempDir(async (dir) => {
    const image = join(dir, 'small.ext4');
    await writeFile(image, Buffer.alloc(0));
    await runChecked('truncate', ['-s', '8M', image]);
    await runChecked('mkfs.ext4', ['-q', '-F', image]);
    await withMount(dir, ['-o', 'loop', image], async (mountpoint) => {
      const blobs = join(mountpoint, 'blobs', 'sha256');
      const writer = await BlobWriter.create(BlobWriter.temporaryPath(blobs), BLOCK);
      assert.ok(((await openFlags(writer.tempPath)) & O_DIRECT) !== 0);
      let failure: unknown;
      try {
        writeChunks(writer, 32); // about 18 MB into 8
        await writer.finish();
      } catch (error) {
        failure = error;
      }
      assert.ok(failure instanceof Error, 'the write failed');
      assert.equal((failure as NodeJS.ErrnoException).code, 'ENOSPC', String(failure));
      assert.match(failure.message, /No space left on device/);
      await writer.abort();
      assert.deepEqual(await readdir(blobs), []);
    });
  });
});
