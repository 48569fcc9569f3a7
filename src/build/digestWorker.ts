import { Worker } from 'node:worker_threads';

/**
 * SHA-256 of a byte stream computed on another thread. A blob's digest (its name in the store and
 * in OCI layouts) covers every byte written, and hashing it on the main thread cost as much as
 * everything else the build does per byte; the machine has a second core for it.
 *
 * Bytes are gathered into batches of a few MiB before crossing to the worker: one message per
 * small chunk cost more than hashing it here. Backpressure: at most `maxInFlightBytes` wait for the
 * worker; `update` resolves once under.
 */
const BATCH_BYTES = 2 << 20;
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const hash = createHash('sha256');
parentPort.on('message', (message) => {
  if (message === 'digest') { parentPort.postMessage({ digest: hash.digest('hex') }); return; }
  hash.update(new Uint8Array(message));
  parentPort.postMessage({ done: message.byteLength });
});
`;

export class ThreadedSha256 {
  private readonly worker = new Worker(WORKER_SOURCE, { eval: true });
  private inFlightBytes = 0;
  private waiters: (() => void)[] = [];
  private digestWaiter: ((digest: string) => void) | undefined;
  private failure: Error | undefined;
  private batch = new Uint8Array(BATCH_BYTES);
  private batchBytes = 0;

  constructor(private readonly maxInFlightBytes = 8 << 20) {
    this.worker.on('message', (message: { done?: number; digest?: string }) => {
      if (message.digest !== undefined) {
        this.digestWaiter?.(message.digest);
        return;
      }
      this.inFlightBytes -= message.done ?? 0;
      if (this.inFlightBytes <= this.maxInFlightBytes) for (const wake of this.waiters.splice(0)) wake();
    });
    this.worker.on('error', (error) => {
      this.failure = error;
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  /** Queues a copy of `bytes` (the caller may reuse its buffer at once). */
  async update(bytes: Uint8Array): Promise<void> {
    if (this.failure !== undefined) throw this.failure;
    for (let at = 0; at < bytes.length; ) {
      const take = Math.min(bytes.length - at, BATCH_BYTES - this.batchBytes);
      this.batch.set(bytes.subarray(at, at + take), this.batchBytes);
      this.batchBytes += take;
      at += take;
      if (this.batchBytes === BATCH_BYTES) await this.flush();
    }
  }

  private async flush(): Promise<void> {
    if (this.batchBytes === 0) return;
    const full = this.batch.buffer.slice(0, this.batchBytes);
    this.batchBytes = 0;
    this.inFlightBytes += full.byteLength;
    this.worker.postMessage(full, [full]);
    while (this.inFlightBytes > this.maxInFlightBytes && this.failure === undefined) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    if (this.failure !== undefined) throw this.failure;
  }

  async digestHex(): Promise<string> {
    await this.flush();
    const digest = await new Promise<string>((resolve) => {
      this.digestWaiter = resolve;
      this.worker.postMessage('digest');
    });
    await this.worker.terminate();
    return digest;
  }

  async dispose(): Promise<void> {
    await this.worker.terminate();
  }
}
