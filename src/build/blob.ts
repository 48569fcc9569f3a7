import { createHash, randomBytes, type Hash } from 'node:crypto';
import { closeSync, fdatasync, fsync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';

const fsyncAsync = promisify(fsync);
const fdatasyncAsync = promisify(fdatasync);
const WRITE_BUFFER_BYTES = 4 << 20;
/**
 * After this many bytes written, a data sync starts in the background (libuv's thread pool): the
 * disk then writes the blob while it is being made, and the fsync that ends it waits only for the
 * last part. Without it the kernel starts writing only when dirty pages age or pile up, and the
 * final fsync of a 200 MB blob waited about 0.35 s here.
 */
const WRITEBACK_BYTES = 32 << 20;

/**
 * A blob device being written: block-aligned chunks appended to a temporary file, which becomes
 * `blobs/sha256/<digest>` only when complete. Chunks are written tentatively and may be taken back
 * (a duplicate found after streaming it), so data never has to be held in memory.
 *
 * Writes are synchronous on purpose: a build handles one chunk at a time, and a round trip through
 * libuv's thread pool per write cost more than the write itself (profiled: the main thread sat idle
 * 42% of the time with asynchronous I/O).
 */
export class BlobWriter {
  private endBytes = 0;
  /** False once a chunk fed to the blob digest was taken back: the digest is then read from the file. */
  private digestValid = true;
  private closed = false;
  private persisting: Promise<void> | undefined;
  /** Written bytes not yet passed to the file: they belong at `pendingStartBytes`. */
  private readonly pending = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  private pendingStartBytes = 0;
  private pendingBytes = 0;
  /** Bytes written since the last background data sync started, and that sync while it runs. */
  private unsyncedBytes = 0;
  private writeback: Promise<void> | undefined;

  /** SHA-256 of the committed bytes, in order (see {@link updateDigest}). */
  private readonly sha256: Hash = createHash('sha256');

  private constructor(
    private readonly fd: number,
    readonly tempPath: string,
    readonly blobsDir: string,
    readonly blockSizeBytes: number,
  ) {}

  /** A name for a new temporary blob inside `blobsDir` (the store's `blobs/sha256`). */
  static temporaryPath(blobsDir: string): string {
    return path.join(blobsDir, `.tmp-blob-${process.pid}-${randomBytes(6).toString('hex')}`);
  }

  /** Creates the temporary blob `tempPath` (see {@link temporaryPath}); it is renamed to its digest beside it. */
  static async create(tempPath: string, blockSizeBytes: number): Promise<BlobWriter> {
    const blobsDir = path.dirname(tempPath);
    await mkdir(blobsDir, { recursive: true });
    const fd = openSync(tempPath, 'wx+');
    return new BlobWriter(fd, tempPath, blobsDir, blockSizeBytes);
  }

  /**
   * Feeds the blob digest: the writer's caller passes each chunk's bytes (and padding) in blob
   * order, from the memory it already holds, rather than the writer reading back what it wrote.
   */
  updateDigest(bytes: Uint8Array): void {
    this.sha256.update(bytes);
  }

  /** Next free block, where the next chunk starts. */
  get nextBlkaddr(): number {
    return this.endBytes / this.blockSizeBytes;
  }

  /**
   * Writes bytes at `positionBytes` (≥ the committed end) without committing them. The running
   * digest only follows writes that extend the committed end in order.
   *
   * Writes go through a buffer of a few MiB: a layer of small files makes thousands of chunk
   * writes, and one system call per chunk cost more than the copy. A write behind the buffered
   * end replaces what follows it (a chunk written tentatively and taken back is overwritten).
   */
  writeAt(bytes: Uint8Array, positionBytes: number): void {
    const pendingEnd = this.pendingStartBytes + this.pendingBytes;
    if (positionBytes >= this.pendingStartBytes && positionBytes <= pendingEnd && positionBytes + bytes.length <= this.pendingStartBytes + this.pending.length) {
      this.pending.set(bytes, positionBytes - this.pendingStartBytes);
      this.pendingBytes = positionBytes - this.pendingStartBytes + bytes.length;
      return;
    }
    this.flushPending();
    if (bytes.length >= this.pending.length) {
      this.writeFully(bytes, positionBytes);
      this.pendingStartBytes = positionBytes + bytes.length;
      return;
    }
    this.pendingStartBytes = positionBytes;
    this.pending.set(bytes, 0);
    this.pendingBytes = bytes.length;
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

  /** Writes out what is buffered (before reading the file back or finishing it). */
  private flushPending(): void {
    if (this.pendingBytes === 0) return;
    this.writeFully(this.pending.subarray(0, this.pendingBytes), this.pendingStartBytes);
    this.pendingStartBytes += this.pendingBytes;
    this.pendingBytes = 0;
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
    this.flushPending();
    ftruncateSync(this.fd, this.endBytes);
    let digest: string;
    if (this.digestValid) {
      digest = this.sha256.digest('hex');
    } else {
      const hash = createHash('sha256');
      const buffer = Buffer.allocUnsafe(1 << 20);
      for (let pos = 0; pos < this.endBytes; ) {
        const bytesRead = readSync(this.fd, buffer, 0, Math.min(buffer.length, this.endBytes - pos), pos);
        if (bytesRead === 0) break;
        hash.update(buffer.subarray(0, bytesRead));
        pos += bytesRead;
      }
      digest = hash.digest('hex');
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
