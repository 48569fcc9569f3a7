import { rm } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import type { ChunkIndex } from '../format/chunk.js';
import type { ChunkSizePolicy, ChunkStats, ReadAt } from './chunker.js';
import { SourceChangedError } from './errors.js';
import type { RegularData } from './tree.js';
import { moduleUrl } from '../paths.js';
import { WORKER_RESOURCE_LIMITS, workerExecArgv } from '../util/worker.js';

/**
 * The chunking of a build on a thread of its own: BLAKE3 of each chunk, the lookup in the chunk
 * dictionary, the blob writes, the blob's SHA-256 and each file's content SHA-256 (its fingerprint
 * and object name). The main thread parses the source and builds the tree; it copies each file's
 * bytes once into a batch buffer and goes on; the file's chunk indexes and content digest come back
 * later (before the layer ends).
 *
 * Why: with the chunking on the main thread, the main thread was the bottleneck of a layer
 * conversion (hashing, copying and writing took as long as parsing), while the second core only
 * hashed. The content digest was on the main thread too until blob writes bypassed the page cache
 * (direct I/O): that left this thread with time to spare and the main thread as the one to wait for.
 *
 * One thread serves a whole build (every layer of every image): it reads the store's chunk
 * dictionary once, while the main thread starts on the sources, and keeps the chunks of each layer it
 * finishes, so later layers and images deduplicate against them.
 *
 * Protocol (messages in order): the main thread sends `layer`, then `batch`es (a buffer of file
 * bytes, in order, and the size and chunk size of each file whose bytes start there), then `end`.
 * The thread returns each batch buffer once its bytes are consumed, with the results of the files
 * completed so far; `layer` answers `end` with the blob; `persisted` follows when the blob is durable
 * under its name. `close` (no more layers) ends the thread once every blob is durable.
 */

export type ChunkThreadRequest =
  | { type: 'layer'; tempPath: string; blockSizeBytes: number; policy: ChunkSizePolicy }
  /** `files`: (sizeBytes, chunkBits) pairs; `used`: bytes of `buffer` that carry file data. */
  | { type: 'batch'; buffer: ArrayBuffer; used: number; files: Float64Array }
  | { type: 'end' }
  | { type: 'abort' }
  /** No more layers: the thread ends once its blobs are durable (their `persisted` replies sent). */
  | { type: 'close' };

/** An error as it crosses threads (Error objects lose their own properties on the way). */
export interface SerializedError {
  name: string;
  message: string;
  code?: string;
  syscall?: string;
  path?: string;
  errno?: number;
}

/**
 * Results of files, in the order they were sent. Per file: chunk bits, chunk count, then per chunk a
 * device code (0 a hole, 1 the current layer's blob, 2 + i the i-th blob of the blob table) and a
 * block address. `digests`: the content SHA-256 of each non-empty file among them, 32 bytes each.
 */
export interface PackedResults {
  results: Float64Array;
  digests: Uint8Array;
}

export type ChunkThreadReply =
  /** Blobs appended to the blob table (the store's, then each finished layer's). */
  | { type: 'blobs'; digests: string[] }
  | ({ type: 'batch'; buffer: ArrayBuffer } & PackedResults)
  | ({
      type: 'layer';
      /** `chunkList`: the blob's chunk list in the store's format (store.ts, ChunkListBuilder). */
      blob?: { digest: string; blocks: number; chunkList: Uint8Array };
      stats: ChunkStats;
    } & PackedResults)
  | { type: 'persisted'; digest: string; error?: SerializedError }
  | { type: 'failed'; error: SerializedError }
  | { type: 'aborted' };

export const DEVICE_CODE_HOLE = 0;
export const DEVICE_CODE_CURRENT_BLOB = 1;
export const DEVICE_CODE_FIRST_TABLE_BLOB = 2;

export function serializeError(error: unknown): SerializedError {
  if (!(error instanceof Error)) return { name: 'Error', message: String(error) };
  const { code, syscall, path, errno } = error as NodeJS.ErrnoException;
  return { name: error.name, message: error.message, ...(code === undefined ? {} : { code }), ...(syscall === undefined ? {} : { syscall }), ...(path === undefined ? {} : { path }), ...(errno === undefined ? {} : { errno }) };
}

function deserializeError(error: SerializedError): Error {
  const revived = new Error(error.message) as NodeJS.ErrnoException;
  revived.name = error.name;
  if (error.code !== undefined) revived.code = error.code;
  if (error.syscall !== undefined) revived.syscall = error.syscall;
  if (error.path !== undefined) revived.path = error.path;
  if (error.errno !== undefined) revived.errno = error.errno;
  return revived;
}

const BATCH_BYTES = 2 << 20;
const BUFFERS = 6;

/** What one layer gives back when it ends. */
export interface LayerChunks {
  /**
   * The layer's blob, when it wrote any new chunk; `persisted` settles when it is durable under its
   * name. `chunkList`: its chunks, as the store records them.
   */
  blob?: { digest: string; blocks: number; chunkList: Uint8Array; persisted: Promise<void> };
  stats: ChunkStats;
}

export interface LayerCallbacks {
  /** Device id (the image builder's slot) of a device code of a result. */
  deviceId(code: number, blobDigest: string | undefined): number;
  /** A non-empty file is chunked: its chunk indexes are in `data`; `digest` is its content SHA-256 (a view, valid during the call). */
  fileStored(data: Extract<RegularData, { kind: 'chunks' }>, digest: Buffer): void;
}

const NO_CHUNKS: ChunkIndex[] = [];

export class ChunkThread {
  private readonly worker: Worker;
  private readonly free: ArrayBuffer[] = [];
  private bufferWaiters: (() => void)[] = [];
  private batch: Buffer;
  private batchBytes = 0;
  private files: number[] = [];
  /** Files sent whose results have not come back, oldest first. */
  private pending: RegularData[] = [];
  private pendingHead = 0;
  private readonly blobTable: string[] = [];
  private callbacks: LayerCallbacks | undefined;
  private layerWaiter: { resolve: (layer: LayerChunks) => void; reject: (error: Error) => void } | undefined;
  private abortWaiter: (() => void) | undefined;
  private readonly persisting = new Map<string, { resolve: () => void; reject: (error: Error) => void }>();
  private failure: Error | undefined;
  private tempPath: string | undefined;
  private exited = false;
  private closing = false;
  /** Settles when the thread has ended (after {@link close}, once its blobs are durable). */
  readonly ended: Promise<void>;

  constructor(storeDir: string) {
    this.worker = new Worker(moduleUrl('build/chunkWorker.js'), { workerData: { storeDir }, execArgv: workerExecArgv(), resourceLimits: WORKER_RESOURCE_LIMITS });
    for (let i = 1; i < BUFFERS; i++) this.free.push(new ArrayBuffer(BATCH_BYTES));
    this.batch = Buffer.from(new ArrayBuffer(BATCH_BYTES));
    this.worker.on('message', (reply: ChunkThreadReply) => this.onReply(reply));
    this.worker.on('error', (error) => {
      // An uncaught error ends the thread.
      this.exited = true;
      this.fail(error);
    });
    this.ended = new Promise((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.on('exit', this.onExit);
  }

  private readonly onExit = (): void => {
    this.exited = true;
    // After `close` the thread ends by itself once its blobs are durable.
    if (this.closing && this.persisting.size === 0) return;
    this.fail(new Error('internal: the chunk thread exited'));
  };

  private onReply(reply: ChunkThreadReply): void {
    switch (reply.type) {
      case 'blobs':
        this.blobTable.push(...reply.digests);
        return;
      case 'batch':
        this.takeResults(reply);
        if (!this.closing) this.free.push(reply.buffer);
        for (const wake of this.bufferWaiters.splice(0)) wake();
        return;
      case 'layer': {
        this.takeResults(reply);
        let blob: LayerChunks['blob'];
        if (reply.blob !== undefined) {
          const { digest, blocks, chunkList } = reply.blob;
          const persisted = new Promise<void>((resolve, reject) => this.persisting.set(digest, { resolve, reject }));
          // Awaited by whoever names the blob; a failure is also seen there.
          persisted.catch(() => {});
          blob = { digest, blocks, chunkList, persisted };
        }
        this.tempPath = undefined;
        const waiter = this.layerWaiter;
        this.layerWaiter = undefined;
        waiter?.resolve({ ...(blob === undefined ? {} : { blob }), stats: reply.stats });
        return;
      }
      case 'persisted': {
        const waiter = this.persisting.get(reply.digest);
        this.persisting.delete(reply.digest);
        if (reply.error === undefined) waiter?.resolve();
        else waiter?.reject(deserializeError(reply.error));
        return;
      }
      case 'failed':
        this.fail(deserializeError(reply.error));
        return;
      case 'aborted':
        this.abortWaiter?.();
        this.abortWaiter = undefined;
        return;
    }
  }

  private takeResults({ results, digests }: PackedResults): void {
    const callbacks = this.callbacks;
    let at = 0;
    let digestAt = 0;
    while (at < results.length) {
      const data = this.pending[this.pendingHead++] as Extract<RegularData, { kind: 'chunks' }>;
      data.chunkBits = results[at++]!;
      const count = results[at++]!;
      const chunks: ChunkIndex[] = new Array(count);
      for (let i = 0; i < count; i++) {
        const code = results[at++]!;
        const blkaddr = results[at++]!;
        chunks[i] = code === DEVICE_CODE_HOLE ? { deviceId: 0, blkaddr: null } : { deviceId: callbacks!.deviceId(code, this.blobTable[code - DEVICE_CODE_FIRST_TABLE_BLOB]), blkaddr };
      }
      data.chunks = chunks;
      if (data.sizeBytes > 0) {
        callbacks!.fileStored(data, Buffer.from(digests.buffer, digests.byteOffset + digestAt, 32));
        digestAt += 32;
      }
    }
    if (this.pendingHead > 4096 && this.pendingHead * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.pendingHead);
      this.pendingHead = 0;
    }
  }

  /** Records the first failure and wakes every waiter (also on later calls: the thread may end after reporting). */
  private fail(error: Error): void {
    this.failure ??= error;
    const failure = this.failure;
    for (const wake of this.bufferWaiters.splice(0)) wake();
    this.layerWaiter?.reject(failure);
    this.layerWaiter = undefined;
    for (const waiter of this.persisting.values()) waiter.reject(failure);
    this.persisting.clear();
    this.abortWaiter?.();
    this.abortWaiter = undefined;
  }

  /** Starts a layer whose new chunks go into a blob created at `tempPath`. */
  beginLayer(tempPath: string, blockSizeBytes: number, policy: ChunkSizePolicy, callbacks: LayerCallbacks): void {
    if (this.failure !== undefined) throw this.failure;
    if (this.closing) throw new Error('internal: a layer began after the chunk thread was closed');
    this.callbacks = callbacks;
    this.tempPath = tempPath;
    this.worker.postMessage({ type: 'layer', tempPath, blockSizeBytes, policy } satisfies ChunkThreadRequest);
  }

  /**
   * Sends one file's bytes (read with `readAt`) to be chunked with chunks of `2^chunkBits` bytes.
   * The data object comes back at once; its chunk indexes are filled in before {@link endLayer}
   * resolves. A promise only when the read or a free batch buffer has to be waited for.
   */
  storeFile(sourcePath: string, readAt: ReadAt, sizeBytes: number, chunkBits: number): RegularData | Promise<RegularData> {
    if (this.failure !== undefined) throw this.failure;
    const data: RegularData = { kind: 'chunks', sizeBytes, chunkBits, chunks: NO_CHUNKS };
    this.pending.push(data);
    this.files.push(sizeBytes, chunkBits);
    if (sizeBytes === 0) return data;
    const copied = this.copy(sourcePath, readAt, sizeBytes, 0);
    return copied === undefined ? data : copied.then(() => data);
  }

  private copy(sourcePath: string, readAt: ReadAt, sizeBytes: number, doneBytes: number): Promise<void> | undefined {
    let done = doneBytes;
    while (done < sizeBytes) {
      if (this.batchBytes === BATCH_BYTES) {
        const flushing = this.flush();
        if (flushing !== undefined) return flushing.then(() => this.copy(sourcePath, readAt, sizeBytes, done));
      }
      const got = readAt(this.batch, this.batchBytes, Math.min(sizeBytes - done, BATCH_BYTES - this.batchBytes), done);
      if (typeof got !== 'number') {
        const before = done;
        return got.then((bytes) => {
          if (bytes === 0) throw new SourceChangedError(sourcePath, sizeBytes, before);
          this.batchBytes += bytes;
          return this.copy(sourcePath, readAt, sizeBytes, before + bytes);
        });
      }
      if (got === 0) throw new SourceChangedError(sourcePath, sizeBytes, done);
      this.batchBytes += got;
      done += got;
    }
    return undefined;
  }

  /** Sends what is batched; a promise only when every batch buffer is out and one must come back first. */
  private flush(): Promise<void> | undefined {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.files.length === 0 && this.batchBytes === 0) return undefined;
    const buffer = this.batch.buffer as ArrayBuffer;
    // A typed array crosses as one copy; a plain array would be cloned element by element.
    const files = Float64Array.from(this.files);
    this.worker.postMessage({ type: 'batch', buffer, used: this.batchBytes, files } satisfies ChunkThreadRequest, [buffer, files.buffer]);
    this.files = [];
    this.batchBytes = 0;
    const free = this.free.pop();
    if (free !== undefined) {
      this.batch = Buffer.from(free);
      return undefined;
    }
    return (async () => {
      while (this.free.length === 0 && this.failure === undefined) await new Promise<void>((resolve) => this.bufferWaiters.push(resolve));
      if (this.failure !== undefined) throw this.failure;
      this.batch = Buffer.from(this.free.pop()!);
    })();
  }

  /** Ends the layer: every file's chunks are in, and the blob (if any new chunk was written) is named. */
  async endLayer(): Promise<LayerChunks> {
    await this.flush();
    if (this.failure !== undefined) throw this.failure;
    const ended = new Promise<LayerChunks>((resolve, reject) => (this.layerWaiter = { resolve, reject }));
    this.worker.postMessage({ type: 'end' } satisfies ChunkThreadRequest);
    return ended;
  }

  /** Drops the current layer (after a failure): its temporary blob is removed. */
  async abortLayer(): Promise<void> {
    const tempPath = this.tempPath;
    this.tempPath = undefined;
    this.files = [];
    this.batchBytes = 0;
    if (tempPath !== undefined && !this.exited) {
      const aborted = new Promise<void>((resolve) => (this.abortWaiter = resolve));
      this.worker.postMessage({ type: 'abort' } satisfies ChunkThreadRequest);
      // Results of files the thread finished before the abort come first, for files still pending.
      await aborted;
    }
    // The files queued for the layer that got no results will get none.
    this.pending = [];
    this.pendingHead = 0;
    if (tempPath === undefined) return;
    // The thread removes it; when the thread died first, nothing else will.
    await rm(tempPath, { force: true });
  }

  /**
   * No more layers will come: the thread ends as soon as every blob it wrote is durable, and the
   * batch buffers are dropped. A build calls this before finishing its last image, which then plans
   * and emits its metadata without the thread's memory (its isolate, chunk dictionary and write
   * buffer; `bench/ab-build.sh` on a 1 GB layer: peak 266 → 230 MB).
   */
  close(): void {
    if (this.closing || this.exited) return;
    this.closing = true;
    this.free.length = 0;
    this.batch = Buffer.alloc(0);
    this.worker.postMessage({ type: 'close' } satisfies ChunkThreadRequest);
  }

  async dispose(): Promise<void> {
    this.worker.off('exit', this.onExit);
    await this.worker.terminate();
  }
}
