import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';
const IN_TOTO = 'application/vnd.in-toto+json';

interface Blob {
  digest: string;
  bytes: Buffer;
}

function blob(bytes: Buffer | string): Blob {
  const buffer = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
  return { digest: `sha256:${createHash('sha256').update(buffer).digest('hex')}`, bytes: buffer };
}

/**
 * Writes, from an unpacked `docker save` (old format: manifest.json, CONFIG.json, HEX/layer.tar),
 * an OCI archive shaped like BuildKit's `--output type=oci,dest=-` for a multi-platform build with
 * provenance: index.json -> an image index listing a linux/amd64 and a linux/arm64 manifest (the
 * same layers, configs differing in architecture) and, per image, an attestation manifest with
 * platform unknown/unknown and the `vnd.docker.reference.*` annotations. Blobs come first and
 * index.json last, as BuildKit streams them. (Debian's docker.io 20.10 has no OCI exporter and no
 * buildx, so the real BuildKit's layers are repackaged here.)
 */
export async function writeBuildkitStyleOciArchive(savedDir: string, destination: string): Promise<void> {
  const [entry] = JSON.parse(await readFile(join(savedDir, 'manifest.json'), 'utf8')) as { Config: string; Layers: string[] }[];
  if (entry === undefined) throw new Error(`${savedDir}/manifest.json lists no image`);
  const blobs: Blob[] = [];
  const add = (b: Blob) => (blobs.push(b), b);
  const layers = [];
  for (const layerPath of entry.Layers) {
    const layer = add(blob(await readFile(join(savedDir, layerPath))));
    layers.push({ mediaType: OCI_LAYER, digest: layer.digest, size: layer.bytes.length });
  }
  const config = JSON.parse(await readFile(join(savedDir, entry.Config), 'utf8')) as Record<string, unknown>;
  const platformManifests = [];
  for (const architecture of ['amd64', 'arm64']) {
    const configBlob = add(blob(JSON.stringify({ ...config, os: 'linux', architecture })));
    const manifest = add(blob(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: OCI_CONFIG, digest: configBlob.digest, size: configBlob.bytes.length }, layers })));
    platformManifests.push({ mediaType: OCI_MANIFEST, digest: manifest.digest, size: manifest.bytes.length, platform: { os: 'linux', architecture } });
  }
  const attestations = platformManifests.map((image) => {
    const statement = add(blob(JSON.stringify({ _type: 'https://in-toto.io/Statement/v0.1', predicateType: 'https://slsa.dev/provenance/v0.2', subject: [], predicate: {} })));
    const attestationConfig = add(blob(JSON.stringify({ architecture: 'unknown', os: 'unknown', config: {}, rootfs: { type: 'layers', diff_ids: [statement.digest] } })));
    const manifest = add(
      blob(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: OCI_MANIFEST,
          config: { mediaType: OCI_CONFIG, digest: attestationConfig.digest, size: attestationConfig.bytes.length },
          layers: [{ mediaType: IN_TOTO, digest: statement.digest, size: statement.bytes.length, annotations: { 'in-toto.io/predicate-type': 'https://slsa.dev/provenance/v0.2' } }],
        }),
      ),
    );
    return {
      mediaType: OCI_MANIFEST,
      digest: manifest.digest,
      size: manifest.bytes.length,
      annotations: { 'vnd.docker.reference.digest': image.digest, 'vnd.docker.reference.type': 'attestation-manifest' },
      platform: { os: 'unknown', architecture: 'unknown' },
    };
  });
  const index = add(blob(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [...platformManifests, ...attestations] })));
  const top = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_INDEX, digest: index.digest, size: index.bytes.length, annotations: { 'org.opencontainers.image.created': '2026-01-01T00:00:00Z' } }] });

  const pack = tar.pack();
  const written = pipeline(pack, createWriteStream(destination));
  pack.entry({ name: 'blobs/', type: 'directory' });
  pack.entry({ name: 'blobs/sha256/', type: 'directory' });
  const seen = new Set<string>();
  for (const b of blobs) {
    if (seen.has(b.digest)) continue;
    seen.add(b.digest);
    pack.entry({ name: `blobs/sha256/${b.digest.slice('sha256:'.length)}` }, b.bytes);
  }
  pack.entry({ name: 'oci-layout' }, JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  pack.entry({ name: 'index.json' }, top);
  pack.finalize();
  await written;
}
