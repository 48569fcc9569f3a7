import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { compress as zstdCompress } from 'zstd-napi';
import {
  DigestMismatchError,
  ImageNotFoundError,
  InvalidImageSourceError,
  InvalidLayerError,
  MissingBlobError,
  SizeMismatchError,
  UnsupportedMediaTypeError,
} from '../../src/oci/errors.js';
import { openImageSource, probeImageSource } from '../../src/oci/source.js';
import { readLayerEntries } from '../../src/oci/tarEntries.js';
import { TYPEFLAG, encodePaxRecords, encodeTarHeader, paddingBytes } from '../../src/oci/tarHeader.js';
import type { ImageSource } from '../../src/oci/types.js';
import { runChecked } from '../helpers/exec.js';
import { withTempDir } from '../helpers/tmp.js';
import { collect, compressBytes, makeTar, sha256, smallTar, writeBlob, writeImage, writeIndex, writeLayout } from './helpers.js';

type ErrorClass = abstract new (...args: never[]) => Error;

/** Asserts the promise rejects with `errorClass`, a one-line message matching every pattern. */
async function assertFails(promise: Promise<unknown>, errorClass: ErrorClass, patterns: RegExp[]): Promise<Error> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof errorClass, `expected ${errorClass.name}, got ${caught instanceof Error ? `${caught.name}: ${caught.message}` : String(caught)}`);
  assert.match((caught as unknown as { code: string }).code, /^ERR_/);
  assert.ok(!caught.message.includes('\n'), `one line: ${caught.message}`);
  for (const pattern of patterns) assert.match(caught.message, pattern);
  return caught;
}

async function layerBytes(source: ImageSource, imageIndex: number, layerIndex: number): Promise<Buffer> {
  const layer = source.images[imageIndex]!.layers[layerIndex]!;
  return collect(await source.openLayer(layer));
}

async function entryPaths(source: ImageSource, imageIndex: number, layerIndex: number): Promise<string[]> {
  const layer = source.images[imageIndex]!.layers[layerIndex]!;
  const paths: string[] = [];
  for await (const entry of readLayerEntries(await source.openLayer(layer), layer.label)) {
    paths.push(entry.path);
    await collect(entry.body);
  }
  return paths;
}

const BASE = smallTar('base');
const MIDDLE = smallTar('middle');
const TOP = smallTar('top');

async function standardLayout(layout: string): Promise<Awaited<ReturnType<typeof writeLayout>>> {
  return writeLayout(layout, [
    { tag: 'base', layers: [{ tar: BASE, compression: 'gzip' }] },
    {
      tag: 'v1',
      layers: [
        { tar: BASE, compression: 'gzip' },
        { tar: MIDDLE, compression: 'zstd' },
        { tar: TOP, compression: 'none' },
      ],
    },
  ]);
}

test('OCI layout: every image, tags, digests and diff_ids, verified layer bytes for gzip, zstd and plain', async () => {
  await withTempDir(async (dir) => {
    const layout = join(dir, 'layout');
    const written = await standardLayout(layout);
    const source = await openImageSource(layout);
    assert.equal(source.kind, 'oci-layout');
    assert.deepEqual(source.notes, []);
    assert.deepEqual(source.images.map((image) => image.name), ['base', 'v1']);
    const v1 = source.images[1]!;
    assert.equal(v1.manifestDigest, written[1]!.manifestDigest);
    assert.equal(v1.configDigest, written[1]!.configDigest);
    assert.deepEqual(v1.platform, { os: 'linux', architecture: 'amd64' });
    assert.deepEqual(v1.config?.rootfs?.diff_ids, [sha256(BASE), sha256(MIDDLE), sha256(TOP)]);
    assert.deepEqual(
      v1.layers.map((layer) => [layer.digest, layer.diffId, layer.mediaType]),
      [
        [written[1]!.layerDigests[0], sha256(BASE), 'application/vnd.oci.image.layer.v1.tar+gzip'],
        [written[1]!.layerDigests[1], sha256(MIDDLE), 'application/vnd.oci.image.layer.v1.tar+zstd'],
        [written[1]!.layerDigests[2], sha256(TOP), 'application/vnd.oci.image.layer.v1.tar'],
      ],
    );
    assert.deepEqual(await layerBytes(source, 1, 0), BASE);
    assert.deepEqual(await layerBytes(source, 1, 1), MIDDLE);
    assert.deepEqual(await layerBytes(source, 1, 2), TOP);
    assert.deepEqual(await entryPaths(source, 1, 1), ['', 'etc', 'etc/marker', 'etc/link']);
    // A copied descriptor still finds its layer.
    assert.deepEqual(await collect(await source.openLayer({ ...v1.layers[0]! })), BASE);

    const tagged = await openImageSource(`${layout}:v1`);
    assert.deepEqual(tagged.images.map((image) => image.name), ['v1']);
    await assertFails(openImageSource(`${layout}:nope`), ImageNotFoundError, [new RegExp(`^${layout}: no image tagged "nope" \\(available: base, v1\\)$`)]);
  });
});

test('multi-platform index: linux/amd64 picked by default and said so, another platform on request, attestations ignored', async () => {
  await withTempDir(async (dir) => {
    const layout = join(dir, 'layout');
    const amd64 = await writeImage(layout, { layers: [{ tar: smallTar('amd64'), compression: 'gzip' }] });
    const arm64 = await writeImage(layout, { layers: [{ tar: smallTar('arm64'), compression: 'gzip' }], platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } });
    const attestation = await writeImage(layout, { layers: [{ tar: smallTar('sbom'), compression: 'none' }], platform: { os: 'unknown', architecture: 'unknown' } });
    const nested = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: arm64.manifestDigest, size: arm64.manifestSizeBytes, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
          { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: amd64.manifestDigest, size: amd64.manifestSizeBytes, platform: { os: 'linux', architecture: 'amd64' } },
          {
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            digest: attestation.manifestDigest,
            size: attestation.manifestSizeBytes,
            platform: { os: 'unknown', architecture: 'unknown' },
            annotations: { 'vnd.docker.reference.type': 'attestation-manifest' },
          },
        ],
      }),
    );
    const index = await writeBlob(layout, nested);
    await writeIndex(layout, [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: index.digest, size: index.sizeBytes, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }]);

    const source = await openImageSource(layout);
    assert.equal(source.images.length, 1);
    assert.equal(source.images[0]!.name, 'multi');
    assert.equal(source.images[0]!.manifestDigest, amd64.manifestDigest);
    assert.equal(source.notes.length, 1);
    assert.match(source.notes[0]!, /lists 2 platforms \(linux\/arm64\/v8, linux\/amd64\); picked linux\/amd64/);
    assert.equal((await layerBytes(source, 0, 0)).includes('amd64'), true);

    const arm = await openImageSource(`${layout}:multi`, { platform: { os: 'linux', architecture: 'arm64' } });
    assert.equal(arm.images[0]!.manifestDigest, arm64.manifestDigest);
    assert.deepEqual(arm.images[0]!.platform, { os: 'linux', architecture: 'arm64', variant: 'v8' });
    await assertFails(openImageSource(layout, { platform: { os: 'linux', architecture: 's390x' } }), ImageNotFoundError, [/for platform linux\/s390x/, /available: linux\/arm64\/v8, linux\/amd64/]);
  });
});

test('artifacts next to images are skipped with a note; asked for by tag they are an error', async () => {
  await withTempDir(async (dir) => {
    const layout = join(dir, 'layout');
    const image = await writeImage(layout, { layers: [{ tar: BASE, compression: 'gzip' }] });
    const chart = await writeImage(layout, { layers: [{ tar: BASE, compression: 'none' }], configMediaType: 'application/vnd.cncf.helm.config.v1+json' });
    await writeIndex(layout, [
      { digest: image.manifestDigest, size: image.manifestSizeBytes, annotations: { 'org.opencontainers.image.ref.name': 'app' } },
      { digest: chart.manifestDigest, size: chart.manifestSizeBytes, annotations: { 'org.opencontainers.image.ref.name': 'chart' } },
    ]);
    const source = await openImageSource(layout);
    assert.deepEqual(source.images.map((i) => i.name), ['app']);
    assert.match(source.notes.join('\n'), /chart manifest sha256:[0-9a-f]{12}: skipped, not a container image/);
    await assertFails(openImageSource(`${layout}:chart`), UnsupportedMediaTypeError, [/"application\/vnd\.cncf\.helm\.config\.v1\+json"/, /chart/]);
  });
});

test('OCI archive (a tar of the layout, with and without ./ names) is read in place', async () => {
  await withTempDir(async (dir) => {
    const layout = join(dir, 'layout');
    const written = await standardLayout(layout);
    const dotted = join(dir, 'dotted.tar');
    await runChecked('tar', ['-C', layout, '-cf', dotted, '.']);
    const plain = join(dir, 'plain.tar');
    await runChecked('tar', ['-C', layout, '-cf', plain, 'oci-layout', 'index.json', 'blobs']);
    for (const archive of [dotted, plain]) {
      const source = await openImageSource(`${archive}:v1`);
      assert.equal(source.kind, 'oci-archive');
      assert.equal(source.images[0]!.manifestDigest, written[1]!.manifestDigest);
      assert.deepEqual(await layerBytes(source, 0, 1), MIDDLE);
      assert.deepEqual(await layerBytes(source, 0, 2), TOP);
    }
  });
});

/** A `docker save` archive in the pre-25 layout: ID/layer.tar (here symlinks, as skopeo writes), HEX.json configs. */
async function writeOldDockerArchive(root: string, layers: Buffer[], options: { gzipLast?: boolean; repoTags?: string[] } = {}): Promise<{ configDigest: string }> {
  await mkdir(root, { recursive: true });
  const diffIds = layers.map((tar) => sha256(tar));
  const layerPaths: string[] = [];
  for (const [i, tar] of layers.entries()) {
    const hex = diffIds[i]!.slice('sha256:'.length);
    const gz = options.gzipLast === true && i === layers.length - 1;
    await writeFile(join(root, `${hex}.tar`), gz ? gzipSync(tar) : tar);
    const id = `${i}`.padStart(64, 'a');
    await mkdir(join(root, id));
    await symlink(`../${hex}.tar`, join(root, id, 'layer.tar'));
    layerPaths.push(`${id}/layer.tar`);
  }
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds } }));
  const configDigest = sha256(config);
  await writeFile(join(root, `${configDigest.slice(7)}.json`), config);
  await writeFile(join(root, 'manifest.json'), JSON.stringify([{ Config: `${configDigest.slice(7)}.json`, RepoTags: options.repoTags ?? ['real/app:latest'], Layers: layerPaths }]));
  return { configDigest };
}

test('docker archive, old format: symlinked layer.tar, plain and gzip layers, diff_ids verified, tags', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'docker');
    const { configDigest } = await writeOldDockerArchive(root, [BASE, TOP], { gzipLast: true, repoTags: ['real/app:latest', 'real/app:1.0'] });
    const archive = join(dir, 'app.tar');
    await runChecked('tar', ['-C', root, '-cf', archive, '.']);
    const source = await openImageSource(archive);
    assert.equal(source.kind, 'docker-archive');
    const image = source.images[0]!;
    assert.equal(image.name, 'real/app:latest');
    assert.equal(image.configDigest, configDigest);
    assert.equal(image.manifestDigest, undefined);
    assert.deepEqual(image.layers.map((layer) => [layer.digest, layer.diffId, layer.mediaType]), [
      [sha256(BASE), sha256(BASE), 'application/vnd.docker.image.rootfs.diff.tar'],
      [undefined, sha256(TOP), 'application/vnd.docker.image.rootfs.diff.tar.gzip'],
    ]);
    assert.deepEqual(await layerBytes(source, 0, 0), BASE);
    assert.deepEqual(await layerBytes(source, 0, 1), TOP);
    assert.equal((await openImageSource(`${archive}:1.0`)).images.length, 1);
    assert.equal((await openImageSource(`${archive}:real/app:1.0`)).images.length, 1);
    await assertFails(openImageSource(`${archive}:2.0`), ImageNotFoundError, [/no image tagged "2\.0" \(available: real\/app:latest, real\/app:1\.0\)/]);
    // The extracted directory reads the same.
    const fromDir = await openImageSource(root);
    assert.equal(fromDir.kind, 'docker-archive');
    assert.deepEqual(await layerBytes(fromDir, 0, 1), TOP);
  });
});

test('docker archive, Docker 25+ format (OCI layout inside, blobs/sha256 paths) and manifest.json alone', async () => {
  await withTempDir(async (dir) => {
    const root = join(dir, 'docker25');
    const written = await writeImage(root, { layers: [{ tar: BASE, compression: 'none' }, { tar: TOP, compression: 'gzip' }] });
    await writeIndex(root, [{ digest: written.manifestDigest, size: written.manifestSizeBytes, annotations: { 'io.containerd.image.name': 'docker.io/library/app:latest', 'org.opencontainers.image.ref.name': 'latest' } }]);
    const blobPaths = written.layerDigests.map((digest) => `blobs/sha256/${digest.slice(7)}`);
    await writeFile(join(root, 'manifest.json'), JSON.stringify([{ Config: `blobs/sha256/${written.configDigest.slice(7)}`, RepoTags: ['app:latest'], Layers: blobPaths }]));
    const archive = join(dir, 'app25.tar');
    await runChecked('tar', ['-C', root, '-cf', archive, '.']);
    const source = await openImageSource(archive);
    assert.equal(source.kind, 'oci-archive', 'the OCI index is preferred: it has media types and sizes');
    assert.equal(source.images[0]!.name, 'docker.io/library/app:latest');
    assert.deepEqual(await layerBytes(source, 0, 1), TOP);
    assert.equal((await openImageSource(`${archive}:app:latest`)).images.length, 1);

    // Without index.json and oci-layout: manifest.json alone, digests from the blob paths.
    await runChecked('tar', ['-C', root, '-cf', archive, 'manifest.json', 'blobs']);
    const docker = await openImageSource(archive);
    assert.equal(docker.kind, 'docker-archive');
    assert.deepEqual(docker.images[0]!.layers.map((layer) => layer.digest), written.layerDigests);
    assert.deepEqual(await layerBytes(docker, 0, 0), BASE);
    assert.deepEqual(await layerBytes(docker, 0, 1), TOP);
  });
});

test('lone layer tarballs (.tar, .tar.gz, .tar.zst) are recognized by content; a compressed image archive is refused', async () => {
  await withTempDir(async (dir) => {
    for (const [file, compression] of [['layer.tar', 'none'], ['layer.tar.gz', 'gzip'], ['misnamed.bin', 'zstd']] as const) {
      const path = join(dir, file);
      await writeFile(path, compressBytes(TOP, compression));
      const source = await openImageSource(path);
      assert.equal(source.kind, 'layer-tarball');
      assert.equal(source.images.length, 1);
      assert.equal(source.images[0]!.config, undefined);
      const layer = source.images[0]!.layers[0]!;
      assert.equal(layer.digest, undefined);
      assert.equal(layer.diffId, undefined);
      assert.deepEqual(await collect(await source.openLayer(layer)), TOP);
    }
    // A zstd stream may begin with a skippable frame (the zstd CLI's -d and zstd-napi pass over it).
    const skippable = Buffer.alloc(12);
    skippable.writeUInt32LE(0x184d2a5e, 0);
    skippable.writeUInt32LE(4, 4);
    const framed = join(dir, 'framed.tar.zst');
    await writeFile(framed, Buffer.concat([skippable, compressBytes(TOP, 'zstd')]));
    const framedSource = await openImageSource(framed);
    assert.equal(framedSource.kind, 'layer-tarball');
    assert.deepEqual(await collect(await framedSource.openLayer(framedSource.images[0]!.layers[0]!)), TOP);
    // A PAX header whose member is missing before the end-of-archive marker (the file is scanned as an archive first).
    const pax = encodePaxRecords([['SCHILY.xattr.user.k', Buffer.from('v')]]);
    const dangling = join(dir, 'dangling.tar');
    await writeFile(dangling, Buffer.concat([makeTar([{ name: 'a', data: 'x' }], { endMarker: false }), encodeTarHeader({ name: 'pax', typeflag: TYPEFLAG.paxLocal, sizeBytes: pax.length }), pax, Buffer.alloc(paddingBytes(pax.length)), Buffer.alloc(1024)]));
    await assertFails(openImageSource(dangling), InvalidImageSourceError, [/dangling\.tar: archive is truncated: an extended header has no member after it/]);
    assert.equal((await openImageSource(join(dir, 'layer.tar.gz'))).images[0]!.name, 'layer');
    await assertFails(openImageSource(`${join(dir, 'layer.tar')}:tag`), InvalidImageSourceError, [/a layer tarball has no tags/]);

    const root = join(dir, 'docker');
    await writeOldDockerArchive(root, [BASE]);
    await runChecked('tar', ['-C', root, '-cf', join(dir, 'image.tar'), 'manifest.json', '.']);
    await writeFile(join(dir, 'image.tar.gz'), gzipSync(await readFile(join(dir, 'image.tar'))));
    await assertFails(openImageSource(join(dir, 'image.tar.gz')), InvalidImageSourceError, [/image\.tar\.gz: a gzip-compressed image archive \(it starts with manifest\.json\); decompress it first/]);
  });
});

test('bad sources: missing path, garbage, empty file, xz, plain directory', async () => {
  await withTempDir(async (dir) => {
    await assertFails(openImageSource(join(dir, 'nothing')), InvalidImageSourceError, [/nothing: no such file or directory/]);
    await writeFile(join(dir, 'garbage'), Buffer.alloc(3000, 0x47));
    await assertFails(openImageSource(join(dir, 'garbage')), InvalidImageSourceError, [/garbage: not an OCI image layout, OCI archive, docker archive or layer tarball/]);
    await writeFile(join(dir, 'empty'), '');
    await assertFails(openImageSource(join(dir, 'empty')), InvalidImageSourceError, [/empty: empty file/]);
    await writeFile(join(dir, 'layer.tar.xz'), Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1, 2, 3]));
    await assertFails(openImageSource(join(dir, 'layer.tar.xz')), UnsupportedMediaTypeError, [/layer\.tar\.xz: unsupported layer media type "xz-compressed tar"/]);
    await mkdir(join(dir, 'rootfs', 'etc'), { recursive: true });
    assert.equal((await probeImageSource(join(dir, 'rootfs'))).kind, 'directory');
    await assertFails(openImageSource(join(dir, 'rootfs')), InvalidImageSourceError, [/rootfs: a plain directory, not an OCI image layout/]);
    await writeFile(join(dir, 'gz-not-tar.gz'), gzipSync(Buffer.alloc(2000, 0x41)));
    await assertFails(openImageSource(join(dir, 'gz-not-tar.gz')), InvalidImageSourceError, [/gzip-compressed, but not a tar inside/]);
  });
});

test('wrong layer digest: the stream fails before its end with both digests and the layer named', async () => {
  await withTempDir(async (dir) => {
    const layout = join(dir, 'layout');
    const stored = compressBytes(TOP, 'gzip');
    const wrong = sha256(Buffer.from('something else'));
    await writeLayout(layout, [{ tag: 'bad', layers: [{ tar: BASE, compression: 'gzip' }, { tar: TOP, compression: 'gzip', digest: wrong }] }]);
    const source = await openImageSource(layout);
    const error = await assertFails(layerBytes(source, 0, 1), DigestMismatchError, [
      new RegExp(`^${layout}: bad layer 2/2 \\(sha256:[0-9a-f]{12}\\): digest mismatch: expected ${wrong}, got ${sha256(stored)}$`),
    ]);
    assert.equal((error as DigestMismatchError).expected, wrong);
    // The first layer is fine.
    assert.deepEqual(await layerBytes(source, 0, 0), BASE);
  });
});

test('wrong diff_id: DigestMismatchError naming diff_id; through readLayerEntries too', async () => {
  await withTempDir(async (dir) => {
    const layout = join(dir, 'layout');
    const wrong = sha256(Buffer.from('not the tar'));
    await writeLayout(layout, [{ tag: 'bad', layers: [{ tar: TOP, compression: 'zstd', diffId: wrong }] }]);
    const source = await openImageSource(layout);
    await assertFails(layerBytes(source, 0, 0), DigestMismatchError, [/bad layer 1\/1/, new RegExp(`diff_id mismatch: expected ${wrong}, got ${sha256(TOP)}`)]);
    await assertFails(entryPaths(source, 0, 0), DigestMismatchError, [/diff_id mismatch/]);
  });
});

test('plain layer whose digest is its diff_id: one check, and a mismatch names both', async () => {
  await withTempDir(async (dir) => {
    const layout = join(dir, 'layout');
    const wrong = sha256(Buffer.from('x'));
    await writeLayout(layout, [{ tag: 't', layers: [{ tar: TOP, compression: 'none', digest: wrong, diffId: wrong }] }]);
    const source = await openImageSource(layout);
    await assertFails(layerBytes(source, 0, 0), DigestMismatchError, [/digest \(and diff_id\) mismatch/]);
  });
});

test('unknown layer media type: UnsupportedMediaTypeError naming it, when the source is opened', async () => {
  await withTempDir(async (dir) => {
    const layout = join(dir, 'layout');
    await writeLayout(layout, [{ tag: 'odd', layers: [{ tar: TOP, compression: 'gzip', mediaType: 'application/vnd.oci.image.layer.v1.tar+lz4' }] }]);
    await assertFails(openImageSource(layout), UnsupportedMediaTypeError, [/odd layer 1\/1/, /unsupported layer media type "application\/vnd\.oci\.image\.layer\.v1\.tar\+lz4"/, /supported: application\/vnd\.oci\.image\.layer\.v1\.tar,/]);
  });
});

test('truncated gzip and corrupt zstd: InvalidLayerError naming the layer, not a raw zlib/zstd error', async () => {
  await withTempDir(async (dir) => {
    const bigTar = makeTar([{ name: 'big', data: randomBytes(200000) }]);
    const gz = compressBytes(bigTar, 'gzip');
    const lone = join(dir, 'cut.tar.gz');
    await writeFile(lone, gz.subarray(0, gz.length - 5000));
    const source = await openImageSource(lone);
    await assertFails(layerBytes(source, 0, 0), InvalidLayerError, [new RegExp(`^${lone}: truncated gzip stream`)]);

    // Compressible text and a frame checksum (the zstd CLI writes one by default), corrupted past the
    // first tar header so that only decoding the stream notices.
    const text = Buffer.from(randomBytes(60000).toString('hex'));
    const textTar = makeTar([{ name: 'text', data: text }]);
    const zst = zstdCompress(textTar, { checksumFlag: true });
    const corrupt = Buffer.from(zst);
    for (let i = Math.floor(zst.length / 2); i < Math.floor(zst.length / 2) + 40; i++) corrupt[i] = corrupt[i]! ^ 0xa5;
    await writeFile(join(dir, 'corrupt.tar.zst'), corrupt);
    const zsource = await openImageSource(join(dir, 'corrupt.tar.zst'));
    await assertFails(layerBytes(zsource, 0, 0), InvalidLayerError, [/corrupt\.tar\.zst: corrupt zstd stream/]);
    await writeFile(join(dir, 'cut.tar.zst'), zst.subarray(0, zst.length - 1000));
    const cut = await openImageSource(join(dir, 'cut.tar.zst'));
    await assertFails(layerBytes(cut, 0, 0), InvalidLayerError, [/cut\.tar\.zst: truncated zstd stream/]);

    // In a layout whose digest matches the broken bytes, the compression error is what surfaces.
    const layout = join(dir, 'layout');
    const brokenGz = gz.subarray(0, gz.length - 5000);
    const blob = await writeBlob(layout, brokenGz);
    const config = await writeBlob(layout, Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [sha256(bigTar)] } })));
    const manifest = await writeBlob(layout, Buffer.from(JSON.stringify({ schemaVersion: 2, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config.digest, size: config.sizeBytes }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: blob.digest, size: blob.sizeBytes }] })));
    await writeIndex(layout, [{ digest: manifest.digest, size: manifest.sizeBytes }]);
    const fromLayout = await openImageSource(layout);
    assert.match(fromLayout.images[0]!.name, /^sha256:[0-9a-f]{12}$/, 'untagged images get a digest-derived name');
    await assertFails(layerBytes(fromLayout, 0, 0), InvalidLayerError, [/layer 1\/1 \(sha256:[0-9a-f]{12}\): truncated gzip stream/]);
  });
});

test('truncated tar inside a valid compressed layer, and a ../ escape: InvalidLayerError from readLayerEntries with the layer label', async () => {
  await withTempDir(async (dir) => {
    const layout = join(dir, 'layout');
    const full = makeTar([{ name: 'a', data: Buffer.alloc(4000, 1) }, { name: 'b', data: 'b' }]);
    const cut = full.subarray(0, 2048);
    const escaping = makeTar([{ name: './ok', data: 'x' }, { name: './../../etc/cron.d/evil', data: 'x' }]);
    await writeLayout(layout, [{ tag: 't', layers: [{ tar: cut, compression: 'gzip' }, { tar: escaping, compression: 'zstd' }] }]);
    const source = await openImageSource(layout);
    await assertFails(entryPaths(source, 0, 0), InvalidLayerError, [/t layer 1\/2 \(sha256:[0-9a-f]{12}\): truncated tar/]);
    await assertFails(entryPaths(source, 0, 1), InvalidLayerError, [/t layer 2\/2 .*: entry "\.\/\.\.\/\.\.\/etc\/cron\.d\/evil": name escapes the layer root/]);
    // Absolute names, in a plain lone tarball.
    await writeFile(join(dir, 'abs.tar'), makeTar([{ name: '/etc/passwd', data: 'x' }]));
    const abs = await openImageSource(join(dir, 'abs.tar'));
    await assertFails(entryPaths(abs, 0, 0), InvalidLayerError, [/abs\.tar: entry "\/etc\/passwd": absolute name/]);
  });
});

test('missing blobs (layer, config, manifest) name the digest and the layout; size and manifest digest mismatches too', async () => {
  await withTempDir(async (dir) => {
    const missingLayer = join(dir, 'l1');
    const w1 = await writeLayout(missingLayer, [{ tag: 't', layers: [{ tar: TOP, compression: 'gzip', omit: true }] }]);
    await assertFails(openImageSource(missingLayer), MissingBlobError, [new RegExp(`^${missingLayer}: t layer 1/1 blob ${w1[0]!.layerDigests[0]} is missing \\(no blobs/sha256/[0-9a-f]{64}\\)$`)]);

    const missingConfig = join(dir, 'l2');
    const w2 = await writeLayout(missingConfig, [{ tag: 't', layers: [{ tar: TOP, compression: 'gzip' }] }]);
    await runChecked('rm', [join(missingConfig, 'blobs', 'sha256', w2[0]!.configDigest.slice(7))]);
    await assertFails(openImageSource(missingConfig), MissingBlobError, [new RegExp(`^${missingConfig}: config of t blob ${w2[0]!.configDigest} is missing`)]);

    const missingManifest = join(dir, 'l3');
    const w3 = await writeLayout(missingManifest, [{ tag: 't', layers: [{ tar: TOP, compression: 'gzip' }] }]);
    await runChecked('rm', [join(missingManifest, 'blobs', 'sha256', w3[0]!.manifestDigest.slice(7))]);
    await assertFails(openImageSource(missingManifest), MissingBlobError, [new RegExp(`manifest of t blob ${w3[0]!.manifestDigest} is missing`)]);

    // A layer blob of the wrong size is caught when the source is opened.
    const wrongSize = join(dir, 'l4');
    const w4 = await writeLayout(wrongSize, [{ tag: 't', layers: [{ tar: TOP, compression: 'gzip' }] }]);
    await writeFile(join(wrongSize, 'blobs', 'sha256', w4[0]!.layerDigests[0]!.slice(7)), Buffer.alloc(10));
    await assertFails(openImageSource(wrongSize), SizeMismatchError, [/t layer 1\/1 .*: size mismatch: descriptor says \d+ bytes, found 10 bytes/]);

    // A manifest blob whose bytes changed (same size).
    const tampered = join(dir, 'l5');
    const w5 = await writeLayout(tampered, [{ tag: 't', layers: [{ tar: TOP, compression: 'gzip' }] }]);
    const manifestPath = join(tampered, 'blobs', 'sha256', w5[0]!.manifestDigest.slice(7));
    const bytes = await readFile(manifestPath);
    await writeFile(manifestPath, Buffer.from(bytes.toString().replace('"schemaVersion":2', '"schemaVersion":2 ')).subarray(0, bytes.length));
    await assertFails(openImageSource(tampered), DigestMismatchError, [/manifest of t sha256:[0-9a-f]{12}: digest mismatch: expected sha256:/]);

    // A docker archive whose layer file is gone.
    const docker = join(dir, 'docker');
    await writeOldDockerArchive(docker, [TOP]);
    await runChecked('rm', [join(docker, `${sha256(TOP).slice(7)}.tar`)]);
    await assertFails(openImageSource(docker), MissingBlobError, [new RegExp(`^${docker}: real/app:latest layer 1/1 blob ${sha256(TOP)} is missing \\(no a+0/layer\\.tar\\)$`)]);
  });
});

test('malformed JSON is named by file and field', async () => {
  await withTempDir(async (dir) => {
    const layout = join(dir, 'layout');
    await writeIndex(layout, []);
    await writeFile(join(layout, 'index.json'), '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:xyz","size":1}]}');
    await assertFails(openImageSource(layout), InvalidImageSourceError, [new RegExp(`^${layout}/index\\.json: manifests\\[0\\]\\.digest: digest "sha256:xyz" is not 64 lowercase hex characters$`)]);
    await writeFile(join(layout, 'index.json'), '{not json');
    await assertFails(openImageSource(layout), InvalidImageSourceError, [/index\.json: not valid JSON/]);
    await writeFile(join(layout, 'index.json'), '{"schemaVersion":2,"manifests":[]}');
    await assertFails(openImageSource(layout), InvalidImageSourceError, [/holds no container images/]);
  });
});

test('a tar that contains tar entries with the root ./ and whiteouts reads through the source unchanged', async () => {
  await withTempDir(async (dir) => {
    const tar = makeTar([
      { name: './', typeflag: TYPEFLAG.dir },
      { name: './etc/.wh.motd', data: '' },
      { name: './usr/.wh..wh..opq', data: '' },
    ]);
    await writeFile(join(dir, 'wh.tar'), tar);
    const source = await openImageSource(join(dir, 'wh.tar'));
    assert.deepEqual(await entryPaths(source, 0, 0), ['', 'etc/.wh.motd', 'usr/.wh..wh..opq']);
  });
});

test('destroying a layer stream early closes the blob file; a path escaping a docker archive is refused', async () => {
  await withTempDir(async (dir) => {
    const layout = join(dir, 'layout');
    const big = makeTar([{ name: 'big', data: randomBytes(4 * 1024 * 1024) }]);
    await writeLayout(layout, [{ tag: 't', layers: [{ tar: big, compression: 'gzip' }, { tar: big, compression: 'zstd' }, { tar: big, compression: 'none' }] }]);
    const source = await openImageSource(layout);
    const fdsBefore = (await readdir('/proc/self/fd')).length;
    for (const layer of source.images[0]!.layers) {
      const stream = await source.openLayer(layer);
      for await (const chunk of stream) {
        assert.ok((chunk as Buffer).length > 0);
        break;
      }
      assert.ok(stream.destroyed);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal((await readdir('/proc/self/fd')).length, fdsBefore, 'no file left open');

    const docker = join(dir, 'docker');
    await writeOldDockerArchive(docker, [TOP]);
    const manifest = JSON.parse(await readFile(join(docker, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
    manifest[0]!.Layers[0] = '../../../etc/passwd';
    await writeFile(join(docker, 'manifest.json'), JSON.stringify(manifest));
    await assertFails(openImageSource(docker), InvalidImageSourceError, [/path "\.\.\/\.\.\/\.\.\/etc\/passwd" points outside the image/]);
  });
});
