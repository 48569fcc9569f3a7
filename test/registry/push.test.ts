import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pushLayoutImages, type PushResult } from '../../src/oci/registry/index.js';
import { run } from '../helpers/exec.js';
import { realImages } from '../helpers/realImages.js';
import { skopeoPush, withRegistry } from '../helpers/registry.js';
import { withFaultProxy } from '../helpers/registryProxy.js';
import { withTempDir } from '../helpers/tmp.js';
import { snapshotTree, assertTreesEqual } from '../helpers/tree.js';
import { writeBlob, writeImage, writeIndex } from '../oci/helpers.js';
import { snapshotImage } from '../helpers/imageTree.js';
import { digestOf } from '../../src/oci/digest.js';
import { pullErofsArtifact } from '../../src/oci/registry/index.js';
import { CLI, assertMountMatchesTree, markerTar } from './helpers.js';

interface BuildJson {
  metadataImage: string;
  metadataImageBytes: number;
  blobs: string[];
  blobDigests: string[];
  push: PushResult;
}

async function buildAndPush(args: string[]): Promise<BuildJson> {
  const result = await run('node', [...CLI, 'build', ...args, '--json']);
  assert.equal(result.code, 0, result.output);
  return JSON.parse(result.stdout) as BuildJson;
}

const sizeOf = async (file: string) => (await stat(file)).size;

test('push: a second push of a derived image uploads only its new blobs; pulled back, it mounts as the same tree', async (t) => {
  const real = await realImages();
  await withTempDir(async (dir) => {
    await withRegistry({}, async (registry) => {
      await skopeoPush(real.gzipLayout, 'base', `${registry.host}/real/app:base`);
      await skopeoPush(real.gzipLayout, 'v1', `${registry.host}/real/app:v1`);
      // Pulls and pushes go through a proxy that counts the bytes of every blob upload.
      await withFaultProxy(registry.host, {}, async (proxy) => {
        const store = join(dir, 'store');
        const base = await buildAndPush([`docker://${proxy.host}/real/app:base`, '-o', join(dir, 'base'), '--store', store, '--push', `docker://${proxy.host}/erofs/app:base`]);
        const firstBytes = proxy.uploadedBytes();
        assert.deepEqual(base.push.blobs.map((b) => b.action), ['uploaded', 'uploaded', 'uploaded', 'uploaded'], 'config, metadata image, blob, its object index');
        assert.equal(base.push.uploadedBytes, firstBytes, 'the push counts what went over the wire');
        assert.equal(firstBytes, base.push.blobs.reduce((sum, b) => sum + b.sizeBytes, 0));

        const v1 = await buildAndPush([`docker://${proxy.host}/real/app:v1`, '-o', join(dir, 'v1'), '--store', store, '--push', `docker://${proxy.host}/erofs/app:v1`]);
        const secondBytes = proxy.uploadedBytes() - firstBytes;
        // The base layer's blob is the same file (one store): the registry has it, it is not sent again.
        assert.equal(v1.blobDigests[0], base.blobDigests[0]);
        const byDigest = new Map(v1.push.blobs.map((b) => [b.digest, b]));
        assert.equal(byDigest.get(v1.blobDigests[0]!)?.action, 'present');
        // ... and so is its object index; what goes up is the config, the metadata image, the new
        // layer's blob and that blob's object index.
        const baseObjectIndex = join(store, 'objects', `${v1.blobDigests[0]!.slice('sha256:'.length)}.erofs`);
        const newObjectIndex = join(store, 'objects', `${v1.blobDigests[1]!.slice('sha256:'.length)}.erofs`);
        assert.deepEqual(v1.push.blobs.filter((b) => b.action === 'present').map((b) => b.digest).sort(), [v1.blobDigests[0]!, digestOf(await readFile(baseObjectIndex))].sort());
        const uploaded = v1.push.blobs.filter((b) => b.action === 'uploaded');
        assert.equal(uploaded.length, 4);
        assert.equal(byDigest.get(v1.blobDigests[1]!)?.action, 'uploaded');
        const expected = uploaded.reduce((sum, b) => sum + b.sizeBytes, 0);
        assert.equal(secondBytes, expected);
        assert.equal(expected, v1.push.uploadedBytes);
        const newBlobBytes = await sizeOf(v1.blobs[1]!);
        const newObjectIndexBytes = await sizeOf(newObjectIndex);
        assert.ok(expected - v1.metadataImageBytes - newBlobBytes - newObjectIndexBytes < 4096, 'beyond those, only the config');
        t.diagnostic(
          `first push ${firstBytes} bytes; second push ${secondBytes} bytes: new blob ${newBlobBytes} + metadata image ${v1.metadataImageBytes} + object index ${newObjectIndexBytes} + config ` +
            `(base blob of ${await sizeOf(v1.blobs[0]!)} bytes and its object index of ${await sizeOf(baseObjectIndex)} bytes not sent)`,
        );

        // Another repository of the same registry: every blob mounted from erofs/app, nothing sent.
        const before = proxy.uploadedBytes();
        const copy = await pushLayoutImages(join(dir, 'v1'), ['app_v1'], `docker://${proxy.host}/erofs/copy:v1`, { mountFrom: ['erofs/app'] });
        assert.deepEqual(copy.blobs.map((b) => b.action), ['mounted', 'mounted', 'mounted', 'mounted', 'mounted', 'mounted']);
        assert.equal(proxy.uploadedBytes() - before, 0);
        assert.equal(copy.manifestDigest, v1.push.manifestDigest);
      });

      // Pulled back (straight from the registry): the same metadata image, mounted it is the image's tree.
      const pulledDir = join(dir, 'pulled');
      const pulled = await run('node', [...CLI, 'pull', `docker://${registry.host}/erofs/app:v1`, '-o', pulledDir, '--json']);
      assert.equal(pulled.code, 0, pulled.output);
      const artifact = JSON.parse(pulled.stdout) as { metadataImage: string; blobs: string[] };
      assert.equal(artifact.metadataImage, join(pulledDir, 'app_v1.erofs'));
      assert.ok((await readFile(artifact.metadataImage)).equals(await readFile(join(dir, 'v1', 'app_v1.erofs'))));
      const kernelTree = await assertMountMatchesTree(artifact.metadataImage, artifact.blobs, real.v1Tree);
      // erofs mount finds the pulled blobs by their tags next to the image, and their object
      // indexes under objects/: a sharing mount (overlay on this kernel) works as for a local build.
      const mountpoint = join(dir, 'mnt');
      const runtime = join(dir, 'runtime');
      await mkdir(mountpoint);
      const mounted = await run('node', [...CLI, 'mount', artifact.metadataImage, mountpoint, '--runtime-dir', runtime]);
      assert.equal(mounted.code, 0, mounted.output);
      assert.doesNotMatch(mounted.output, /with plain/, 'a sharing mechanism, not the plain fallback');
      try {
        // overlayfs consumes its own metacopy/redirect marks; everything else is the same tree.
        assertTreesEqual(kernelTree, await snapshotTree(mountpoint), { ignore: (_path, field) => field.startsWith('xattrs.trusted.overlay.') });
      } finally {
        const unmounted = await run('node', [...CLI, 'umount', mountpoint, '--runtime-dir', runtime]);
        assert.equal(unmounted.code, 0, unmounted.output);
        await rmdir(mountpoint);
      }
    });
  });
});

test('push: buildkit --push sends every platform of a BuildKit OCI tarball as one index, and still writes the tar', async () => {
  await withTempDir(async (dir) => {
    await withRegistry({}, async (registry) => {
      const layout = join(dir, 'layout');
      const platforms = [
        { os: 'linux', architecture: 'amd64' },
        { os: 'linux', architecture: 'arm64' },
      ];
      const manifests = [];
      for (const platform of platforms) {
        const written = await writeImage(layout, { layers: [{ tar: markerTar(platform.architecture), compression: 'gzip' }], platform });
        manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: written.manifestDigest, size: written.manifestSizeBytes, platform });
      }
      const index = await writeBlob(layout, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests })));
      await writeIndex(layout, [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: index.digest, size: index.sizeBytes }]);
      const archive = (await run('tar', ['-cf', '-', '-C', layout, 'oci-layout', 'index.json', 'blobs'], { encoding: 'latin1' })).stdout;

      const result = await run('node', [...CLI, 'buildkit', '-o', '-', '--name', 'app', '--push', `docker://${registry.host}/bk/app:1`], { input: Buffer.from(archive, 'latin1'), encoding: 'latin1' });
      assert.equal(result.code, 0, result.stderr);
      // Per platform: config, metadata image, blob and its object index.
      assert.match(result.stderr, /pushed 127\.0\.0\.1:\d+\/bk\/app:1 \(sha256:\w+\): 8 blob\(s\) uploaded/);
      assert.ok(result.stdout.length > 0 && result.stdout.includes('index.json'), 'the layout tar still goes to standard output');

      const pushed = (await (await fetch(`http://${registry.host}/v2/bk/app/manifests/1`, { headers: { accept: 'application/vnd.oci.image.index.v1+json' } })).json()) as { manifests: Array<{ platform: unknown; annotations: Record<string, string> }> };
      assert.deepEqual(pushed.manifests.map((m) => m.platform), platforms);
      assert.deepEqual(pushed.manifests.map((m) => m.annotations['org.opencontainers.image.ref.name']), ['app-linux-amd64', 'app-linux-arm64']);
      for (const platform of platforms) {
        const pulled = await pullErofsArtifact(`docker://${registry.host}/bk/app:1`, join(dir, platform.architecture), { platform });
        const marker = (await snapshotImage(pulled.metadataImage, pulled.blobs)).get('etc/marker')?.sha256;
        assert.equal(marker, digestOf(Buffer.from(`${platform.architecture}\n`)).slice('sha256:'.length));
      }
    });
  });
});
