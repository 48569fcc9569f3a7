import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { build } from '../../src/build/build.js';
import { pullErofsArtifact, pushLayoutImages, RegistryHttpError } from '../../src/oci/registry/index.js';
import { run } from '../helpers/exec.js';
import { snapshotImage } from '../helpers/imageTree.js';
import { freePort, skopeoPush, withRegistry } from '../helpers/registry.js';
import { withFaultProxy, type ProxyAction } from '../helpers/registryProxy.js';
import { withTempDir } from '../helpers/tmp.js';
import { assertTreesEqual } from '../helpers/tree.js';
import { makeTar, writeLayout } from '../oci/helpers.js';
import { TYPEFLAG } from '../../src/oci/tarHeader.js';
import { CLI, assertOneLineError, filesUnder, markerTar } from './helpers.js';

const ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

/** What the registry itself (not through the proxy) answers for a manifest: status and body. */
async function manifestAt(host: string, repository: string, tag: string): Promise<{ status: number; json?: Record<string, unknown> }> {
  const response = await fetch(`http://${host}/v2/${repository}/manifests/${tag}`, { headers: { accept: ACCEPT } });
  return response.ok ? { status: response.status, json: (await response.json()) as Record<string, unknown> } : { status: response.status };
}

async function blobStatus(host: string, repository: string, digest: string): Promise<number> {
  return (await fetch(`http://${host}/v2/${repository}/blobs/${digest}`, { method: 'HEAD' })).status;
}

/** A layer of 6 MiB of random (incompressible) data and a marker file saying `marker`. */
function largeLayerTar(marker: string): Buffer {
  return makeTar([
    { name: './', typeflag: TYPEFLAG.dir, mode: 0o755 },
    { name: './big.bin', data: randomBytes(6 << 20) },
    { name: './etc/', typeflag: TYPEFLAG.dir, mode: 0o755 },
    { name: './etc/marker', data: `${marker}\n` },
  ]);
}

test('faults: wrong digests, 404, 500 and an unreachable registry are one-line errors, and nothing is written', async () => {
  await withTempDir(async (dir) => {
    await withRegistry({}, async (registry) => {
      const layout = join(dir, 'layout');
      // An uncompressed layer: a flipped byte can only be caught by the digest (no gzip check first).
      const [image] = await writeLayout(layout, [{ tag: 'v1', layers: [{ tar: markerTar('faults'), compression: 'none' }] }]);
      // Pushed as it is (skopeo would compress the layer on the way).
      await pushLayoutImages(layout, ['v1'], `docker://${registry.host}/syn/app:v1`);
      const layerDigest = image!.layerDigests[0]!;
      await withFaultProxy(registry.host, {}, async (proxy) => {
        const source = `docker://${proxy.host}/syn/app:v1`;
        const cases: Array<{ what: string; rule: typeof proxy.rule; spec?: string; error: RegExp }> = [
          {
            what: 'manifest with wrong bytes',
            rule: (req) => (req.method === 'GET' && req.url === '/v2/syn/app/manifests/v1' ? { corrupt: true } : undefined),
            error: /syn\/app:v1: manifest v1 from 127\.0\.0\.1:\d+: digest mismatch: expected sha256:\w{64}, got sha256:\w{64}$/,
          },
          {
            what: 'layer with wrong bytes',
            rule: (req) => (req.method === 'GET' && req.url === `/v2/syn/app/blobs/${layerDigest}` ? { corrupt: true } : undefined),
            error: /syn\/app:v1: app:v1 layer 1\/1 \(sha256:\w{12}\): digest \(and diff_id\) mismatch: expected sha256:\w{64}, got sha256:\w{64}$/,
          },
          {
            what: '500 on the layer',
            rule: (req) => (req.method === 'GET' && req.url === `/v2/syn/app/blobs/${layerDigest}` ? { respond: { status: 500, body: '{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}' } } : undefined),
            // A 500 that does not pass: retried (EROFS_REGISTRY_RETRIES, 3 by default), then reported.
            error: new RegExp(`syn/app:v1: registry answered 500 Internal Server Error for GET /v2/syn/app/blobs/${layerDigest}: UNKNOWN: disk on fire \\(4 attempts\\)$`),
          },
          {
            what: 'layer blob lost by the registry',
            rule: (req) => (req.url === `/v2/syn/app/blobs/${layerDigest}` ? { respond: { status: 404 } } : undefined),
            error: new RegExp(`syn/app:v1: app:v1 layer 1/1 blob ${layerDigest} is missing`),
          },
          { what: 'unknown tag', rule: undefined, spec: `docker://${proxy.host}/syn/app:nope`, error: /syn\/app:nope: registry answered 404 Not Found for GET \/v2\/syn\/app\/manifests\/nope: MANIFEST_UNKNOWN: manifest unknown$/ },
          { what: 'nothing listening', rule: undefined, spec: `docker://127.0.0.1:${await freePort()}/syn/app:v1`, error: /syn\/app:v1: GET \/v2\/syn\/app\/manifests\/v1 failed: connect ECONNREFUSED 127\.0\.0\.1:\d+ \(4 attempts\)$/ },
          { what: 'bad reference', rule: undefined, spec: 'docker://127.0.0.1:5000/Syn/app:v1', error: /repository component "Syn" is not valid/ },
        ];
        for (const [i, c] of cases.entries()) {
          proxy.rule = c.rule;
          const out = join(dir, `out-${i}`);
          const result = await run('node', [...CLI, 'build', c.spec ?? source, '-o', out]);
          assert.notEqual(result.code, 0, `${c.what}: must fail, got:\n${result.output}`);
          assertOneLineError(result, c.error);
          assert.deepEqual(await filesUnder(out), [], `${c.what}: nothing left in the output directory`);
        }
      });
    });
  });
});

test('faults: a push that fails (500 on an upload or on the manifest, 401, a wrong digest answered) leaves no manifest behind; a pull of wrong bytes writes nothing', async () => {
  await withTempDir(async (dir) => {
    await withRegistry({}, async (registry) => {
      const layout = join(dir, 'layout');
      await writeLayout(layout, [{ tag: 'v1', layers: [{ tar: markerTar('push'), compression: 'gzip' }] }]);
      const out = join(dir, 'out');
      await build([`${layout}:v1`], { outputDir: out });
      await withFaultProxy(registry.host, {}, async (proxy) => {
        const target = `docker://${proxy.host}/syn/pushed:v1`;
        proxy.rule = (req) => (req.method === 'PUT' && req.url?.includes('/blobs/uploads/') === true ? { respond: { status: 500 } } : undefined);
        const before = proxy.requests.length;
        await assert.rejects(pushLayoutImages(out, ['v1'], target), (error: Error) => error instanceof RegistryHttpError && /registry answered 500 Internal Server Error for PUT \/v2\/syn\/pushed\/blobs\/uploads\/\S+ \(4 attempts\)$/.test(error.message));
        const tries = proxy.requests.slice(before).filter((r) => r.path.includes('/blobs/uploads/'));
        // (The client also DELETEs each failed session, as a courtesy.)
        assert.deepEqual(tries.filter((r) => r.method !== 'DELETE').map((r) => `${r.method} ${r.status}`), ['POST 202', 'PUT 500', 'POST 202', 'PUT 500', 'POST 202', 'PUT 500', 'POST 202', 'PUT 500'], 'each retry of a failed upload opens a new session');
        assert.equal((await manifestAt(registry.host, 'syn/pushed', 'v1')).status, 404);

        proxy.rule = (req) => (req.method === 'PUT' && req.url?.includes('/manifests/') === true ? { respond: { status: 500 } } : undefined);
        const result = await run('node', [...CLI, 'build', `${layout}:v1`, '-o', join(dir, 'out2'), '--push', target]);
        assert.notEqual(result.code, 0, result.output);
        assertOneLineError(result, /syn\/pushed:v1: registry answered 500 Internal Server Error for PUT \/v2\/syn\/pushed\/manifests\/v1 \(4 attempts\)$/);
        assert.equal((await manifestAt(registry.host, 'syn/pushed', 'v1')).status, 404);

        // A 401 without a challenge to answer.
        proxy.rule = () => ({ respond: { status: 401, body: '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}' } });
        const refused = await run('node', [...CLI, 'build', `${layout}:v1`, '-o', join(dir, 'out3'), '--push', target]);
        assertOneLineError(refused, /syn\/pushed:v1: registry answered 401 Unauthorized for HEAD \/v2\/syn\/pushed\/blobs\/sha256:\w{64}: (no credentials|check the credentials) for 127\.0\.0\.1:\d+ in /);
        assert.equal((await manifestAt(registry.host, 'syn/pushed', 'v1')).status, 404);

        // A registry that says it stored other bytes than were sent.
        proxy.rule = (req) => (req.method === 'PUT' && req.url?.includes('/blobs/uploads/') === true ? { respond: { status: 201, headers: { 'docker-content-digest': `sha256:${'0'.repeat(64)}` } } } : undefined);
        const lying = await run('node', [...CLI, 'build', `${layout}:v1`, '-o', join(dir, 'out4'), '--push', `docker://${proxy.host}/syn/lying:v1`]);
        assertOneLineError(lying, /syn\/lying:v1: uploaded blob: digest mismatch: expected sha256:\w{64}, got sha256:0{64}$/);
        assert.equal((await manifestAt(registry.host, 'syn/lying', 'v1')).status, 404);

        // Pulling an artifact back from a registry that sends wrong bytes writes nothing.
        proxy.rule = undefined;
        await pushLayoutImages(out, ['v1'], target);
        proxy.rule = (req) => (req.method === 'GET' && req.url?.includes('/blobs/sha256:') === true ? { corrupt: true } : undefined);
        const pulledDir = join(dir, 'pulled');
        const pulled = await run('node', [...CLI, 'pull', target, '-o', pulledDir]);
        assertOneLineError(pulled, /syn\/pushed:v1: blob 1\/1 sha256:\w{12}: digest mismatch: expected sha256:\w{64}, got sha256:\w{64}$/);
        assert.deepEqual(await filesUnder(pulledDir), []);
      });
    });
  });
});

test('faults: the registry killed in the middle of a blob upload: back at once, the push retries and completes; down for good, it fails cleanly, and pushed again later it completes', async () => {
  await withTempDir(async (dir) => {
    await withRegistry({}, async (registry) => {
      const layout = join(dir, 'layout');
      // Several MiB of random data, so the blob upload is many chunks long.
      const tar = largeLayerTar('restart');
      await writeLayout(layout, [{ tag: 'v1', layers: [{ tar, compression: 'gzip' }] }]);
      const out = join(dir, 'out');
      const built = (await build([`${layout}:v1`], { outputDir: out })).images[0]!;
      const assertPushed = async (repository: string): Promise<void> => {
        const manifest = await manifestAt(registry.host, repository, 'v1');
        assert.equal(manifest.status, 200);
        const layers = (manifest.json!['layers'] as Array<{ digest: string }>).map((l) => l.digest);
        for (const digest of [(manifest.json!['config'] as { digest: string }).digest, ...layers]) assert.equal(await blobStatus(registry.host, repository, digest), 200, digest);
        const pulled = await pullErofsArtifact(`docker://${registry.host}/${repository}:v1`, join(dir, `pulled-${repository.replace('/', '_')}`));
        assertTreesEqual(await snapshotImage(built.metadataImage, built.blobs), await snapshotImage(pulled.metadataImage, pulled.blobs));
      };
      await withFaultProxy(registry.host, {}, async (proxy) => {
        // The first blob upload that carries data: once its first bytes reached the registry, kill
        // the registry (a crash), restart it when `restart`, then let the client's connection drop.
        let holds = 0;
        const crashDuringUpload = (restart: boolean) => {
          holds = 0;
          proxy.rule = (req) =>
            req.method === 'PUT' && req.url?.includes('/blobs/uploads/') === true && holds === 0
              ? {
                  hold: async () => {
                    holds++;
                    await registry.kill();
                    if (restart) await registry.start();
                  },
                }
              : undefined;
        };

        // Back at once (a registry restarted by its supervisor): the upload starts over in a new session.
        crashDuringUpload(true);
        const before = proxy.requests.length;
        const recovered = await run('node', [...CLI, 'build', `${layout}:v1`, '-o', join(dir, 'out-recovered'), '--push', `docker://${proxy.host}/syn/recover:v1`]);
        assert.equal(recovered.code, 0, recovered.output);
        assert.equal(holds, 1);
        const sessions = proxy.requests.slice(before).filter((r) => r.method === 'POST' && r.path.endsWith('/blobs/uploads/'));
        assert.ok(sessions.length >= 3, `a new upload session after the dropped one (${sessions.length} sessions for 2 blobs)`);
        await assertPushed('syn/recover');

        // Down for good: every retry fails, and the push with it, naming the request and its tries.
        crashDuringUpload(false);
        const target = `docker://${proxy.host}/syn/restart:v1`;
        const failed = await run('node', [...CLI, 'build', `${layout}:v1`, '-o', join(dir, 'out-failed'), '--push', target]);
        assert.equal(holds, 1);
        assertOneLineError(failed, /syn\/restart:v1: POST \/v2\/syn\/restart\/blobs\/uploads\/ failed: .+ \(4 attempts\)$/);
        await registry.start();
        assert.equal((await manifestAt(registry.host, 'syn/restart', 'v1')).status, 404, 'no manifest after the failed push');

        proxy.rule = undefined;
        const pushed = await pushLayoutImages(out, ['v1'], target);
        assert.equal(pushed.manifestDigest, built.ociLayout.manifestDigest);
        await assertPushed('syn/restart');
      });
    });
  });
});

test('faults: transient answers (503, 429 with Retry-After, a dropped connection) are retried: a build from the registry and a push complete', async () => {
  await withTempDir(async (dir) => {
    await withRegistry({}, async (registry) => {
      const layout = join(dir, 'layout');
      await writeLayout(layout, [{ tag: 'v1', layers: [{ tar: markerTar('transient'), compression: 'gzip' }] }]);
      await pushLayoutImages(layout, ['v1'], `docker://${registry.host}/syn/flaky:v1`);
      await withFaultProxy(registry.host, {}, async (proxy) => {
        // Each kind of request fails twice before it is let through.
        const failures = new Map<string, number>();
        const twice = (key: string, action: ProxyAction): ProxyAction | undefined => {
          const seen = failures.get(key) ?? 0;
          failures.set(key, seen + 1);
          return seen < 2 ? action : undefined;
        };
        proxy.rule = (req) => {
          const url = req.url ?? '';
          if (req.method === 'GET' && url.includes('/manifests/')) return twice('manifest', { respond: { status: 503, body: '{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}' } });
          if (req.method === 'GET' && url.includes('/blobs/')) return twice('blob', { respond: { status: 429, headers: { 'retry-after': '0' } } });
          if (req.method === 'HEAD' && url.includes('/blobs/')) return twice('head', { respond: { status: 502 } });
          if (req.method === 'PUT' && url.includes('/blobs/uploads/')) return twice('upload', { respond: { status: 504 } });
          if (req.method === 'PUT' && url.includes('/manifests/')) return twice('put-manifest', { hold: async () => undefined });
          return undefined;
        };
        const out = join(dir, 'out');
        const result = await run('node', [...CLI, 'build', `docker://${proxy.host}/syn/flaky:v1`, '-o', out, '--push', `docker://${proxy.host}/syn/flaky-erofs:v1`]);
        assert.equal(result.code, 0, result.output);
        for (const key of ['manifest', 'blob', 'head', 'upload', 'put-manifest']) assert.ok((failures.get(key) ?? 0) >= 3, `${key}: failed twice, then let through (${failures.get(key)} requests)`);
        proxy.rule = undefined;
        const pulled = await pullErofsArtifact(`docker://${registry.host}/syn/flaky-erofs:v1`, join(dir, 'pulled'));
        const [image] = (await build([`${layout}:v1`], { outputDir: join(dir, 'local') })).images;
        assertTreesEqual(await snapshotImage(image!.metadataImage, image!.blobs), await snapshotImage(pulled.metadataImage, pulled.blobs));

        // EROFS_REGISTRY_RETRIES=0: the first 503 fails the build.
        failures.clear();
        proxy.rule = (req) => (req.method === 'GET' && (req.url ?? '').includes('/manifests/') ? twice('manifest', { respond: { status: 503 } }) : undefined);
        const once = await run('env', ['EROFS_REGISTRY_RETRIES=0', 'node', ...CLI, 'build', `docker://${proxy.host}/syn/flaky:v1`, '-o', join(dir, 'out-once')]);
        assertOneLineError(once, /syn\/flaky:v1: registry answered 503 Service Unavailable for GET \/v2\/syn\/flaky\/manifests\/v1$/);
        assert.equal(failures.get('manifest'), 1);
        assert.deepEqual(await filesUnder(join(dir, 'out-once')), []);
        const unreadable = await run('env', ['EROFS_REGISTRY_RETRIES=many', 'node', ...CLI, 'build', `docker://${proxy.host}/syn/flaky:v1`, '-o', join(dir, 'out-bad-env')]);
        assertOneLineError(unreadable, /EROFS_REGISTRY_RETRIES: "many" is not a whole number of retries from 0 to 100$/);
      });
    });
  });
});

test('faults: a layer download cut midway resumes where it broke (Range), also from a registry that sends the whole blob again; cut every time, one clear error', async () => {
  await withTempDir(async (dir) => {
    await withRegistry({}, async (registry) => {
      const layout = join(dir, 'layout');
      // Several MiB of random data, gzip: a cut after 1 MiB is in the middle of the layer blob.
      const tar = largeLayerTar('resume');
      const [image] = await writeLayout(layout, [{ tag: 'v1', layers: [{ tar, compression: 'gzip' }] }]);
      const layerPath = `/v2/syn/cut/blobs/${image!.layerDigests[0]!}`;
      await pushLayoutImages(layout, ['v1'], `docker://${registry.host}/syn/cut:v1`);
      const local = (await build([`${layout}:v1`], { outputDir: join(dir, 'local') })).images[0]!;
      const cutAfterBytes = 1 << 20;
      await withFaultProxy(registry.host, {}, async (proxy) => {
        const layerGets = () => proxy.requests.filter((r) => r.method === 'GET' && r.path === layerPath);
        for (const registryIgnoresRange of [false, true]) {
          const before = layerGets().length;
          proxy.rule = (req) => {
            if (req.method !== 'GET' || req.url !== layerPath) return undefined;
            if (layerGets().length === before + 1) return { cut: { afterBytes: cutAfterBytes } };
            return registryIgnoresRange ? { ignoreRange: true } : undefined;
          };
          const out = join(dir, `out-${registryIgnoresRange}`);
          const result = await run('node', [...CLI, 'build', `docker://${proxy.host}/syn/cut:v1`, '-o', out, '--json']);
          assert.equal(result.code, 0, result.output);
          const built = JSON.parse(result.stdout) as { metadataImage: string; blobs: string[] };
          const gets = layerGets().slice(before);
          assert.equal(gets.length, 2, 'the layer was asked for twice');
          assert.equal(gets[0]!.range, undefined);
          const resumedAt = Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? '')?.[1]);
          assert.ok(resumedAt > 0 && resumedAt <= cutAfterBytes, `resumed where the first answer broke off: ${gets[1]!.range}`);
          assert.equal(gets[1]!.status, registryIgnoresRange ? 200 : 206);
          assertTreesEqual(await snapshotImage(local.metadataImage, local.blobs), await snapshotImage(built.metadataImage, built.blobs));
        }

        // Cut every time: after the retries, the download's error, and nothing written.
        proxy.rule = (req) => (req.method === 'GET' && req.url === layerPath ? { cut: { afterBytes: cutAfterBytes } } : undefined);
        const out = join(dir, 'out-cut');
        const failed = await run('node', [...CLI, 'build', `docker://${proxy.host}/syn/cut:v1`, '-o', out]);
        assertOneLineError(failed, /syn\/cut:v1: GET \/v2\/syn\/cut\/blobs\/sha256:\w{64} failed: connection lost while reading the blob: .+ \(4 attempts\)$/);
        assert.deepEqual(await filesUnder(out), []);
      });
    });
  });
});

test('referrers: --attach pushes the result with the source image as subject and keeps the sha256-HEX referrers tag', async () => {
  await withTempDir(async (dir) => {
    await withRegistry({}, async (registry) => {
      const layout = join(dir, 'layout');
      await writeLayout(layout, [{ tag: 'v1', layers: [{ tar: markerTar('referrers'), compression: 'gzip' }] }]);
      await skopeoPush(layout, 'v1', `${registry.host}/syn/app:v1`);
      const source = `docker://${registry.host}/syn/app:v1`;
      const sourceDigest = (await fetch(`http://${registry.host}/v2/syn/app/manifests/v1`, { method: 'HEAD', headers: { accept: ACCEPT } })).headers.get('docker-content-digest')!;
      const pushes: string[] = [];
      // Two different conversions of the one source (with and without fingerprints), both attached.
      for (const [i, fingerprints] of ['--fingerprints', '--no-fingerprints'].entries()) {
        const result = await run('node', [...CLI, 'build', source, '-o', join(dir, `out-${i}`), fingerprints, '--push', `docker://${registry.host}/syn/app:erofs-${i}`, '--attach', '--json']);
        assert.equal(result.code, 0, result.output);
        const push = (JSON.parse(result.stdout) as { push: { manifestDigest: string; referrers: unknown } }).push;
        // docker-registry 2.8 has no referrers API: the fallback tag of OCI 1.1 is written.
        assert.deepEqual(push.referrers, { api: false, tag: sourceDigest.replace(':', '-') });
        pushes.push(push.manifestDigest);
        const pushed = await manifestAt(registry.host, 'syn/app', `erofs-${i}`);
        assert.equal((pushed.json!['subject'] as { digest: string }).digest, sourceDigest);
      }
      const referrers = await manifestAt(registry.host, 'syn/app', sourceDigest.replace(':', '-'));
      assert.equal(referrers.json!['mediaType'], 'application/vnd.oci.image.index.v1+json');
      const listed = referrers.json!['manifests'] as Array<{ digest: string; artifactType: string }>;
      assert.deepEqual(listed.map((m) => m.digest), pushes);
      assert.ok(listed.every((m) => m.artifactType === 'application/vnd.oci.image.config.v1+json'));

      const elsewhere = await run('node', [...CLI, 'build', source, '-o', join(dir, 'out-x'), '--push', `docker://${registry.host}/syn/other:v1`, '--attach']);
      assertOneLineError(elsewhere, /syn\/other:v1: --attach: referrers live in the subject's repository; push to 127\.0\.0\.1:\d+\/syn\/app:TAG$/);
    });
  });
});
