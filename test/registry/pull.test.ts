import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { build } from '../../src/build/build.js';
import { digestOf } from '../../src/oci/digest.js';
import { run } from '../helpers/exec.js';
import { snapshotImage } from '../helpers/imageTree.js';
import { realImages } from '../helpers/realImages.js';
import { skopeoPush, withRegistry, writeDockerConfig } from '../helpers/registry.js';
import { withFaultProxy } from '../helpers/registryProxy.js';
import { withTempDir } from '../helpers/tmp.js';
import { writeBlob, writeImage, writeIndex, writeLayout } from '../oci/helpers.js';
import { CLI, assertMountMatchesTree, assertOneLineError, filesUnder, markerTar } from './helpers.js';

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

/** Runs `fn` with DOCKER_CONFIG pointing at `dir` (credentials for the CLI and the library alike). */
async function withDockerConfig<T>(dir: string | undefined, fn: () => Promise<T>): Promise<T> {
  const saved = process.env['DOCKER_CONFIG'];
  if (dir === undefined) delete process.env['DOCKER_CONFIG'];
  else process.env['DOCKER_CONFIG'] = dir;
  try {
    return await fn();
  } finally {
    if (saved === undefined) delete process.env['DOCKER_CONFIG'];
    else process.env['DOCKER_CONFIG'] = saved;
  }
}

/** The marker file's content in a built image, read through our reader. */
async function markerOf(metadataImage: string, blobs: readonly string[]): Promise<string | undefined> {
  const snapshot = await snapshotImage(metadataImage, blobs);
  return snapshot.get('etc/marker')?.sha256;
}

const sha256Hex = (text: string) => digestOf(Buffer.from(text)).slice('sha256:'.length);

test('pull: real Debian images from the registry (OCI and Docker v2 schema 2 manifests) convert exactly as from the local layout', async () => {
  const real = await realImages();
  await withTempDir(async (dir) => {
    await withRegistry({}, async (registry) => {
      await skopeoPush(real.gzipLayout, 'v1', `${registry.host}/real/app:v1`);
      await skopeoPush(real.gzipLayout, 'base', `${registry.host}/real/docker:base`, ['--format', 'v2s2']);
      // skopeo kept the OCI manifest for one and wrote Docker's for the other: both kinds are read.
      const accept = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';
      const types = await Promise.all(['real/app/manifests/v1', 'real/docker/manifests/base'].map((p) => fetch(`http://${registry.host}/v2/${p}`, { headers: { accept } }).then((r) => r.headers.get('content-type'))));
      assert.deepEqual(types, ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json']);

      const fromRegistry = await build([`docker://${registry.host}/real/app:v1`, `docker://${registry.host}/real/docker:base`], { outputDir: join(dir, 'registry') });
      assert.deepEqual(fromRegistry.images.map((i) => i.name), ['app_v1', 'docker_base']);
      const fromLayout = await build([`${real.gzipLayout}:v1`, `${real.gzipLayout}:base`], { outputDir: join(dir, 'layout') });
      for (const [i, image] of fromRegistry.images.entries()) {
        const local = fromLayout.images[i]!;
        // Same layers, same conversion: the same metadata image, byte for byte, and the same blobs.
        assert.ok((await readFile(image.metadataImage)).equals(await readFile(local.metadataImage)), `${image.name}: metadata image differs from the layout build's`);
        assert.deepEqual(image.blobDigests, local.blobDigests);
      }
      await assertMountMatchesTree(fromRegistry.images[0]!.metadataImage, fromRegistry.images[0]!.blobs, real.v1Tree);
    });
  });
});

test('pull: a multi-platform index gives linux/amd64 (or --platform); an index with no usable platform is one clear error', async () => {
  await withTempDir(async (dir) => {
    await withRegistry({}, async (registry) => {
      const layout = join(dir, 'layout');
      const platforms = [
        { os: 'linux', architecture: 'arm64', variant: 'v8' },
        { os: 'linux', architecture: 'amd64' },
        { os: 'linux', architecture: 's390x' },
      ];
      const written: Array<{ manifestDigest: string; manifestSizeBytes: number }> = [];
      for (const platform of platforms) written.push(await writeImage(layout, { layers: [{ tar: markerTar(platform.architecture), compression: 'gzip' }], platform }));
      const indexOf = async (entries: number[]) => {
        const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: entries.map((i) => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: written[i]!.manifestDigest, size: written[i]!.manifestSizeBytes, platform: platforms[i] })) }));
        return writeBlob(layout, index);
      };
      const all = await indexOf([0, 1, 2]);
      const foreign = await indexOf([0, 2]);
      await writeIndex(layout, [
        { mediaType: OCI_INDEX, digest: all.digest, size: all.sizeBytes, annotations: { 'org.opencontainers.image.ref.name': 'all' } },
        { mediaType: OCI_INDEX, digest: foreign.digest, size: foreign.sizeBytes, annotations: { 'org.opencontainers.image.ref.name': 'foreign' } },
      ]);
      await skopeoPush(layout, 'all', `${registry.host}/syn/multi:all`, ['--all']);
      await skopeoPush(layout, 'foreign', `${registry.host}/syn/multi:foreign`, ['--all']);

      const amd64 = await build([`docker://${registry.host}/syn/multi:all`], { outputDir: join(dir, 'amd64') });
      assert.equal(amd64.images.length, 1);
      assert.equal(await markerOf(amd64.images[0]!.metadataImage, amd64.images[0]!.blobs), sha256Hex('amd64\n'));
      assert.ok(amd64.notes.some((note) => /picked linux\/amd64/.test(note)), amd64.notes.join('\n'));
      const arm64 = await build([`docker://${registry.host}/syn/multi:all`], { outputDir: join(dir, 'arm64'), platform: { os: 'linux', architecture: 'arm64' } });
      assert.equal(await markerOf(arm64.images[0]!.metadataImage, arm64.images[0]!.blobs), sha256Hex('arm64\n'));

      const out = join(dir, 'none');
      const result = await run('node', [...CLI, 'build', `docker://${registry.host}/syn/multi:foreign`, '-o', out]);
      assertOneLineError(result, /syn\/multi:foreign: no image for platform linux\/amd64 in index sha256:\w+ of multi:foreign \(available: linux\/arm64\/v8, linux\/s390x\)/);
      assert.deepEqual(await filesUnder(out), []);
    });
  });
});

test('pull: basic auth with the docker config file; a wrong password or no entry is a clear 401 error', async () => {
  await withTempDir(async (dir) => {
    await withRegistry({ basicAuth: { username: 'alice', password: 's3cret' } }, async (registry) => {
      const layout = join(dir, 'layout');
      await writeLayout(layout, [{ tag: 'v1', layers: [{ tar: markerTar('auth'), compression: 'zstd' }] }]);
      await skopeoPush(layout, 'v1', `${registry.host}/private/app:v1`, ['--dest-creds', 'alice:s3cret']);
      const source = `docker://${registry.host}/private/app:v1`;

      const good = await writeDockerConfig(join(dir, 'good'), registry.host, 'alice', 's3cret');
      const ok = await withDockerConfig(good, () => run('node', [...CLI, 'build', source, '-o', join(dir, 'out-ok'), '--json']));
      assert.equal(ok.code, 0, ok.output);
      const report = JSON.parse(ok.stdout) as { metadataImage: string; blobs: string[] };
      assert.equal(await markerOf(report.metadataImage, report.blobs), sha256Hex('auth\n'));

      const bad = await writeDockerConfig(join(dir, 'bad'), registry.host, 'alice', 'wrong');
      const refused = await withDockerConfig(bad, () => run('node', [...CLI, 'build', source, '-o', join(dir, 'out-bad')]));
      assertOneLineError(refused, new RegExp(`${registry.host}/private/app:v1: registry answered 401 Unauthorized for GET /v2/private/app/manifests/v1: .*check the credentials for ${registry.host} in ${bad}/config.json`));
      assert.deepEqual(await filesUnder(join(dir, 'out-bad')), []);

      const broken = join(dir, 'broken');
      await mkdir(broken);
      await writeFile(join(broken, 'config.json'), '{"auths": {');
      const unreadable = await withDockerConfig(broken, () => run('node', [...CLI, 'build', source, '-o', join(dir, 'out-broken')]));
      assertOneLineError(unreadable, new RegExp(`^[\\w-]+: error: ${broken}/config.json: not valid JSON \\(.*\\) \\(reading the credentials for ${registry.host}\\)$`));

      const none = await withDockerConfig(join(dir, 'empty'), () => run('node', [...CLI, 'build', source, '-o', join(dir, 'out-none')]));
      assertOneLineError(none, new RegExp(`401 Unauthorized for GET /v2/private/app/manifests/v1: the registry wants credentials and ${dir}/empty/config.json has none for ${registry.host}`));
    });
  });
});

test('pull: bearer token flow (realm, service, scope) through a token-issuing front-end', async () => {
  await withTempDir(async (dir) => {
    await withRegistry({}, async (registry) => {
      const layout = join(dir, 'layout');
      await writeLayout(layout, [{ tag: 'v1', layers: [{ tar: markerTar('bearer'), compression: 'gzip' }] }]);
      await skopeoPush(layout, 'v1', `${registry.host}/team/app:v1`);
      await withFaultProxy(registry.host, { bearer: { username: 'bob', password: 'hunter2' } }, async (proxy) => {
        const config = await writeDockerConfig(join(dir, 'config'), proxy.host, 'bob', 'hunter2');
        const report = await withDockerConfig(config, () => build([`docker://${proxy.host}/team/app:v1`], { outputDir: join(dir, 'out') }));
        assert.equal(await markerOf(report.images[0]!.metadataImage, report.images[0]!.blobs), sha256Hex('bearer\n'));
        // One token, asked for with the password, for pull access to the repository.
        assert.deepEqual(proxy.tokenRequests, [{ scopes: ['repository:team/app:pull'], user: 'bob' }]);

        const wrong = await writeDockerConfig(join(dir, 'wrong'), proxy.host, 'bob', 'nope');
        const refused = await withDockerConfig(wrong, () => run('node', [...CLI, 'build', `docker://${proxy.host}/team/app:v1`, '-o', join(dir, 'refused')]));
        assertOneLineError(refused, /team\/app:v1: registry answered 401 Unauthorized for GET http:\/\/127\.0\.0\.1:\d+\/token \(token\): check the credentials/);
      });
    });
  });
});
