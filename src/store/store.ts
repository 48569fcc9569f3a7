import { access, mkdir, readdir, readFile } from 'node:fs/promises';
import { statSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomically } from '../util/atomicFile.js';

/** One record of a blob's chunk index: BLAKE3 (32 bytes), chunk length (u64), block address (u32). */
const RECORD_SIZE_BYTES = 44;
const INDEX_SUFFIX = '.chunks';

export class StoreError extends Error {
  readonly code = 'ERR_STORE';
  constructor(readonly storeDir: string, problem: string) {
    super(`store ${storeDir}: ${problem}`);
    this.name = 'StoreError';
  }
}

/**
 * A content-addressed store: blobs under `blobs/sha256/<digest>` (an OCI layout's blob directory)
 * and, for each blob, the list of chunks it holds under `chunks/<digest>.chunks`. The chunk
 * dictionary is the union of those lists.
 *
 * Why per-blob lists instead of one dictionary file: each list is written once, under a temporary
 * name, after its blob is durable, and renamed into place. So two builds sharing a store never write
 * the same file, a crash never leaves a list pointing at a missing blob, and nothing needs a lock.
 * The worst a race can do is store one chunk in two blobs.
 */
export class ChunkStore {
  private constructor(readonly dir: string) {}

  get blobsDir(): string {
    return path.join(this.dir, 'blobs', 'sha256');
  }

  private get chunksDir(): string {
    return path.join(this.dir, 'chunks');
  }

  static async open(dir: string): Promise<ChunkStore> {
    const store = new ChunkStore(dir);
    await mkdir(store.blobsDir, { recursive: true });
    await mkdir(store.chunksDir, { recursive: true });
    return store;
  }

  blobPath(digest: string): string {
    return path.join(this.blobsDir, digest);
  }

  /** Size of a stored blob in blocks (blobs are whole blocks by construction). */
  blobBlocks(digest: string, blockSizeBits: number): number {
    const sizeBytes = statSync(this.blobPath(digest)).size;
    if (sizeBytes % 2 ** blockSizeBits !== 0) throw new StoreError(this.dir, `blob ${digest} is not a whole number of blocks`);
    return sizeBytes / 2 ** blockSizeBits;
  }

  private get objectsDir(): string {
    return path.join(this.dir, 'objects');
  }

  /** The object index image of a blob (see src/build/objectIndex.ts). */
  objectIndexPath(blobDigest: string): string {
    return path.join(this.objectsDir, `${blobDigest}.erofs`);
  }

  /**
   * Content digests (hex sha256) of the objects a blob's object index lists, from the list kept
   * beside it; empty when the blob has no index.
   */
  async objectDigests(blobDigest: string): Promise<Set<string>> {
    const text = await readFile(path.join(this.objectsDir, `${blobDigest}.objects`), 'utf8').catch(() => '');
    return new Set(text.split('\n').filter((line) => /^[0-9a-f]{64}$/.test(line)));
  }

  /** Stores a blob's object index and its list of object digests (each under a temporary name first). */
  async addObjectIndex(blobDigest: string, image: Uint8Array, objectDigests: readonly string[]): Promise<void> {
    await mkdir(this.objectsDir, { recursive: true });
    await writeFileAtomically(this.objectIndexPath(blobDigest), image);
    await writeFileAtomically(path.join(this.objectsDir, `${blobDigest}.objects`), Buffer.from(objectDigests.map((d) => `${d}\n`).join('')));
  }

  /**
   * Records the chunks of a blob that is already in place under its digest: `records` as a
   * {@link ChunkListBuilder} made them, written as they are.
   */
  async addBlobChunkList(blobDigest: string, records: Uint8Array): Promise<void> {
    if (records.length % RECORD_SIZE_BYTES !== 0) throw new StoreError(this.dir, `chunk list of blob ${blobDigest} is ${records.length} bytes, not whole records`);
    await writeFileAtomically(path.join(this.chunksDir, `${blobDigest}${INDEX_SUFFIX}`), records);
  }
}

/**
 * Reads the chunk dictionary of a store: every chunk of every blob's chunk list, the first list (by
 * blob digest) naming a chunk winning. It is read where the chunking happens (the chunk thread of a
 * build), once per build; lists added later by other builds are not seen, which at worst stores a
 * chunk twice.
 */
export async function readChunkDictionary(storeDir: string, onChunk: (blobDigest: string, key: string, blkaddr: number) => void): Promise<void> {
  const chunksDir = path.join(storeDir, 'chunks');
  const names = (await readdir(chunksDir).catch((error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? [] : Promise.reject(error)))).filter((n) => n.endsWith(INDEX_SUFFIX) && !n.startsWith('.'));
  for (const name of names.sort()) {
    const blobDigest = name.slice(0, -INDEX_SUFFIX.length);
    if (!/^[0-9a-f]{64}$/.test(blobDigest)) continue;
    // A list whose blob was removed (garbage collection, a user) is ignored rather than trusted.
    if (!(await access(path.join(storeDir, 'blobs', 'sha256', blobDigest)).then(() => true, () => false))) continue;
    const bytes = await readFile(path.join(chunksDir, name));
    if (bytes.length % RECORD_SIZE_BYTES !== 0) throw new StoreError(storeDir, `chunk list ${name} is corrupt (${bytes.length} bytes)`);
    for (let at = 0; at < bytes.length; at += RECORD_SIZE_BYTES) {
      onChunk(blobDigest, chunkKey(bytes.subarray(at, at + 32), Number(bytes.readBigUInt64LE(at + 32))), bytes.readUInt32LE(at + 40));
    }
  }
}

/** Dictionary key of a chunk: its BLAKE3 digest and its length (a tail chunk differs from a full one). */
export function chunkKey(blake3: Buffer, lengthBytes: number): string {
  return `${blake3.toString('hex')}:${lengthBytes}`;
}

/**
 * A blob's chunk list, in the store's record format, built as its chunks are written: by the thread
 * that hashes them, from the digest bytes it holds, so that no string per chunk has to cross to the
 * main thread and be parsed back there at the end of the layer, where everything waits for it.
 */
export class ChunkListBuilder {
  private records = Buffer.allocUnsafeSlow(RECORD_SIZE_BYTES * 1024);
  private lengthBytes = 0;

  add(blake3: Uint8Array, chunkBytes: number, blkaddr: number): void {
    if (this.lengthBytes + RECORD_SIZE_BYTES > this.records.length) {
      const grown = Buffer.allocUnsafeSlow(this.records.length * 2);
      this.records.copy(grown, 0, 0, this.lengthBytes);
      this.records = grown;
    }
    const at = this.lengthBytes;
    this.records.set(blake3.subarray(0, 32), at);
    this.records.writeUInt32LE(chunkBytes % 2 ** 32, at + 32);
    this.records.writeUInt32LE(Math.floor(chunkBytes / 2 ** 32), at + 36);
    this.records.writeUInt32LE(blkaddr, at + 40);
    this.lengthBytes += RECORD_SIZE_BYTES;
  }

  get count(): number {
    return this.lengthBytes / RECORD_SIZE_BYTES;
  }

  /** The records so far, in an ArrayBuffer of their own (one a message can transfer). */
  take(): Uint8Array {
    return new Uint8Array(this.records.buffer, this.records.byteOffset, this.lengthBytes).slice();
  }
}
