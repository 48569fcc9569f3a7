import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { DigestCheck, shortDigest } from '../digest.js';
import { JsonContext, parseDescriptor, platformText, type Descriptor } from '../json.js';
import { INDEX_MEDIA_TYPES } from '../mediaTypes.js';
import { ANNOTATION_BLOB, EROFS_BLOB_MEDIA_TYPE, EROFS_METADATA_MEDIA_TYPE, EROFS_OBJECT_INDEX_MEDIA_TYPE } from '../outputLayout.js';
import type { Platform } from '../types.js';
import { RegistryClient, type RegistryClientOptions } from './client.js';
import { RegistryArtifactError } from './errors.js';
import { imageNameOf, manifestReference, parseReference } from './reference.js';
import { MAX_MANIFEST_BYTES } from './source.js';
import { makeDirectory } from '../../util/directory.js';

export interface PullOptions extends RegistryClientOptions {
  /** `NAME.erofs` (default: from the reference, `app:v1` -> `app_v1`). */
  name?: string;
  /** From an index of several platforms (default linux/amd64). */
  platform?: Platform;
}

export interface PullResult {
  name: string;
  reference: string;
  manifestDigest: string;
  metadataImage: string;
  /** In device-table order: `OUTDIR/blobs/sha256/HEX`, where `erofs mount` and `inspect` look. */
  blobs: string[];
  /** `OUTDIR/objects/HEX.erofs`: the blobs' object indexes, for sharing mounts (when the artifact has them). */
  objectIndexes: string[];
  /** Blob bytes fetched (blobs already in OUTDIR are not fetched again). */
  downloadedBytes: number;
}

function fileName(name: string): string {
  const cleaned = name.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_');
  return cleaned === '' ? 'image' : cleaned;
}

/**
 * Fetches an EROFS artifact pushed by `build --push` (metadata image and blobs as layers) into
 * OUTDIR: `NAME.erofs` and `blobs/sha256/HEX`, the layout `erofs mount` and the kernel mount
 * command expect. Every blob is checked against its digest and size while it streams to a
 * temporary name; nothing gets its final name before all of them are complete, and on failure
 * the temporary files are removed.
 */
export async function pullErofsArtifact(spec: string, outputDir: string, options: PullOptions = {}): Promise<PullResult> {
  const reference = parseReference(spec);
  const client = new RegistryClient(reference, options);
  let manifest = (await client.getManifest(manifestReference(reference), MAX_MANIFEST_BYTES))!;
  if (INDEX_MEDIA_TYPES.includes(manifest.mediaType)) {
    const file = new JsonContext(`${reference.text}: index`);
    const entries = file.array(file.object(file.parse(manifest.bytes), '')['manifests'], 'manifests').map((value, i) => parseDescriptor(file, value, `manifests[${i}]`));
    const wanted = options.platform ?? { os: 'linux', architecture: 'amd64' };
    const chosen = entries.length === 1 ? entries[0] : entries.find((entry) => entry.platform?.os === wanted.os && entry.platform.architecture === wanted.architecture);
    if (chosen === undefined) throw new RegistryArtifactError(reference.text, `index has no manifest for ${platformText(wanted)} (it has ${entries.map((entry) => platformText(entry.platform)).join(', ')})`);
    manifest = (await client.getManifest(chosen.digest.text, MAX_MANIFEST_BYTES))!;
  }
  const file = new JsonContext(`${reference.text}: manifest ${shortDigest(manifest.digest)}`);
  const parsed = file.object(file.parse(manifest.bytes), '');
  const layers = file.array(parsed['layers'], 'layers').map((value, i) => parseDescriptor(file, value, `layers[${i}]`));
  // The metadata image, its blobs in device order, then (optionally) the blobs' object indexes.
  const [metadata, ...rest] = layers;
  const blobs = rest.filter((layer) => layer.mediaType === EROFS_BLOB_MEDIA_TYPE);
  const objectIndexes = rest.filter((layer) => layer.mediaType === EROFS_OBJECT_INDEX_MEDIA_TYPE);
  if (metadata?.mediaType !== EROFS_METADATA_MEDIA_TYPE || blobs.length + objectIndexes.length !== rest.length) {
    const found = layers.map((layer) => layer.mediaType).join(', ') || 'no layers';
    throw new RegistryArtifactError(reference.text, `not an EROFS artifact (layers: ${found}; expected ${EROFS_METADATA_MEDIA_TYPE} then ${EROFS_BLOB_MEDIA_TYPE}): push one with build --push, or build this image from docker://${reference.text}`);
  }
  const indexed = objectIndexes.map((layer, i) => {
    const blob = layer.annotations[ANNOTATION_BLOB];
    if (blob === undefined || !blobs.some((b) => b.digest.text === blob)) throw new RegistryArtifactError(reference.text, `object index ${i + 1} does not name one of the artifact's blobs (${ANNOTATION_BLOB}: ${JSON.stringify(blob)})`);
    return { layer, blobHex: blob.slice('sha256:'.length) };
  });
  const name = fileName(options.name ?? imageNameOf(reference));
  const blobDir = path.join(outputDir, 'blobs', 'sha256');
  await makeDirectory(outputDir, 'output directory');
  await mkdir(blobDir, { recursive: true });
  const suffix = `.tmp-pull-${process.pid}-${randomBytes(4).toString('hex')}`;
  const renames: Array<[string, string]> = [];
  let downloadedBytes = 0;
  const fetchTo = async (descriptor: Descriptor, target: string, role: string): Promise<void> => {
    const existing = await stat(target).catch(() => undefined);
    // Blob files are named by their digest: one of the right size is the same blob (an earlier pull or build).
    if (role.startsWith('blob ') && existing?.isFile() === true && existing.size === descriptor.sizeBytes) return;
    const temp = `${target}${suffix}`;
    renames.push([temp, target]);
    const check = new DigestCheck({ subject: `${reference.text}: ${role} ${shortDigest(descriptor.digest.text)}`, kind: 'digest', expected: descriptor.digest, expectedSizeBytes: descriptor.sizeBytes });
    await pipeline(client.openBlob(descriptor.digest.text), check, createWriteStream(temp, { flags: 'wx' }));
    downloadedBytes += descriptor.sizeBytes;
  };
  try {
    for (const [i, blob] of blobs.entries()) {
      if (blob.digest.algorithm !== 'sha256') throw new RegistryArtifactError(reference.text, `blob ${i + 1} is named by ${blob.digest.algorithm}; device tags are sha256 hex`);
      await fetchTo(blob, path.join(blobDir, blob.digest.hex), `blob ${i + 1}/${blobs.length}`);
    }
    if (indexed.length > 0) await mkdir(path.join(outputDir, 'objects'), { recursive: true });
    // Where erofs mount looks for them: OUTDIR/objects/HEX.erofs, HEX the blob's.
    for (const [i, { layer, blobHex }] of indexed.entries()) await fetchTo(layer, path.join(outputDir, 'objects', `${blobHex}.erofs`), `object index ${i + 1}/${indexed.length}`);
    await fetchTo(metadata, path.join(outputDir, `${name}.erofs`), 'metadata image');
    for (const [temp, target] of renames) await rename(temp, target);
  } catch (error) {
    await Promise.all(renames.map(([temp]) => rm(temp, { force: true })));
    throw error;
  }
  return { name, reference: reference.text, manifestDigest: manifest.digest, metadataImage: path.join(outputDir, `${name}.erofs`), blobs: blobs.map((blob) => path.join(blobDir, blob.digest.hex)), objectIndexes: indexed.map(({ blobHex }) => path.join(outputDir, 'objects', `${blobHex}.erofs`)), downloadedBytes };
}
