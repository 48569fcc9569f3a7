import { Worker } from 'node:worker_threads';
import type { ChunkIndex } from '../format/chunk.js';
import { writeMetadataImage } from './metadata.js';
import { defaultAttrs, makeDir, nameKey, type DirNode } from './tree.js';

/**
 * Object indexes: page cache sharing on kernels without EROFS sharing (6.5+), through overlayfs
 * data-only lower layers. Each blob gets one small EROFS image (mounted once per host) listing every
 * file object whose data lives in that blob as `/<2 hex>/<sha256 hex of the content>`, mapped onto the
 * blob (its only device) by chunk indexes. Metadata images mark each eligible file with overlayfs
 * metacopy + redirect xattrs naming its object, so a sharing mount reads (and mmaps) the data through
 * the object's inode: one page cache for every image holding the file.
 */
export { OVERLAY_METACOPY_XATTR, OVERLAY_REDIRECT_XATTR } from '../format/constants.js';

export function objectPath(contentSha256Hex: string): string {
  return `/${contentSha256Hex.slice(0, 2)}/${contentSha256Hex}`;
}

export interface ObjectEntry {
  contentSha256Hex: string;
  sizeBytes: number;
  chunkBits: number;
  /** Chunk indexes with every data chunk on device 1 (the blob). */
  chunks: ChunkIndex[];
}

/** The object index image of one blob. */
export function buildObjectIndex(blobDigest: string, blobBlocks: number, objects: readonly ObjectEntry[], blockSizeBits: number): Buffer {
  const root = makeDir({ permissions: 0o755 });
  for (const object of objects) {
    const prefix = nameKey(Buffer.from(object.contentSha256Hex.slice(0, 2)));
    let dir = root.children.get(prefix) as DirNode | undefined;
    if (dir === undefined) {
      dir = makeDir({ permissions: 0o755 });
      root.children.set(prefix, dir);
    }
    dir.children.set(nameKey(Buffer.from(object.contentSha256Hex)), {
      kind: 'reg',
      ...defaultAttrs({ permissions: 0o444 }),
      data: { kind: 'chunks', sizeBytes: object.sizeBytes, chunkBits: object.chunkBits, chunks: object.chunks },
    });
  }
  return writeMetadataImage(root, { blockSizeBits, devices: [{ tag: blobDigest, blocks: blobBlocks }], volumeName: 'erofs-objects', uuid: Buffer.from(blobDigest.slice(0, 32), 'hex') });
}

export interface ObjectIndexInput {
  blobDigest: string;
  blobBlocks: number;
  objects: readonly ObjectEntry[];
  blockSizeBits: number;
}

/**
 * {@link buildObjectIndex} on a worker thread: a layer's object index lists most of its files, and
 * planning it costs as much as the image's own metadata, which the main thread plans meanwhile.
 * The thread is started before it is needed (at the start of a layer), so its start-up is not
 * waited for.
 */
export class ObjectIndexThread {
  private readonly worker = new Worker(new URL('./objectIndexWorker.js', import.meta.url));
  private readonly result: Promise<Buffer>;

  constructor() {
    this.result = new Promise((resolve, reject) => {
      let image: Buffer | undefined;
      this.worker.once('message', (bytes: ArrayBuffer) => (image = Buffer.from(bytes)));
      this.worker.once('error', reject);
      this.worker.once('exit', (code) => (image !== undefined ? resolve(image) : reject(new Error(`object index worker exited with code ${code} without a result`))));
    });
    // Observed through build(); a thread disposed unused must not count as an unhandled rejection.
    this.result.catch(() => {});
    // An idle thread must not keep the process alive.
    this.worker.unref();
  }

  /** Builds the index on the thread, which then exits. */
  build(input: ObjectIndexInput): Promise<Buffer> {
    this.worker.ref();
    const packed = packObjects(input.objects);
    this.worker.postMessage({ ...input, objects: packed }, [packed.numbers.buffer as ArrayBuffer]);
    return this.result;
  }

  /** Stops a thread that will not be given work. */
  async dispose(): Promise<void> {
    await this.worker.terminate();
  }
}

/**
 * Objects as one string and one array of numbers: thousands of small objects cost more to clone to
 * a thread one by one than the index takes to plan. Per object: size, chunk bits, chunk count,
 * then (device id, block address or -1 for a hole) per chunk.
 */
export interface PackedObjects {
  hexes: string;
  numbers: Float64Array;
}

function packObjects(objects: readonly ObjectEntry[]): PackedObjects {
  let count = 0;
  for (const object of objects) count += 3 + 2 * object.chunks.length;
  const numbers = new Float64Array(count);
  let at = 0;
  for (const object of objects) {
    numbers[at++] = object.sizeBytes;
    numbers[at++] = object.chunkBits;
    numbers[at++] = object.chunks.length;
    for (const chunk of object.chunks) {
      numbers[at++] = chunk.deviceId;
      numbers[at++] = chunk.blkaddr ?? -1;
    }
  }
  return { hexes: objects.map((object) => object.contentSha256Hex).join(''), numbers };
}

export function unpackObjects(packed: PackedObjects): ObjectEntry[] {
  const objects: ObjectEntry[] = [];
  const { hexes, numbers } = packed;
  let at = 0;
  for (let i = 0; at < numbers.length; i++) {
    const sizeBytes = numbers[at++]!;
    const chunkBits = numbers[at++]!;
    const chunkCount = numbers[at++]!;
    const chunks: ChunkIndex[] = [];
    for (let c = 0; c < chunkCount; c++) {
      const deviceId = numbers[at++]!;
      const blkaddr = numbers[at++]!;
      chunks.push({ deviceId, blkaddr: blkaddr < 0 ? null : blkaddr });
    }
    objects.push({ contentSha256Hex: hexes.slice(i * 64, i * 64 + 64), sizeBytes, chunkBits, chunks });
  }
  return objects;
}
