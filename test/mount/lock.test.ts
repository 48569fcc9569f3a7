import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StateLockedError } from '../../src/mount/errors.js';
import { acquireLock } from '../../src/mount/lock.js';
import { withTempDir } from '../helpers/tmp.js';

async function startTime(pid: number): Promise<string> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8');
  return text.slice(text.lastIndexOf(')') + 2).split(' ')[19]!;
}

test('lock: O_EXCL file with our pid and start time, removed on release', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'lock');
    const release = await acquireLock(path);
    assert.equal(await readFile(path, 'utf8'), `${process.pid} ${await startTime(process.pid)}\n`);
    await release();
    assert.equal(await access(path).then(() => true, () => false), false);
  });
});

test('lock: a dead owner\'s lock is taken over, also when its pid was reused by another process', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'lock');
    // A pid that exited.
    const child = spawn('true');
    await new Promise((resolve) => child.on('exit', resolve));
    await writeFile(path, `${child.pid} 12345\n`);
    await (await acquireLock(path, { timeoutMs: 2000 }))();
    // Our own pid with another start time: the pid was reused, the owner is gone.
    await writeFile(path, `${process.pid} 1\n`);
    await (await acquireLock(path, { timeoutMs: 2000 }))();
  });
});

test('lock: a live owner is waited for, then StateLockedError names it', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'lock');
    const sleeper = spawn('sleep', ['30']);
    try {
      await new Promise((resolve) => setTimeout(resolve, 50));
      await writeFile(path, `${sleeper.pid} ${await startTime(sleeper.pid!)}\n`);
      await assert.rejects(acquireLock(path, { timeoutMs: 300 }), (error: unknown) => {
        assert.ok(error instanceof StateLockedError);
        assert.equal(error.ownerPid, sleeper.pid);
        assert.match(error.message, /held by running process \d+/);
        return true;
      });
      // When it goes, the lock is ours.
      sleeper.kill('SIGKILL');
      await new Promise((resolve) => sleeper.on('exit', resolve));
      await (await acquireLock(path, { timeoutMs: 2000 }))();
    } finally {
      sleeper.kill('SIGKILL');
    }
  });
});

test('lock: concurrent takers get it one at a time', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'lock');
    let inside = 0;
    let maxInside = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        const release = await acquireLock(path);
        inside++;
        maxInside = Math.max(maxInside, inside);
        await new Promise((resolve) => setTimeout(resolve, 5));
        inside--;
        await release();
      }),
    );
    assert.equal(maxInside, 1);
  });
});
