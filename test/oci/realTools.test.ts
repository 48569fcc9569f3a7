import { test } from 'node:test';
import assert from 'node:assert/strict';
import { link, mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openImageSource } from '../../src/oci/source.js';
import { readLayerEntries, type LayerEntry } from '../../src/oci/tarEntries.js';
import type { ImageSource } from '../../src/oci/types.js';
import { run, runChecked } from '../helpers/exec.js';
import { withTempDir } from '../helpers/tmp.js';
import { collect } from './helpers.js';

/**
 * Images written by tools that are not ours (umoci, skopeo: both in Debian). We read what they wrote
 * and compare with what they say about it (`skopeo inspect --raw` / `--config`). Skipped, saying why,
 * when the tools are missing (`apt-get install -y umoci skopeo`).
 */
async function toolsMissing(): Promise<string | undefined> {
  for (const tool of ['umoci', 'skopeo', 'rsync']) {
    if ((await run('sh', ['-c', `command -v ${tool}`])).code !== 0) return `${tool} not installed (apt-get install -y umoci skopeo rsync)`;
  }
  return undefined;
}

interface Inspected {
  layers: Array<{ digest: string; mediaType: string; size: number }>;
  diffIds: string[];
}

async function inspect(reference: string): Promise<Inspected> {
  const manifest = JSON.parse((await runChecked('skopeo', ['inspect', '--raw', reference])).stdout) as { layers: Inspected['layers'] };
  const config = JSON.parse((await runChecked('skopeo', ['inspect', '--config', '--raw', reference])).stdout) as { rootfs: { diff_ids: string[] } };
  return { layers: manifest.layers, diffIds: config.rootfs.diff_ids };
}

async function readAllEntries(source: ImageSource, imageIndex: number): Promise<Array<Array<Omit<LayerEntry, 'body'> & { data: Buffer }>>> {
  const layers = [];
  for (const layer of source.images[imageIndex]!.layers) {
    const entries = [];
    for await (const entry of readLayerEntries(await source.openLayer(layer), layer.label)) {
      const { body, ...rest } = entry;
      entries.push({ ...rest, data: await collect(body) });
    }
    layers.push(entries);
  }
  return layers;
}

test('umoci-built layout, and skopeo copies of it (oci-archive, docker-archive, zstd layout): same layers and diff_ids as the tools report', async (t) => {
  const missing = await toolsMissing();
  if (missing !== undefined) return t.skip(missing);
  await withTempDir(async (dir) => {
    const rootfs = join(dir, 'rootfs');
    await mkdir(join(rootfs, 'etc', 'cron.daily'), { recursive: true });
    await mkdir(join(rootfs, 'usr', 'bin'), { recursive: true });
    await writeFile(join(rootfs, 'etc', 'hostname'), 'real\n');
    await writeFile(join(rootfs, 'etc', 'motd'), 'welcome\n');
    await writeFile(join(rootfs, 'etc', 'cron.daily', 'job'), '#!/bin/sh\n');
    await writeFile(join(rootfs, 'usr', 'bin', 'tool'), Buffer.alloc(300000, 0x7f));
    await link(join(rootfs, 'usr', 'bin', 'tool'), join(rootfs, 'usr', 'bin', 'tool-alias'));
    await symlink('hostname', join(rootfs, 'etc', 'name'));
    await runChecked('mkfifo', [join(rootfs, 'etc', 'fifo')]);
    await runChecked('chown', ['70000:70000', join(rootfs, 'etc', 'motd')]);
    const xattr = (await run('setfattr', ['-n', 'user.origin', '-v', 'umoci-test', join(rootfs, 'etc', 'hostname')])).code === 0;

    const layout = join(dir, 'layout');
    await runChecked('umoci', ['init', '--layout', layout]);
    await runChecked('umoci', ['new', '--image', `${layout}:base`]);
    await runChecked('umoci', ['config', '--image', `${layout}:base`, '--os', 'linux', '--architecture', 'amd64']);
    await runChecked('umoci', ['unpack', '--image', `${layout}:base`, join(dir, 'b')]);
    await runChecked('rsync', ['-aHAX', `${rootfs}/`, `${join(dir, 'b', 'rootfs')}/`]);
    await runChecked('umoci', ['repack', '--image', `${layout}:base`, join(dir, 'b')]);
    // v1: base plus a layer that deletes a file and replaces a directory (whiteouts).
    await runChecked('umoci', ['unpack', '--image', `${layout}:base`, join(dir, 'v')]);
    await runChecked('rm', ['-rf', join(dir, 'v', 'rootfs', 'etc', 'motd'), join(dir, 'v', 'rootfs', 'etc', 'cron.daily')]);
    await mkdir(join(dir, 'v', 'rootfs', 'etc', 'cron.daily'));
    await writeFile(join(dir, 'v', 'rootfs', 'etc', 'cron.daily', 'placeholder'), 'exit 0\n');
    await runChecked('umoci', ['repack', '--image', `${layout}:v1`, join(dir, 'v')]);

    const source = await openImageSource(layout);
    assert.deepEqual(source.images.map((image) => image.name).sort(), ['base', 'v1']);
    const v1Index = source.images.findIndex((image) => image.name === 'v1');
    const v1 = source.images[v1Index]!;
    const told = await inspect(`oci:${layout}:v1`);
    assert.deepEqual(v1.layers.map((layer) => ({ digest: layer.digest, mediaType: layer.mediaType, size: layer.sizeBytes })), told.layers);
    assert.deepEqual(v1.layers.map((layer) => layer.diffId), told.diffIds);

    const layers = await readAllEntries(source, v1Index);
    const bottom = new Map(layers[0]!.map((entry) => [entry.path, entry]));
    assert.equal(bottom.get('etc/hostname')!.data.toString(), 'real\n');
    if (xattr) assert.equal(bottom.get('etc/hostname')!.xattrs.get('user.origin')?.toString(), 'umoci-test');
    assert.equal(bottom.get('etc/motd')!.uid, 70000);
    assert.equal(bottom.get('etc/name')!.linkTarget, 'hostname');
    assert.equal(bottom.get('etc/fifo')!.type, 'fifo');
    assert.equal(bottom.get('usr/bin/tool')!.data.length, 300000);
    const alias = bottom.get('usr/bin/tool-alias') ?? bottom.get('usr/bin/tool')!;
    assert.ok(alias.type === 'hardlink' || bottom.get('usr/bin/tool')!.type === 'hardlink', 'one of the two names is a hardlink');
    const top = layers[1]!.map((entry) => entry.path);
    assert.ok(top.includes('etc/.wh.motd'), `whiteout passed through: ${top.join(', ')}`);
    assert.ok(top.includes('etc/cron.daily/placeholder'));

    // skopeo's copies: an OCI archive, a docker archive, and a layout recompressed with zstd.
    const ociArchive = join(dir, 'v1-oci.tar');
    const dockerArchive = join(dir, 'v1-docker.tar');
    const zstdLayout = join(dir, 'zstd');
    await runChecked('skopeo', ['copy', '-q', `oci:${layout}:v1`, `oci-archive:${ociArchive}:v1`]);
    await runChecked('skopeo', ['copy', '-q', `oci:${layout}:v1`, `docker-archive:${dockerArchive}:real/v1:latest`]);
    await runChecked('skopeo', ['copy', '-q', '--dest-compress', '--dest-compress-format', 'zstd', `oci:${layout}:v1`, `oci:${zstdLayout}:v1`]);

    const fromArchive = await openImageSource(ociArchive);
    assert.equal(fromArchive.kind, 'oci-archive');
    assert.deepEqual(fromArchive.images[0]!.layers.map((layer) => layer.digest), told.layers.map((layer) => layer.digest));

    const fromDocker = await openImageSource(dockerArchive);
    assert.equal(fromDocker.kind, 'docker-archive');
    // skopeo writes the normalized name; the short form still selects it.
    assert.equal(fromDocker.images[0]!.name, 'docker.io/real/v1:latest');
    assert.equal((await openImageSource(`${dockerArchive}:real/v1:latest`)).images.length, 1);
    assert.deepEqual(fromDocker.images[0]!.layers.map((layer) => layer.diffId), told.diffIds);

    const fromZstd = await openImageSource(`${zstdLayout}:v1`);
    const toldZstd = await inspect(`oci:${zstdLayout}:v1`);
    assert.deepEqual(fromZstd.images[0]!.layers.map((layer) => [layer.digest, layer.mediaType]), toldZstd.layers.map((layer) => [layer.digest, layer.mediaType]));
    assert.ok(fromZstd.images[0]!.layers.every((layer) => layer.mediaType === 'application/vnd.oci.image.layer.v1.tar+zstd'));
    assert.deepEqual(fromZstd.images[0]!.layers.map((layer) => layer.diffId), told.diffIds);

    // Every copy yields the same entries, verified (digests and diff_ids) on the way.
    const summary = (all: Awaited<ReturnType<typeof readAllEntries>>): string[][] => all.map((entries) => entries.map((entry) => `${entry.path} ${entry.type} ${entry.mode.toString(8)} ${entry.uid} ${entry.mtimeSec}.${entry.mtimeNsec} ${entry.data.length}`));
    const expected = summary(layers);
    assert.deepEqual(summary(await readAllEntries(fromArchive, 0)), expected);
    assert.deepEqual(summary(await readAllEntries(fromDocker, 0)), expected);
    assert.deepEqual(summary(await readAllEntries(fromZstd, 0)), expected);
  });
});
