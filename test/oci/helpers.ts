import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { compress as zstdCompress } from 'zstd-napi';
import { TYPEFLAG, encodePaxRecords, encodeTarHeader, paddingBytes } from '../../src/oci/tarHeader.js';

/** One entry of a synthetic tar. Names are byte strings (latin1) unless `utf8Name` is used. */
export interface TestEntry {
  name: string;
  typeflag?: string;
  data?: Buffer | string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtimeSec?: number;
  linkName?: string;
  devMajor?: number;
  devMinor?: number;
  /** PAX records written in an 'x' header before the entry (values raw). */
  pax?: Array<[string, Buffer | string]>;
  /** Write the name through a GNU 'L' long-name header instead of PAX/ustar. */
  gnuLongName?: boolean;
  /** Size field override (for truncation tests). */
  sizeBytes?: number;
}

function block(header: Buffer, data: Buffer): Buffer {
  return Buffer.concat([header, data, Buffer.alloc(paddingBytes(data.length))]);
}

/** Encodes entries as a tar (ustar + PAX + GNU long names), ending with the two zero blocks unless told not to. */
export function makeTar(entries: TestEntry[], options: { endMarker?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    const data = typeof entry.data === 'string' ? Buffer.from(entry.data) : entry.data ?? Buffer.alloc(0);
    const pax = [...(entry.pax ?? [])];
    let name = entry.name;
    if (entry.gnuLongName === true) {
      const longName = Buffer.from(`${entry.name}\0`, 'latin1');
      parts.push(block(encodeTarHeader({ name: '././@LongLink', typeflag: TYPEFLAG.gnuLongName, sizeBytes: longName.length }), longName));
      name = entry.name.slice(0, 99);
    } else if (Buffer.byteLength(name, 'latin1') > 100) {
      try {
        encodeTarHeader({ name, typeflag: '0' });
      } catch {
        pax.unshift(['path', Buffer.from(name, 'latin1')]);
        name = name.slice(-99).replace(/^\/+/, '');
      }
    }
    if (pax.length > 0) {
      const records = encodePaxRecords(pax);
      parts.push(block(encodeTarHeader({ name: `PaxHeaders/${name.slice(0, 80)}`, typeflag: TYPEFLAG.paxLocal, sizeBytes: records.length }), records));
    }
    const header = encodeTarHeader({
      name,
      typeflag: entry.typeflag ?? TYPEFLAG.file,
      mode: entry.mode ?? 0o644,
      uid: entry.uid ?? 0,
      gid: entry.gid ?? 0,
      sizeBytes: entry.sizeBytes ?? data.length,
      mtimeSec: entry.mtimeSec ?? 1_700_000_000,
      linkName: entry.linkName ?? '',
      devMajor: entry.devMajor ?? 0,
      devMinor: entry.devMinor ?? 0,
    });
    parts.push(block(header, data));
  }
  if (options.endMarker !== false) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export type TestCompression = 'none' | 'gzip' | 'zstd';

export function compressBytes(tar: Buffer, compression: TestCompression): Buffer {
  if (compression === 'gzip') return gzipSync(tar);
  if (compression === 'zstd') return zstdCompress(tar);
  return tar;
}

export const LAYER_MEDIA_TYPE: Record<TestCompression, string> = {
  none: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};

export interface TestLayer {
  tar: Buffer;
  compression: TestCompression;
  /** Override the media type written into the manifest. */
  mediaType?: string;
  /** Override the digest / diff_id written (to test mismatches); the blob is still stored under its true digest unless `storeUnder` says otherwise. */
  digest?: string;
  diffId?: string;
  /** Do not write the blob (missing blob test). */
  omit?: boolean;
}

export interface WrittenBlob {
  digest: string;
  sizeBytes: number;
}

/** Writes bytes as a blob of an OCI layout, returns its descriptor fields. */
export async function writeBlob(layout: string, bytes: Buffer, digest = sha256(bytes)): Promise<WrittenBlob> {
  const [algorithm, hex] = digest.split(':') as [string, string];
  await mkdir(join(layout, 'blobs', algorithm), { recursive: true });
  await writeFile(join(layout, 'blobs', algorithm, hex), bytes);
  return { digest, sizeBytes: bytes.length };
}

export interface TestImage {
  tag?: string;
  layers: TestLayer[];
  platform?: { os: string; architecture: string; variant?: string };
  configMediaType?: string;
}

export interface WrittenImage {
  manifestDigest: string;
  manifestSizeBytes: number;
  configDigest: string;
  layerDigests: string[];
  diffIds: string[];
}

/** Writes one image (layers, config, manifest) into a layout; does not touch index.json. */
export async function writeImage(layout: string, image: TestImage): Promise<WrittenImage> {
  const layerDescriptors = [];
  const diffIds: string[] = [];
  const layerDigests: string[] = [];
  for (const layer of image.layers) {
    const stored = compressBytes(layer.tar, layer.compression);
    const digest = layer.digest ?? sha256(stored);
    if (layer.omit !== true) await writeBlob(layout, stored, sha256(stored));
    if (layer.digest !== undefined && layer.omit !== true) await writeBlob(layout, stored, layer.digest);
    layerDescriptors.push({ mediaType: layer.mediaType ?? LAYER_MEDIA_TYPE[layer.compression], digest, size: stored.length });
    layerDigests.push(digest);
    diffIds.push(layer.diffId ?? sha256(layer.tar));
  }
  const platform = image.platform ?? { os: 'linux', architecture: 'amd64' };
  const config = Buffer.from(JSON.stringify({ ...platform, config: { Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: diffIds }, history: [] }));
  const configBlob = await writeBlob(layout, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: image.configMediaType ?? 'application/vnd.oci.image.config.v1+json', digest: configBlob.digest, size: configBlob.sizeBytes },
      layers: layerDescriptors,
    }),
  );
  const manifestBlob = await writeBlob(layout, manifest);
  return { manifestDigest: manifestBlob.digest, manifestSizeBytes: manifestBlob.sizeBytes, configDigest: configBlob.digest, layerDigests, diffIds };
}

export interface IndexEntry {
  mediaType?: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os: string; architecture: string; variant?: string };
}

export async function writeIndex(layout: string, manifests: IndexEntry[]): Promise<void> {
  await mkdir(layout, { recursive: true });
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const index = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: manifests.map((m) => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m })) };
  await writeFile(join(layout, 'index.json'), JSON.stringify(index));
}

/** A layout holding the given images, each listed in index.json with its tag. */
export async function writeLayout(layout: string, images: TestImage[]): Promise<WrittenImage[]> {
  const written: WrittenImage[] = [];
  for (const image of images) written.push(await writeImage(layout, image));
  await writeIndex(
    layout,
    written.map((w, i) => ({
      digest: w.manifestDigest,
      size: w.manifestSizeBytes,
      ...(images[i]!.tag === undefined ? {} : { annotations: { 'org.opencontainers.image.ref.name': images[i]!.tag! } }),
    })),
  );
  return written;
}

/** Collects a stream into one buffer (test data only: small). */
export async function collect(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A small layer tar used across tests: a directory, a file, a symlink. */
export function smallTar(marker: string): Buffer {
  return makeTar([
    { name: './', typeflag: TYPEFLAG.dir, mode: 0o755 },
    { name: './etc/', typeflag: TYPEFLAG.dir, mode: 0o755 },
    { name: './etc/marker', data: `${marker}\n` },
    { name: './etc/link', typeflag: TYPEFLAG.symlink, linkName: 'marker' },
  ]);
}

export function readableOf(bytes: Buffer, chunkBytes = 777): Readable {
  // Odd-sized chunks so headers and bodies straddle chunk boundaries.
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += chunkBytes) chunks.push(bytes.subarray(i, i + chunkBytes));
  return Readable.from(chunks, { objectMode: false });
}
