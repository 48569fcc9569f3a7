import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { MAX_BLOCK_SIZE_BITS, MAX_CHUNK_BLKBITS, MIN_BLOCK_SIZE_BITS } from '../format/constants.js';
import { BlobWriter } from './blob.js';
import { Chunker, type ChunkStats } from './chunker.js';
import { InvalidOptionError } from './errors.js';
import { planMetadataImage, emitMetadataImage, type MetadataImageOptions } from './metadata.js';
import { FINGERPRINT_IMAGE_OPTIONS, fingerprintXattr } from './fingerprint.js';
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

/**
 * A volume UUID derived from the image's own bytes (with a zero UUID), so the same input gives the
 * same image: builds are reproducible.
 */
function contentUuid(imageWithZeroUuid: Buffer): Buffer {
  const uuid = createHash('sha256').update(imageWithZeroUuid).digest().subarray(0, 16);
  uuid[6] = (uuid[6]! & 0x0f) | 0x50; // RFC 4122 layout: name-based (version 5 style), variant 1
  uuid[8] = (uuid[8]! & 0x3f) | 0x80;
  return Buffer.from(uuid);
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
 * Builds a metadata image plus one blob holding all file data (chunked, deduplicated within the
 * build) from a directory. Outputs appear under their final names only when complete.
 */
export async function buildImage(source: BuildSource, options: BuildOptions): Promise<BuildResult> {
  const blockSizeBytes = options.blockSizeBytes ?? DEFAULT_BLOCK_SIZE_BYTES;
  const blockSizeBits = log2Exact(blockSizeBytes, '--block-size', MIN_BLOCK_SIZE_BITS, MAX_BLOCK_SIZE_BITS);
  const chunkSizeBytes = options.chunkSizeBytes ?? DEFAULT_CHUNK_SIZE_BYTES;
  const chunkBits = log2Exact(chunkSizeBytes, '--chunk-size', blockSizeBits, Math.min(blockSizeBits + MAX_CHUNK_BLKBITS, 52));
  const name = options.name ?? (path.basename(path.resolve(source.path)) || 'image');
  if (name.includes('/') || name.startsWith('.')) throw new InvalidOptionError('--name', `"${name}" must be a plain file name`);
  await mkdir(options.outputDir, { recursive: true });

  const blob = await BlobWriter.create(options.outputDir, blockSizeBytes);
  const chunker = new Chunker(blob, 1);
  let files = 0;
  let bytes = 0;
  let finishedBlob: string | undefined;
  try {
    const fingerprints = options.fingerprints ?? true;
    const root = await readDirectoryTree(source.path, async (sourcePath, readAt, sizeBytes) => {
      options.signal?.throwIfAborted();
      const { data, contentSha256 } = await chunker.chunkFile(sourcePath, readAt, sizeBytes, chunkBits, fingerprints && sizeBytes > 0);
      files++;
      bytes += sizeBytes;
      options.onProgress?.({ files, bytes });
      return { data, xattrs: contentSha256 === undefined ? [] : [fingerprintXattr(contentSha256)] };
    });
    options.signal?.throwIfAborted();
    // Plan before naming the blob: tags do not change the layout, and a tree the format cannot
    // hold fails here without leaving a blob behind.
    const blobBlocks = blob.lengthBlocks;
    const xattrOptions = fingerprints ? FINGERPRINT_IMAGE_OPTIONS : {};
    const plan = planMetadataImage(root, { ...xattrOptions, blockSizeBits, devices: blobBlocks > 0 ? [{ tag: '', blocks: blobBlocks }] : [] });
    let blobs: { path: string; digest: string; blocks: number }[] = [];
    if (blobBlocks > 0) {
      blobs = [await blob.finish()];
      finishedBlob = blobs[0]!.path;
    } else {
      await blob.abort();
    }
    const metadataOptions: MetadataImageOptions = { ...xattrOptions, blockSizeBits, devices: blobs.map((b) => ({ tag: b.digest, blocks: b.blocks })) };
    const image = emitMetadataImage(plan, { ...metadataOptions, uuid: contentUuid(emitMetadataImage(plan, metadataOptions)) });
    const metadataImage = path.join(options.outputDir, `${name}.erofs`);
    options.signal?.throwIfAborted();
    await writeFileAtomically(metadataImage, image);

    const counts = countTree(root);
    const stats = chunker.stats;
    const stored = stats.bytesWritten;
    return {
      name,
      metadataImage,
      blobs: blobs.map((b) => b.path),
      blobDigests: blobs.map((b) => `sha256:${b.digest}`),
      blockSizeBytes,
      chunkSizeBytes,
      metadataImageBytes: image.length,
      counts,
      chunks: { ...stats, dedupRatio: stored === 0 ? 1 : (stats.bytesWritten + stats.bytesReused) / stored },
      mountCommand: kernelMountCommand(
        metadataImage,
        blobs.map((b) => b.path),
      ),
    };
  } catch (error) {
    await blob.abort();
    if (finishedBlob !== undefined) await rm(finishedBlob, { force: true });
    throw error;
  }
}
