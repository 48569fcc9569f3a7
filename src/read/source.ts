import { open, readFile, type FileHandle } from 'node:fs/promises';
import { CorruptImageError } from '../format/index.js';

/**
 * Random access to the bytes of an image file or a blob. The reader checks every range against
 * `sizeBytes` before it reads, so implementations may assume in-bounds requests.
 */
export interface ByteSource {
  /** Path (or a test's label) used in messages. */
  readonly name: string;
  readonly sizeBytes: number;
  /** Fills `target[targetOffsetBytes .. + lengthBytes)` from `positionBytes`. */
  readInto(target: Buffer, targetOffsetBytes: number, lengthBytes: number, positionBytes: number): Promise<void>;
  close(): Promise<void>;
}

/** Size of a block device from sysfs: fstat reports 0 for them. Sectors there are always 512 bytes. */
async function blockDeviceSizeBytes(rdev: number): Promise<number> {
  const major = (rdev >>> 8) & 0xfff;
  const minor = (rdev & 0xff) | ((rdev >>> 12) & 0xfff00);
  const sectors = Number((await readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8')).trim());
  return sectors * 512;
}

export class FileSource implements ByteSource {
  private constructor(
    readonly name: string,
    readonly sizeBytes: number,
    private readonly handle: FileHandle,
  ) {}

  static async open(path: string): Promise<FileSource> {
    const handle = await open(path, 'r');
    try {
      const st = await handle.stat();
      const sizeBytes = st.isBlockDevice() ? await blockDeviceSizeBytes(st.rdev) : st.size;
      return new FileSource(path, sizeBytes, handle);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  async readInto(target: Buffer, targetOffsetBytes: number, lengthBytes: number, positionBytes: number): Promise<void> {
    let done = 0;
    while (done < lengthBytes) {
      const { bytesRead } = await this.handle.read(target, targetOffsetBytes + done, lengthBytes - done, positionBytes + done);
      // The size was checked at open; a short read means the file shrank underneath us.
      if (bytesRead === 0) {
        throw new CorruptImageError(`file ended at byte ${positionBytes + done} while reading (it shrank after it was opened?)`, {
          structure: 'file',
          image: this.name,
        });
      }
      done += bytesRead;
    }
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/** An in-memory image, for tests and for callers that already hold the bytes. */
export class BufferSource implements ByteSource {
  readonly sizeBytes: number;
  constructor(
    readonly name: string,
    private readonly bytes: Uint8Array,
  ) {
    this.sizeBytes = bytes.length;
  }

  async readInto(target: Buffer, targetOffsetBytes: number, lengthBytes: number, positionBytes: number): Promise<void> {
    // The reader promises in-bounds requests; a request outside is a reader bug, which tests must see.
    if (positionBytes < 0 || lengthBytes < 0 || positionBytes + lengthBytes > this.bytes.length) {
      throw new RangeError(`${this.name}: read of ${lengthBytes} bytes at ${positionBytes} lies outside ${this.bytes.length} bytes`);
    }
    target.set(this.bytes.subarray(positionBytes, positionBytes + lengthBytes), targetOffsetBytes);
  }

  async close(): Promise<void> {}
}

/** A small least-recently-used map (Map keeps insertion order; a hit re-inserts). */
export class Lru<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly capacity: number) {}

  get(key: K): V | undefined {
    const value = this.map.get(key);
    if (value !== undefined) {
      this.map.delete(key);
      this.map.set(key, value);
    }
    return value;
  }

  set(key: K, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.capacity) {
      const oldest = this.map.keys().next();
      if (!oldest.done) this.map.delete(oldest.value);
    }
  }

  delete(key: K): void {
    this.map.delete(key);
  }
}

/**
 * Block-granular cache over a source, for metadata (inodes, xattrs, chunk arrays, directory blocks):
 * walking a large directory touches the same few blocks thousands of times. File contents bypass it.
 * In-flight reads are shared, so concurrent lookups of one block read it once.
 */
export class BlockCache {
  private readonly blocks: Lru<number, Promise<Buffer>>;
  constructor(
    readonly source: ByteSource,
    private readonly blockSizeBytes: number,
    capacityBlocks: number,
  ) {
    this.blocks = new Lru(capacityBlocks);
  }

  private block(index: number): Promise<Buffer> {
    let pending = this.blocks.get(index);
    if (pending === undefined) {
      const start = index * this.blockSizeBytes;
      // The last block of a file that is not a whole number of blocks is cached short.
      const length = Math.min(this.blockSizeBytes, this.source.sizeBytes - start);
      const buf = Buffer.alloc(length);
      pending = this.source.readInto(buf, 0, length, start).then(() => buf);
      pending.catch(() => this.blocks.delete(index));
      this.blocks.set(index, pending);
    }
    return pending;
  }

  /** Bytes `[positionBytes, positionBytes + lengthBytes)`, which the caller has checked lie inside the source. */
  async read(positionBytes: number, lengthBytes: number): Promise<Buffer> {
    const first = Math.floor(positionBytes / this.blockSizeBytes);
    const last = Math.floor((positionBytes + Math.max(lengthBytes, 1) - 1) / this.blockSizeBytes);
    const offsetInFirst = positionBytes - first * this.blockSizeBytes;
    if (first === last) {
      const block = await this.block(first);
      return block.subarray(offsetInFirst, offsetInFirst + lengthBytes);
    }
    const out = Buffer.alloc(lengthBytes);
    let done = 0;
    for (let index = first; index <= last; index++) {
      const block = await this.block(index);
      const from = index === first ? offsetInFirst : 0;
      const n = Math.min(block.length - from, lengthBytes - done);
      block.copy(out, done, from, from + n);
      done += n;
    }
    return out;
  }
}
