import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BufferSource, DeviceUnavailableError, ErofsImage } from '../../src/read/index.js';
import { CorruptImageError, SUPERBLOCK_OFFSET_BYTES, UnsupportedFeatureError } from '../../src/format/index.js';
import { makeSmallTree } from '../helpers/fixtures.js';
import { TEMP_DIR_PREFIX } from '../helpers/tmp.js';
import { fixSuperblockChecksum, mkfsErofs } from './mkfsImages.js';

/**
 * Hostile images: truncations, byte flips at every structure and a seeded fuzz loop over images made
 * by mkfs.erofs 1.5 and the erofs-utils 1.9.3 golden images. Opening, walking and reading everything
 * must either work or fail with one of our typed errors naming the image - never another error, never
 * a read outside the file (BufferSource throws a RangeError for that), never a hang.
 */

const FIXTURES = process.env['EROFS_FIXTURES'] ?? join(import.meta.dirname, '..', '..', '..', '..', 'shared', 'fixtures', 'fingerprint');
/** A guard against hangs, not a performance assertion. */
const HANG_GUARD_MS = 5000;
/** Per file, read at most this much from the start (and a little at the end): a corrupt i_size may claim petabytes of holes. */
const READ_CAP_BYTES = 1 << 20;
/** Structures flipped byte by byte per group (see Structure.group). */
const FLIPPED_PER_GROUP = 2;

interface Sample {
  name: string;
  primary: Buffer;
  blobs: Buffer[];
}

/** Where a sample's structures are, found by reading the intact image. */
interface Structure {
  label: string;
  /** Structures of one group (kind of structure, file type, layout) are alike: flipping two of them says as much as flipping all. */
  group: string;
  startBytes: number;
  lengthBytes: number;
}

type Outcome = 'ok' | 'corrupt' | 'unsupported' | 'device';

let dir = '';
const samples: Sample[] = [];
const structures = new Map<string, Structure[]>();

async function openSample(name: string, primary: Buffer, blobs: readonly Buffer[]): Promise<ErofsImage> {
  return ErofsImage.fromSources(new BufferSource(name, primary), {
    devices: blobs.map((b, i) => new BufferSource(`${name}.blob${i + 1}`, b)),
  });
}

/** Everything a user of the reader can ask, over the whole tree. */
async function exercise(image: ErofsImage): Promise<void> {
  let index = 0;
  for await (const entry of image.walk()) {
    index++;
    await image.listXattrs(entry.nid);
    await image.xattrLayout(entry.nid);
    await image.chunkMap(entry.nid);
    const { kind, sizeBytes } = entry.stat;
    if (kind === 'reg') {
      await image.read(entry.nid, 0, READ_CAP_BYTES);
      if (sizeBytes > READ_CAP_BYTES) await image.read(entry.nid, sizeBytes - 4096, 8192);
    } else if (kind === 'lnk') {
      await image.readlink(entry.nid);
    } else if (kind === 'dir') {
      await image.readdir(entry.nid);
    }
    // Every dir on the way was validated by the walk, so lookup must agree with it. (A sample of the
    // entries: a lookup costs as much as the rest of the work on an entry.)
    if (entry.depth > 0 && (kind === 'dir' || index % 5 === 0)) assert.equal(await image.lookup(entry.pathBytes), entry.nid, `lookup(${entry.path})`);
  }
}

function classify(err: unknown, name: string, what: string): Outcome {
  if (err instanceof CorruptImageError) {
    assert.equal(err.where.image, name, `${what}: CorruptImageError without the image name: ${err.message}`);
    return 'corrupt';
  }
  if (err instanceof UnsupportedFeatureError) {
    assert.equal(err.image, name, `${what}: UnsupportedFeatureError without the image name: ${err.message}`);
    return 'unsupported';
  }
  if (err instanceof DeviceUnavailableError) {
    assert.equal(err.image, name, `${what}: DeviceUnavailableError without the image name: ${err.message}`);
    return 'device';
  }
  const detail = err instanceof Error ? (err.stack ?? err.message) : String(err);
  assert.fail(`${what}: not one of our typed errors:\n${detail}`);
}

/** Opens, walks and reads a (possibly broken) image under the hang guard and says how it ended. */
async function tryImage(name: string, primary: Buffer, blobs: readonly Buffer[], what: string): Promise<Outcome> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still running after ${HANG_GUARD_MS} ms (hang?)`)), HANG_GUARD_MS);
  });
  const attempt = (async (): Promise<Outcome> => {
    let image: ErofsImage | undefined;
    try {
      image = await openSample(name, primary, blobs);
      await exercise(image);
      return 'ok';
    } catch (err) {
      if (err instanceof assert.AssertionError) throw err;
      return classify(err, name, what);
    } finally {
      await image?.close();
    }
  })();
  try {
    return await Promise.race([attempt, guard]);
  } finally {
    clearTimeout(timer);
  }
}

/** The byte ranges of every structure of an intact sample. */
async function findStructures(sample: Sample): Promise<Structure[]> {
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

/** Offsets to flip inside one structure: every byte of a header, the edges and a stride through bulk bytes. */
function offsetsIn(structure: Structure): number[] {
  const out: number[] = [];
  for (let i = 0; i < structure.lengthBytes; i++) {
    if (!isBulk(structure) || i < 40 || i >= structure.lengthBytes - 16 || i % 13 === 0) out.push(structure.startBytes + i);
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
  // 110 entries of 40 bytes (dirent + name) fill more than one 4 KiB block.
  for (let i = 0; i < 110; i++) await writeFile(join(source, 'many', `entry-with-a-longer-name-${String(i).padStart(3, '0')}`), i % 10 === 0 ? `file ${i}\n` : '');
  for (let i = 0; i < 4; i++) {
    const file = join(source, 'many', `entry-with-a-longer-name-${String(i * 10).padStart(3, '0')}`);
    await runChecked('setfattr', ['-n', 'user.shared', '-v', 'one value for all', file]);
  }
  await runChecked('setfattr', ['-n', 'user.long', '-v', `0x${'ab'.repeat(1500)}`, join(source, 'hello.txt')]);
  await runChecked('setfattr', ['-n', 'security.capability', '-v', '0x0100000200040000000000000000000000000000', join(source, 'many', 'entry-with-a-longer-name-010')]);
  await symlink('t'.repeat(300), join(source, 'long-link'));
  await writeFile(join(source, 'big'), Buffer.alloc(3 * 4096 + 100, 7));

  for (const variant of ['plain', 'blob-4k', 'block-map']) {
    const made = await mkfsErofs(dir, variant, source);
    samples.push({ name: `${variant}.erofs`, primary: await readFile(made.image), blobs: await Promise.all(made.blobs.map((b) => readFile(b))) });
  }
  samples.push({ name: 'fp.erofs', primary: await readFile(join(FIXTURES, 'fp.erofs')), blobs: [] });
  samples.push({ name: 'fpc.erofs', primary: await readFile(join(FIXTURES, 'fpc.erofs')), blobs: [await readFile(join(FIXTURES, 'fp-blob.img'))] });
  for (const sample of samples) structures.set(sample.name, await findStructures(sample));
});

after(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true, maxRetries: 3 });
});

describe('hostile images', () => {
  test('intact samples read completely', async () => {
    for (const sample of samples) assert.equal(await tryImage(sample.name, sample.primary, sample.blobs, `${sample.name} intact`), 'ok');
  });

  test('truncated metadata images and blobs', async () => {
    const outcomes: Outcome[] = [];
    for (const sample of samples) {
      const lengths = new Set<number>([0, 1, 1023, 1024, 1100, 1151, 1152, 1153, sample.primary.length - 1]);
      for (let n = 1024; n < Math.min(8192, sample.primary.length); n += 127) lengths.add(n);
      for (let n = 8192; n < sample.primary.length; n += 1021) lengths.add(n);
      for (const s of representatives(structures.get(sample.name) ?? [])) for (const n of [s.startBytes, s.startBytes + 1, s.startBytes + s.lengthBytes - 1]) lengths.add(n);
      for (const n of lengths) {
        if (n < 0 || n >= sample.primary.length) continue;
        outcomes.push(await tryImage(sample.name, sample.primary.subarray(0, n), sample.blobs, `${sample.name} truncated to ${n}`));
      }
      for (const [i, blob] of sample.blobs.entries()) {
        for (let n = 0; n < blob.length; n += 2039) {
          const blobs = sample.blobs.map((b, k) => (k === i ? b.subarray(0, n) : b));
          outcomes.push(await tryImage(sample.name, sample.primary, blobs, `${sample.name} blob ${i + 1} truncated to ${n}`));
        }
      }
    }
    process.stderr.write(`# truncations: ${outcomes.length} cases: ${tally(outcomes)}\n`);
    assert.ok(outcomes.includes('corrupt'));
  });

  test('byte flips at every structure (checksum recomputed, so the flip reaches the parser)', async () => {
    const byLabel = new Map<string, Outcome[]>();
    const started = Date.now();
    for (const sample of samples) {
      for (const structure of representatives(structures.get(sample.name) ?? [])) {
        const kind = structure.group.split(' ').slice(0, 2).join(' ');
        for (const offset of offsetsIn(structure)) {
          for (const mask of isBulk(structure) ? [0xff] : [0xff, 0x01, 0x80]) {
            const primary = Buffer.from(sample.primary);
            primary[offset] = primary[offset]! ^ mask;
            fixSuperblockChecksum(primary);
            const outcome = await tryImage(sample.name, primary, sample.blobs, `${sample.name}: byte ${offset} (${structure.label}) ^ 0x${mask.toString(16)}`);
            const list = byLabel.get(kind) ?? [];
            list.push(outcome);
            byLabel.set(kind, list);
          }
        }
      }
    }
    process.stderr.write(`# flips: ${[...byLabel.values()].flat().length} cases in ${Date.now() - started} ms\n`);
    for (const [label, outcomes] of byLabel) process.stderr.write(`# flips in ${label}: ${outcomes.length} cases: ${tally(outcomes)}\n`);
    assert.ok([...byLabel.values()].flat().includes('corrupt'));
  });

  test('flips without a checksum fix are refused by the checksum (block 0) or reach the parser (later blocks)', async () => {
    for (const sample of samples.filter((s) => s.name !== 'fpc.erofs')) {
      const primary = Buffer.from(sample.primary);
      primary[SUPERBLOCK_OFFSET_BYTES + 0x7f] = primary[SUPERBLOCK_OFFSET_BYTES + 0x7f]! ^ 0x10;
      assert.equal(await tryImage(sample.name, primary, sample.blobs, `${sample.name} unchecked flip`), 'corrupt');
    }
  });

  test('seeded fuzz: a few thousand random mutations', async () => {
    const random = prng(0x5eed);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const outcomes: Outcome[] = [];
    const started = Date.now();
    for (let iteration = 0; iteration < 3000; iteration++) {
      const sample = samples[iteration % samples.length]!;
      let primary = Buffer.from(sample.primary);
      const blobs = sample.blobs.map((b) => Buffer.from(b));
      const structureOffsets = (structures.get(sample.name) ?? []).flatMap((s) => [s.startBytes, s.startBytes + s.lengthBytes - 1, s.startBytes + Math.floor(random() * s.lengthBytes)]);
      const steps: string[] = [];
      const mutations = 1 + Math.floor(random() * 4);
      for (let m = 0; m < mutations; m++) {
        const r = random();
        const target = random() < 0.85 ? primary : pick([primary, ...blobs]);
        if (target.length < 8) continue;
        // Mostly inside known structures, sometimes anywhere.
        const base = target === primary && random() < 0.8 ? pick(structureOffsets) : Math.floor(random() * target.length);
        const at = Math.min(Math.max(0, base), target.length - 8);
        if (r < 0.4) {
          target[at] = Math.floor(random() * 256);
          steps.push(`byte ${at}=random`);
        } else if (r < 0.6) {
          target[at] = target[at]! ^ (1 << Math.floor(random() * 8));
          steps.push(`bit flip at ${at}`);
        } else if (r < 0.8) {
          const aligned = at - (at % 2);
          target.writeUInt16LE(pick([0, 1, 0xffff, 0x7fff, 0x8000, 12, 4096, 0x20 | 12]), aligned);
          steps.push(`u16 at ${aligned}`);
        } else if (r < 0.95) {
          const aligned = at - (at % 4);
          target.writeUInt32LE(pick([0, 1, 0xffffffff, 0x7fffffff, 0x80000000, primary.length, Math.floor(primary.length / 4096), 36, 0xfffffffe]), aligned);
          steps.push(`u32 at ${aligned}`);
        } else {
          primary = primary.subarray(0, Math.floor(random() * primary.length));
          steps.push(`truncate to ${primary.length}`);
        }
      }
      if (random() < 0.9) fixSuperblockChecksum(primary);
      outcomes.push(await tryImage(sample.name, primary, blobs, `${sample.name} fuzz #${iteration}: ${steps.join(', ')}`));
    }
    process.stderr.write(`# fuzz: ${outcomes.length} cases in ${Date.now() - started} ms: ${tally(outcomes)}\n`);
    assert.ok(outcomes.includes('ok') && outcomes.includes('corrupt'));
  });
});
