import { Worker } from 'node:worker_threads';

/**
 * The SHA-256 digests a layer needs, computed on a second thread: the blob's (its name in the
 * store) over every byte written to it, and each file's content digest (its fingerprint and object
 * name). Hashing both on the main thread cost as much as parsing, chunking and writing together,
 * and a machine has a second core for it.
 *
 * Bytes are gathered into batches of a few MiB with a list of what each run of bytes feeds (the
 * blob, the current file, or both: a new chunk is hashed into both without being copied twice).
 * Batch buffers go to the worker and come back (transferred, not copied), so a build reuses a few
 * buffers instead of allocating one per batch. Backpressure: when every buffer is out, `update`
 * waits for one to come back.
 */
const BATCH_BYTES = 2 << 20;
const BUFFERS = 4;

/** What a run of bytes in a batch feeds. */
const FEEDS_BLOB = 1;
const FEEDS_FILE = 2;
/** An op with no bytes: the current file is complete; its digest goes back with the batch. */
const END_FILE = 4;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
let blob = createHash('sha256');
let file = createHash('sha256');
parentPort.on('message', (message) => {
  if (message.blobDigest) {
    parentPort.postMessage({ blobDigest: blob.digest('hex') });
    blob = createHash('sha256');
    return;
  }
  const bytes = new Uint8Array(message.buffer);
  const ops = message.ops;
  const files = [];
  let at = 0;
  for (let i = 0; i < ops.length; i += 2) {
    const feeds = ops[i];
    const length = ops[i + 1];
    if (feeds === ${END_FILE}) {
      files.push(file.digest());
      file = createHash('sha256');
      continue;
    }
    const run = bytes.subarray(at, at + length);
    if (feeds & ${FEEDS_BLOB}) blob.update(run);
    if (feeds & ${FEEDS_FILE}) file.update(run);
    at += length;
  }
  parentPort.postMessage({ buffer: message.buffer, files }, [message.buffer]);
});
`;

export class HashWorker {
  private readonly worker = new Worker(WORKER_SOURCE, { eval: true });
  private readonly free: ArrayBuffer[] = [];
  private bufferWaiters: (() => void)[] = [];
  private batch: Uint8Array;
  private batchBytes = 0;
  private ops: number[] = [];
  /** Files ended but whose digest has not come back, oldest first. */
  private readonly fileWaiters: { resolve: (digest: Buffer) => void; reject: (error: Error) => void }[] = [];
  private blobDigestWaiter: ((digest: string) => void) | undefined;
  private failure: Error | undefined;
  private inFlight = 0;

  constructor() {
    for (let i = 1; i < BUFFERS; i++) this.free.push(new ArrayBuffer(BATCH_BYTES));
    this.batch = new Uint8Array(BATCH_BYTES);
    this.worker.on('message', (message: { buffer?: ArrayBuffer; files?: Uint8Array[]; blobDigest?: string }) => {
      if (message.blobDigest !== undefined) {
        this.blobDigestWaiter?.(message.blobDigest);
        this.blobDigestWaiter = undefined;
        return;
      }
      this.inFlight--;
      for (const digest of message.files ?? []) this.fileWaiters.shift()?.resolve(Buffer.from(digest.buffer, digest.byteOffset, digest.byteLength));
      if (message.buffer !== undefined) this.free.push(message.buffer);
      for (const wake of this.bufferWaiters.splice(0)) wake();
    });
    this.worker.on('error', (error) => {
      this.failure = error;
      for (const wake of this.bufferWaiters.splice(0)) wake();
      for (const waiter of this.fileWaiters.splice(0)) waiter.reject(error);
    });
  }

  /**
   * Feeds bytes to the blob digest, the current file's digest, or both (a copy is queued: the caller
   * may reuse its buffer at once). Returns a promise only when it has to wait for a batch buffer.
   */
  update(bytes: Uint8Array, blob: boolean, file: boolean, fromBytes = 0): Promise<void> | undefined {
    const feeds = (blob ? FEEDS_BLOB : 0) | (file ? FEEDS_FILE : 0);
    for (let at = fromBytes; at < bytes.length; ) {
      if (this.batchBytes === BATCH_BYTES) {
        const flushing = this.flush();
        if (flushing !== undefined) return flushing.then(() => this.update(bytes, blob, file, at));
      }
      const take = Math.min(bytes.length - at, BATCH_BYTES - this.batchBytes);
      this.batch.set(bytes.subarray(at, at + take), this.batchBytes);
      this.batchBytes += take;
      at += take;
      // Consecutive runs feeding the same digests are one op.
      const last = this.ops.length - 2;
      if (last >= 0 && this.ops[last] === feeds) this.ops[last + 1]! += take;
      else this.ops.push(feeds, take);
    }
    return undefined;
  }

  /** Ends the current file; resolves with its content SHA-256 once the worker has hashed it. */
  endFile(): Promise<Buffer> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    this.ops.push(END_FILE, 0);
    return new Promise((resolve, reject) => this.fileWaiters.push({ resolve, reject }));
  }

  /** Sends what is batched; returns a promise only when every batch buffer is out and one must come back first. */
  flush(): Promise<void> | undefined {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.ops.length === 0) return undefined;
    const buffer = this.batch.buffer as ArrayBuffer;
    // A typed array crosses to the worker as one copy; a plain array is cloned element by element.
    const ops = Int32Array.from(this.ops);
    this.ops = [];
    this.batchBytes = 0;
    this.inFlight++;
    this.worker.postMessage({ buffer, ops }, [buffer, ops.buffer]);
    const free = this.free.pop();
    if (free !== undefined) {
      this.batch = new Uint8Array(free);
      return undefined;
    }
    return (async () => {
      while (this.free.length === 0 && this.failure === undefined) await new Promise<void>((resolve) => this.bufferWaiters.push(resolve));
      if (this.failure !== undefined) throw this.failure;
      this.batch = new Uint8Array(this.free.pop()!);
    })();
  }

  /** Waits until every file ended so far has its digest. */
  async drain(): Promise<void> {
    await this.flush();
    while (this.inFlight > 0 && this.failure === undefined) await new Promise<void>((resolve) => this.bufferWaiters.push(resolve));
    if (this.failure !== undefined) throw this.failure;
  }

  /** The blob digest over everything fed to it so far; starts a new blob digest. */
  async blobDigestHex(): Promise<string> {
    await this.flush();
    if (this.failure !== undefined) throw this.failure;
    return new Promise<string>((resolve) => {
      this.blobDigestWaiter = resolve;
      this.worker.postMessage({ blobDigest: true });
    });
  }

  async dispose(): Promise<void> {
    await this.worker.terminate();
  }
}
