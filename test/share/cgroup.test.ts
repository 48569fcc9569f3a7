import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MemoryCgroup, findMemoryCgroup } from '../../src/share/cgroup.js';
import { withTempDir } from '../helpers/tmp.js';

test('memory cgroup: this host has one (v1 memory controller here; v2 elsewhere)', async () => {
  const hierarchy = await findMemoryCgroup();
  assert.ok(hierarchy.version === 1 || hierarchy.version === 2);
  assert.ok(hierarchy.root.startsWith('/sys/fs/cgroup'), hierarchy.root);
});

test('memory.stat: v1 reads "cache", v2 reads "file"; v2 enables the memory controller for children first', async () => {
  await withTempDir(async (dir) => {
    // Stand-in hierarchies (directories): only the file formats matter here.
    const v1 = await MemoryCgroup.create({ version: 1, root: dir }, 'one');
    await writeFile(join(v1.path, 'memory.stat'), 'cache 4096000\nrss 123\nmapped_file 8192\nfile 1\n');
    assert.deepEqual(await v1.memoryStat(), { pageCacheBytes: 4096000 });
    const v2root = join(dir, 'v2');
    await mkdir(v2root);
    await writeFile(join(v2root, 'cgroup.subtree_control'), '');
    const v2 = await MemoryCgroup.create({ version: 2, root: v2root }, 'two');
    assert.equal(await readFile(join(v2root, 'cgroup.subtree_control'), 'utf8'), '+memory');
    await writeFile(join(v2.path, 'memory.stat'), 'anon 100\nfile 777216\nfile_mapped 4096\n');
    assert.deepEqual(await v2.memoryStat(), { pageCacheBytes: 777216 });
  });
});
