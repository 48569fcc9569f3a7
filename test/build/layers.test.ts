import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LayerApplier, LayerApplyError, type LayerEntry } from '../../src/build/layers.js';
import { makeDir, nameBytes, type DirNode, type TreeNode } from '../../src/build/tree.js';

function entry(path: string, type: LayerEntry['type'] = 'file', extra: Partial<LayerEntry> = {}): LayerEntry {
  return { path, type, mode: type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, mtimeSec: 1n, mtimeNsec: 0, xattrs: new Map(), sizeBytes: 0, ...extra };
}

const store = async (e: LayerEntry) => ({ data: { kind: 'inline' as const, bytes: Buffer.from(`content of ${e.path}`) }, xattrs: [] as [string, Buffer][] });

async function applyLayers(layers: LayerEntry[][]): Promise<DirNode> {
  const applier = new LayerApplier(makeDir());
  for (const [i, layer] of layers.entries()) {
    applier.beginLayer(`layer${i}`);
    for (const e of layer) await applier.apply(e, store);
  }
  return applier.root;
}

/** "path kind" lines of the merged tree, sorted: what a container would see. */
function listing(root: DirNode): string[] {
  const out: string[] = [];
  const walk = (dir: DirNode, prefix: string) => {
    for (const [key, child] of dir.children) {
      const path = prefix + nameBytes(key).toString();
      out.push(`${path} ${child.kind}`);
      if (child.kind === 'dir') walk(child, `${path}/`);
    }
  };
  walk(root, '');
  return out.sort();
}

test('an entry whose file was stored at once is placed without a promise; one whose storing waits, when it settles', async () => {
  const applier = new LayerApplier(makeDir());
  applier.beginLayer('layer0');
  const storedNow = (e: LayerEntry) => ({ data: { kind: 'inline' as const, bytes: Buffer.from(e.path) }, xattrs: [] as [string, Buffer][] });
  assert.equal(applier.apply(entry('d', 'dir'), storedNow), undefined);
  assert.equal(applier.apply(entry('d/now'), storedNow), undefined);
  assert.deepEqual([...(applier.root.children.get('d') as DirNode).children.keys()], ['now']);
  const waiting = applier.apply(entry('d/later'), store);
  assert.ok(waiting instanceof Promise);
  assert.deepEqual([...(applier.root.children.get('d') as DirNode).children.keys()], ['now']);
  await waiting;
  const later = (applier.root.children.get('d') as DirNode).children.get('later');
  assert.equal(later?.kind, 'reg');
  assert.deepEqual(later.kind === 'reg' && later.data.kind === 'inline' ? later.data.bytes.toString() : undefined, 'content of d/later');
});

test('whiteouts delete from lower layers; opaque directories hide lower contents', async () => {
  const root = await applyLayers([
    [entry('etc', 'dir'), entry('etc/a'), entry('etc/b'), entry('opt', 'dir'), entry('opt/old'), entry('opt/sub', 'dir'), entry('opt/sub/x')],
    [entry('etc/.wh.a'), entry('opt/.wh..wh..opq'), entry('opt/new')],
  ]);
  assert.deepEqual(listing(root), ['etc dir', 'etc/b reg', 'opt dir', 'opt/new reg']);
});

test('opaque marker after entries of its own layer keeps them', async () => {
  const root = await applyLayers([[entry('d', 'dir'), entry('d/lower')], [entry('d/upper'), entry('d/.wh..wh..opq')]]);
  assert.deepEqual(listing(root), ['d dir', 'd/upper reg']);
});

test('a file replaces a directory (subtree gone) and a directory replaces a file', async () => {
  const root = await applyLayers([
    [entry('x', 'dir'), entry('x/child'), entry('y')],
    [entry('x'), entry('y', 'dir'), entry('y/inside')],
  ]);
  assert.deepEqual(listing(root), ['x reg', 'y dir', 'y/inside reg']);
});

test('a directory entry over a directory keeps its children and takes the new attributes', async () => {
  const root = await applyLayers([[entry('d', 'dir'), entry('d/keep')], [entry('d', 'dir', { mode: 0o700, uid: 5 })]]);
  const d = root.children.get('d') as DirNode;
  assert.equal(d.permissions, 0o700);
  assert.equal(d.uid, 5);
  assert.deepEqual(listing(root), ['d dir', 'd/keep reg']);
});

test('hardlinks may point into lower layers and share the inode', async () => {
  const root = await applyLayers([[entry('bin', 'dir'), entry('bin/tool')], [entry('usr', 'dir'), entry('usr/tool', 'hardlink', { linkTarget: 'bin/tool' })]]);
  const a = (root.children.get('bin') as DirNode).children.get('tool') as TreeNode;
  const b = (root.children.get('usr') as DirNode).children.get('tool') as TreeNode;
  assert.equal(a, b);
});

test('bad entries: missing hardlink target, write through a symlinked parent', async () => {
  await assert.rejects(applyLayers([[entry('a', 'hardlink', { linkTarget: 'missing' })]]), (e: unknown) => e instanceof LayerApplyError && /layer0: entry "a": hardlink target "missing" does not exist/.test(e.message));
  await assert.rejects(
    applyLayers([[entry('link', 'symlink', { linkTarget: '/etc' })], [entry('link/passwd')]]),
    (e: unknown) => e instanceof LayerApplyError && /parent "link" is a symlink/.test(e.message),
  );
});
