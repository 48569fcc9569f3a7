import { randomBytes } from 'node:crypto';
import { closeSync, fdatasync, fsync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import type * as DirectWriteModule from '@mkfs-erofs-ts/direct-write';
import type { DirectWriter } from '@mkfs-erofs-ts/direct-write';
import { optionalAddon } from '../util/addon.js';
import { createSha256, type Sha256 } from './sha256.js';

type DirectWriteBinding = typeof DirectWriteModule;

const fsyncAsync = promisify(fsync);
const fdatasyncAsync = promisify(fdatasync);
const WRITE_BUFFER_BYTES = 1 << 20;
/**
 * After this many bytes written, a data sync starts in the background (libuv's thread pool): the
 * disk then writes the blob while it is being made, and the fsync that ends it waits only for the
 * last part. Without it the kernel starts writing only when dirty pages age or pile up, and the
 * final fsync of a 200 MB blob waited about 0.35 s here.
 */
const WRITEBACK_BYTES = 32 << 20;

/**
 * Memory, length and file position of every write a {@link BlobWriter} passes to the file: the
 * direct-I/O alignment (blob blocks are whole pages, so chunks start on it).
 */
const WRITE_ALIGNMENT_BYTES = 4096;
/** Writes queued to the direct writer's thread at once: one on the disk, one waiting (the window is being filled meanwhile). */
const DIRECT_SLOTS = 2;

/** The direct-write addon (native/direct-write), or null when it is not built. */
const directWrite = optionalAddon<DirectWriteBinding>('@mkfs-erofs-ts/direct-write');

/**
 * A blob device being written: block-aligned chunks appended to a temporary file, which becomes
 * `blobs/sha256/<digest>` only when complete. Chunks are written tentatively and may be taken back
 * (a duplicate found after streaming it), so data never has to be held in memory.
 *
 * Bytes gather in a window of a few MiB, which goes to the file in aligned pieces:
 * - with the direct-write addon (the default), as O_DIRECT writes on its own thread: the blob is
 *   fsynced before it is named anyway, and copying it into the page cache first cost more CPU than
 *   anything else the writing thread did (BENCHMARKS.md, eighth session);
 * - without it, or where the file system refuses direct I/O, as synchronous writes through the page
 *   cache with data syncs started in the background. Synchronous on purpose: a round trip through
 *   libuv's thread pool per write cost more than the write (the main thread sat idle 42% of the
 *   time with asynchronous I/O).
 */
export class BlobWriter {
  private endBytes = 0;
  /** False once a chunk fed to the blob digest was taken back: the digest is then read from the file. */
  private digestValid = true;
  private closed = false;
  private persisting: Promise<void> | undefined;
  /**
   * Written bytes not yet passed to the file: they belong at `pendingStartBytes`, which is aligned.
   * Only the aligned part leaves when the window is flushed; the rest moves to its front.
   */
  private readonly pending = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  private pendingStartBytes = 0;
  private pendingBytes = 0;
  /** Bytes written since the last background data sync started, and that sync while it runs. */
  private unsyncedBytes = 0;
  private writeback: Promise<void> | undefined;

  /** SHA-256 of the committed bytes, in order (see {@link updateDigest}). */
  private readonly sha256: Sha256 = createSha256();

  private constructor(
    private readonly fd: number,
    readonly tempPath: string,
    readonly blobsDir: string,
    readonly blockSizeBytes: number,
    /** The direct writer's thread, when the addon is built (O_DIRECT, or the page cache where refused). */
    private readonly direct: { binding: DirectWriteBinding; writer: DirectWriter } | undefined,
  ) {}

  /** A name for a new temporary blob inside `blobsDir` (the store's `blobs/sha256`). */
  static temporaryPath(blobsDir: string): string {
    return path.join(blobsDir, `.tmp-blob-${process.pid}-${randomBytes(6).toString('hex')}`);
  }

  /** Creates the temporary blob `tempPath` (see {@link temporaryPath}); it is renamed to its digest beside it. */
  static async create(tempPath: string, blockSizeBytes: number): Promise<BlobWriter> {
    const blobsDir = path.dirname(tempPath);
    await mkdir(blobsDir, { recursive: true });
    if (blockSizeBytes % WRITE_ALIGNMENT_BYTES !== 0) throw new RangeError(`blob block size ${blockSizeBytes} is not a multiple of ${WRITE_ALIGNMENT_BYTES}`);
    const fd = openSync(tempPath, 'wx+');
    const binding = directWrite();
    let direct: { binding: DirectWriteBinding; writer: DirectWriter } | undefined;
    try {
      if (binding !== null) direct = { binding, writer: binding.open(fd, WRITE_BUFFER_BYTES, DIRECT_SLOTS).writer };
    } catch (error) {
      closeSync(fd);
      await rm(tempPath, { force: true });
      throw error;
    }
    return new BlobWriter(fd, tempPath, blobsDir, blockSizeBytes, direct);
  }

  /**
   * Feeds the blob digest: the writer's caller passes each chunk's bytes (and padding) in blob
   * order, from the memory it already holds, rather than the writer reading back what it wrote.
   * `alsoInto` (the chunk's file content digest) takes the same bytes in the same pass.
   */
  updateDigest(bytes: Uint8Array, alsoInto?: Sha256): void {
    if (alsoInto === undefined) this.sha256.update(bytes);
    else this.sha256.updateWith(alsoInto, bytes);
  }

  /** Next free block, where the next chunk starts. */
  get nextBlkaddr(): number {
    return this.endBytes / this.blockSizeBytes;
  }

  /**
   * Writes bytes at `positionBytes` (≥ the committed end) without committing them. The running
   * digest only follows writes that extend the committed end in order.
   *
   * Writes go through the window: a layer of small files makes thousands of chunk writes, and one
   * system call per chunk cost more than the copy. A write behind the window's end replaces what
   * follows it (a chunk written tentatively and taken back is overwritten); one before the window
   * starts a new window there, which is the committed end (a block boundary), so it is aligned.
   */
  writeAt(bytes: Uint8Array, positionBytes: number): void {
    let rest = bytes;
    let position = positionBytes;
    for (;;) {
      // Past the window's end: the window goes to the file first. Before its start (a chunk taken back
      // to the committed end): all of the window lies after that end, so it is dropped unwritten.
      if (position > this.pendingStartBytes + this.pendingBytes) this.flushPending();
      if (position < this.pendingStartBytes || position > this.pendingStartBytes + this.pendingBytes) {
        if (position % WRITE_ALIGNMENT_BYTES !== 0) throw new RangeError(`blob write at ${position}: not at the window nor at an aligned position`);
        this.pendingStartBytes = position;
        this.pendingBytes = 0;
      }
      const at = position - this.pendingStartBytes;
      const taken = Math.min(rest.length, this.pending.length - at);
      this.pending.set(taken === rest.length ? rest : rest.subarray(0, taken), at);
      this.pendingBytes = at + taken;
      if (taken === rest.length) return;
      this.flushPending();
      rest = rest.subarray(taken);
      position += taken;
    }
  }

  /** Passes the window's aligned part to the file; the unaligned rest moves to the window's front. */
  private flushPending(): void {
    const aligned = this.pendingBytes - (this.pendingBytes % WRITE_ALIGNMENT_BYTES);
    if (aligned === 0) return;
    const bytes = this.pending.subarray(0, aligned);
    // Direct writes start no data syncs on the way: they are on the disk already, and syncs during them
    // (for ext4 to commit their extents early) made the 1 GB layer's build 0.5-0.8 s slower (3
    // interleaved runs each way), for a final fsync 0.46 s shorter that nothing on the main thread waits for.
    if (this.direct !== undefined) this.direct.binding.submit(this.direct.writer, bytes, this.pendingStartBytes);
    else this.writeFully(bytes, this.pendingStartBytes);
    this.pending.copyWithin(0, aligned, this.pendingBytes);
    this.pendingStartBytes += aligned;
    this.pendingBytes -= aligned;
  }

  private writeFully(bytes: Uint8Array, positionBytes: number): void {
    let written = 0;
    while (written < bytes.length) {
      written += writeSync(this.fd, bytes, written, bytes.length - written, positionBytes + written);
    }
    this.unsyncedBytes += written;
    if (this.unsyncedBytes >= WRITEBACK_BYTES && this.writeback === undefined) {
      this.unsyncedBytes = 0;
      // Failures here only lose the head start: the final fsync reports them.
      this.writeback = fdatasyncAsync(this.fd).then(
        () => void (this.writeback = undefined),
        () => void (this.writeback = undefined),
      );
    }
  }

  /**
   * Commits a chunk written at the current end: `dataBytes` of data (already written and fed to
   * `updateDigest`), padded here with zeros to a whole block when it is not one already.
   */
  commitChunk(dataBytes: number): number {
    const blkaddr = this.nextBlkaddr;
    const padded = Math.ceil(dataBytes / this.blockSizeBytes) * this.blockSizeBytes;
    if (padded > dataBytes) {
      const zeros = Buffer.alloc(padded - dataBytes);
      this.writeAt(zeros, this.endBytes + dataBytes);
      this.updateDigest(zeros);
    }
    this.endBytes += padded;
    return blkaddr;
  }

  /** A tentatively written chunk was dropped after some of it reached the digest: recompute at the end. */
  invalidateDigest(): void {
    this.digestValid = false;
  }

  /** Size written so far, in blocks. */
  get lengthBlocks(): number {
    return this.endBytes / this.blockSizeBytes;
  }

  /**
   * Truncates to the committed end and computes the blob's sha256; then, in the background, fsyncs
   * it and renames it to its digest (`persisted`). The caller goes on with other work meanwhile
   * (the fsync of a large blob takes hundreds of milliseconds of waiting on the disk) and awaits
   * `persisted` before anything refers to the blob by name; until then `abort` still removes it.
   */
  async finish(): Promise<{ path: string; digest: string; sizeBytes: number; blocks: number; persisted: Promise<void> }> {
    // The committed end is a block boundary: the window's aligned part holds everything up to it.
    this.flushPending();
    if (this.direct !== undefined) {
      // Out of O_DIRECT: the digest may have to be read back through this descriptor.
      this.direct.binding.drain(this.direct.writer, true);
      this.direct.binding.close(this.direct.writer);
    }
    ftruncateSync(this.fd, this.endBytes);
    let digest: string;
    if (this.digestValid) {
      digest = this.sha256.digest().toString('hex');
    } else {
      const hash = createSha256();
      const buffer = Buffer.allocUnsafe(1 << 20);
      for (let pos = 0; pos < this.endBytes; ) {
        const bytesRead = readSync(this.fd, buffer, 0, Math.min(buffer.length, this.endBytes - pos), pos);
        if (bytesRead === 0) break;
        hash.update(buffer.subarray(0, bytesRead));
        pos += bytesRead;
      }
      digest = hash.digest().toString('hex');
    }
    const finalPath = path.join(this.blobsDir, digest);
    const persisted = (async () => {
      await this.writeback;
      await fsyncAsync(this.fd);
      this.closed = true;
      closeSync(this.fd);
      await rename(this.tempPath, finalPath);
    })();
    this.persisting = persisted;
    return { path: finalPath, digest, sizeBytes: this.endBytes, blocks: this.lengthBlocks, persisted };
  }

  /** Drops the temporary file (a failed build leaves nothing behind). */
  async abort(): Promise<void> {
    // A background fsync still holds the descriptor: let it end before closing and removing.
    await this.persisting?.catch(() => {});
    await this.writeback;
    if (this.direct !== undefined) this.direct.binding.close(this.direct.writer);
    if (!this.closed) {
      this.closed = true;
      try {
        closeSync(this.fd);
      } catch {
        // already closed or never usable: nothing left to release
      }
    }
    await rm(this.tempPath, { force: true });
  }
}
