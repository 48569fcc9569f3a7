import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { digestOf, shortDigest } from '../digest.js';
import { DigestMismatchError } from '../errors.js';
import { DirectoryFiles } from '../files.js';
import { JsonContext, parseDescriptor, type Descriptor } from '../json.js';
import { blobPath, readBlob } from '../layout.js';
import { MEDIA_TYPE_OCI_INDEX } from '../mediaTypes.js';
import { isTransientRegistryError, RegistryClient, withAttempts, type RegistryClientOptions } from './client.js';
import { RegistryArtifactError, RegistryHttpError } from './errors.js';
import { parseReference, withReference, type RegistryReference } from './reference.js';
import { MAX_MANIFEST_BYTES } from './source.js';

const REF_NAME = 'org.opencontainers.image.ref.name';
const MAX_INDEX_BYTES = 4 * 1024 * 1024;
const MAX_CONFIG_BYTES = 32 * 1024 * 1024;

/** A manifest (or index) in a registry, as a descriptor: what `subject` points at. */
export interface ManifestDescriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export interface PushOptions extends RegistryClientOptions {
  /**
   * Repositories of the target registry that may already hold some of the blobs (an earlier
   * push of the base image elsewhere): a blob found there is mounted, not uploaded.
   */
  mountFrom?: readonly string[];
  /**
   * Attach the pushed manifest to this one (in the target repository) as an OCI 1.1 referrer:
   * `subject` in the manifest, and the referrers tag `ALG-HEX` kept up to date when the registry
   * has no referrers API.
   */
  subject?: ManifestDescriptor;
}

export interface PushedBlob {
  digest: string;
  sizeBytes: number;
  /** present: the registry had it (HEAD); mounted: from another repository; uploaded: sent. */
  action: 'present' | 'mounted' | 'uploaded';
}

export interface PushResult {
  /** `HOST/REPO:TAG` pushed to. */
  reference: string;
  /** Of what the tag now points at (the manifest, or the index of several images). */
  manifestDigest: string;
  mediaType: string;
  blobs: PushedBlob[];
  /** Blob bytes sent to the registry (manifests not counted). */
  uploadedBytes: number;
  /** With a subject: `api` when the registry indexes referrers itself, else the fallback tag written. */
  referrers?: { api: true } | { api: false; tag: string };
}

interface LocalImage {
  name: string;
  manifest: Buffer;
  descriptor: Descriptor;
  config: Record<string, unknown>;
  blobs: Descriptor[];
}

/** The images tagged `names` in our output layout: manifests, configs and blobs, checked against their digests. */
async function readLocalImages(layoutDir: string, names: readonly string[], target: string): Promise<LocalImage[]> {
  const files = new DirectoryFiles(layoutDir);
  const indexFile = new JsonContext(path.join(layoutDir, 'index.json'));
  if ((await files.sizeOf('index.json')) === undefined) throw new RegistryArtifactError(target, `${layoutDir} is not an OCI layout (no index.json): nothing to push`);
  const index = indexFile.object(indexFile.parse(await files.read('index.json', MAX_INDEX_BYTES)), '');
  const entries = indexFile.array(index['manifests'], 'manifests').map((value, i) => parseDescriptor(indexFile, value, `manifests[${i}]`));
  const images: LocalImage[] = [];
  for (const name of names) {
    const descriptor = entries.find((entry) => entry.annotations[REF_NAME] === name);
    if (descriptor === undefined) throw new RegistryArtifactError(target, `${layoutDir} has no image tagged ${JSON.stringify(name)} to push`);
    const manifest = await readBlob(files, descriptor, `manifest of ${name}`, MAX_MANIFEST_BYTES);
    const manifestFile = new JsonContext(`${layoutDir}: manifest of ${name}`);
    const parsed = manifestFile.object(manifestFile.parse(manifest), '');
    const configDescriptor = parseDescriptor(manifestFile, parsed['config'], 'config');
    const config = manifestFile.object(manifestFile.parse(await readBlob(files, configDescriptor, `config of ${name}`, MAX_CONFIG_BYTES)), '');
    const layers = manifestFile.array(parsed['layers'], 'layers').map((value, i) => parseDescriptor(manifestFile, value, `layers[${i}]`));
    images.push({ name, manifest, descriptor, config, blobs: [configDescriptor, ...layers] });
  }
  return images;
}

/**
 * Pushes images of an OCI layout (our build output: metadata image and blobs as layers, config,
 * manifest) to `target` (`docker://HOST/REPO:TAG`). One image: its manifest is tagged; several
 * (platforms of one build): each manifest by digest, then an index of them tagged.
 *
 * Blobs the repository has are skipped (HEAD), blobs another repository of `mountFrom` has are
 * mounted, the rest are uploaded (POST, then one streamed PUT with the digest, which the registry
 * verifies; a transient failure starts the upload over, up to the client's retries). The manifest
 * goes last, only once every blob it names is confirmed present, so a failed or interrupted push
 * leaves no tag pointing at missing blobs.
 */
export async function pushLayoutImages(layoutDir: string, names: readonly string[], target: string, options: PushOptions = {}): Promise<PushResult> {
  const reference = parseReference(target);
  if (names.length === 0) throw new RegistryArtifactError(reference.text, 'no image to push');
  const images = await readLocalImages(layoutDir, names, reference.text);
  const mountFrom = (options.mountFrom ?? []).filter((repository) => repository !== reference.repository);
  const client = new RegistryClient(reference, { ...options, push: true, pullRepositories: mountFrom });

  const blobs = new Map<string, Descriptor>();
  for (const image of images) for (const blob of image.blobs) blobs.set(blob.digest.text, blob);
  const pushed: PushedBlob[] = [];
  let uploadedBytes = 0;
  for (const blob of blobs.values()) {
    const result = await pushBlob(client, layoutDir, blob, mountFrom, (bytes) => (uploadedBytes += bytes));
    pushed.push(result);
  }
  // Every blob confirmed before any manifest names it (a registry may accept an upload and lose it).
  for (const blob of blobs.values()) {
    const sizeBytes = await client.headBlob(blob.digest.text);
    if (sizeBytes === undefined) throw new RegistryHttpError(reference.text, 'HEAD', client.path(`blobs/${blob.digest.text}`), 404, 'blob missing right after it was pushed; manifest not pushed');
  }

  if (images.length === 1) {
    const image = images[0]!;
    const bytes = options.subject === undefined ? image.manifest : withSubject(image.manifest, options.subject);
    const { digest, subjectIndexed } = await putManifest(client, reference, tagOf(reference), bytes, image.descriptor.mediaType);
    const result: PushResult = { reference: reference.text, manifestDigest: digest, mediaType: image.descriptor.mediaType, blobs: pushed, uploadedBytes };
    if (options.subject !== undefined) {
      result.referrers = subjectIndexed ? { api: true } : await updateReferrers(client, reference, options.subject, { mediaType: image.descriptor.mediaType, digest, size: bytes.length }, String((JSON.parse(bytes.toString('utf8')) as { config?: { mediaType?: unknown } }).config?.mediaType ?? ''));
    }
    return result;
  }
  const manifests = [];
  for (const image of images) {
    const { digest } = await putManifest(client, reference, image.descriptor.digest.text, image.manifest, image.descriptor.mediaType);
    const platform = typeof image.config['os'] === 'string' && typeof image.config['architecture'] === 'string' ? { platform: { os: image.config['os'], architecture: image.config['architecture'], ...(typeof image.config['variant'] === 'string' ? { variant: image.config['variant'] } : {}) } } : {};
    manifests.push({ mediaType: image.descriptor.mediaType, digest, size: image.manifest.length, ...platform, annotations: { [REF_NAME]: image.name } });
  }
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_INDEX, manifests }));
  const { digest } = await putManifest(client, reference, tagOf(reference), index, MEDIA_TYPE_OCI_INDEX);
  return { reference: reference.text, manifestDigest: digest, mediaType: MEDIA_TYPE_OCI_INDEX, blobs: pushed, uploadedBytes };
}

function tagOf(reference: RegistryReference): string {
  if (reference.digest !== undefined) throw new RegistryArtifactError(reference.text, 'push to a tag (HOST/REPO:TAG), not a digest: the pushed manifest has its own digest');
  return reference.tag ?? 'latest';
}

function withSubject(manifest: Buffer, subject: ManifestDescriptor): Buffer {
  const parsed = JSON.parse(manifest.toString('utf8')) as Record<string, unknown>;
  return Buffer.from(JSON.stringify({ ...parsed, subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size } }));
}

async function pushBlob(client: RegistryClient, layoutDir: string, blob: Descriptor, mountFrom: readonly string[], counted: (bytes: number) => void): Promise<PushedBlob> {
  const digest = blob.digest.text;
  const sizeBytes = blob.sizeBytes;
  if ((await client.headBlob(digest)) === sizeBytes) return { digest, sizeBytes, action: 'present' };
  const file = path.join(layoutDir, blobPath(blob.digest));
  const local = await stat(file).catch(() => undefined);
  if (local?.size !== sizeBytes) throw new RegistryArtifactError(client.reference.text, `${file}: blob ${shortDigest(digest)} is missing or not ${sizeBytes} bytes in the layout`);
  const uploads = client.path('blobs/uploads/');
  // A mount needs a repository that has the blob: asking each is cheaper than an upload session per
  // try. Mounting is an optimization: a repository we may not read, or a registry that refuses to
  // mount, leaves the plain upload below.
  let session: Response | undefined;
  for (const repository of mountFrom) {
    const found = await client.headBlob(digest, repository).catch((error: unknown) => {
      if (error instanceof RegistryHttpError) return undefined;
      throw error;
    });
    if (found !== sizeBytes) continue;
    const response = await client.request('POST', `${uploads}?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(repository)}`, { headers: { 'content-length': '0' }, allow: [401, 403, 404, 405] });
    if (response.status === 201) {
      await response.body?.cancel().catch(() => undefined);
      return { digest, sizeBytes, action: 'mounted' };
    }
    // 202: the registry would not mount and opened an upload session instead; use it.
    if (response.status === 202) {
      session = response;
      break;
    }
    await response.body?.cancel().catch(() => undefined);
    break;
  }
  // An upload that fails transiently (the connection dropped, a 5xx) starts over in a new session:
  // the registry may have ended the old one, and what it received of it is not kept.
  for (let attempt = 1; ; attempt++) {
    session ??= await client.request('POST', uploads, { headers: { 'content-length': '0' } });
    try {
      return await upload(client, session, digest, file, sizeBytes, counted);
    } catch (error) {
      if (!isTransientRegistryError(error) || attempt > client.retries) throw attempt > 1 ? withAttempts(error, attempt) : error;
      session = undefined;
      await client.waitBeforeRetry(attempt);
    }
  }
}

/** One streamed PUT to the session the registry opened, completing it with the digest the registry checks. */
async function upload(client: RegistryClient, session: Response, digest: string, file: string, sizeBytes: number, counted: (bytes: number) => void): Promise<PushedBlob> {
  await session.body?.cancel().catch(() => undefined);
  const location = session.headers.get('location');
  if (location === null) throw new RegistryHttpError(client.reference.text, 'POST', client.path('blobs/uploads/'), session.status, 'no Location for the upload session');
  const url = new URL(location, client.baseUrl);
  url.searchParams.set('digest', digest);
  async function* body(): AsyncGenerator<Buffer> {
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
      counted((chunk as Buffer).length);
      yield chunk as Buffer;
    }
  }
  try {
    const response = await client.request('PUT', url.toString(), { headers: { 'content-type': 'application/octet-stream', 'content-length': String(sizeBytes) }, body: () => body(), retry: false });
    await response.body?.cancel().catch(() => undefined);
    const stored = response.headers.get('docker-content-digest');
    if (stored !== null && stored !== digest) throw new DigestMismatchError(`${client.reference.text}: uploaded blob`, 'digest', digest, stored);
  } catch (error) {
    // Best effort: free the session (the registry also expires it); the blob is simply not there.
    await fetch(url, { method: 'DELETE' }).then((r) => r.body?.cancel(), () => undefined).catch(() => undefined);
    throw error;
  }
  return { digest, sizeBytes, action: 'uploaded' };
}

/** PUTs a manifest or index; also tells whether the registry answered `OCI-Subject` (it indexes referrers itself). */
async function putManifest(client: RegistryClient, reference: RegistryReference, tagOrDigest: string, bytes: Buffer, mediaType: string): Promise<{ digest: string; subjectIndexed: boolean }> {
  const digest = digestOf(bytes);
  const response = await client.request('PUT', client.path(`manifests/${tagOrDigest}`), { headers: { 'content-type': mediaType }, body: () => bytes });
  await response.body?.cancel().catch(() => undefined);
  const stored = response.headers.get('docker-content-digest');
  if (stored !== null && stored !== digest) throw new DigestMismatchError(`${withReference(reference, tagOrDigest).text}: pushed manifest`, 'digest', digest, stored);
  return { digest, subjectIndexed: response.headers.get('oci-subject') !== null };
}

/**
 * OCI 1.1 referrers: a registry that processed `subject` says so (`OCI-Subject`); for one that
 * did not (distribution 2.8), the referrers tag `ALG-HEX` of the subject holds an index listing its
 * referrers, which we read, extend and write back.
 */
async function updateReferrers(client: RegistryClient, reference: RegistryReference, subject: ManifestDescriptor, pushed: ManifestDescriptor, artifactType: string): Promise<{ api: false; tag: string }> {
  const tag = subject.digest.replace(':', '-');
  const existing = await client.getManifest(tag, MAX_INDEX_BYTES, true);
  let manifests: unknown[] = [];
  if (existing !== undefined) {
    const parsed = JSON.parse(existing.bytes.toString('utf8')) as { manifests?: unknown };
    if (Array.isArray(parsed.manifests)) manifests = parsed.manifests.filter((entry) => (entry as { digest?: unknown }).digest !== pushed.digest);
  }
  manifests.push({ mediaType: pushed.mediaType, digest: pushed.digest, size: pushed.size, ...(artifactType === '' ? {} : { artifactType }) });
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_INDEX, manifests }));
  await putManifest(client, reference, tag, index, MEDIA_TYPE_OCI_INDEX);
  return { api: false, tag };
}

/** What a reference names, as a descriptor (for `subject`): the manifest or index its tag points at. */
export async function resolveManifestDescriptor(spec: string, options: RegistryClientOptions = {}): Promise<ManifestDescriptor & { reference: RegistryReference }> {
  const reference = parseReference(spec);
  const client = new RegistryClient(reference, options);
  const manifest = (await client.getManifest(reference.digest ?? reference.tag ?? 'latest', MAX_MANIFEST_BYTES))!;
  return { reference, mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.bytes.length };
}
