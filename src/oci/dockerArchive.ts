import { isParsedDigest, parseDigest, shortDigest, digestOf, type ParsedDigest } from './digest.js';
import { DigestMismatchError, ImageNotFoundError, InvalidImageSourceError, InvalidLayerError, MissingBlobError, UnsupportedMediaTypeError } from './errors.js';
import type { SourceFiles } from './files.js';
import { JsonContext } from './json.js';
import { configPlatform, readDiffIds, type ResolvedImage, type SelectOptions } from './layout.js';
import type { LayerLocation } from './layerStream.js';
import { MEDIA_TYPE_DOCKER_LAYER, MEDIA_TYPE_DOCKER_LAYER_GZIP, sniffCompression, type Compression } from './mediaTypes.js';
import { TAR_BLOCK_BYTES, isZeroBlock, looksLikeTarHeader } from './tarHeader.js';
import type { ImageConfig, ImageInfo, LayerDescriptor } from './types.js';

const MAX_MANIFEST_JSON_BYTES = 16 * 1024 * 1024;
const MAX_CONFIG_BYTES = 32 * 1024 * 1024;

/** containerd's name for zstd layers in Docker manifests (Docker registered none). */
const MEDIA_TYPE_DOCKER_LAYER_ZSTD = 'application/vnd.docker.image.rootfs.diff.tar.zstd';

/** A tar's first block: a valid header, or a zero block (an empty tar is just the end marker). */
export function isTarStart(head: Uint8Array): boolean {
  return looksLikeTarHeader(head) || (head.length >= TAR_BLOCK_BYTES && isZeroBlock(head.subarray(0, TAR_BLOCK_BYTES)));
}

/**
 * What compression a stored layer has, from its first bytes: docker-archives carry no media types,
 * and `docker save` has written plain tars (before Docker 25) and kept compressed ones since.
 */
export async function sniffLayer(files: SourceFiles, path: string, subject: string): Promise<Compression> {
  const head = await files.read(path, TAR_BLOCK_BYTES);
  const sniffed = sniffCompression(head, isTarStart);
  switch (sniffed) {
    case 'none':
    case 'gzip':
    case 'zstd':
      return sniffed;
    case 'xz':
    case 'bzip2':
      throw new UnsupportedMediaTypeError(subject, `${sniffed}-compressed tar`, 'layer', ['tar', 'tar+gzip', 'tar+zstd']);
    case 'unknown':
      throw new InvalidLayerError(subject, head.length === 0 ? 'empty file, not a tar' : 'not a tar, gzip or zstd stream (unrecognized first bytes)');
  }
}

/** `blobs/sha256/<hex>` (Docker 25+ archives): the path itself is the stored bytes' digest. */
function digestFromPath(path: string): ParsedDigest | undefined {
  const match = /^(?:\.\/)?blobs\/([a-z0-9]+)\/([0-9a-f]+)$/.exec(path);
  if (match === null) return undefined;
  const parsed = parseDigest(`${match[1]}:${match[2]}`);
  return isParsedDigest(parsed) ? parsed : undefined;
}

/** Old archives name configs `<hex>.json` after their digest. */
function configDigestFromPath(path: string): ParsedDigest | undefined {
  const fromBlob = digestFromPath(path);
  if (fromBlob !== undefined) return fromBlob;
  const match = /(?:^|\/)([0-9a-f]{64})\.json$/.exec(path);
  if (match === null) return undefined;
  const parsed = parseDigest(`sha256:${match[1]}`);
  return isParsedDigest(parsed) ? parsed : undefined;
}

/**
 * `TAG` selects RepoTags equal to it, ending in `/TAG` (`busybox:1` finds `docker.io/library/busybox:1`),
 * or, for a bare tag without ':', whose tag part is TAG (`v1` finds `real/app:v1`).
 */
function tagMatches(repoTags: string[], tag: string): boolean {
  return repoTags.some((repoTag) => {
    if (repoTag.endsWith(`/${tag}`)) return true;
    const colon = repoTag.lastIndexOf(':');
    return !tag.includes(':') && colon > repoTag.lastIndexOf('/') && repoTag.slice(colon + 1) === tag;
  });
}

/**
 * Images of a `docker save` archive (or its extracted directory): manifest.json lists, per image,
 * its config file, RepoTags and layer files in order. Layer files are plain or compressed tars
 * (detected by content); their diff_ids come from the config, their digests from the path when it is
 * `blobs/ALG/HEX`, or equal the diff_id for a plain tar.
 */
export async function readDockerArchive(files: SourceFiles, options: SelectOptions): Promise<ResolvedImage[]> {
  const file = new JsonContext(`${files.location}/manifest.json`);
  if ((await files.sizeOf('manifest.json')) === undefined) throw new InvalidImageSourceError(files.location, 'not a docker archive: no manifest.json');
  const entries = file.array(file.parse(await files.read('manifest.json', MAX_MANIFEST_JSON_BYTES)), '').map((value, i) => {
    const where = `[${i}]`;
    const entry = file.object(value, where);
    const repoTags = entry['RepoTags'] === null || entry['RepoTags'] === undefined ? [] : file.array(entry['RepoTags'], `${where}.RepoTags`).map((tag, j) => file.string(tag, `${where}.RepoTags[${j}]`));
    return {
      config: file.string(entry['Config'], `${where}.Config`),
      repoTags,
      layers: file.array(entry['Layers'], `${where}.Layers`).map((layer, j) => file.string(layer, `${where}.Layers[${j}]`)),
    };
  });
  let selected = entries;
  const { tag } = options;
  if (tag !== undefined) {
    const exact = entries.filter((entry) => entry.repoTags.includes(tag));
    selected = exact.length > 0 ? exact : entries.filter((entry) => tagMatches(entry.repoTags, tag));
    if (selected.length === 0) throw new ImageNotFoundError(files.location, `tagged ${JSON.stringify(tag)}`, entries.flatMap((entry) => entry.repoTags));
  }

  const images: ResolvedImage[] = [];
  for (const entry of selected) {
    const configSize = await files.sizeOf(entry.config);
    const expectedConfigDigest = configDigestFromPath(entry.config);
    const provisionalName = entry.repoTags[0] ?? entry.config;
    if (configSize === undefined) throw new MissingBlobError(files.location, expectedConfigDigest?.text ?? entry.config, `config of ${provisionalName}`, entry.config);
    if (configSize > MAX_CONFIG_BYTES) throw new InvalidImageSourceError(files.location, `config ${entry.config} is ${configSize} bytes, over the ${MAX_CONFIG_BYTES}-byte limit`);
    const configBytes = await files.read(entry.config, MAX_CONFIG_BYTES);
    const configDigest = digestOf(configBytes, expectedConfigDigest?.algorithm ?? 'sha256');
    if (expectedConfigDigest !== undefined && configDigest !== expectedConfigDigest.text) {
      throw new DigestMismatchError(`${files.location}: config ${entry.config} of ${provisionalName}`, 'digest', expectedConfigDigest.text, configDigest);
    }
    const name = entry.repoTags[0] ?? shortDigest(configDigest);
    const configFile = new JsonContext(`${files.location}: ${entry.config}`);
    const config = configFile.object(configFile.parse(configBytes), '') as ImageConfig;
    const diffIds = readDiffIds(configFile, config);
    if (diffIds.length !== entry.layers.length) {
      throw new InvalidImageSourceError(file.file, `${name}: lists ${entry.layers.length} layers but its config has ${diffIds.length} diff_ids`);
    }
    const info: ImageInfo = { name, configDigest, config, layers: [] };
    const platform = configPlatform(config);
    if (platform !== undefined) info.platform = platform;
    const locations = new Map<LayerDescriptor, LayerLocation>();
    for (const [i, path] of entry.layers.entries()) {
      const diffId = diffIds[i]!;
      const pathDigest = digestFromPath(path);
      const subject = `${files.location}: ${name} layer ${i + 1}/${entry.layers.length} (${shortDigest((pathDigest ?? diffId).text)})`;
      const sizeBytes = await files.sizeOf(path);
      if (sizeBytes === undefined) throw new MissingBlobError(files.location, (pathDigest ?? diffId).text, `${name} layer ${i + 1}/${entry.layers.length}`, path);
      const compression = await sniffLayer(files, path, subject);
      const digest = pathDigest ?? (compression === 'none' ? diffId : undefined);
      const mediaType = compression === 'none' ? MEDIA_TYPE_DOCKER_LAYER : compression === 'gzip' ? MEDIA_TYPE_DOCKER_LAYER_GZIP : MEDIA_TYPE_DOCKER_LAYER_ZSTD;
      const layer: LayerDescriptor = { mediaType, sizeBytes, diffId: diffId.text, label: subject };
      if (digest !== undefined) layer.digest = digest.text;
      info.layers.push(layer);
      const location: LayerLocation = { subject, compression, open: () => files.openStream(path), ownPieces: true, sizeBytes, diffId };
      if (digest !== undefined) location.digest = digest;
      locations.set(layer, location);
    }
    images.push({ info, locations });
  }
  return images;
}
