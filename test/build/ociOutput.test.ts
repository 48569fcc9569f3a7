import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildImage } from '../../src/build/build.js';
import { runChecked } from '../helpers/exec.js';
import { withTempDir } from '../helpers/tmp.js';

/**
 * The output directory is an OCI image layout that independent tooling accepts: skopeo reads the
 * manifest and copies the image to another layout, which checks every blob digest and size.
 */
test('the build output is an OCI layout skopeo can inspect and copy', async () => {
  await withTempDir(async (dir) => {
    const src = join(dir, 'src');
    await mkdir(src);
    await writeFile(join(src, 'data'), randomBytes(300_000));
    await writeFile(join(src, 'small'), 'x');
    const out = join(dir, 'out');
    const result = await buildImage({ kind: 'directory', path: src }, { outputDir: out, name: 'demo' });
    const raw = JSON.parse((await runChecked('skopeo', ['inspect', '--raw', `oci:${out}:demo`])).stdout) as {
      layers: { mediaType: string; digest: string; size: number }[];
    };
    assert.deepEqual(
      raw.layers.map((l) => l.mediaType),
      ['application/vnd.erofs.layer.v1', 'application/vnd.erofs.blob.v1', 'application/vnd.erofs.object-index.v1'],
    );
    // The blob's object index (for sharing mounts) travels with the image, naming its blob.
    assert.equal((raw.layers[2] as { annotations?: Record<string, string> }).annotations?.['io.mkfs-erofs-ts.erofs.blob'], result.blobDigests[0]);
    assert.equal(raw.layers[1]!.digest, result.blobDigests[0]);
    const metadataBytes = await readFile(result.metadataImage);
    assert.equal(raw.layers[0]!.size, metadataBytes.length);
    await runChecked('skopeo', ['copy', '--quiet', `oci:${out}:demo`, `oci:${join(dir, 'copy')}:demo`]);
    const copied = await readFile(join(dir, 'copy', 'blobs', 'sha256', raw.layers[0]!.digest.slice('sha256:'.length)));
    assert.ok(copied.equals(metadataBytes), 'the copied metadata layer is our metadata image');
  });
});
