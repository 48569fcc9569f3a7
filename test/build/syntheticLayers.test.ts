import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { build } from '../../src/build/build.js';
import { TYPEFLAG } from '../../src/oci/tarHeader.js';
import { runChecked } from '../helpers/exec.js';
import { withKernelMount } from '../helpers/kernel.js';
import { withTempDir } from '../helpers/tmp.js';
import { assertTreesEqual, snapshotTree } from '../helpers/tree.js';
import { makeTar, writeLayout } from '../oci/helpers.js';
import { SOURCE_VS_IMAGE, assertReaderMatches } from './readerCheck.js';

const T = 1_700_000_000;
const big = randomBytes(3 << 20);

/**
 * Edge cases written with our own tar encoder (PAX times and xattrs, GNU and PAX long names, devices,
 * fifos, hardlinks across layers, whiteouts, an opaque directory, a file replacing a directory and
 * the reverse), unpacked by umoci, the reference: the kernel mount of our conversion must equal
 * umoci's tree.
 */
test('synthetic edge-case layers: our kernel-mounted image equals what umoci unpacks', async () => {
  await withTempDir(async (dir) => {
    const lower = makeTar([
      { name: './', typeflag: TYPEFLAG.dir, mode: 0o755, mtimeSec: T },
      { name: './etc/', typeflag: TYPEFLAG.dir, mode: 0o755, mtimeSec: T },
      { name: './etc/passwd', data: 'root:x:0:0::/root:/bin/sh\n', mtimeSec: T },
      { name: './etc/gone', data: 'deleted by the upper layer\n', mtimeSec: T },
      { name: './opq/', typeflag: TYPEFLAG.dir, mode: 0o755, mtimeSec: T },
      { name: './opq/old', data: 'hidden by the opaque marker\n', mtimeSec: T },
      { name: './becomes-file/', typeflag: TYPEFLAG.dir, mode: 0o755, mtimeSec: T },
      { name: './becomes-file/child', data: 'c', mtimeSec: T },
      { name: './becomes-dir', data: 'was a file', mtimeSec: T },
      { name: './bin/', typeflag: TYPEFLAG.dir, mode: 0o755, mtimeSec: T },
      { name: './bin/tool', data: big, mode: 0o4755, uid: 70000, gid: 70001, mtimeSec: T },
      { name: './dev/', typeflag: TYPEFLAG.dir, mode: 0o755, mtimeSec: T },
      { name: './dev/null', typeflag: TYPEFLAG.chr, mode: 0o666, devMajor: 1, devMinor: 3, mtimeSec: T },
      { name: './dev/loop0', typeflag: TYPEFLAG.blk, mode: 0o660, devMajor: 7, devMinor: 0, mtimeSec: T },
      { name: './dev/pipe', typeflag: TYPEFLAG.fifo, mode: 0o600, mtimeSec: T },
      { name: `./${'d'.repeat(120)}/${'f'.repeat(200)}`, data: 'PAX long name', mtimeSec: T },
      { name: `./gnu-${'g'.repeat(150)}`, data: 'GNU long name', gnuLongName: true, mtimeSec: T },
      {
        name: './xattrs',
        data: 'x',
        mtimeSec: T,
        pax: [
          ['SCHILY.xattr.user.comment', 'hello'],
          ['SCHILY.xattr.security.capability', Buffer.from('0100000200040000000000000000000000000000', 'hex')],
          ['SCHILY.xattr.trusted.binary', Buffer.from([0, 1, 2, 255])],
        ],
      },
      { name: './precise', data: 'ns', mtimeSec: T, pax: [['mtime', '1700000000.123456789']] },
    ]);
    const upper = makeTar([
      { name: './etc/.wh.gone', mtimeSec: T },
      { name: './opq/', typeflag: TYPEFLAG.dir, mode: 0o755, mtimeSec: T },
      { name: './opq/.wh..wh..opq', mtimeSec: T },
      { name: './opq/new', data: 'only this remains\n', mtimeSec: T },
      { name: './becomes-file', data: 'now a file', mtimeSec: T },
      { name: './becomes-dir/', typeflag: TYPEFLAG.dir, mode: 0o700, mtimeSec: T },
      { name: './becomes-dir/inside', data: 'i', mtimeSec: T },
      { name: './usr/', typeflag: TYPEFLAG.dir, mode: 0o755, mtimeSec: T },
      { name: './usr/tool-link', typeflag: TYPEFLAG.hardlink, linkName: './bin/tool', mtimeSec: T },
      { name: './usr/sym', typeflag: TYPEFLAG.symlink, linkName: '../etc/passwd', mtimeSec: T },
    ]);
    const layout = join(dir, 'layout');
    await writeLayout(layout, [{ tag: 'edge', layers: [{ tar: lower, compression: 'gzip' }, { tar: upper, compression: 'none' }] }]);

    const bundle = join(dir, 'bundle');
    await runChecked('umoci', ['unpack', '--image', `${layout}:edge`, bundle]);
    const expected = await snapshotTree(join(bundle, 'rootfs'));

    const report = await build([`${layout}:edge`], { outputDir: join(dir, 'out') });
    const image = report.images[0]!;
    const mounted = await withKernelMount(image.metadataImage, image.blobs, (mountpoint) => snapshotTree(mountpoint));
    const implicitParent = 'd'.repeat(120);
    assertTreesEqual(expected, mounted, {
      // The bundle's root and a parent directory no entry describes get umoci's unpack time; ours
      // take the time of the entry that implied them, so builds stay reproducible.
      ignore: (path, field) => ((path === '.' || path === implicitParent) && field === 'mtime') || SOURCE_VS_IMAGE.ignore!(path, field),
    });
    // The cases themselves (so that a tool disagreeing with us in the same way could not hide them).
    assert.equal(mounted.has('etc/gone'), false);
    assert.deepEqual([...mounted.keys()].filter((p) => p.startsWith('opq/')), ['opq/new']);
    assert.equal(mounted.get('becomes-file')?.type, 'reg');
    assert.equal(mounted.get('becomes-dir')?.type, 'dir');
    assert.equal(mounted.get('usr/tool-link')?.linkGroup, mounted.get('bin/tool')?.linkGroup);
    assert.equal(mounted.get('bin/tool')?.uid, 70000);
    assert.equal(mounted.get('bin/tool')?.mode, 0o4755);
    assert.equal(mounted.get('precise')?.mtime, '1700000000.123456789');
    assert.equal(mounted.get('xattrs')?.xattrs['trusted.binary'], '000102ff');
    await assertReaderMatches(image.metadataImage, image.blobs, mounted);
  });
});
