import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { MAX_BLOCK_SIZE_BITS, MAX_CHUNK_BLKBITS, MIN_BLOCK_SIZE_BITS } from '../format/constants.js';
import { addErofsImageToLayout } from '../oci/outputLayout.js';
import { ChunkStore } from '../store/store.js';
import type { ChunkSizePolicy, ChunkStats } from './chunker.js';
import { InvalidOptionError } from './errors.js';
import { ImageBuilder, type EligibilityClass } from './imageBuilder.js';
import { readDirectoryTree } from './sources/directory.js';
import type { DirNode, TreeNode } from './tree.js';

export const DEFAULT_CHUNK_SIZE_BYTES = 1 << 20;
export const DEFAULT_BLOCK_SIZE_BYTES = 4096;

/** What to build from. OCI sources join this union in their own module. */
export type BuildSource = { kind: 'directory'; path: string };

export interface BuildOptions {
  outputDir: string;
  /** Name of the metadata image (`NAME.erofs`); default: the source's base name. */
  name?: string;
  chunkSizeBytes?: number;
  blockSizeBytes?: number;
  /** Called as files are converted, for progress display. */
  onProgress?: (progress: { files: number; bytes: number }) => void;
  /**
   * Give every non-empty regular file the page cache sharing fingerprint xattr exactly as
   * `mkfs.erofs --xattr-inode-digest` writes it (Linux 7.0+ `inode_share`). Default true.
   */
  fingerprints?: boolean;
  /** Per-file chunk size policy (default tune). */
  policy?: ChunkSizePolicy;
  /** The content-addressed store for blobs and the chunk dictionary; default: the output directory. */
  storeDir?: string;
  /** Stops the build between files; everything written so far is removed. */
  signal?: AbortSignal;
}

export interface BuildCounts {
  regularFiles: number;
  directories: number;
  symlinks: number;
  devices: number;
  fifos: number;
  sockets: number;
  hardlinks: number;
  regularBytes: number;
}

export interface BuildResult {
  name: string;
  metadataImage: string;
  /** Blob paths in device-table order (device id 1 first). */
  blobs: string[];
  blobDigests: string[];
  blockSizeBytes: number;
  chunkSizeBytes: number;
  metadataImageBytes: number;
  counts: BuildCounts;
  chunks: ChunkStats & { dedupRatio: number };
  /** Files the tune policy stored as one chunk covering the whole file. */
  singleChunkFiles: number;
  /** Page cache sharing eligibility per file size class, with the reasons for ineligible files. */
  sharing: Record<string, EligibilityClass>;
  /** The OCI image layout (the output directory) holding the result as an image, and its tag. */
  ociLayout: { path: string; reference: string; manifestDigest: string };
  /** A shell command that mounts the result with the kernel (loop devices for image and blobs). */
  mountCommand: string;
}

function formatPowerOfTwo(bits: number): string {
  const units = ['', 'K', 'M', 'G', 'T', 'P'];
  const unit = Math.min(Math.floor(bits / 10), units.length - 1);
  return unit === 0 ? String(2 ** bits) : `${2 ** (bits - unit * 10)}${units[unit]}`;
}

function log2Exact(value: number, option: string, min: number, max: number): number {
  const bits = Math.log2(value);
  if (!Number.isInteger(bits) || bits < min || bits > max) {
    throw new InvalidOptionError(option, `${value} must be a power of two from ${formatPowerOfTwo(min)} to ${formatPowerOfTwo(max)}`);
  }
  return bits;
}

function countTree(root: DirNode): BuildCounts {
  const counts: BuildCounts = { regularFiles: 0, directories: 0, symlinks: 0, devices: 0, fifos: 0, sockets: 0, hardlinks: 0, regularBytes: 0 };
  const seen = new Set<TreeNode>();
  const stack: TreeNode[] = [root];
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (seen.has(node)) {
      counts.hardlinks++;
      continue;
    }
    seen.add(node);
    switch (node.kind) {
      case 'dir':
        counts.directories++;
        stack.push(...node.children.values());
        break;
      case 'reg':
        counts.regularFiles++;
        counts.regularBytes += node.data.kind === 'inline' ? node.data.bytes.length : node.data.sizeBytes;
        break;
      case 'lnk':
        counts.symlinks++;
        break;
      case 'chr':
      case 'blk':
        counts.devices++;
        break;
      case 'fifo':
        counts.fifos++;
        break;
      case 'sock':
        counts.sockets++;
        break;
    }
  }
  return counts;
}

/** Writes `bytes` to `finalPath` through a temporary name, so a reader never sees a partial file. */
export async function writeFileAtomically(finalPath: string, bytes: Uint8Array): Promise<void> {
  const tempPath = path.join(path.dirname(finalPath), `.tmp-${path.basename(finalPath)}-${process.pid}-${randomBytes(6).toString('hex')}`);
  const file = await open(tempPath, 'wx');
  try {
    await file.writeFile(bytes);
    await file.sync();
    await file.close();
    await rename(tempPath, finalPath);
  } catch (error) {
    await file.close().catch(() => undefined);
    await rm(tempPath, { force: true });
    throw error;
  }
}

export function kernelMountCommand(metadataImage: string, blobs: readonly string[], mountpoint = '/mnt/image'): string {
  const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
  const lines = blobs.map((blob, i) => `b${i + 1}=$(losetup --find --show --read-only ${quote(blob)})`);
  const devices = blobs.map((_, i) => `,device=$b${i + 1}`).join('');
  lines.push(`mkdir -p ${quote(mountpoint)} && mount -t erofs -o ro${devices} ${quote(metadataImage)} ${quote(mountpoint)}`);
  return lines.join(' && ');
}

/**
 * Builds a directory into a metadata image plus one blob of its new chunks, in the store
 * (`storeDir`, default the output directory). Outputs appear under their final names only when
 * complete; on failure or abort, what this build wrote is removed.
 */
export async function buildImage(source: BuildSource, options: BuildOptions): Promise<BuildResult> {
  const blockSizeBytes = options.blockSizeBytes ?? DEFAULT_BLOCK_SIZE_BYTES;
  const blockSizeBits = log2Exact(blockSizeBytes, '--block-size', MIN_BLOCK_SIZE_BITS, MAX_BLOCK_SIZE_BITS);
  const chunkSizeBytes = options.chunkSizeBytes ?? DEFAULT_CHUNK_SIZE_BYTES;
  const chunkBits = log2Exact(chunkSizeBytes, '--chunk-size', blockSizeBits, Math.min(blockSizeBits + MAX_CHUNK_BLKBITS, 52));
  const name = options.name ?? (path.basename(path.resolve(source.path)) || 'image');
  if (name.includes('/') || name.startsWith('.')) throw new InvalidOptionError('--name', `"${name}" must be a plain file name`);
  await mkdir(options.outputDir, { recursive: true });
  const store = await ChunkStore.open(options.storeDir ?? options.outputDir);
  const builder = new ImageBuilder(store, {
    blockSizeBits,
    chunkBits,
    policy: options.policy ?? 'tune',
    fingerprints: options.fingerprints ?? true,
    signal: options.signal,
    onProgress: options.onProgress,
  });
  const root = await builder.layer((storeFile) => readDirectoryTree(source.path, storeFile));
  options.signal?.throwIfAborted();
  const { image, blobDigests, stats } = builder.finish(root);
  const metadataImage = path.join(options.outputDir, `${name}.erofs`);
  await writeFileAtomically(metadataImage, image);
  const blobs = blobDigests.map((digest) => store.blobPath(digest));
  const manifest = await addErofsImageToLayout(options.outputDir, { name, metadataImagePath: metadataImage, blobPaths: blobs });
  return {
    name,
    metadataImage,
    blobs,
    blobDigests: blobDigests.map((digest) => `sha256:${digest}`),
    blockSizeBytes,
    chunkSizeBytes,
    metadataImageBytes: image.length,
    counts: countTree(root),
    chunks: stats.chunks,
    singleChunkFiles: stats.singleChunkFiles,
    sharing: stats.sharing,
    mountCommand: kernelMountCommand(metadataImage, blobs),
    ociLayout: { path: options.outputDir, reference: name, manifestDigest: manifest.digest },
  };
}
