import { createHash, randomBytes } from 'node:crypto';
import { copyFile, link, mkdir, open, readFile, rename, stat } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomically } from '../util/atomicFile.js';

/**
 * Media types of what we put in an OCI layout. containerd 2.3's EROFS support names a layer that is
 * an EROFS filesystem `application/vnd.erofs.layer.v1` and marks such images with
 * `os.features: ["erofs"]`; our metadata image is such a filesystem. Its data blobs are devices of
 * that filesystem, not mountable alone, so they get a type of their own in the same family.
 */
export const EROFS_METADATA_MEDIA_TYPE = 'application/vnd.erofs.layer.v1';
export const EROFS_BLOB_MEDIA_TYPE = 'application/vnd.erofs.blob.v1';
export const ANNOTATION_ROLE = 'io.mkfs-erofs-ts.erofs.role';
export const ANNOTATION_DEVICE_ID = 'io.mkfs-erofs-ts.erofs.device-id';
/**
 * A blob's object index (the small EROFS image that sharing mounts on 6.5+ kernels stack under the
 * metadata image): a layer of its own, so a pushed and pulled artifact mounts with sharing too.
 * Annotated with the blob it indexes.
 */
export const EROFS_OBJECT_INDEX_MEDIA_TYPE = 'application/vnd.erofs.object-index.v1';
export const ANNOTATION_BLOB = 'io.mkfs-erofs-ts.erofs.blob';
const MANIFEST_MEDIA_TYPE = 'application/vnd.oci.image.manifest.v1+json';
const CONFIG_MEDIA_TYPE = 'application/vnd.oci.image.config.v1+json';
const INDEX_MEDIA_TYPE = 'application/vnd.oci.image.index.v1+json';
const REF_NAME = 'org.opencontainers.image.ref.name';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface ErofsArtifact {
  /** Tag for index.json (`org.opencontainers.image.ref.name`). */
  name: string;
  metadataImagePath: string;
  /** Data blobs in device-table order, as paths of files named by their sha256. */
  blobPaths: string[];
  /** The source image's config (Env, Cmd, ...), kept so the result stays a runnable image. */
  sourceConfig?: Record<string, unknown>;
  created?: string;
}

async function sha256OfFile(file: string): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.allocUnsafe(1 << 20);
    let size = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      size += bytesRead;
    }
    return { digest: `sha256:${hash.digest('hex')}`, size };
  } finally {
    await handle.close();
  }
}

/** Puts a file into the layout's blob directory by digest: a hardlink when possible, else a copy. */
async function placeBlob(layoutDir: string, file: string, digest: string): Promise<void> {
  const target = path.join(layoutDir, 'blobs', 'sha256', digest.slice('sha256:'.length));
  if (path.resolve(target) === path.resolve(file)) return;
  if (await stat(target).then(() => true, () => false)) return;
  const temp = `${target}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await link(file, temp).catch(() => copyFile(file, temp));
  await rename(temp, target);
}

async function putJson(layoutDir: string, value: unknown, mediaType: string): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify(value));
  const hex = createHash('sha256').update(bytes).digest('hex');
  const target = path.join(layoutDir, 'blobs', 'sha256', hex);
  if (!(await stat(target).then(() => true, () => false))) await writeFileAtomically(target, bytes);
  return { mediaType, digest: `sha256:${hex}`, size: bytes.length };
}

/**
 * Adds an image to the OCI layout at `layoutDir` (created if needed): the metadata image and its
 * blobs as layers, a config, a manifest, and an index.json entry tagged `name` (replacing an older
 * entry of that name). Blob files are hardlinked, not copied, when on the same file system.
 */
export async function addErofsImageToLayout(layoutDir: string, artifact: ErofsArtifact): Promise<Descriptor> {
  await mkdir(path.join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  const metadata = await sha256OfFile(artifact.metadataImagePath);
  await placeBlob(layoutDir, artifact.metadataImagePath, metadata.digest);
  const layers: Descriptor[] = [
    { mediaType: EROFS_METADATA_MEDIA_TYPE, digest: metadata.digest, size: metadata.size, annotations: { [ANNOTATION_ROLE]: 'metadata' } },
  ];
  for (const [i, blobPath] of artifact.blobPaths.entries()) {
    const digest = `sha256:${path.basename(blobPath)}`;
    await placeBlob(layoutDir, blobPath, digest);
    layers.push({ mediaType: EROFS_BLOB_MEDIA_TYPE, digest, size: (await stat(blobPath)).size, annotations: { [ANNOTATION_ROLE]: 'device', [ANNOTATION_DEVICE_ID]: String(i + 1) } });
  }
  // The store keeps a blob's object index at STORE/objects/HEX.erofs beside STORE/blobs/sha256/HEX
  // (where erofs mount looks for it); a blob without files to share has none.
  for (const blobPath of artifact.blobPaths) {
    const hex = path.basename(blobPath);
    const objectIndexPath = path.join(path.dirname(path.dirname(path.dirname(blobPath))), 'objects', `${hex}.erofs`);
    if (!(await stat(objectIndexPath).then((stats) => stats.isFile(), () => false))) continue;
    const objectIndex = await sha256OfFile(objectIndexPath);
    await placeBlob(layoutDir, objectIndexPath, objectIndex.digest);
    layers.push({ mediaType: EROFS_OBJECT_INDEX_MEDIA_TYPE, digest: objectIndex.digest, size: objectIndex.size, annotations: { [ANNOTATION_ROLE]: 'object-index', [ANNOTATION_BLOB]: `sha256:${hex}` } });
  }
  const source = artifact.sourceConfig ?? {};
  const config = {
    created: artifact.created ?? (typeof source['created'] === 'string' ? source['created'] : undefined),
    architecture: typeof source['architecture'] === 'string' ? source['architecture'] : 'amd64',
    os: typeof source['os'] === 'string' ? source['os'] : 'linux',
    'os.features': ['erofs'],
    config: source['config'] ?? {},
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
  };
  const configDescriptor = await putJson(layoutDir, config, CONFIG_MEDIA_TYPE);
  const manifest = { schemaVersion: 2, mediaType: MANIFEST_MEDIA_TYPE, config: configDescriptor, layers };
  const manifestDescriptor = await putJson(layoutDir, manifest, MANIFEST_MEDIA_TYPE);

  const indexPath = path.join(layoutDir, 'index.json');
  const existing = await readFile(indexPath, 'utf8').then(
    (text) => JSON.parse(text) as { manifests?: Descriptor[] },
    () => ({ manifests: [] as Descriptor[] }),
  );
  const manifests = (existing.manifests ?? []).filter((m) => m.annotations?.[REF_NAME] !== artifact.name);
  manifests.push({ ...manifestDescriptor, annotations: { [REF_NAME]: artifact.name } });
  await writeFileAtomically(path.join(layoutDir, 'oci-layout'), Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
  await writeFileAtomically(indexPath, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: INDEX_MEDIA_TYPE, manifests }, null, 2)));
  return manifestDescriptor;
}
