/**
 * Runs hostile-image cases for corruption.test.ts in a worker thread. Two reasons: the main thread's
 * test runner tracks every promise with async hooks (which made each case several times slower),
 * and a worker can be terminated, so even a synchronous infinite loop in the reader ends as a
 * failed case instead of a stuck test run.
 *
 * Protocol: the parent posts { samples } once, then one HostileCase at a time; the worker answers
 * each with a CaseResult.
 */
import assert from 'node:assert/strict';
import { parentPort } from 'node:worker_threads';
import { BufferSource, DeviceUnavailableError, ErofsImage } from '../../src/read/index.js';
import { CorruptImageError, UnsupportedFeatureError } from '../../src/format/index.js';
import { fixSuperblockChecksum } from './mkfsImages.js';

export interface HostileSample {
  name: string;
  primary: Uint8Array;
  blobs: Uint8Array[];
}

/** One change to a sample: `target` 0 is the metadata image, k the k-th blob. */
export type Edit =
  | { kind: 'xor' | 'set8' | 'set16' | 'set32'; target: number; at: number; value: number }
  | { kind: 'truncate'; target: number; lengthBytes: number };

export interface HostileCase {
  sample: number;
  edits: Edit[];
  /** Recompute the superblock checksum afterwards, as an attacker would, so the edit reaches the parser. */
  fixChecksum: boolean;
  label: string;
}

export type Outcome = 'ok' | 'corrupt' | 'unsupported' | 'device';
export type CaseResult = { outcome: Outcome } | { bug: string };

/** Per file, read at most this much from the start (and a little at the end): a corrupt i_size may claim petabytes of holes. */
const READ_CAP_BYTES = 1 << 20;

/** Everything a user of the reader can ask, over the whole tree. */
export async function exercise(image: ErofsImage): Promise<void> {
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
    // Every directory on the way was validated by the walk, so lookup must agree with it. (A sample
    // of the entries: a lookup costs as much as the rest of the work on an entry.)
    if (entry.depth > 0 && (kind === 'dir' || index % 8 === 0)) assert.equal(await image.lookup(entry.pathBytes), entry.nid, `lookup(${entry.path})`);
  }
}

export function openSample(name: string, primary: Uint8Array, blobs: readonly Uint8Array[]): Promise<ErofsImage> {
  return ErofsImage.fromSources(new BufferSource(name, primary), {
    devices: blobs.map((b, i) => new BufferSource(`${name}.blob${i + 1}`, b)),
  });
}

/** Our typed errors, each naming the image; anything else (TypeError, RangeError from an out-of-bounds read, ...) is a bug. */
function classify(err: unknown, name: string): CaseResult {
  if (err instanceof CorruptImageError && err.where.image === name) return { outcome: 'corrupt' };
  if (err instanceof UnsupportedFeatureError && err.image === name) return { outcome: 'unsupported' };
  if (err instanceof DeviceUnavailableError && err.image === name) return { outcome: 'device' };
  const detail = err instanceof Error ? (err.stack ?? err.message) : String(err);
  return { bug: `not one of our typed errors naming ${name}:\n${detail}` };
}

export function applyEdits(sample: HostileSample, edits: readonly Edit[], fixChecksum: boolean): { primary: Buffer; blobs: Buffer[] } {
  const buffers = [sample.primary, ...sample.blobs].map((b) => Buffer.from(b));
  for (const edit of edits) {
    const buf = buffers[edit.target];
    if (buf === undefined) continue;
    if (edit.kind === 'truncate') {
      buffers[edit.target] = buf.subarray(0, Math.min(edit.lengthBytes, buf.length));
      continue;
    }
    const width = edit.kind === 'set16' ? 2 : edit.kind === 'set32' ? 4 : 1;
    if (edit.at < 0 || edit.at + width > buf.length) continue;
    if (edit.kind === 'xor') buf[edit.at] = buf[edit.at]! ^ edit.value;
    else if (edit.kind === 'set8') buf[edit.at] = edit.value & 0xff;
    else if (edit.kind === 'set16') buf.writeUInt16LE(edit.value & 0xffff, edit.at);
    else buf.writeUInt32LE(edit.value >>> 0, edit.at);
  }
  const [primary, ...blobs] = buffers as [Buffer, ...Buffer[]];
  if (fixChecksum) fixSuperblockChecksum(primary);
  return { primary, blobs };
}

export async function runCase(sample: HostileSample, c: HostileCase): Promise<CaseResult> {
  const { primary, blobs } = applyEdits(sample, c.edits, c.fixChecksum);
  let image: ErofsImage | undefined;
  try {
    image = await openSample(sample.name, primary, blobs);
    await exercise(image);
    return { outcome: 'ok' };
  } catch (err) {
    if (err instanceof assert.AssertionError) return { bug: err.message };
    return classify(err, sample.name);
  } finally {
    await image?.close();
  }
}

if (parentPort !== null) {
  const port = parentPort;
  let samples: HostileSample[] = [];
  port.on('message', (message: { samples: HostileSample[] } | HostileCase) => {
    if ('samples' in message) {
      samples = message.samples;
      return;
    }
    const sample = samples[message.sample];
    if (sample === undefined) {
      port.postMessage({ bug: `no sample ${message.sample}` } satisfies CaseResult);
      return;
    }
    runCase(sample, message).then(
      (result) => port.postMessage(result),
      (err: unknown) => port.postMessage({ bug: `worker failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}` } satisfies CaseResult),
    );
  });
}
