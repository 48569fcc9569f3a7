import { createHash } from 'node:crypto';
import { addToSharingClasses, sharingEligibility, type SharingClass } from '../format/eligibility.js';
import type { ChunkStore } from '../store/store.js';
import { BlobWriter } from './blob.js';
import type { ChunkSizePolicy, ChunkStats, ReadAt } from './chunker.js';
import { DEVICE_CODE_CURRENT_BLOB, type ChunkThread } from './chunkThread.js';
import { FINGERPRINT_XATTR_NAME } from '../format/constants.js';
import { FINGERPRINT_IMAGE_OPTIONS, fingerprintValues } from './fingerprint.js';
import { OVERLAY_METACOPY_XATTR, OVERLAY_REDIRECT_XATTR, buildObjectIndex, objectPathValues, type ObjectEntry } from './objectIndex.js';
import { emitMetadataImage, planMetadataImage, setVolumeUuid, type MetadataImageOptions } from './metadata.js';
import { regularSizeBytes, type DirNode, type RegNode, type RegularData, type TreeNode } from './tree.js';

/** The metacopy xattr's value, shared by every file that carries it (nothing writes into it). */
const EMPTY_VALUE = Buffer.alloc(0);
/** Chunk indexes standing for data inline in the metadata image (device 0), for its sharing verdict. */
const INLINE_DATA = [{ deviceId: 0, blkaddr: 0 }];
const NOT_IN_OBJECT_INDEX = { eligible: false, reason: 'not in the object index of its blob' } as const;

export interface ImageBuilderOptions {
  blockSizeBits: number;
  chunkBits: number;
  policy: ChunkSizePolicy;
  fingerprints: boolean;
  signal?: AbortSignal;
  onProgress?: (progress: { files: number; bytes: number }) => void;
}

/** Per size class: how many files and bytes can share page cache, and why the others cannot. */
export type EligibilityClass = SharingClass;

export interface ImageStats {
  chunks: ChunkStats & { dedupRatio: number };
  /** Files stored as one chunk covering the whole file (small files, and the tune policy). */
  singleChunkFiles: number;
  sharing: Record<string, EligibilityClass>;
}

/** A blob device of the image being built: a finished blob in the store, or the current layer's. */
interface BlobSlot {
  digest?: string;
  /** Written by this build (a layer's new blob), not found in the store. */
  fresh: boolean;
  /** Size of a blob this build wrote (store blobs are measured on disk). */
  blocks?: number;
}

/** What the sink of one layer gives back for each regular file. */
export interface StoredFile {
  data: RegularData;
  xattrs: [string, Buffer][];
}

/**
 * Builds one image: each layer's new chunks go into that layer's blob in the store; chunks the store
 * already holds (earlier layers, earlier builds) are referenced where they are. Device ids are
 * provisional (one slot per blob met) until `finish`, which keeps only blobs the tree references,
 * in the order they were met, and renumbers the chunk indexes.
 */
export class ImageBuilder {
  private readonly slots: BlobSlot[] = [];
  private readonly slotOfDigest = new Map<string, number>();
  private readonly stats: ChunkStats = { chunksWritten: 0, chunksReused: 0, holeChunks: 0, bytesWritten: 0, bytesReused: 0 };
  private files = 0;
  private bytes = 0;
  /**
   * Content sha256 (hex) of each stored file's data, for object names and fingerprints. Only the
   * hex string is kept: a digest Buffer per file besides cost about 230 bytes (its own ArrayBuffer).
   */
  private readonly contentOf = new WeakMap<RegularData, string>();
  /** Object digests of the blobs this build wrote (store blobs' lists are read at finish). */
  private readonly objectsOfDigest = new Map<string, Set<string>>();
  /** Blobs being made durable in the background, with their chunk lists and object indexes. */
  private readonly persisting: Promise<void>[] = [];
  /**
   * Object indexes of finished layers, built on this thread when the image is finished, before its
   * metadata is planned: the store then writes and syncs them (and the blobs' chunk lists) while the
   * image is planned and emitted, rather than after it, and the image's planning runs warm from
   * theirs. A thread of their own cost more (its start-up, and planning at the same time as the
   * image took both cores from the image) than building them here; while later layers stream they
   * would take the main thread from them.
   */
  private readonly objectIndexJobs: (() => void)[] = [];

  constructor(
    private readonly store: ChunkStore,
    /** The build's chunking thread, shared by its images. */
    private readonly chunks: ChunkThread,
    private readonly options: ImageBuilderOptions,
  ) {}

  private slotFor(digest: string): number {
    let slot = this.slotOfDigest.get(digest);
    if (slot === undefined) {
      this.slots.push({ digest, fresh: false });
      slot = this.slots.length;
      this.slotOfDigest.set(digest, slot);
    }
    return slot;
  }

  /**
   * Runs `fill` with a sink that stores regular files of one layer, then completes that layer's blob
   * (renamed to its digest, its chunk list recorded in the store) or drops it if nothing new was
   * written. On failure the partial blob is removed.
   */
  async layer<T>(fill: (store: (sourcePath: string, readAt: ReadAt, sizeBytes: number) => StoredFile | Promise<StoredFile>) => Promise<T>): Promise<T> {
    const slot: BlobSlot = { fresh: true };
    this.slots.push(slot);
    const currentSlot = this.slots.length;
    // Objects of this layer's blob: its files whose data lies wholly in it. Gathered as each file's
    // chunks come back, while the layer streams and every thread has work, rather than in a pass
    // after the layer's end, when the rest of the build waits for this thread alone.
    const objects = new Map<string, ObjectEntry>();
    const chunks = this.chunks;
    chunks.beginLayer(BlobWriter.temporaryPath(this.store.blobsDir), 2 ** this.options.blockSizeBits, this.options.policy, {
      deviceId: (code, blobDigest) => (code === DEVICE_CODE_CURRENT_BLOB ? currentSlot : this.slotFor(blobDigest!)),
      fileStored: (data, digest) => {
        const hex = digest.toString('hex');
        this.contentOf.set(data, hex);
        const verdict = sharingEligibility(data.chunks, data.sizeBytes);
        if (!verdict.eligible || verdict.deviceId !== currentSlot || objects.has(hex)) return;
        // The index's chunks are on its device 1: the file's own when this layer's slot is 1 already.
        const chunks = currentSlot === 1 ? data.chunks : data.chunks.map((c) => (c.blkaddr === null ? c : { deviceId: 1, blkaddr: c.blkaddr }));
        objects.set(hex, { contentSha256Hex: hex, sizeBytes: data.sizeBytes, chunkBits: data.chunkBits, chunks });
      },
    });
    try {
      const result = await fill((sourcePath, readAt, sizeBytes) => {
        this.options.signal?.throwIfAborted();
        const stored = chunks.storeFile(sourcePath, readAt, sizeBytes, this.options.chunkBits);
        this.files++;
        this.bytes += sizeBytes;
        this.options.onProgress?.({ files: this.files, bytes: this.bytes });
        // Chunk indexes arrive later; fingerprints are added by finish().
        return stored instanceof Promise ? stored.then((data) => ({ data, xattrs: [] })) : { data: stored, xattrs: [] };
      });
      this.options.signal?.throwIfAborted();
      const ended = await chunks.endLayer();
      const blob = ended.blob;
      if (blob !== undefined) {
        slot.digest = blob.digest;
        slot.blocks = blob.blocks;
        if (!this.slotOfDigest.has(blob.digest)) this.slotOfDigest.set(blob.digest, currentSlot);
        const digests = [...objects.keys()].sort();
        const objectIndex = new Promise<Buffer>((resolve, reject) => {
          this.objectIndexJobs.push(() => {
            try {
              resolve(buildObjectIndex(blob.digest, blob.blocks, digests.map((digest) => objects.get(digest)!), this.options.blockSizeBits));
            } catch (error) {
              reject(error as Error);
            }
          });
        });
        this.objectsOfDigest.set(blob.digest, new Set(digests));
        // Seen through `persisting`; it may fail before that chain waits for it.
        objectIndex.catch(() => {});
        // Later layers deduplicate against this blob at once (the chunk thread knows its chunks);
        // its files reach the store in the background (blob fsync and rename first, then what
        // names it), awaited by finish().
        this.persisting.push(
          (async () => {
            await blob.persisted;
            await this.store.addObjectIndex(blob.digest, await objectIndex, digests);
            await this.store.addBlobChunkList(blob.digest, blob.chunkList);
          })(),
        );
      }
      for (const key of Object.keys(this.stats) as (keyof ChunkStats)[]) this.stats[key] += ended.stats[key];
      return result;
    } catch (error) {
      await chunks.abortLayer();
      throw error;
    }
  }

  /**
   * Marks every file whose data is one object of its blob's object index with overlayfs metacopy
   * and redirect xattrs. A plain EROFS mount ignores them (the chunk indexes still map the data);
   * an overlay with the object indexes as data-only layers reads the data through the object.
   * Returns the report's sharing classes, from the same verdict per file.
   */
  private async markObjects(regularNodes: readonly RegNode[]): Promise<Record<string, SharingClass>> {
    // The object lists of store blobs (this build's are at hand).
    for (const { digest } of this.slots) {
      if (digest !== undefined && !this.objectsOfDigest.has(digest)) this.objectsOfDigest.set(digest, await this.store.objectDigests(digest));
    }
    const classes: Record<string, SharingClass> = {};
    const marked: RegNode[] = [];
    const markedHexes: string[] = [];
    for (const node of regularNodes) {
      const sizeBytes = regularSizeBytes(node.data);
      if (node.data.kind !== 'chunks') {
        addToSharingClasses(classes, sizeBytes, sharingEligibility(INLINE_DATA, sizeBytes));
        continue;
      }
      const verdict = sharingEligibility(node.data.chunks, sizeBytes);
      let listed = true;
      if (verdict.eligible) {
        const hex = this.objectOf(node, verdict.deviceId);
        if (hex === null) listed = false;
        else if (hex !== undefined) {
          marked.push(node);
          markedHexes.push(hex);
        }
      }
      addToSharingClasses(classes, sizeBytes, listed ? verdict : NOT_IN_OBJECT_INDEX);
    }
    const redirects = objectPathValues(markedHexes);
    for (let i = 0; i < marked.length; i++) {
      marked[i]!.xattrs.set(OVERLAY_METACOPY_XATTR, EMPTY_VALUE);
      marked[i]!.xattrs.set(OVERLAY_REDIRECT_XATTR, redirects[i]!);
    }
    return classes;
  }

  /**
   * The object (content digest) of an eligible file, whose data lies wholly on device `slot`, in
   * that blob's object index; null when the index does not list it (a blob written before object
   * indexes existed), undefined when there is nothing to mark (no digest, or no object list).
   */
  private objectOf(node: RegNode, slot: number): string | null | undefined {
    const hex = this.contentOf.get(node.data);
    const digest = this.slots[slot - 1]?.digest;
    const objects = digest === undefined ? undefined : this.objectsOfDigest.get(digest);
    if (hex === undefined || objects === undefined) return undefined;
    return objects.has(hex) ? hex : null;
  }

  /** Builds the object indexes still waiting; the store writes each in the background (see {@link persisting}). */
  private buildObjectIndexes(): void {
    for (const job of this.objectIndexJobs.splice(0)) job();
  }

  /**
   * Waits until every blob this build wrote is in the store under its name with its chunk list and
   * object index. `rethrow` false (a build that failed anyway): waits without raising, so nothing
   * is still being written when the caller cleans up.
   */
  async settle(rethrow = false): Promise<void> {
    this.buildObjectIndexes();
    const results = await Promise.allSettled(this.persisting.splice(0));
    const failed = results.find((result) => result.status === 'rejected');
    if (rethrow && failed !== undefined) throw (failed as PromiseRejectedResult).reason;
  }

  /** Plans and emits the metadata image of `root`; returns it with its blobs in device order. */
  async finish(root: DirNode): Promise<{ image: Buffer; blobDigests: string[]; stats: ImageStats }> {
    const regularNodes = uniqueRegularNodes(root);
    if (this.options.fingerprints) {
      const fingerprinted: RegNode[] = [];
      const hexes: string[] = [];
      for (const node of regularNodes) {
        const hex = node.data.kind === 'chunks' ? this.contentOf.get(node.data) : undefined;
        if (hex === undefined) continue;
        fingerprinted.push(node);
        hexes.push(hex);
      }
      const values = fingerprintValues(hexes);
      for (let i = 0; i < fingerprinted.length; i++) fingerprinted[i]!.xattrs.set(FINGERPRINT_XATTR_NAME, values[i]!);
    }
    const sharing = await this.markObjects(regularNodes);
    // Renumber provisional slots to device ids 1..n over the slots actually used: blobs that were
    // already in the store first (lower layers, base images), then this build's, each in the order met.
    const used = new Set<number>();
    for (const node of regularNodes) if (node.data.kind === 'chunks') for (const c of node.data.chunks) if (c.blkaddr !== null) used.add(c.deviceId);
    const orderKey = (slot: number) => (this.slots[slot - 1]!.fresh ? this.slots.length : 0) + slot;
    const ordered = [...used].sort((a, b) => orderKey(a) - orderKey(b));
    const deviceOf = new Map(ordered.map((slot, i) => [slot, i + 1]));
    const blobDigests = ordered.map((slot) => {
      const digest = this.slots[slot - 1]?.digest;
      if (digest === undefined) throw new Error(`internal: chunk references unfinished blob slot ${slot}`);
      return digest;
    });
    // Often every slot keeps its number (one layer, or every layer's blob used): then nothing moves.
    const renumber = ordered.some((slot, i) => slot !== i + 1);
    let singleChunkFiles = 0;
    for (const node of regularNodes) {
      if (node.data.kind !== 'chunks') continue;
      if (renumber) node.data.chunks = node.data.chunks.map((c) => (c.blkaddr === null ? c : { deviceId: deviceOf.get(c.deviceId)!, blkaddr: c.blkaddr }));
      if (node.data.chunks.length === 1) singleChunkFiles++;
    }
    const blockSizeBits = this.options.blockSizeBits;
    const fresh = new Map(this.slots.filter((slot) => slot.blocks !== undefined).map((slot) => [slot.digest, slot.blocks!]));
    const blocksOf = (digest: string) => fresh.get(digest) ?? this.store.blobBlocks(digest, blockSizeBits);
    const base: MetadataImageOptions = {
      ...(this.options.fingerprints ? FINGERPRINT_IMAGE_OPTIONS : {}),
      blockSizeBits,
      devices: blobDigests.map((digest) => ({ tag: digest, blocks: blocksOf(digest) })),
    };
    this.buildObjectIndexes();
    const plan = planMetadataImage(root, base);
    // A volume UUID derived from the image's own bytes: the same input gives the same image.
    const image = emitMetadataImage(plan, base);
    const uuid = Buffer.from(createHash('sha256').update(image).digest().subarray(0, 16));
    uuid[6] = (uuid[6]! & 0x0f) | 0x50;
    uuid[8] = (uuid[8]! & 0x3f) | 0x80;
    setVolumeUuid(image, uuid, blockSizeBits);
    await this.settle(true);
    const stored = this.stats.bytesWritten;
    return {
      image,
      blobDigests,
      stats: {
        chunks: { ...this.stats, dedupRatio: stored === 0 ? 1 : (this.stats.bytesWritten + this.stats.bytesReused) / stored },
        singleChunkFiles,
        sharing,
      },
    };
  }
}

function uniqueRegularNodes(root: DirNode): RegNode[] {
  const seen = new Set<TreeNode>();
  const out: RegNode[] = [];
  const stack: TreeNode[] = [root];
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (seen.has(node)) continue;
    seen.add(node);
    if (node.kind === 'dir') stack.push(...node.children.values());
    else if (node.kind === 'reg') out.push(node);
  }
  return out;
}
