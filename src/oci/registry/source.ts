import type { Readable } from 'node:stream';
import { InvalidImageSourceError } from '../errors.js';
import type { SourceFiles } from '../files.js';
import { INDEX_MEDIA_TYPES } from '../mediaTypes.js';
import { RegistryClient, type FetchedManifest, type RegistryClientOptions } from './client.js';
import { imageNameOf, manifestReference, parseReference, type RegistryReference } from './reference.js';

/** Registries cap manifests at 4 MiB (the layout reader applies the same bound). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

const REF_NAME = 'org.opencontainers.image.ref.name';

/**
 * A registry repository seen as the files of an OCI layout, so that the layout reader (index and
 * platform selection, manifest and config checks, layer descriptors) and the verified layer
 * streams serve registries too: `index.json` lists the one manifest (or index) the reference
 * names, and `blobs/ALG/HEX` is a manifest when an index (or the reference) named it as one, a
 * blob otherwise. Every manifest is checked against its digest as it arrives.
 */
export class RegistryFiles implements SourceFiles {
  readonly location: string;
  private readonly manifests = new Map<string, FetchedManifest>();
  /** Digests that indexes list as manifests (or indexes): fetched from /manifests/, not /blobs/. */
  private readonly manifestDigests = new Set<string>();
  private indexJson: Buffer | undefined;

  constructor(
    readonly reference: RegistryReference,
    readonly client: RegistryClient,
  ) {
    this.location = reference.text;
  }

  /** Fetches what the reference names and makes the one-entry index.json the layout reader starts from. */
  async resolve(): Promise<{ name: string; manifest: FetchedManifest }> {
    const manifest = (await this.client.getManifest(manifestReference(this.reference), MAX_MANIFEST_BYTES))!;
    this.remember(manifest);
    const name = imageNameOf(this.reference);
    const descriptor = { mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.bytes.length, annotations: { [REF_NAME]: name } };
    this.indexJson = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [descriptor] }));
    return { name, manifest };
  }

  private remember(manifest: FetchedManifest): void {
    this.manifests.set(manifest.digest, manifest);
    if (!INDEX_MEDIA_TYPES.includes(manifest.mediaType)) return;
    try {
      const listed = (JSON.parse(manifest.bytes.toString('utf8')) as { manifests?: Array<{ digest?: unknown }> }).manifests ?? [];
      for (const child of listed) if (typeof child.digest === 'string') this.manifestDigests.add(child.digest);
    } catch {
      // The layout reader reports a broken index with its place when it parses it.
    }
  }

  private digestOf(path: string): string {
    const match = /^blobs\/(sha256|sha512)\/([0-9a-f]+)$/.exec(path);
    if (match === null) throw new InvalidImageSourceError(this.location, `no file ${JSON.stringify(path)} in a registry`);
    return `${match[1]}:${match[2]}`;
  }

  private async manifest(digest: string): Promise<FetchedManifest | undefined> {
    let manifest = this.manifests.get(digest);
    if (manifest === undefined && this.manifestDigests.has(digest)) {
      manifest = await this.client.getManifest(digest, MAX_MANIFEST_BYTES, true);
      if (manifest !== undefined) this.remember(manifest);
    }
    return manifest;
  }

  async sizeOf(path: string): Promise<number | undefined> {
    if (path === 'index.json') return this.indexJson?.length;
    if (path === 'oci-layout') return undefined;
    const digest = this.digestOf(path);
    const manifest = await this.manifest(digest);
    if (manifest !== undefined) return manifest.bytes.length;
    if (this.manifestDigests.has(digest)) return undefined;
    return this.client.headBlob(digest);
  }

  async read(path: string, maxBytes: number): Promise<Buffer> {
    if (path === 'index.json' && this.indexJson !== undefined) return this.indexJson.subarray(0, maxBytes);
    const digest = this.digestOf(path);
    const manifest = await this.manifest(digest);
    if (manifest !== undefined) return manifest.bytes.subarray(0, maxBytes);
    return this.client.readBlob(digest, maxBytes);
  }

  openStream(path: string): Readable {
    return this.client.openBlob(this.digestOf(path));
  }
}

/** The files of the image a `docker://` reference names, its manifest fetched (and checked). */
export async function openRegistryFiles(spec: string, options: RegistryClientOptions = {}): Promise<{ files: RegistryFiles; name: string; manifest: FetchedManifest }> {
  const reference = parseReference(spec);
  const files = new RegistryFiles(reference, new RegistryClient(reference, options));
  const { name, manifest } = await files.resolve();
  return { files, name, manifest };
}
