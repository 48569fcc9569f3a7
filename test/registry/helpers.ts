import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { withKernelMount } from '../helpers/kernel.js';
import { snapshotTree, assertTreesEqual, type TreeSnapshot } from '../helpers/tree.js';
import { SOURCE_VS_IMAGE } from '../build/readerCheck.js';
import { makeTar } from '../oci/helpers.js';
import { TYPEFLAG } from '../../src/oci/tarHeader.js';

export const CLI = ['bin/run.js'];

/** Every file below `dir` (recursively), relative; directories alone do not count as output. */
export async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => !e.isDirectory()).map((e) => join(e.parentPath ?? e.path, e.name).slice(dir.length + 1));
}

export function assertOneLineError(result: { code: number; stderr: string }, pattern: RegExp): void {
  assert.notEqual(result.code, 0, 'exit status must be non-zero');
  const lines = result.stderr.trim().split('\n').filter((l) => l.trim() !== '');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${result.stderr}`);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(result.stderr, /internal error|\bat .*\.js:\d+/, 'a known failure, no stack trace');
}

/** umoci stores whole seconds, rounding to the nearest: expected trees are compared at that precision. */
function wholeSeconds(snapshot: TreeSnapshot): TreeSnapshot {
  const round = (mtime: string) => {
    const [sec, nsec] = mtime.split('.') as [string, string];
    return `${BigInt(sec) + (Number(nsec) >= 500_000_000 ? 1n : 0n)}.000000000`;
  };
  return new Map([...snapshot].map(([path, entry]) => [path, { ...entry, mtime: round(entry.mtime) }]));
}

/** The kernel mount of the image equals the tree umoci unpacked (as test/build/realImages checks). */
export async function assertMountMatchesTree(metadataImage: string, blobs: readonly string[], expectedTree: string): Promise<TreeSnapshot> {
  const mounted = await withKernelMount(metadataImage, blobs, (mountpoint) => snapshotTree(mountpoint));
  const expected = await snapshotTree(expectedTree);
  assertTreesEqual(wholeSeconds(expected), wholeSeconds(mounted), {
    ignore: (path, field) => (path === '.' && ['mode', 'mtime', 'uid', 'gid'].includes(field)) || (path === '.made' && field === 'presence') || SOURCE_VS_IMAGE.ignore!(path, field),
  });
  return mounted;
}

/** A small layer: a directory and a file whose content says which image it is. */
export function markerTar(marker: string, extraBytes = 0): Buffer {
  return makeTar([
    { name: './', typeflag: TYPEFLAG.dir, mode: 0o755 },
    { name: './etc/', typeflag: TYPEFLAG.dir, mode: 0o755 },
    { name: './etc/marker', data: `${marker}\n` },
    ...(extraBytes > 0 ? [{ name: './data.bin', data: Buffer.alloc(extraBytes, marker.charCodeAt(0)) }] : []),
  ]);
}
