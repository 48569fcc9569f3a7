import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { ThreadedSha256 } from './digestWorker.js';
import path from 'node:path';

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
  private sha256: ThreadedSha256 | null = new ThreadedSha256();
  private closed = false;

  private constructor(
    private readonly fd: number,
    readonly tempPath: string,
    readonly blobsDir: string,
    readonly blockSizeBytes: number,
  ) {}

  /** Opens a temporary blob inside `<storeDir>/blobs/sha256`. */
  static async create(storeDir: string, blockSizeBytes: number): Promise<BlobWriter> {
    const blobsDir = path.join(storeDir, 'blobs', 'sha256');
    await mkdir(blobsDir, { recursive: true });
    const tempPath = path.join(blobsDir, `.tmp-blob-${process.pid}-${randomBytes(6).toString('hex')}`);
    const fd = openSync(tempPath, 'wx+');
    return new BlobWriter(fd, tempPath, blobsDir, blockSizeBytes);
  }

  /** Next free block, where the next chunk starts. */
  get nextBlkaddr(): number {
    return this.endBytes / this.blockSizeBytes;
  }

  /**
   * Writes bytes at `positionBytes` (≥ the committed end) without committing them. The running
   * digest only follows writes that extend the committed end in order.
   */
  async writeAt(bytes: Uint8Array, positionBytes: number): Promise<void> {
    let written = 0;
    while (written < bytes.length) {
      written += writeSync(this.fd, bytes, written, bytes.length - written, positionBytes + written);
    }
  }

  /**
   * Commits a chunk written at the current end: `dataBytes` of data (already written and fed to
   * `updateDigest`), padded here with zeros to a whole block when it is not one already.
   */
  async commitChunk(dataBytes: number): Promise<number> {
    const blkaddr = this.nextBlkaddr;
    const padded = Math.ceil(dataBytes / this.blockSizeBytes) * this.blockSizeBytes;
    if (padded > dataBytes) {
      const zeros = Buffer.alloc(padded - dataBytes);
      await this.writeAt(zeros, this.endBytes + dataBytes);
      await this.sha256?.update(zeros);
    }
    this.endBytes += padded;
    return blkaddr;
  }

  /** Feeds chunk bytes being written at the end to the blob digest, in order. */
  async updateDigest(bytes: Uint8Array): Promise<void> {
    await this.sha256?.update(bytes);
  }

  /** A tentatively written chunk was dropped after some of it reached the digest: recompute at the end. */
  invalidateDigest(): void {
    void this.sha256?.dispose();
    this.sha256 = null;
  }

  /** Size written so far, in blocks. */
  get lengthBlocks(): number {
    return this.endBytes / this.blockSizeBytes;
  }

  /** Truncates to the committed end, fsyncs, names the blob by its sha256 and returns it. */
  async finish(): Promise<{ path: string; digest: string; sizeBytes: number; blocks: number }> {
    ftruncateSync(this.fd, this.endBytes);
    let digest: string;
    if (this.sha256 !== null) {
      digest = await this.sha256.digestHex();
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
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.closed = true;
    const finalPath = path.join(this.blobsDir, digest);
    await rename(this.tempPath, finalPath);
    return { path: finalPath, digest, sizeBytes: this.endBytes, blocks: this.lengthBlocks };
  }

  /** Drops the temporary file (a failed build leaves nothing behind). */
  async abort(): Promise<void> {
    await this.sha256?.dispose();
    this.sha256 = null;
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
