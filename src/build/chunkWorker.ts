import { parentPort, workerData } from 'node:worker_threads';
import type { ChunkIndex } from '../format/chunk.js';
import { readChunkDictionary } from '../store/store.js';
import { BlobWriter } from './blob.js';
import { Chunker, type ChunkDictionary, type ChunkSizePolicy, type ReadAt, type ViewNext } from './chunker.js';
import { createSha256 } from './sha256.js';
import {
  DEVICE_CODE_CURRENT_BLOB,
  DEVICE_CODE_FIRST_TABLE_BLOB,
  DEVICE_CODE_HOLE,
  serializeError,
  type ChunkThreadReply,
  type ChunkThreadRequest,
} from './chunkThread.js';

/** Body of {@link ChunkThread} (see there for the protocol). */

const port = parentPort!;
const { storeDir } = workerData as { storeDir: string };
const post = (reply: ChunkThreadReply, transfer: ArrayBuffer[] = []) => port.postMessage(reply, transfer);

// The chunk dictionary of the build: the store's chunks, then those of each layer this thread
// finished. Blobs are numbered in a table the main thread mirrors (sent in `blobs` messages).
const blobTable = new Map<string, number>();
let newBlobs: string[] = [];
const stored = new Map<string, { blob: number; blkaddr: number }>();
function tableIndex(digest: string): number {
  let index = blobTable.get(digest);
  if (index === undefined) {
    index = blobTable.size;
    blobTable.set(digest, index);
    newBlobs.push(digest);
  }
  return index;
}
function remember(key: string, digest: string, blkaddr: number): void {
  if (!stored.has(key)) stored.set(key, { blob: tableIndex(digest), blkaddr });
}
/** Posts a reply, announcing first any blob its results may refer to. */
function postWithTable(reply: ChunkThreadReply, transfer: ArrayBuffer[] = []): void {
  if (newBlobs.length > 0) {
    post({ type: 'blobs', digests: newBlobs });
    newBlobs = [];
  }
  post(reply, transfer);
}

// Work in order: layer starts, files (size, chunk bits), layer ends. File bytes queue separately.
type WorkItem = { type: 'layer'; tempPath: string; blockSizeBytes: number; policy: ChunkSizePolicy } | { type: 'file'; sizeBytes: number; chunkBits: number } | { type: 'end' } | { type: 'close' };
let work: WorkItem[] = [];
let workHead = 0;
interface Batch {
  buffer: ArrayBuffer;
  bytes: Buffer;
  at: number;
  end: number;
}
const batches: Batch[] = [];
let wake: (() => void) | undefined;
/** Set by an `abort` message: the current layer stops at its next wait. */
let aborting = false;

class LayerAborted extends Error {}

function wakeUp(): void {
  const resume = wake;
  wake = undefined;
  resume?.();
}

function waitForInput(): Promise<void> {
  if (aborting) return Promise.reject(new LayerAborted());
  return new Promise<void>((resolve, reject) => {
    wake = () => (aborting ? reject(new LayerAborted()) : resolve());
  });
}

port.on('message', (request: ChunkThreadRequest) => {
  switch (request.type) {
    case 'batch': {
      for (let i = 0; i < request.files.length; i += 2) work.push({ type: 'file', sizeBytes: request.files[i]!, chunkBits: request.files[i + 1]! });
      if (request.used > 0) batches.push({ buffer: request.buffer, bytes: Buffer.from(request.buffer), at: 0, end: request.used });
      else returnBuffer(request.buffer);
      break;
    }
    case 'layer':
    case 'end':
    case 'close':
      work.push(request);
      break;
    case 'abort':
      aborting = true;
      if (!layerRunning) {
        // Nothing in progress: drop what was queued for the layer.
        dropQueuedInput();
        aborting = false;
        post({ type: 'aborted' });
      }
      break;
  }
  wakeUp();
});

async function nextWork(): Promise<WorkItem> {
  while (workHead === work.length) await waitForInput();
  const item = work[workHead++]!;
  if (workHead > 4096 && workHead * 2 > work.length) {
    work = work.slice(workHead);
    workHead = 0;
  }
  return item;
}

// Results of completed files, sent back with the next returned buffer or the layer's end.
let results: number[] = [];
let digests: Buffer[] = [];
function takeResults(): { results: Float64Array; digests: Uint8Array } {
  // Its own ArrayBuffer (not Buffer's pool, which a message would copy whole).
  const packedDigests = new Uint8Array(digests.length * 32);
  for (let i = 0; i < digests.length; i++) packedDigests.set(digests[i]!, i * 32);
  const packed = { results: Float64Array.from(results), digests: packedDigests };
  results = [];
  digests = [];
  return packed;
}
function returnBuffer(buffer: ArrayBuffer): void {
  const packed = takeResults();
  postWithTable({ type: 'batch', buffer, ...packed }, [buffer, packed.results.buffer as ArrayBuffer]);
}

/** A batch whose last bytes were handed out as a view: returned at the next read, when they are no longer used. */
let heldBatch: Batch | undefined;
function releaseHeld(): void {
  if (heldBatch === undefined) return;
  returnBuffer(heldBatch.buffer);
  heldBatch = undefined;
}

const readAt: ReadAt = (target, offsetInBuffer, lengthBytes) => {
  releaseHeld();
  for (;;) {
    const head = batches[0];
    if (head === undefined) return waitForInput().then(() => readAt(target, offsetInBuffer, lengthBytes, 0));
    const take = Math.min(lengthBytes, head.end - head.at);
    head.bytes.copy(target, offsetInBuffer, head.at, head.at + take);
    head.at += take;
    if (head.at === head.end) {
      batches.shift();
      returnBuffer(head.buffer);
    }
    if (take > 0) return take;
  }
};

/** Most chunks lie within one batch: the chunker then hashes and writes them from it, uncopied. */
const viewNext: ViewNext = (lengthBytes) => {
  releaseHeld();
  const head = batches[0];
  if (head === undefined || head.end - head.at < lengthBytes) return undefined;
  const view = head.bytes.subarray(head.at, head.at + lengthBytes);
  head.at += lengthBytes;
  if (head.at === head.end) heldBatch = batches.shift();
  return view;
};

/** The content SHA-256 of the file being chunked (the chunker feeds it every byte, in order). */
const content = createSha256();

/** Drops what is queued: after a failure or an abort, all of it belongs to the layer dropped (the main thread starts no other layer before the abort is answered). */
function dropQueuedInput(): void {
  releaseHeld();
  work = [];
  workHead = 0;
  for (const batch of batches.splice(0)) returnBuffer(batch.buffer);
}

let layerRunning = false;
/** Background persistence of finished blobs, until each has posted its `persisted` reply. */
const blobsPersisting = new Set<Promise<void>>();

async function runLayer(start: Extract<WorkItem, { type: 'layer' }>): Promise<void> {
  let writer: BlobWriter;
  try {
    writer = await BlobWriter.create(start.tempPath, start.blockSizeBytes);
  } catch (error) {
    await failed(error);
    return;
  }
  const local = new Map<string, ChunkIndex>();
  const dictionary: ChunkDictionary = {
    get: (key) => {
      const here = local.get(key);
      if (here !== undefined) return here;
      const found = stored.get(key);
      return found === undefined ? undefined : { deviceId: DEVICE_CODE_FIRST_TABLE_BLOB + found.blob, blkaddr: found.blkaddr };
    },
    set: (key, index) => void local.set(key, index),
  };
  const chunker = new Chunker(writer, DEVICE_CODE_CURRENT_BLOB, dictionary, start.policy);
  try {
    for (;;) {
      const item = await nextWork();
      if (item.type === 'end') break;
      if (item.type === 'layer' || item.type === 'close') throw new Error(`internal: ${item.type} before the layer ended`);
      const data = await chunker.chunkFile('', readAt, item.sizeBytes, item.chunkBits, viewNext, content);
      if (data.kind !== 'chunks') throw new Error('internal: chunker returned inline data');
      if (item.sizeBytes > 0) digests.push(content.digest());
      results.push(data.chunkBits, data.chunks.length);
      for (const chunk of data.chunks) results.push(chunk.blkaddr === null ? DEVICE_CODE_HOLE : chunk.deviceId, chunk.blkaddr ?? 0);
    }
    releaseHeld();
    if (writer.lengthBlocks === 0) {
      await writer.abort();
      const packed = takeResults();
      postWithTable({ type: 'layer', stats: chunker.stats, ...packed });
      return;
    }
    const blob = await writer.finish();
    for (const chunk of chunker.written) remember(chunk.key, blob.digest, chunk.blkaddr);
    const packed = takeResults();
    const chunkList = chunker.chunkList.take();
    postWithTable({ type: 'layer', blob: { digest: blob.digest, blocks: blob.blocks, chunkList }, stats: chunker.stats, ...packed }, [chunkList.buffer as ArrayBuffer]);
    // Durable in the background: the next layer goes on meanwhile.
    const persisting = blob.persisted.then(
      () => post({ type: 'persisted', digest: blob.digest }),
      async (error: unknown) => {
        await writer.abort();
        post({ type: 'persisted', digest: blob.digest, error: serializeError(error) });
      },
    );
    blobsPersisting.add(persisting);
    const settled = () => void blobsPersisting.delete(persisting);
    persisting.then(settled, settled);
  } catch (error) {
    await writer.abort();
    results = [];
    digests = [];
    // Ends the digest of the file that failed midway, so the next layer's first file starts clean.
    content.digest();
    if (!(error instanceof LayerAborted)) await failed(error);
  }
}

/** Reports a layer's failure, then waits for the main thread's abort, dropping what it still sends for the layer. */
async function failed(error: unknown): Promise<void> {
  post({ type: 'failed', error: serializeError(error) });
  while (!aborting) {
    dropQueuedInput();
    await new Promise<void>((resolve) => (wake = resolve));
  }
}

async function main(): Promise<void> {
  await readChunkDictionary(storeDir, (blobDigest, key, blkaddr) => remember(key, blobDigest, blkaddr)).catch((error: unknown) => {
    post({ type: 'failed', error: serializeError(error) });
    throw error;
  });
  for (;;) {
    let item: WorkItem;
    try {
      item = await nextWork();
    } catch {
      // An abort with nothing running was answered by the message handler.
      continue;
    }
    if (item.type === 'close') {
      // Every blob's `persisted` reply goes out first; closing the port then ends the thread.
      await Promise.allSettled(blobsPersisting);
      port.close();
      return;
    }
    if (item.type !== 'layer') continue;
    layerRunning = true;
    await runLayer(item);
    layerRunning = false;
    if (aborting) {
      dropQueuedInput();
      aborting = false;
      post({ type: 'aborted' });
    }
  }
}

void main();
