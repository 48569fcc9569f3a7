import { digestOf, shortDigest, type ParsedDigest } from './digest.js';
import { DigestMismatchError, ImageNotFoundError, InvalidImageSourceError, MissingBlobError, SizeMismatchError, UnsupportedMediaTypeError } from './errors.js';
import type { SourceFiles } from './files.js';
import { JsonContext, parseDescriptor, platformText, type Descriptor } from './json.js';
import type { LayerLocation } from './layerStream.js';
import { IMAGE_CONFIG_MEDIA_TYPES, INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, SUPPORTED_LAYER_MEDIA_TYPES, layerCompression } from './mediaTypes.js';
import type { ImageConfig, ImageInfo, LayerDescriptor, Platform } from './types.js';

/** An image found in a source, with where each of its layers' bytes are. */
export interface ResolvedImage {
  info: ImageInfo;
  locations: Map<LayerDescriptor, LayerLocation>;
}

export interface SelectOptions {
  /** Only the image(s) with this tag; all images when absent. */
  tag?: string;
  /** Picked from indexes that list several platforms; 'all' keeps every platform (attestations are still skipped). */
  platform: Platform | 'all';
  /** Told about choices made (platform picked, artifacts skipped). */
  notes: string[];
}

// Bounds on JSON read whole into memory. Registries cap manifests at 4 MiB; configs with long
// histories reach a few hundred KiB, so 32 MiB leaves room without trusting a size field blindly.
const MAX_INDEX_BYTES = 4 * 1024 * 1024;
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_CONFIG_BYTES = 32 * 1024 * 1024;
/** Nesting of indexes followed (index → index → manifest is the deepest seen in practice). */
const MAX_INDEX_DEPTH = 4;

const REF_NAME = 'org.opencontainers.image.ref.name';
const CONTAINERD_NAME = 'io.containerd.image.name';
/** BuildKit puts attestation manifests (platform unknown/unknown) next to the image manifests. */
const DOCKER_REFERENCE_TYPE = 'vnd.docker.reference.type';

export function blobPath(digest: ParsedDigest): string {
  return `blobs/${digest.algorithm}/${digest.hex}`;
}

/** Reads a blob named by a descriptor whole (JSON only: bounded), checking presence, size and digest. */
export async function readBlob(files: SourceFiles, descriptor: Descriptor, role: string, maxBytes: number): Promise<Buffer> {
  const path = blobPath(descriptor.digest);
  const subject = `${files.location}: ${role} ${shortDigest(descriptor.digest.text)}`;
  const sizeBytes = await files.sizeOf(path);
  if (sizeBytes === undefined) throw new MissingBlobError(files.location, descriptor.digest.text, role, path);
  if (sizeBytes !== descriptor.sizeBytes) throw new SizeMismatchError(subject, descriptor.sizeBytes, sizeBytes);
  if (sizeBytes > maxBytes) throw new InvalidImageSourceError(files.location, `${role} blob ${descriptor.digest.text} is ${sizeBytes} bytes, over the ${maxBytes}-byte limit`);
  const bytes = await files.read(path, maxBytes);
  const actual = digestOf(bytes, descriptor.digest.algorithm);
  if (actual !== descriptor.digest.text) throw new DigestMismatchError(subject, 'digest', descriptor.digest.text, actual);
  return bytes;
}

function isAttestation(descriptor: Descriptor): boolean {
  return descriptor.annotations[DOCKER_REFERENCE_TYPE] !== undefined || (descriptor.platform?.os === 'unknown' && descriptor.platform.architecture === 'unknown');
}

function platformMatches(candidate: Platform | undefined, wanted: Platform): boolean {
  return candidate !== undefined && candidate.os === wanted.os && candidate.architecture === wanted.architecture && (wanted.variant === undefined || candidate.variant === wanted.variant);
}

/**
 * From descriptors that may be one image for several platforms, the one for `wanted`. Descriptors
 * that all share a platform (or are one) are kept as they are: a layout with two amd64 images is
 * two images, not a choice. The choice made is written to `notes`.
 */
function pickPlatform(descriptors: Descriptor[], wanted: Platform | 'all', context: string, notes: string[], source: string): Descriptor[] {
  const candidates = descriptors.filter((descriptor) => !isAttestation(descriptor));
  const platforms = [...new Set(candidates.map((descriptor) => platformText(descriptor.platform)))];
  if (candidates.length <= 1 || platforms.length <= 1) return candidates;
  if (wanted === 'all') {
    notes.push(`${context}: lists ${platforms.length} platforms (${platforms.join(', ')}); converting each`);
    return candidates;
  }
  const matching = candidates.filter((descriptor) => platformMatches(descriptor.platform, wanted));
  if (matching.length === 0) throw new ImageNotFoundError(source, `for platform ${platformText(wanted)} in ${context}`, platforms);
  // Without a wanted variant, prefer the plain one (amd64 over amd64/v3): it runs on every such CPU.
  const chosen = matching.find((descriptor) => descriptor.platform?.variant === wanted.variant) ?? matching[0]!;
  notes.push(`${context}: lists ${platforms.length} platforms (${platforms.join(', ')}); picked ${platformText(chosen.platform)}`);
  return [chosen];
}

function nameOf(descriptor: Descriptor): string | undefined {
  return descriptor.annotations[CONTAINERD_NAME] ?? descriptor.annotations[REF_NAME];
}

function tagMatches(descriptor: Descriptor, tag: string): boolean {
  const refName = descriptor.annotations[REF_NAME];
  const containerdName = descriptor.annotations[CONTAINERD_NAME];
  return refName === tag || containerdName === tag || (containerdName !== undefined && containerdName.endsWith(`/${tag}`));
}

class LayoutReader {
  constructor(
    private readonly files: SourceFiles,
    private readonly options: SelectOptions,
  ) {}

  private get location(): string {
    return this.files.location;
  }

  async read(): Promise<ResolvedImage[]> {
    await this.checkLayoutVersion();
    const indexFile = new JsonContext(`${this.location}/index.json`);
    if ((await this.files.sizeOf('index.json')) === undefined) throw new InvalidImageSourceError(this.location, 'not an OCI image layout: no index.json');
    const index = indexFile.object(indexFile.parse(await this.files.read('index.json', MAX_INDEX_BYTES)), '');
    const manifests = indexFile.array(index['manifests'], 'manifests').map((value, i) => parseDescriptor(indexFile, value, `manifests[${i}]`));

    let selected = manifests;
    const { tag } = this.options;
    if (tag !== undefined) {
      selected = manifests.filter((descriptor) => tagMatches(descriptor, tag));
      if (selected.length === 0) {
        const names = [...new Set(manifests.map((descriptor) => nameOf(descriptor)).filter((name): name is string => name !== undefined))];
        throw new ImageNotFoundError(this.location, `tagged ${JSON.stringify(tag)}`, names);
      }
    }
    // Entries sharing a name are one image's platforms when their platforms differ.
    const groups = new Map<string, Descriptor[]>();
    for (const descriptor of selected) {
      const key = nameOf(descriptor) ?? '';
      groups.set(key, [...(groups.get(key) ?? []), descriptor]);
    }
    const images: ResolvedImage[] = [];
    for (const [key, group] of groups) {
      const context = `${this.location}/index.json${key === '' ? '' : ` (${key})`}`;
      for (const descriptor of pickPlatform(group, this.options.platform, context, this.options.notes, this.location)) {
        const name = nameOf(descriptor) ?? shortDigest(descriptor.digest.text);
        images.push(...(await this.resolve(descriptor, name, tag !== undefined, 0)));
      }
    }
    return images;
  }

  private async checkLayoutVersion(): Promise<void> {
    if ((await this.files.sizeOf('oci-layout')) === undefined) return;
    const file = new JsonContext(`${this.location}/oci-layout`);
    const layout = file.object(file.parse(await this.files.read('oci-layout', 64 * 1024)), '');
    const version = file.string(layout['imageLayoutVersion'], 'imageLayoutVersion');
    if (!version.startsWith('1.')) file.fail('imageLayoutVersion', `version ${JSON.stringify(version)} is not 1.x`);
  }

  /** A descriptor from an index: a manifest is an image, an index is followed to its platform's manifest. */
  private async resolve(descriptor: Descriptor, name: string, explicit: boolean, depth: number): Promise<ResolvedImage[]> {
    if (INDEX_MEDIA_TYPES.includes(descriptor.mediaType)) {
      if (depth >= MAX_INDEX_DEPTH) throw new InvalidImageSourceError(this.location, `index ${descriptor.digest.text} nests more than ${MAX_INDEX_DEPTH} indexes`);
      const file = new JsonContext(`${this.location}: index ${shortDigest(descriptor.digest.text)} (${name})`);
      const index = file.object(file.parse(await readBlob(this.files, descriptor, `index of ${name}`, MAX_INDEX_BYTES)), '');
      const manifests = file.array(index['manifests'], 'manifests').map((value, i) => parseDescriptor(file, value, `manifests[${i}]`));
      const images: ResolvedImage[] = [];
      for (const child of pickPlatform(manifests, this.options.platform, `index ${shortDigest(descriptor.digest.text)} of ${name}`, this.options.notes, this.location)) {
        images.push(...(await this.resolve(child, name, explicit, depth + 1)));
      }
      return images;
    }
    if (!MANIFEST_MEDIA_TYPES.includes(descriptor.mediaType)) {
      throw new UnsupportedMediaTypeError(`${this.location}: ${name} ${shortDigest(descriptor.digest.text)}`, descriptor.mediaType, 'manifest', [...MANIFEST_MEDIA_TYPES, ...INDEX_MEDIA_TYPES]);
    }
    const image = await this.readManifest(descriptor, name, explicit);
    return image === undefined ? [] : [image];
  }

  private async readManifest(descriptor: Descriptor, name: string, explicit: boolean): Promise<ResolvedImage | undefined> {
    const label = `${this.location}: ${name} manifest ${shortDigest(descriptor.digest.text)}`;
    const file = new JsonContext(label);
    const manifest = file.object(file.parse(await readBlob(this.files, descriptor, `manifest of ${name}`, MAX_MANIFEST_BYTES)), '');
    const schemaVersion = manifest['schemaVersion'];
    if (schemaVersion !== undefined && schemaVersion !== 2) file.fail('schemaVersion', `version ${JSON.stringify(schemaVersion)} is not 2`);
    const mediaType = file.optionalString(manifest['mediaType'], 'mediaType');
    if (mediaType !== undefined && !MANIFEST_MEDIA_TYPES.includes(mediaType)) {
      throw new UnsupportedMediaTypeError(label, mediaType, 'manifest', MANIFEST_MEDIA_TYPES);
    }
    const configDescriptor = parseDescriptor(file, manifest['config'], 'config');
    if (!IMAGE_CONFIG_MEDIA_TYPES.includes(configDescriptor.mediaType)) {
      // An artifact (a Helm chart, a signature, an SBOM...) stored next to images: not a filesystem.
      if (explicit) throw new UnsupportedMediaTypeError(label, configDescriptor.mediaType, 'config (not a container image)', IMAGE_CONFIG_MEDIA_TYPES);
      this.options.notes.push(`${label}: skipped, not a container image (config media type ${configDescriptor.mediaType})`);
      return undefined;
    }
    const configFile = new JsonContext(`${this.location}: ${name} config ${shortDigest(configDescriptor.digest.text)}`);
    const config = configFile.object(configFile.parse(await readBlob(this.files, configDescriptor, `config of ${name}`, MAX_CONFIG_BYTES)), '') as ImageConfig;
    const diffIds = readDiffIds(configFile, config);
    const layerDescriptors = file.array(manifest['layers'], 'layers').map((value, i) => parseDescriptor(file, value, `layers[${i}]`));
    if (layerDescriptors.length !== diffIds.length) {
      throw new InvalidImageSourceError(label, `manifest lists ${layerDescriptors.length} layers but the config has ${diffIds.length} diff_ids`);
    }
    const info: ImageInfo = { name, manifestDigest: descriptor.digest.text, configDigest: configDescriptor.digest.text, config, layers: [] };
    const platform = descriptor.platform ?? configPlatform(config);
    if (platform !== undefined) info.platform = platform;
    const locations = new Map<LayerDescriptor, LayerLocation>();
    for (const [i, layer] of layerDescriptors.entries()) {
      const diffId = diffIds[i]!;
      const subject = `${this.location}: ${name} layer ${i + 1}/${layerDescriptors.length} (${shortDigest(layer.digest.text)})`;
      const compression = layerCompression(layer.mediaType);
      if (compression === undefined) throw new UnsupportedMediaTypeError(subject, layer.mediaType, 'layer', SUPPORTED_LAYER_MEDIA_TYPES);
      const path = blobPath(layer.digest);
      const sizeBytes = await this.files.sizeOf(path);
      if (sizeBytes === undefined) {
        const foreign = layer.urls === undefined || layer.urls.length === 0 ? 'layer' : 'non-distributable layer (its urls are not fetched)';
        throw new MissingBlobError(this.location, layer.digest.text, `${name} ${foreign} ${i + 1}/${layerDescriptors.length}`, path);
      }
      if (sizeBytes !== layer.sizeBytes) throw new SizeMismatchError(subject, layer.sizeBytes, sizeBytes);
      const layerDescriptor: LayerDescriptor = { digest: layer.digest.text, mediaType: layer.mediaType, sizeBytes: layer.sizeBytes, diffId: diffId.text, label: subject };
      info.layers.push(layerDescriptor);
      locations.set(layerDescriptor, {
        subject,
        compression,
        open: () => this.files.openStream(path),
        ownPieces: true,
        digest: layer.digest,
        sizeBytes: layer.sizeBytes,
        diffId,
      });
    }
    return { info, locations };
  }
}

export function readDiffIds(file: JsonContext, config: ImageConfig): ParsedDigest[] {
  const rootfs = file.object(config.rootfs, 'rootfs');
  const type = file.string(rootfs['type'], 'rootfs.type');
  if (type !== 'layers') file.fail('rootfs.type', `${JSON.stringify(type)} is not "layers"`);
  return file.array(rootfs['diff_ids'], 'rootfs.diff_ids').map((value, i) => file.digest(value, `rootfs.diff_ids[${i}]`));
}

export function configPlatform(config: ImageConfig): Platform | undefined {
  if (typeof config.os !== 'string' || typeof config.architecture !== 'string') return undefined;
  const platform: Platform = { os: config.os, architecture: config.architecture };
  if (typeof config.variant === 'string') platform.variant = config.variant;
  return platform;
}

/** Every image of an OCI layout (directory or archive), or those tagged `options.tag`. */
export function readOciLayout(files: SourceFiles, options: SelectOptions): Promise<ResolvedImage[]> {
  return new LayoutReader(files, options).read();
}
