import { createHash } from 'node:crypto';
import path from 'node:path';
import { MAX_BLOCK_SIZE_BITS, MAX_CHUNK_BLKBITS, MIN_BLOCK_SIZE_BITS } from '../format/constants.js';
import { addErofsImageToLayout } from '../oci/outputLayout.js';
import { writeFileAtomically } from '../util/atomicFile.js';
import { makeDirectory } from '../util/directory.js';
import { ChunkStore } from '../store/store.js';
import type { ChunkSizePolicy, ChunkStats } from './chunker.js';
import { InvalidOptionError } from './errors.js';
import { ImageBuilder, type EligibilityClass, type ImageBuilderOptions } from './imageBuilder.js';
import { ChunkThread } from './chunkThread.js';
import { readDirectoryTree } from './sources/directory.js';
import { makeDir, regularSizeBytes, type DirNode, type TreeNode } from './tree.js';
import { LayerApplier } from './layers.js';
import { InvalidImageSourceError, openImageSource, probeImageSource, readLayerEntries, type ImageInfo, type ImageSource, type Platform } from '../oci/index.js';

export const DEFAULT_CHUNK_SIZE_BYTES = 1 << 20;
export const DEFAULT_BLOCK_SIZE_BYTES = 4096;

/** A directory to build from (image sources go through `build`, which takes specs). */
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
  /**
   * The platform taken from multi-platform indexes (default linux/amd64), or 'all' to convert each
   * one; each then gets its platform appended to its name (`NAME-linux-arm64`).
   */
  platform?: Platform | 'all';
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
  /** This report, as written next to the metadata image. */
  report: string;
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
        counts.regularBytes += regularSizeBytes(node.data);
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

export function kernelMountCommand(metadataImage: string, blobs: readonly string[], mountpoint = '/mnt/image'): string {
  const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
  const lines = blobs.map((blob, i) => `b${i + 1}=$(losetup --find --show --read-only ${quote(blob)})`);
  const devices = blobs.map((_, i) => `,device=$b${i + 1}`).join('');
  lines.push(`mkdir -p ${quote(mountpoint)} && mount -t erofs -o ro${devices} ${quote(metadataImage)} ${quote(mountpoint)}`);
  return lines.join(' && ');
}

interface PreparedBuild {
  store: ChunkStore;
  chunks: ChunkThread;
  blockSizeBytes: number;
  chunkSizeBytes: number;
  builderOptions: ImageBuilderOptions;
}

async function prepare(options: BuildOptions): Promise<PreparedBuild> {
  const blockSizeBytes = options.blockSizeBytes ?? DEFAULT_BLOCK_SIZE_BYTES;
  const blockSizeBits = log2Exact(blockSizeBytes, '--block-size', MIN_BLOCK_SIZE_BITS, MAX_BLOCK_SIZE_BITS);
  const chunkSizeBytes = options.chunkSizeBytes ?? DEFAULT_CHUNK_SIZE_BYTES;
  const chunkBits = log2Exact(chunkSizeBytes, '--chunk-size', blockSizeBits, Math.min(blockSizeBits + MAX_CHUNK_BLKBITS, 52));
  if (options.name !== undefined) checkName(options.name);
  await makeDirectory(options.outputDir, 'output directory');
  if (options.storeDir !== undefined) await makeDirectory(options.storeDir, 'store');
  const store = await ChunkStore.open(options.storeDir ?? options.outputDir);
  return {
    store,
    chunks: new ChunkThread(store.dir),
    blockSizeBytes,
    chunkSizeBytes,
    builderOptions: {
      blockSizeBits,
      chunkBits,
      policy: options.policy ?? 'tune',
      fingerprints: options.fingerprints ?? true,
      signal: options.signal,
      onProgress: options.onProgress,
    },
  };
}

/**
 * Longest image name, in bytes: the outputs are NAME.erofs and NAME.report.json, and they are written
 * under temporary names of about 40 bytes more, all within a file name's 255 bytes.
 */
const MAX_NAME_BYTES = 200;

function checkName(name: string): void {
  if (name === '' || name.includes('/') || name.startsWith('.')) throw new InvalidOptionError('--name', `"${name}" must be a plain file name`);
  const bytes = Buffer.byteLength(name);
  if (bytes > MAX_NAME_BYTES) throw new InvalidOptionError('--name', `is ${bytes} bytes long; at most ${MAX_NAME_BYTES} (the outputs NAME.erofs and NAME.report.json, and their temporary names, must fit a file name)`);
}

/**
 * A file name for an image tag ("debian:bookworm" -> "debian_bookworm"). A tag too long for one is
 * cut, and ends with a digest of the whole tag so that two long tags still give two names.
 */
function fileNameForTag(tag: string): string {
  const name = tag.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_');
  if (name === '') return 'image';
  // ASCII only by now: characters are bytes. Room is left for uniqueName's "-N".
  const longest = MAX_NAME_BYTES - 8;
  if (name.length <= longest) return name;
  return `${name.slice(0, longest - 13)}-${createHash('sha256').update(tag).digest('hex').slice(0, 12)}`;
}

/** `lastImage`: no image of this build follows, so the chunk thread's work is done (see {@link ChunkThread.close}). */
async function finishImage(prepared: PreparedBuild, builder: ImageBuilder, root: DirNode, name: string, options: BuildOptions & { lastImage: boolean }, sourceConfig?: Record<string, unknown>): Promise<BuildResult> {
  options.signal?.throwIfAborted();
  if (options.lastImage) prepared.chunks.close();
  const { image, blobDigests, stats } = await builder.finish(root);
  const metadataImage = path.join(options.outputDir, `${name}.erofs`);
  await writeFileAtomically(metadataImage, image);
  const blobs = blobDigests.map((digest) => prepared.store.blobPath(digest));
  const manifest = await addErofsImageToLayout(options.outputDir, { name, metadataImagePath: metadataImage, blobPaths: blobs, sourceConfig });
  const result: BuildResult = {
    name,
    metadataImage,
    blobs,
    blobDigests: blobDigests.map((digest) => `sha256:${digest}`),
    blockSizeBytes: prepared.blockSizeBytes,
    chunkSizeBytes: prepared.chunkSizeBytes,
    metadataImageBytes: image.length,
    counts: countTree(root),
    chunks: stats.chunks,
    singleChunkFiles: stats.singleChunkFiles,
    sharing: stats.sharing,
    mountCommand: kernelMountCommand(metadataImage, blobs),
    ociLayout: { path: options.outputDir, reference: name, manifestDigest: manifest.digest },
    report: path.join(options.outputDir, `${name}.report.json`),
  };
  await writeFileAtomically(result.report, Buffer.from(`${JSON.stringify(result, null, 2)}\n`));
  return result;
}

/**
 * Builds a directory into a metadata image plus one blob of its new chunks, in the store
 * (`storeDir`, default the output directory). Outputs appear under their final names only when
 * complete; on failure or abort, what this build wrote is removed.
 */
export async function buildImage(source: BuildSource, options: BuildOptions): Promise<BuildResult> {
  const prepared = await prepare(options);
  try {
    return await buildDirectory(prepared, source.path, options.name ?? fileNameForTag(path.basename(path.resolve(source.path))), { ...options, lastImage: true });
  } finally {
    await prepared.chunks.dispose();
  }
}

/** Runs one image's build; on failure, lets blobs still being made durable settle before it returns. */
async function withBuilder(prepared: PreparedBuild, run: (builder: ImageBuilder) => Promise<BuildResult>): Promise<BuildResult> {
  const builder = new ImageBuilder(prepared.store, prepared.chunks, prepared.builderOptions);
  try {
    return await run(builder);
  } catch (error) {
    await builder.settle();
    throw error;
  }
}

async function buildDirectory(prepared: PreparedBuild, sourcePath: string, name: string, options: BuildOptions & { lastImage: boolean }): Promise<BuildResult> {
  return withBuilder(prepared, async (builder) => {
    const root = await builder.layer((storeFile) => readDirectoryTree(sourcePath, storeFile));
    return finishImage(prepared, builder, root, name, options);
  });
}

/** One merged tree from an image's layers, each layer's new data in its own blob. */
async function buildOciImage(prepared: PreparedBuild, source: ImageSource, image: ImageInfo, name: string, options: BuildOptions & { lastImage: boolean }): Promise<BuildResult> {
  return withBuilder(prepared, async (builder) => {
    const root = makeDir({ mtimeSec: 0n });
    const applier = new LayerApplier(root, prepared.blockSizeBytes - 1);
    for (const layer of image.layers) {
      await builder.layer(async (storeFile) => {
        applier.beginLayer(layer.label);
        const tar = await source.openLayer(layer);
        for await (const entry of readLayerEntries(tar, layer.label)) {
          options.signal?.throwIfAborted();
          const applying = applier.apply(entry, (e) => storeFile(`${layer.label}: ${e.path}`, (buffer, offset, length) => entry.body.read(buffer, offset, length), e.sizeBytes));
          if (applying !== undefined) await applying;
        }
      });
    }
    return finishImage(prepared, builder, root, name, options, image.config as Record<string, unknown> | undefined);
  });
}

export interface BuildReport {
  /** The store holding the blobs and chunk dictionary. */
  store: string;
  images: BuildResult[];
  /** Choices made while reading sources (platform picked, manifests skipped). */
  notes: string[];
}

/**
 * Builds every image the sources name: directories, OCI layouts (`DIR` for all images, `DIR:TAG`
 * for one), OCI archives, docker-save archives and single layer tarballs. All share one store, so
 * images built together (or after each other into the same store) share blobs and chunks.
 * An already opened {@link ImageSource} may stand for a spec (a layer streamed from standard input).
 */
export async function build(specs: readonly (string | ImageSource)[], options: BuildOptions): Promise<BuildReport> {
  const prepared = await prepare(options);
  try {
    return await buildAll(prepared, specs, options);
  } finally {
    await prepared.chunks.dispose();
  }
}

async function buildAll(prepared: PreparedBuild, specs: readonly (string | ImageSource)[], options: BuildOptions): Promise<BuildReport> {
  const images: BuildResult[] = [];
  const notes: string[] = [];
  const names = new Set<string>();
  const uniqueName = (wanted: string) => {
    let name = wanted;
    for (let i = 2; names.has(name); i++) name = `${wanted}-${i}`;
    names.add(name);
    return name;
  };
  for (const [specIndex, spec] of specs.entries()) {
    const lastSpec = specIndex === specs.length - 1;
    if (typeof spec !== 'string') {
      await buildSourceImages(spec, lastSpec);
      continue;
    }
    const probed = await probeImageSource(spec).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') throw new InvalidImageSourceError(spec, 'no such file or directory');
      throw error;
    });
    if (probed.kind === 'directory') {
      const name = uniqueName(options.name ?? fileNameForTag(path.basename(path.resolve(probed.path))));
      // The same store instance for every source: its dictionary then knows the chunks each
      // earlier source of this build stored.
      images.push(await buildDirectory(prepared, probed.path, name, { ...options, lastImage: lastSpec }));
      continue;
    }
    await buildSourceImages(await openImageSource(spec, options.platform === undefined ? {} : { platform: options.platform }), lastSpec);
  }
  return { store: prepared.store.dir, images, notes };

  async function buildSourceImages(source: ImageSource, lastSpec: boolean): Promise<void> {
    notes.push(...source.notes);
    // Several platforms of one image share its name; the platform tells their results apart.
    const perPlatform = options.platform === 'all' && source.images.length > 1;
    for (const [imageIndex, image] of source.images.entries()) {
      const base = options.name !== undefined && (source.images.length === 1 || perPlatform) && specs.length === 1 ? options.name : fileNameForTag(image.name);
      const platform = image.platform;
      const wanted = perPlatform && platform !== undefined ? fileNameForTag(`${base}-${platform.os}-${platform.architecture}${platform.variant === undefined ? '' : `-${platform.variant}`}`) : base;
      const lastImage = lastSpec && imageIndex === source.images.length - 1;
      images.push(await buildOciImage(prepared, source, image, uniqueName(wanted), { ...options, lastImage }));
    }
  }
}
