import { createReadStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { constants as zlibConstants, gunzipSync } from 'node:zlib';
import { isTarStart, readDockerArchive } from './dockerArchive.js';
import { InvalidImageSourceError, TarFormatError, UnsupportedMediaTypeError } from './errors.js';
import { ArchiveFiles, DirectoryFiles, READ_CHUNK_BYTES, type SourceFiles } from './files.js';
import { readOciLayout, type ResolvedImage } from './layout.js';
import { openLayerStream, type LayerLocation } from './layerStream.js';
import { ociLayerMediaType, sniffCompression, type Compression } from './mediaTypes.js';
import { TAR_BLOCK_BYTES, decodeTarHeader } from './tarHeader.js';
import { TarIndex, normalizeArchivePath, scanTarFile } from './tarIndex.js';
import { zstdBinding } from './zstd.js';
import type { RegistryClientOptions } from './registry/client.js';
import { isRegistrySpec, parseReference } from './registry/reference.js';
import { openRegistryFiles } from './registry/source.js';
import type { ImageSource, ImageSourceKind, LayerDescriptor, Platform } from './types.js';

/**
 * The platform picked from an index that lists several: linux/amd64 unless told otherwise. A fixed
 * default (rather than the host's) keeps a build's output the same on every machine.
 */
export const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

export interface OpenImageSourceOptions {
  /** The platform to pick from multi-platform indexes, or 'all' for every one (default {@link DEFAULT_PLATFORM}). */
  platform?: Platform | 'all';
  /** For `docker://` sources: credentials file, plain-HTTP rule, abort signal. */
  registry?: RegistryClientOptions;
}

/** What a spec names, before reading any image: also tells plain directories (another source) apart. */
export interface ProbedSource {
  kind: ImageSourceKind | 'directory';
  path: string;
  tag?: string;
  /** For a lone layer tarball: how it is compressed. */
  compression?: Compression;
}

/** Bytes looked at to recognize a file (gzip/zstd magic, a tar header, a compressed tar's first header). */
const SNIFF_BYTES = 64 * 1024;

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * `PATH` or `PATH:TAG`. A path that exists wins as a whole (paths may contain ':'); otherwise the
 * longest existing prefix before a ':' is the path and the rest the tag, which may itself contain
 * ':' (`app.tar:real/app:1.0`).
 */
async function splitSpec(spec: string): Promise<{ path: string; tag?: string }> {
  if (spec === '') throw new InvalidImageSourceError('(empty)', 'no source given');
  if (await exists(spec)) return { path: spec };
  for (let colon = spec.lastIndexOf(':'); colon > 0; colon = spec.lastIndexOf(':', colon - 1)) {
    if (colon < spec.length - 1 && (await exists(spec.slice(0, colon)))) return { path: spec.slice(0, colon), tag: spec.slice(colon + 1) };
  }
  throw new InvalidImageSourceError(spec, 'no such file or directory');
}

async function readHead(path: string, maxBytes: number): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(maxBytes);
    const { bytesRead } = await handle.read(buffer, 0, maxBytes, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** First bytes of a compressed stream, decompressed as far as the prefix allows. */
function decompressPrefix(head: Buffer, compression: 'gzip' | 'zstd', path: string): Buffer {
  try {
    if (compression === 'gzip') {
      // Z_SYNC_FLUSH: return what the prefix holds instead of failing on the missing rest. 4 KiB of
      // input is plenty for one header and bounds the output (deflate expands at most ~1032:1);
      // damage further in is found, with the layer named, when the layer is read.
      return gunzipSync(head.subarray(0, 4096), { finishFlush: zlibConstants.Z_SYNC_FLUSH });
    }
    const zstd = zstdBinding();
    const context = new zstd.DCtx();
    const output = Buffer.allocUnsafe(zstd.dStreamOutSize());
    const [, produced] = context.decompressStream(output, head.subarray(0, 4096));
    return output.subarray(0, produced);
  } catch (error) {
    throw new InvalidImageSourceError(path, `corrupt ${compression} data at the start (${(error as Error).message})`);
  }
}

/** Members not named like an image archive's after which a tar is taken for a layer (extra files in an archive are rare and few). */
const MAX_FOREIGN_ARCHIVE_MEMBERS = 64;

/** Root names that only image archives have; a layer with them at its root would be odd. */
const ARCHIVE_MARKERS = new Set(['oci-layout', 'index.json', 'manifest.json', 'repositories', 'blobs']);

/**
 * What a spec names, by content: a directory with oci-layout/index.json (or a docker manifest.json),
 * a tar holding those (an OCI or docker archive), or a lone layer (a tar, or gzip/zstd of one).
 */
export async function probeImageSource(spec: string): Promise<ProbedSource> {
  // A registry reference is recognized by its scheme alone (checked, not fetched, here).
  if (isRegistrySpec(spec)) return { kind: 'registry', path: parseReference(spec).text };
  const { path, tag } = await splitSpec(spec);
  const withTag = (probed: ProbedSource): ProbedSource => (tag === undefined ? probed : { ...probed, tag });
  const stats = await stat(path);
  if (stats.isDirectory()) {
    if ((await exists(`${path}/oci-layout`)) || (await exists(`${path}/index.json`))) return withTag({ kind: 'oci-layout', path });
    if (await exists(`${path}/manifest.json`)) return withTag({ kind: 'docker-archive', path });
    if (tag !== undefined) throw new InvalidImageSourceError(spec, `${path} is a plain directory (no oci-layout, index.json or manifest.json), which has no tags`);
    return { kind: 'directory', path };
  }
  if (!stats.isFile()) throw new InvalidImageSourceError(path, 'not a regular file or directory');
  if (stats.size === 0) throw new InvalidImageSourceError(path, 'empty file: not an image layout, archive or layer tarball');
  const head = await readHead(path, SNIFF_BYTES);
  const sniffed = sniffCompression(head, isTarStart);
  switch (sniffed) {
    case 'gzip':
    case 'zstd': {
      const tarHead = decompressPrefix(head, sniffed, path);
      if (tarHead.length >= TAR_BLOCK_BYTES && !isTarStart(tarHead)) throw new InvalidImageSourceError(path, `${sniffed}-compressed, but not a tar inside`);
      if (tarHead.length >= TAR_BLOCK_BYTES && isTarStart(tarHead) && tarHead.subarray(0, TAR_BLOCK_BYTES).some((byte) => byte !== 0)) {
        const first = normalizeArchivePath(decodeTarHeader(tarHead.subarray(0, TAR_BLOCK_BYTES), 0).name)?.split('/')[0];
        if (first !== undefined && ARCHIVE_MARKERS.has(first)) {
          throw new InvalidImageSourceError(path, `a ${sniffed}-compressed image archive (it starts with ${first}); decompress it first, archives are read in place`);
        }
      }
      if (tag !== undefined) throw new InvalidImageSourceError(spec, 'a layer tarball has no tags');
      return { kind: 'layer-tarball', path, compression: sniffed };
    }
    case 'xz':
    case 'bzip2':
      throw new UnsupportedMediaTypeError(path, `${sniffed}-compressed tar`, 'layer', ['tar', 'tar+gzip', 'tar+zstd']);
    case 'unknown':
      throw new InvalidImageSourceError(path, 'not an OCI image layout, OCI archive, docker archive or layer tarball (unrecognized content)');
    case 'none':
      break;
  }
  // A tar: an image archive has oci-layout/index.json or manifest.json at its root; anything else is
  // a layer. Archive members have few, fixed names (blobs/..., HEX.json, HEX/layer.tar); once many
  // others have gone by it is a root filesystem, and the scan stops instead of walking every header.
  const roots = new Set<string>();
  let foreignMembers = 0;
  try {
    await scanTarFile(path, (member) => {
      if (ARCHIVE_MARKERS.has(member.name)) roots.add(member.name);
      const first = member.name.split('/')[0]!;
      if (first !== '' && !ARCHIVE_MARKERS.has(first) && !/^[0-9a-f]{64}(\.json|\.tar)?$/.test(first)) foreignMembers++;
      return foreignMembers <= MAX_FOREIGN_ARCHIVE_MEMBERS;
    });
  } catch (error) {
    if (error instanceof TarFormatError) throw new InvalidImageSourceError(path, error.message);
    throw error;
  }
  if (roots.has('index.json') && (roots.has('oci-layout') || !roots.has('manifest.json'))) return withTag({ kind: 'oci-archive', path });
  if (roots.has('manifest.json')) return withTag({ kind: 'docker-archive', path });
  if (tag !== undefined) throw new InvalidImageSourceError(spec, 'a layer tarball has no tags');
  return { kind: 'layer-tarball', path, compression: 'none' };
}

function layerTarballName(path: string): string {
  return basename(path).replace(/\.(tar|tgz|tar\.gz|tar\.zst|tar\.zstd|tzst)$/, '') || basename(path);
}

/**
 * Opens an image source: an OCI image layout directory (`DIR`: every image in index.json,
 * `DIR:TAG`: the one(s) tagged TAG), an OCI archive (a tar of a layout, read in place), a `docker
 * save` archive (old and Docker 25+ formats, plain or compressed layers), or a lone layer tarball
 * (`.tar`, `.tar.gz`, `.tar.zst`; one layer, no config, nothing to verify). Detected by content;
 * `docker://HOST/REPO:TAG` is an image in a registry, its layers streamed into the conversion.
 *
 * An index listing several platforms of one image yields the one for `options.platform` (default
 * {@link DEFAULT_PLATFORM}); the choice is recorded in `notes`. Every manifest and config is read and
 * verified here, and every layer blob must be present: problems surface before any layer is read.
 */
export async function openImageSource(spec: string, options: OpenImageSourceOptions = {}): Promise<ImageSource> {
  const probed = await probeImageSource(spec);
  const notes: string[] = [];
  const select = { platform: options.platform ?? DEFAULT_PLATFORM, notes, ...(probed.tag === undefined ? {} : { tag: probed.tag }) };
  if (probed.kind === 'registry') {
    // The registry's repository read as a layout: the same platform choice and checks, layers
    // streamed from the registry into the same verification.
    const { files, name } = await openRegistryFiles(spec, options.registry);
    const images = await readOciLayout(files, { ...select, tag: name });
    if (images.length === 0) throw new InvalidImageSourceError(files.location, 'holds no container image');
    return makeSource(spec, 'registry', files.location, images, notes);
  }
  const path = resolve(probed.path);
  let resolved: ResolvedImage[];
  let kind: ImageSourceKind;
  switch (probed.kind) {
    case 'directory':
      throw new InvalidImageSourceError(probed.path, 'a plain directory, not an OCI image layout (no oci-layout, index.json or manifest.json)');
    case 'oci-layout':
    case 'docker-archive':
    case 'oci-archive': {
      kind = probed.kind;
      const files = await filesOf(probed, path);
      if (kind === 'oci-layout' && (await files.sizeOf('index.json')) === undefined && (await files.sizeOf('manifest.json')) !== undefined) kind = 'docker-archive';
      resolved = kind === 'docker-archive' ? await readDockerArchive(files, select) : await readOciLayout(files, select);
      // Docker 25+ archives hold both forms; an OCI index with no images falls back to manifest.json.
      if (kind !== 'docker-archive' && resolved.length === 0 && select.tag === undefined && (await files.sizeOf('manifest.json')) !== undefined) {
        resolved = await readDockerArchive(files, select);
        kind = 'docker-archive';
      }
      if (resolved.length === 0) throw new InvalidImageSourceError(path, 'holds no container images');
      break;
    }
    case 'layer-tarball': {
      kind = 'layer-tarball';
      const compression = probed.compression ?? 'none';
      const sizeBytes = (await stat(path)).size;
      const label = path;
      const layer: LayerDescriptor = { mediaType: ociLayerMediaType(compression), sizeBytes, label };
      // Nothing names these bytes, so nothing is checked (not even the size: the fast path for a
      // plain tar is the file stream itself).
      const location: LayerLocation = { subject: label, compression, open: () => createReadStream(path, { highWaterMark: READ_CHUNK_BYTES }), ownPieces: true };
      resolved = [{ info: { name: layerTarballName(path), layers: [layer] }, locations: new Map([[layer, location]]) }];
      break;
    }
  }
  return makeSource(spec, kind, path, resolved, notes);
}

async function filesOf(probed: ProbedSource, path: string): Promise<SourceFiles> {
  const stats = await stat(path);
  if (stats.isDirectory()) return new DirectoryFiles(path);
  try {
    return new ArchiveFiles(await TarIndex.open(path));
  } catch (error) {
    if (error instanceof TarFormatError) throw new InvalidImageSourceError(probed.path, error.message);
    throw error;
  }
}

function makeSource(spec: string, kind: ImageSourceKind, path: string, resolved: ResolvedImage[], notes: string[]): ImageSource {
  const byDescriptor = new Map<LayerDescriptor, LayerLocation>();
  // Descriptors copied by the caller ({...layer}) are found again by their digests.
  const byDigests = new Map<string, LayerLocation>();
  for (const image of resolved) {
    for (const [descriptor, location] of image.locations) {
      byDescriptor.set(descriptor, location);
      byDigests.set(`${descriptor.digest ?? ''} ${descriptor.diffId ?? ''}`, location);
    }
  }
  return {
    spec,
    kind,
    path,
    images: resolved.map((image) => image.info),
    notes,
    async openLayer(layer: LayerDescriptor): Promise<Readable> {
      const location = byDescriptor.get(layer) ?? byDigests.get(`${layer.digest ?? ''} ${layer.diffId ?? ''}`);
      if (location === undefined) throw new InvalidImageSourceError(path, `layer ${layer.digest ?? layer.diffId ?? layer.label} is not part of this source`);
      return openLayerStream(location);
    },
  };
}
