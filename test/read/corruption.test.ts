import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { SUPERBLOCK_OFFSET_BYTES } from '../../src/format/index.js';
import { makeSmallTree } from '../helpers/fixtures.js';
import { TEMP_DIR_PREFIX } from '../helpers/tmp.js';
import { mkfsErofs } from './mkfsImages.js';
import { openSample, type CaseResult, type Edit, type HostileCase, type HostileSample, type Outcome } from './hostileWorker.js';

/**
 * Hostile images: truncations, byte flips at every structure and a seeded fuzz loop over images made
 * by mkfs.erofs 1.5 and the erofs-utils 1.9.3 golden images. Opening, walking and reading everything
 * must either work or fail with one of our typed errors naming the image - never another error, never
 * a read outside the file (BufferSource throws a RangeError for that), never a hang. The cases run in
 * a worker thread (see hostileWorker.ts), which the hang guard terminates.
 */

const FIXTURES = process.env['EROFS_FIXTURES'] ?? join(import.meta.dirname, '..', '..', '..', '..', 'shared', 'fixtures', 'fingerprint');
/** A guard against hangs, not a performance assertion. */
const HANG_GUARD_MS = 5000;
/** Structures flipped byte by byte per group (see Structure.group). */
const FLIPPED_PER_GROUP = 2;

/** Where a sample's structures are, found by reading the intact image. */
interface Structure {
  label: string;
  /** Structures of one group (kind of structure, file type, layout) are alike: flipping two of them says as much as flipping all. */
  group: string;
  startBytes: number;
  lengthBytes: number;
}

let dir = '';
const samples: HostileSample[] = [];
const structures = new Map<string, Structure[]>();

/** Sends cases to the worker one at a time; a case that outlives the hang guard terminates it. */
class CaseRunner {
  private worker: Worker | undefined;

  private start(): Worker {
    const worker = new Worker(new URL('./hostileWorker.js', import.meta.url));
    worker.postMessage({ samples });
    worker.unref();
    this.worker = worker;
    return worker;
  }

  async run(c: HostileCase): Promise<Outcome> {
    const worker = this.worker ?? this.start();
    let timer: NodeJS.Timeout | undefined;
    let onMessage: ((result: CaseResult) => void) | undefined;
    let onError: ((err: Error) => void) | undefined;
    try {
      const result = await new Promise<CaseResult>((resolve, reject) => {
        onMessage = resolve;
        onError = reject;
        worker.once('message', onMessage);
        worker.once('error', onError);
        timer = setTimeout(() => {
          this.worker = undefined;
          void worker.terminate();
          reject(new Error(`${c.label}: still running after ${HANG_GUARD_MS} ms (hang?)`));
        }, HANG_GUARD_MS);
        worker.postMessage(c);
      });
      if ('bug' in result) assert.fail(`${c.label}: ${result.bug}`);
      return result.outcome;
    } finally {
      clearTimeout(timer);
      if (onMessage) worker.off('message', onMessage);
      if (onError) worker.off('error', onError);
    }
  }

  async close(): Promise<void> {
    await this.worker?.terminate();
    this.worker = undefined;
  }
}

const runner = new CaseRunner();

/** The byte ranges of every structure of an intact sample. */
async function findStructures(sample: HostileSample): Promise<Structure[]> {
  const image = await openSample(sample.name, sample.primary, sample.blobs);
  try {
    const sb = image.superblock;
    const bs = image.blockSizeBytes;
    const out: Structure[] = [{ label: 'superblock', group: 'superblock', startBytes: SUPERBLOCK_OFFSET_BYTES, lengthBytes: 128 }];
    if (image.devices.length > 0) out.push({ label: 'device slots', group: 'device slots', startBytes: sb.devtSlotoff * 128, lengthBytes: image.devices.length * 128 });
    if (image.longXattrPrefixes.length > 0) {
      const length = image.longXattrPrefixes.reduce((sum, p) => sum + Math.ceil((3 + p.infix.length) / 4) * 4, 0);
      out.push({ label: 'long xattr prefixes', group: 'long xattr prefixes', startBytes: sb.xattrPrefixStart * 4, lengthBytes: length });
    }
    const seen = new Set<number>();
    for await (const entry of image.walk()) {
      if (seen.has(entry.nid)) continue;
      seen.add(entry.nid);
      const s = entry.stat;
      const tag = `${entry.path} (nid ${entry.nid})`;
      const sort = `${s.kind} ${s.dataLayout} ${s.inodeForm}`;
      out.push({ label: `inode ${tag}`, group: `inode ${sort}`, startBytes: s.inodeOffsetBytes, lengthBytes: s.inodeSizeBytes });
      const layout = await image.xattrLayout(entry.nid);
      if (layout !== null) {
        out.push({ label: `xattr ibody ${tag}`, group: `xattr ibody ${layout.sharedIds.length > 0 ? 'shared' : 'inline'}`, startBytes: s.inodeOffsetBytes + s.inodeSizeBytes, lengthBytes: layout.ibodySizeBytes });
        for (const id of layout.sharedIds) out.push({ label: `shared xattr ${id}`, group: `shared xattr ${id}`, startBytes: sb.xattrBlkaddr * bs + id * 4, lengthBytes: 16 });
      }
      const after = s.inodeOffsetBytes + s.inodeSizeBytes + s.xattrIbodySizeBytes;
      if (s.inlineTailBytes > 0) out.push({ label: `inline data ${tag}`, group: `inline data ${s.kind}`, startBytes: after, lengthBytes: s.inlineTailBytes });
      if (s.chunk !== null) {
        out.push({ label: `chunk indexes ${tag}`, group: `chunk indexes ${s.chunk.chunkCount > 1 ? 'several' : 'one'}`, startBytes: s.chunk.arrayOffsetBytes, lengthBytes: s.chunk.chunkCount * s.chunk.entrySizeBytes });
      }
      if (s.kind === 'dir' && s.startBlkaddr !== null) {
        out.push({ label: `directory blocks ${tag}`, group: 'directory blocks', startBytes: s.startBlkaddr * bs, lengthBytes: s.sizeBytes - s.inlineTailBytes });
      }
    }
    return out.filter((s) => s.lengthBytes > 0 && s.startBytes + s.lengthBytes <= sample.primary.length);
  } finally {
    await image.close();
  }
}

/** Groups of bulk bytes (names, file data) rather than fields: a sparser sample and one mask do. */
const isBulk = (structure: Structure): boolean => structure.group.startsWith('inline data') || structure.group === 'directory blocks';

/**
 * (offset, xor mask) pairs for one structure: every byte of its first 64 (three masks: all bits, the
 * low bit, the high bit) unless it is bulk, then the end and a stride through the rest with all bits flipped.
 */
function flipsIn(structure: Structure): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let i = 0; i < structure.lengthBytes; i++) {
    const at = structure.startBytes + i;
    if (i < 64) {
      out.push([at, 0xff]);
      if (!isBulk(structure)) out.push([at, 0x01], [at, 0x80]);
    } else if (i >= structure.lengthBytes - 16 || i % 13 === 0) {
      out.push([at, 0xff]);
    }
  }
  return out;
}

/** The first FLIPPED_PER_GROUP structures of each group. */
function representatives(list: readonly Structure[]): Structure[] {
  const perGroup = new Map<string, number>();
  return list.filter((structure) => {
    const taken = perGroup.get(structure.group) ?? 0;
    perGroup.set(structure.group, taken + 1);
    return taken < FLIPPED_PER_GROUP;
  });
}

/** mulberry32: small, seeded, good enough to spread mutations. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function tally(outcomes: Outcome[]): string {
  const counts: Record<string, number> = {};
  for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1;
  return Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(', ');
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), TEMP_DIR_PREFIX));
  const source = join(dir, 'src');
  await makeSmallTree(source);
  // What the small tree lacks: shared xattrs (same name+value on more than 2 files), a long value,
  // a directory spanning blocks, a long symlink, security.capability.
  const { writeFile, mkdir, symlink } = await import('node:fs/promises');
  const { runChecked } = await import('../helpers/exec.js');
  await mkdir(join(source, 'many'));
  // 50 entries of 12 + 80 bytes (dirent + name) fill more than one 4 KiB block.
  const manyName = (i: number): string => `entry-${String(i).padStart(3, '0')}-${'n'.repeat(70)}`;
  for (let i = 0; i < 50; i++) await writeFile(join(source, 'many', manyName(i)), i % 10 === 0 ? `file ${i}\n` : '');
  for (let i = 0; i < 4; i++) {
    const file = join(source, 'many', manyName(i * 10));
    await runChecked('setfattr', ['-n', 'user.shared', '-v', 'one value for all', file]);
  }
  await runChecked('setfattr', ['-n', 'user.long', '-v', `0x${'ab'.repeat(1500)}`, join(source, 'hello.txt')]);
  await runChecked('setfattr', ['-n', 'security.capability', '-v', '0x0100000200040000000000000000000000000000', join(source, 'many', manyName(10))]);
  await symlink('t'.repeat(300), join(source, 'long-link'));
  await writeFile(join(source, 'big'), Buffer.alloc(3 * 4096 + 100, 7));

  for (const variant of ['plain', 'blob-4k', 'block-map']) {
    const made = await mkfsErofs(dir, variant, source);
    samples.push({ name: `${variant}.erofs`, primary: await readFile(made.image), blobs: await Promise.all(made.blobs.map((b) => readFile(b))) });
  }
  samples.push({ name: 'fp.erofs', primary: await readFile(join(FIXTURES, 'fp.erofs')), blobs: [] });
  samples.push({ name: 'fpc.erofs', primary: await readFile(join(FIXTURES, 'fpc.erofs')), blobs: [await readFile(join(FIXTURES, 'fp-blob.img'))] });
  // Meta and blob concatenated, opened without devices: flat addressing through the slot's uniaddr.
  samples.push({ name: 'fpc-flat.erofs', primary: Buffer.concat([samples[samples.length - 1]!.primary, samples[samples.length - 1]!.blobs[0]!]), blobs: [] });
  for (const sample of samples) structures.set(sample.name, await findStructures(sample));
});

after(async () => {
  await runner.close();
  if (dir !== '') await rm(dir, { recursive: true, force: true, maxRetries: 3 });
});

describe('hostile images', () => {
  test('intact samples read completely', async () => {
    for (const [index, sample] of samples.entries()) {
      assert.equal(await runner.run({ sample: index, edits: [], fixChecksum: false, label: `${sample.name} intact` }), 'ok');
    }
  });

  test('truncated metadata images and blobs', async () => {
    const outcomes: Outcome[] = [];
    for (const [index, sample] of samples.entries()) {
      const lengths = new Set<number>([0, 1, 1023, 1024, 1100, 1151, 1152, 1153, sample.primary.length - 1]);
      for (let n = 1024; n < Math.min(8192, sample.primary.length); n += 127) lengths.add(n);
      for (let n = 8192; n < sample.primary.length; n += 1021) lengths.add(n);
      for (const s of representatives(structures.get(sample.name) ?? [])) for (const n of [s.startBytes, s.startBytes + 1, s.startBytes + s.lengthBytes - 1]) lengths.add(n);
      for (const n of lengths) {
        if (n < 0 || n >= sample.primary.length) continue;
        outcomes.push(await runner.run({ sample: index, edits: [{ kind: 'truncate', target: 0, lengthBytes: n }], fixChecksum: false, label: `${sample.name} truncated to ${n}` }));
      }
      for (const [i, blob] of sample.blobs.entries()) {
        for (let n = 0; n < blob.length; n += 2039) {
          outcomes.push(await runner.run({ sample: index, edits: [{ kind: 'truncate', target: i + 1, lengthBytes: n }], fixChecksum: false, label: `${sample.name} blob ${i + 1} truncated to ${n}` }));
        }
      }
    }
    process.stderr.write(`# truncations: ${outcomes.length} cases: ${tally(outcomes)}\n`);
    assert.ok(outcomes.includes('corrupt'));
  });

  test('byte flips at every structure (checksum recomputed, so the flip reaches the parser)', async () => {
    const byKind = new Map<string, Outcome[]>();
    const started = Date.now();
    for (const [index, sample] of samples.entries()) {
      for (const structure of representatives(structures.get(sample.name) ?? [])) {
        const kind = structure.group.split(' ').slice(0, 2).join(' ');
        const list = byKind.get(kind) ?? [];
        byKind.set(kind, list);
        for (const [at, mask] of flipsIn(structure)) {
          const label = `${sample.name}: byte ${at} (${structure.label}) ^ 0x${mask.toString(16)}`;
          list.push(await runner.run({ sample: index, edits: [{ kind: 'xor', target: 0, at, value: mask }], fixChecksum: true, label }));
        }
      }
    }
    const all = [...byKind.values()].flat();
    process.stderr.write(`# flips: ${all.length} cases in ${Date.now() - started} ms\n`);
    for (const [kind, outcomes] of byKind) process.stderr.write(`# flips in ${kind}: ${outcomes.length} cases: ${tally(outcomes)}\n`);
    assert.ok(all.includes('corrupt'));
  });

  test('a flip without the checksum fix is refused by the checksum', async () => {
    for (const [index, sample] of samples.entries()) {
      const edits: Edit[] = [{ kind: 'xor', target: 0, at: SUPERBLOCK_OFFSET_BYTES + 0x7f, value: 0x10 }];
      assert.equal(await runner.run({ sample: index, edits, fixChecksum: false, label: `${sample.name} unchecked flip` }), 'corrupt');
    }
  });

  test('seeded fuzz: a few thousand random mutations', async () => {
    const random = prng(0x5eed);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const outcomes: Outcome[] = [];
    const started = Date.now();
    for (let iteration = 0; iteration < 5000; iteration++) {
      const index = iteration % samples.length;
      const sample = samples[index]!;
      const sizes = [sample.primary.length, ...sample.blobs.map((b) => b.length)];
      const structureOffsets = (structures.get(sample.name) ?? []).flatMap((s) => [s.startBytes, s.startBytes + s.lengthBytes - 1, s.startBytes + Math.floor(random() * s.lengthBytes)]);
      const edits: Edit[] = [];
      const mutations = 1 + Math.floor(random() * 4);
      for (let m = 0; m < mutations; m++) {
        const target = random() < 0.85 ? 0 : Math.floor(random() * sizes.length);
        const size = sizes[target]!;
        if (size < 8) continue;
        // Mostly inside known structures of the metadata image, sometimes anywhere.
        const base = target === 0 && random() < 0.8 ? pick(structureOffsets) : Math.floor(random() * size);
        const at = Math.min(Math.max(0, base), size - 8);
        const r = random();
        if (r < 0.4) edits.push({ kind: 'set8', target, at, value: Math.floor(random() * 256) });
        else if (r < 0.6) edits.push({ kind: 'xor', target, at, value: 1 << Math.floor(random() * 8) });
        else if (r < 0.8) edits.push({ kind: 'set16', target, at: at - (at % 2), value: pick([0, 1, 0xffff, 0x7fff, 0x8000, 12, 4096, 0x20 | 12]) });
        else if (r < 0.95) {
          const value = pick([0, 1, 0xffffffff, 0x7fffffff, 0x80000000, sizes[0]!, Math.floor(sizes[0]! / 4096), 36, 0xfffffffe]);
          edits.push({ kind: 'set32', target, at: at - (at % 4), value });
        } else edits.push({ kind: 'truncate', target, lengthBytes: Math.floor(random() * size) });
      }
      const fixChecksum = random() < 0.9;
      const label = `${sample.name} fuzz #${iteration}: ${JSON.stringify(edits)}${fixChecksum ? ' (checksum fixed)' : ''}`;
      outcomes.push(await runner.run({ sample: index, edits, fixChecksum, label }));
    }
    process.stderr.write(`# fuzz: ${outcomes.length} cases in ${Date.now() - started} ms: ${tally(outcomes)}\n`);
    assert.ok(outcomes.includes('ok') && outcomes.includes('corrupt'));
  });
});
