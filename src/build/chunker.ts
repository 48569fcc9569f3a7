import { Blake3Hasher, blake3 } from '@napi-rs/blake-hash';
import type { ChunkIndex } from '../format/chunk.js';
import { ChunkListBuilder, chunkKey } from '../store/store.js';
import type { BlobWriter } from './blob.js';
import { SourceChangedError } from './errors.js';
import type { Sha256 } from './sha256.js';
import type { RegularData } from './tree.js';

/** Chunk digest (BLAKE3 and length) to where that chunk is already stored. */
export interface ChunkDictionary {
  get(key: string): ChunkIndex | undefined;
  set(key: string, index: ChunkIndex): void;
}

/**
 * Positional reads of one source file: how many bytes were read (0 at the end), as a number when
 * they were at hand (a file read, bytes already buffered) so the caller need not wait a turn.
 */
export type ReadAt = (buffer: Buffer, offsetInBuffer: number, lengthBytes: number, positionBytes: number) => number | Promise<number>;

/**
 * Optionally, the next `lengthBytes` bytes of a file without a copy, when they lie together in memory
 * (else undefined, and nothing is consumed). The bytes stay valid until the next read or view.
 */
export type ViewNext = (lengthBytes: number) => Buffer | undefined;

/**
 * Per-file chunk size policy. `fixed`: every file uses the base chunk size. `tune`: a file none of
 * whose chunks was already stored (nothing to deduplicate, no holes) becomes one chunk covering the
 * whole file, the smallest power of two that holds it: its data is then contiguous in one blob and
 * eligible for page cache sharing. Files that deduplicate keep the base size.
 */
export type ChunkSizePolicy = 'tune' | 'fixed';

/** A chunk this chunker wrote into its blob: what the store's chunk dictionary records. */
export interface WrittenChunk {
  key: string;
  blkaddr: number;
}

/** The largest chunk the format can describe: 2^31 blocks. */
const MAX_CHUNK_BLKBITS_ABOVE_BLOCK = 31;

export interface ChunkStats {
  chunksWritten: number;
  chunksReused: number;
  holeChunks: number;
  bytesWritten: number;
  bytesReused: number;
}


/** Chunks up to this size are read whole into memory; larger ones stream through in pieces. */
const WHOLE_CHUNK_LIMIT_BYTES = 4 << 20;
const ZEROS = Buffer.alloc(WHOLE_CHUNK_LIMIT_BYTES);

function isAllZero(bytes: Buffer): boolean {
  return bytes.equals(ZEROS.subarray(0, bytes.length));
}

/**
 * Splits files into fixed-size chunks, stores each new chunk once in the blob, and answers with the
 * file's chunk indexes. All-zero chunks become holes (they read as zeros and take no blob space),
 * as erofs-utils 1.8+ does.
 */
export class Chunker {
  readonly stats: ChunkStats = { chunksWritten: 0, chunksReused: 0, holeChunks: 0, bytesWritten: 0, bytesReused: 0 };
  /** Chunks written into the blob, in order, for the store's dictionary. */
  readonly written: WrittenChunk[] = [];
  /** The same chunks as the blob's chunk list in the store's format. */
  readonly chunkList = new ChunkListBuilder();
  private readonly buffer = Buffer.allocUnsafe(WHOLE_CHUNK_LIMIT_BYTES);
  private readonly blockSizeBits: number;

  constructor(
    private readonly blob: BlobWriter,
    private readonly deviceId: number,
    private readonly dictionary: ChunkDictionary = new Map(),
    private readonly policy: ChunkSizePolicy = 'fixed',
  ) {
    this.blockSizeBits = Math.log2(blob.blockSizeBytes);
  }

  /**
   * Chunks one file. `content`, when given, takes every byte of the file in order (its content
   * digest): a new chunk's bytes go into it and into the blob digest in one pass.
   */
  async chunkFile(sourcePath: string, readAt: ReadAt, sizeBytes: number, chunkBits: number, viewNext?: ViewNext, content?: Sha256): Promise<RegularData> {
    const chunkSizeBytes = 2 ** chunkBits;
    const chunks: ChunkIndex[] = [];
    const firstNewBlkaddr = this.blob.nextBlkaddr;
    const writtenBefore = this.stats.chunksWritten;
    for (let offset = 0; offset < sizeBytes; offset += chunkSizeBytes) {
      const lengthBytes = Math.min(chunkSizeBytes, sizeBytes - offset);
      chunks.push(
        lengthBytes <= WHOLE_CHUNK_LIMIT_BYTES
          ? await this.wholeChunk(sourcePath, readAt, offset, lengthBytes, viewNext, content)
          : await this.streamedChunk(sourcePath, readAt, offset, lengthBytes, content),
      );
    }
    // Every chunk new (none reused, no hole): the chunks sit back to back in the blob, each full one
    // a whole number of blocks, so one chunk from the first block maps the same bytes.
    const allNew = chunks.length > 0 && this.stats.chunksWritten - writtenBefore === chunks.length;
    if (this.policy === 'tune' && allNew) {
      const wholeFileBits = Math.max(this.blockSizeBits, Math.ceil(Math.log2(sizeBytes)));
      if (wholeFileBits <= this.blockSizeBits + MAX_CHUNK_BLKBITS_ABOVE_BLOCK) {
        return { kind: 'chunks', sizeBytes, chunkBits: wholeFileBits, chunks: [{ deviceId: this.deviceId, blkaddr: firstNewBlkaddr }] };
      }
    }
    return { kind: 'chunks', sizeBytes, chunkBits, chunks };
  }

  /** Fills `target`; synchronous (undefined) while the reads are, a promise once one is not. */
  private readFully(sourcePath: string, readAt: ReadAt, target: Buffer, positionBytes: number, expectedTotal: number, doneBytes = 0): Promise<void> | undefined {
    let done = doneBytes;
    while (done < target.length) {
      const got = readAt(target, done, target.length - done, positionBytes + done);
      if (typeof got !== 'number') {
        const before = done;
        return got.then((bytes) => {
          if (bytes === 0) throw new SourceChangedError(sourcePath, expectedTotal, positionBytes + before);
          return this.readFully(sourcePath, readAt, target, positionBytes, expectedTotal, before + bytes);
        });
      }
      if (got === 0) throw new SourceChangedError(sourcePath, expectedTotal, positionBytes + done);
      done += got;
    }
    return undefined;
  }

  private async wholeChunk(sourcePath: string, readAt: ReadAt, offset: number, lengthBytes: number, viewNext?: ViewNext, content?: Sha256): Promise<ChunkIndex> {
    let bytes = viewNext?.(lengthBytes);
    if (bytes === undefined) {
      bytes = this.buffer.subarray(0, lengthBytes);
      const reading = this.readFully(sourcePath, readAt, bytes, offset, offset + lengthBytes);
      if (reading !== undefined) await reading;
    }
    if (isAllZero(bytes)) {
      content?.update(bytes);
      this.stats.holeChunks++;
      return { deviceId: 0, blkaddr: null };
    }
    const digest = blake3(bytes);
    const key = chunkKey(digest, lengthBytes);
    const known = this.dictionary.get(key);
    if (known !== undefined) {
      content?.update(bytes);
      this.stats.chunksReused++;
      this.stats.bytesReused += lengthBytes;
      return known;
    }
    // Data, then its zero padding to the block.
    const paddedBytes = Math.ceil(lengthBytes / this.blob.blockSizeBytes) * this.blob.blockSizeBytes;
    const start = this.blob.nextBlkaddr * this.blob.blockSizeBytes;
    this.blob.writeAt(bytes, start);
    this.blob.updateDigest(bytes, content);
    if (paddedBytes > lengthBytes) {
      const padding = ZEROS.subarray(0, paddedBytes - lengthBytes);
      this.blob.writeAt(padding, start + lengthBytes);
      this.blob.updateDigest(padding);
    }
    const index = { deviceId: this.deviceId, blkaddr: this.blob.commitChunk(paddedBytes) };
    this.dictionary.set(key, index);
    this.written.push({ key, blkaddr: index.blkaddr });
    this.chunkList.add(digest, lengthBytes, index.blkaddr);
    this.stats.chunksWritten++;
    this.stats.bytesWritten += lengthBytes;
    return index;
  }

  /** A chunk too large to hold: written tentatively while hashed, taken back if it was known. */
  private async streamedChunk(sourcePath: string, readAt: ReadAt, offset: number, lengthBytes: number, content?: Sha256): Promise<ChunkIndex> {
    const hasher = new Blake3Hasher();
    const start = this.blob.nextBlkaddr * this.blob.blockSizeBytes;
    let allZero = true;
    for (let done = 0; done < lengthBytes; ) {
      const piece = this.buffer.subarray(0, Math.min(WHOLE_CHUNK_LIMIT_BYTES, lengthBytes - done));
      await this.readFully(sourcePath, readAt, piece, offset + done, offset + lengthBytes);
      hasher.update(piece);
      if (allZero && !isAllZero(piece)) allZero = false;
      this.blob.writeAt(piece, start + done);
      // Tentatively into the blob digest too: if the chunk is dropped, the blob digest is invalidated.
      this.blob.updateDigest(piece, content);
      done += piece.length;
    }
    if (allZero) {
      this.blob.invalidateDigest();
      this.stats.holeChunks++;
      return { deviceId: 0, blkaddr: null };
    }
    const digest = hasher.digestBuffer();
    const key = chunkKey(digest, lengthBytes);
    const known = this.dictionary.get(key);
    if (known !== undefined) {
      this.blob.invalidateDigest();
      this.stats.chunksReused++;
      this.stats.bytesReused += lengthBytes;
      return known;
    }
    const index = { deviceId: this.deviceId, blkaddr: this.blob.commitChunk(lengthBytes) };
    this.dictionary.set(key, index);
    this.written.push({ key, blkaddr: index.blkaddr });
    this.chunkList.add(digest, lengthBytes, index.blkaddr);
    this.stats.chunksWritten++;
    this.stats.bytesWritten += lengthBytes;
    return index;
  }
}
