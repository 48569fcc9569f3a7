import { test } from 'node:test';
import assert from 'node:assert/strict';
import { link, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import tarStream from 'tar-stream';
import { InvalidLayerError } from '../../src/oci/errors.js';
import { TYPEFLAG, encodePaxRecords, encodeTarHeader, paddingBytes } from '../../src/oci/tarHeader.js';
import { normalizeEntryPath, parsePaxTime, readLayerEntries, type LayerEntry } from '../../src/oci/tarEntries.js';
import { run, runChecked } from '../helpers/exec.js';
import { withTempDir } from '../helpers/tmp.js';
import { collect, makeTar, readableOf, type TestEntry } from './helpers.js';

type Read = Omit<LayerEntry, 'body'> & { data: Buffer };

async function readAll(tar: Buffer, chunkBytes?: number): Promise<Read[]> {
  const out: Read[] = [];
  for await (const entry of readLayerEntries(readableOf(tar, chunkBytes), 'test-layer')) {
    const { body, ...rest } = entry;
    out.push({ ...rest, data: await collect(body) });
  }
  return out;
}

async function expectInvalid(tar: Buffer | Readable, pattern: RegExp): Promise<InvalidLayerError> {
  const stream = Buffer.isBuffer(tar) ? readableOf(tar) : tar;
  let caught: unknown;
  try {
    for await (const entry of readLayerEntries(stream, 'layer-under-test')) await collect(entry.body);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof InvalidLayerError, `expected InvalidLayerError, got ${String(caught)}`);
  assert.equal(caught.code, 'ERR_INVALID_LAYER');
  assert.match(caught.message, /^layer-under-test: /, 'the message names the layer');
  assert.match(caught.message, pattern);
  assert.ok(!caught.message.includes('\n'), 'one line');
  return caught;
}

test('normalizeEntryPath: ./ accepted, root is empty, .. resolved inside, escapes and absolute names refused', () => {
  assert.deepEqual(normalizeEntryPath('./'), { path: '' });
  assert.deepEqual(normalizeEntryPath('.'), { path: '' });
  assert.deepEqual(normalizeEntryPath('./usr//bin/./sh'), { path: 'usr/bin/sh' });
  assert.deepEqual(normalizeEntryPath('usr/lib/'), { path: 'usr/lib' });
  assert.deepEqual(normalizeEntryPath('a/../b'), { path: 'b' });
  assert.deepEqual(normalizeEntryPath('etc/.wh.passwd'), { path: 'etc/.wh.passwd' });
  assert.match((normalizeEntryPath('../etc/passwd') as { problem: string }).problem, /escapes/);
  assert.match((normalizeEntryPath('a/../../x') as { problem: string }).problem, /escapes/);
  assert.match((normalizeEntryPath('/etc/passwd') as { problem: string }).problem, /absolute/);
  assert.match((normalizeEntryPath('') as { problem: string }).problem, /empty/);
  assert.match((normalizeEntryPath('a\0b') as { problem: string }).problem, /NUL/);
  assert.deepEqual(normalizeEntryPath(`d/${'x'.repeat(255)}`), { path: `d/${'x'.repeat(255)}` });
  assert.match((normalizeEntryPath(`d/${'x'.repeat(256)}`) as { problem: string }).problem, /256 bytes/);
});

test('normalizeEntryPath: every name built from ".", "..", "/", empty and long components resolves as a component-by-component walk does', () => {
  // The oracle: split on '/', drop '' and '.', pop on '..' (refused above the root), limit 255.
  const walk = (name: string): string | undefined => {
    if (name === '' || name.startsWith('/')) return undefined;
    const parts: string[] = [];
    for (const component of name.split('/')) {
      if (component === '' || component === '.') continue;
      if (component === '..') {
        if (parts.length === 0) return undefined;
        parts.pop();
      } else if (component.length > 255) {
        return undefined;
      } else {
        parts.push(component);
      }
    }
    return parts.join('/');
  };
  const pieces = ['a', '.', '..', '/', '.b', `${'x'.repeat(130)}`];
  let checked = 0;
  const visit = (name: string, depth: number) => {
    const got = normalizeEntryPath(name);
    assert.equal('path' in got ? got.path : undefined, walk(name), JSON.stringify(name));
    checked++;
    if (depth > 0) for (const piece of pieces) visit(name + piece, depth - 1);
  };
  visit('', 6);
  visit('./', 5);
  assert.ok(checked > 50_000);
});

test('parsePaxTime: fractions, negative times keep nanoseconds positive', () => {
  assert.deepEqual(parsePaxTime('1700000000.123456789'), { sec: 1700000000n, nsec: 123456789 });
  assert.deepEqual(parsePaxTime('1700000000.5'), { sec: 1700000000n, nsec: 500000000 });
  assert.deepEqual(parsePaxTime('1700000000.1234567891234'), { sec: 1700000000n, nsec: 123456789 });
  assert.deepEqual(parsePaxTime('42'), { sec: 42n, nsec: 0 });
  assert.deepEqual(parsePaxTime('-1.25'), { sec: -2n, nsec: 750000000 });
  assert.deepEqual(parsePaxTime('-3'), { sec: -3n, nsec: 0 });
  assert.equal(parsePaxTime('12a'), undefined);
});

test('every entry type with its attributes: PAX xattrs (binary), uid 70000, ns mtimes, long names, devices', async () => {
  const binaryXattr = Buffer.from([0x01, 0x00, 0x00, 0x02, 0xff, 0x0a, 0x3d, 0x00]);
  const longName = `deep/${'d'.repeat(120)}/${'f'.repeat(200)}`;
  const gnuName = `gnu/${'g'.repeat(150)}`;
  const utf8Name = Buffer.from('usr/share/zoneinfo/Amérique/日本', 'utf8').toString('latin1');
  const entries: TestEntry[] = [
    { name: './', typeflag: TYPEFLAG.dir, mode: 0o755, pax: [['mtime', '1600000000.000000001']] },
    { name: './bin/', typeflag: TYPEFLAG.dir, mode: 0o1777, uid: 70000, gid: 70001 },
    {
      name: './bin/tool',
      data: 'hello tool\n',
      mode: 0o4755,
      pax: [
        ['mtime', '1700000000.123456789'],
        ['SCHILY.xattr.security.capability', binaryXattr],
        ['SCHILY.xattr.user.note', 'a=b\nc'],
        ['uid', '4000000000'],
        ['gid', '3000000000'],
        ['uname', 'builder'],
      ],
    },
    { name: './bin/hard', typeflag: TYPEFLAG.hardlink, linkName: './bin/tool' },
    { name: './bin/sym', typeflag: TYPEFLAG.symlink, linkName: '../etc/../bin/tool' },
    { name: './dev/', typeflag: TYPEFLAG.dir },
    { name: './dev/null', typeflag: TYPEFLAG.chr, mode: 0o666, devMajor: 1, devMinor: 3 },
    { name: './dev/sda', typeflag: TYPEFLAG.blk, mode: 0o660, devMajor: 8, devMinor: 0 },
    { name: './dev/fifo', typeflag: TYPEFLAG.fifo, mode: 0o600 },
    { name: longName, data: 'long' },
    { name: gnuName, data: 'gnu', gnuLongName: true },
    { name: utf8Name, data: 'utf8' },
    { name: './etc/.wh.passwd', data: '' },
    { name: './etc/.wh..wh..opq', data: '' },
    { name: './old', typeflag: TYPEFLAG.oldFile, data: 'v7 style' },
    { name: './xattr-only', data: 'x', pax: [['LIBARCHIVE.xattr.user.b64', Buffer.from(binaryXattr).toString('base64')]] },
  ];
  const read = await readAll(makeTar(entries));
  const byPath = new Map(read.map((entry) => [entry.path, entry]));
  assert.deepEqual(read.map((entry) => entry.path), ['', 'bin', 'bin/tool', 'bin/hard', 'bin/sym', 'dev', 'dev/null', 'dev/sda', 'dev/fifo', longName, gnuName, 'usr/share/zoneinfo/Amérique/日本', 'etc/.wh.passwd', 'etc/.wh..wh..opq', 'old', 'xattr-only']);

  const root = byPath.get('')!;
  assert.equal(root.type, 'dir');
  assert.equal(root.mtimeSec, 1600000000n);
  assert.equal(root.mtimeNsec, 1);

  const bin = byPath.get('bin')!;
  assert.equal(bin.mode, 0o1777);
  assert.equal(bin.uid, 70000);
  assert.equal(bin.gid, 70001);
  assert.equal(bin.mtimeSec, 1700000000n);
  assert.equal(bin.mtimeNsec, 0);

  const tool = byPath.get('bin/tool')!;
  assert.equal(tool.type, 'file');
  assert.equal(tool.mode, 0o4755);
  assert.equal(tool.data.toString(), 'hello tool\n');
  assert.equal(tool.sizeBytes, 11);
  assert.equal(tool.mtimeSec, 1700000000n);
  assert.equal(tool.mtimeNsec, 123456789);
  assert.equal(tool.uid, 4000000000);
  assert.equal(tool.gid, 3000000000);
  assert.equal(tool.uname, 'builder');
  assert.deepEqual([...tool.xattrs.keys()].sort(), ['security.capability', 'user.note']);
  assert.deepEqual(tool.xattrs.get('security.capability'), binaryXattr);
  assert.equal(tool.xattrs.get('user.note')!.toString(), 'a=b\nc');

  const hard = byPath.get('bin/hard')!;
  assert.equal(hard.type, 'hardlink');
  assert.equal(hard.linkTarget, 'bin/tool', 'hardlink targets are normalized');

  const sym = byPath.get('bin/sym')!;
  assert.equal(sym.type, 'symlink');
  assert.equal(sym.linkTarget, '../etc/../bin/tool', 'symlink targets are kept raw');

  assert.deepEqual([byPath.get('dev/null')!.type, byPath.get('dev/null')!.devMajor, byPath.get('dev/null')!.devMinor], ['chr', 1, 3]);
  assert.deepEqual([byPath.get('dev/sda')!.type, byPath.get('dev/sda')!.devMajor, byPath.get('dev/sda')!.devMinor], ['blk', 8, 0]);
  assert.equal(byPath.get('dev/fifo')!.type, 'fifo');
  assert.equal(byPath.get(longName)!.data.toString(), 'long');
  assert.equal(byPath.get(gnuName)!.data.toString(), 'gnu');
  const utf8 = byPath.get('usr/share/zoneinfo/Amérique/日本')!;
  assert.deepEqual(utf8.pathBytes, Buffer.from('usr/share/zoneinfo/Amérique/日本'));
  assert.equal(byPath.get('old')!.type, 'file');
  assert.deepEqual(byPath.get('xattr-only')!.xattrs.get('user.b64'), binaryXattr);
});

test('the same entries whether the tar comes whole (every step ready at once) or in pieces of 1 to 1000 bytes (steps wait)', async () => {
  const entries: TestEntry[] = [
    { name: './', typeflag: TYPEFLAG.dir, mode: 0o755 },
    { name: './a', data: 'x'.repeat(700), pax: [['mtime', '1700000000.5'], ['SCHILY.xattr.user.k', Buffer.from([0, 1, 2, 0x0a])]] },
    { name: `./${'n'.repeat(180)}`, data: 'long name', gnuLongName: true },
    { name: './empty', data: '' },
    { name: './link', typeflag: TYPEFLAG.symlink, linkName: 'a', pax: [['path', './renamed-link']] },
    { name: './b', data: 'y'.repeat(1536) },
  ];
  const tar = makeTar(entries);
  const whole = await readAll(tar, tar.length);
  assert.deepEqual(
    whole.map((e) => [e.path, e.sizeBytes, e.data.length]),
    [
      ['', 0, 0],
      ['a', 700, 700],
      [`${'n'.repeat(180)}`, 9, 9],
      ['empty', 0, 0],
      ['renamed-link', 0, 0],
      ['b', 1536, 1536],
    ],
  );
  assert.deepEqual(whole[1]!.xattrs.get('user.k'), Buffer.from([0, 1, 2, 0x0a]));
  for (const pieceBytes of [1, 7, 511, 512, 513, 1000]) assert.deepEqual(await readAll(tar, pieceBytes), whole, `pieces of ${pieceBytes} bytes`);
});

test('PAX global headers apply to the entries after them, a later global header overrides an earlier one, local records win', async () => {
  const global = (records: [string, string][]) => ({ name: 'pax_global_header', typeflag: TYPEFLAG.paxGlobal, data: encodePaxRecords(records) });
  const entries = await readAll(
    makeTar([
      global([['uname', 'first'], ['gname', 'group']]),
      { name: 'a', data: 'a' },
      global([['uname', 'second']]),
      { name: 'b', data: 'b' },
      { name: 'c', data: 'c', pax: [['uname', 'local']] },
      { name: 'd', data: 'd' },
    ]),
  );
  assert.deepEqual(entries.map((e) => [e.path, e.uname, e.gname]), [
    ['a', 'first', 'group'],
    ['b', 'second', 'group'],
    ['c', 'local', 'group'],
    ['d', 'second', 'group'],
  ]);
});

test('non-UTF-8 names keep their bytes in pathBytes', async () => {
  const raw = Buffer.from([0x63, 0x61, 0x66, 0xe9]).toString('latin1'); // "caf\xe9" (latin1 é)
  const [entry] = await readAll(makeTar([{ name: raw, data: 'x' }]));
  assert.deepEqual(entry!.pathBytes, Buffer.from([0x63, 0x61, 0x66, 0xe9]));
});

test('bodies left unread or destroyed early are drained; large bodies stream in chunks', async () => {
  const big = Buffer.alloc(3 * 1024 * 1024 + 17, 0x5a);
  const tar = makeTar([
    { name: 'skipped', data: big },
    { name: 'destroyed', data: big },
    { name: 'read', data: big },
    { name: 'last', data: 'end' },
  ]);
  const seen: string[] = [];
  let maxChunkBytes = 0;
  for await (const entry of readLayerEntries(readableOf(tar, 65536), 'drain')) {
    seen.push(entry.path);
    if (entry.path === 'destroyed') {
      for await (const chunk of entry.body) {
        void chunk;
        break; // destroys the body mid-way
      }
    }
    if (entry.path === 'read' || entry.path === 'last') {
      let total = 0;
      for await (const chunk of entry.body) {
        total += (chunk as Buffer).length;
        maxChunkBytes = Math.max(maxChunkBytes, (chunk as Buffer).length);
      }
      assert.equal(total, entry.sizeBytes);
    }
  }
  assert.deepEqual(seen, ['skipped', 'destroyed', 'read', 'last']);
  assert.ok(maxChunkBytes <= 1024 * 1024, 'no whole-body buffering');
});

test('reads tars written by tar-stream pack (PAX path for long names)', async () => {
  const pack = tarStream.pack();
  const longName = `p/${'q'.repeat(120)}/${'r'.repeat(150)}`;
  pack.entry({ name: longName, mtime: new Date(1234567890000), mode: 0o640, uid: 1000, gid: 1000 }, 'data');
  pack.entry({ name: 'dir', type: 'directory', mode: 0o755 });
  pack.finalize();
  const entries = await readAll(await collect(pack as unknown as Readable));
  assert.deepEqual(entries.map((entry) => [entry.path, entry.type, entry.mode, entry.uid, entry.mtimeSec]), [
    [longName, 'file', 0o640, 1000, 1234567890n],
    ['dir', 'dir', 0o755, 0, entries[1]!.mtimeSec],
  ]);
});

test('GNU tar --format=pax --xattrs: ns mtimes, xattrs, hardlinks, long names, uid 70000 as written by the real tool', async (t) => {
  if ((await run('tar', ['--version'])).code !== 0) return t.skip('GNU tar not installed');
  await withTempDir(async (dir) => {
    const root = join(dir, 'root');
    const long = `${'l'.repeat(130)}/${'m'.repeat(140)}`;
    await mkdir(join(root, 'etc', long.split('/')[0]!), { recursive: true });
    await writeFile(join(root, 'etc', 'file'), 'content\n');
    await writeFile(join(root, 'etc', long), 'long\n');
    await link(join(root, 'etc', 'file'), join(root, 'etc', 'hard'));
    await symlink('file', join(root, 'etc', 'sym'));
    await runChecked('chown', ['70000:70001', join(root, 'etc', 'file')]);
    const xattr = await run('setfattr', ['-n', 'user.test', '-v', '0x00ff0a41', join(root, 'etc', 'file')]);
    const hasXattr = xattr.code === 0;
    await runChecked('touch', ['-h', '-d', '2023-11-14 22:13:20.123456789 UTC', join(root, 'etc', 'file')]);
    const tarPath = join(dir, 'layer.tar');
    await runChecked('tar', ['--format=pax', '--xattrs', '--xattrs-include=*', '--numeric-owner', '-C', root, '-cf', tarPath, '.']);
    const entries = await readAll(await readFile(tarPath));
    const byPath = new Map(entries.map((entry) => [entry.path, entry]));
    assert.ok(byPath.has(''), 'the ./ root entry');
    const file = byPath.get('etc/file')!;
    assert.equal(file.uid, 70000);
    assert.equal(file.gid, 70001);
    assert.equal(file.mtimeSec, 1700000000n);
    assert.equal(file.mtimeNsec, 123456789);
    assert.equal(file.data.toString(), 'content\n');
    if (hasXattr) assert.deepEqual(file.xattrs.get('user.test'), Buffer.from([0x00, 0xff, 0x0a, 0x41]));
    const hard = byPath.get('etc/hard')!;
    assert.equal(hard.type, 'hardlink');
    assert.equal(hard.linkTarget, 'etc/file');
    assert.equal(byPath.get('etc/sym')!.linkTarget, 'file');
    assert.equal(byPath.get(`etc/${long}`)!.data.toString(), 'long\n');
  });
});

test('bad entries: escape through .., absolute name, NUL, over-long component, root not a directory, bad hardlink', async () => {
  await expectInvalid(makeTar([{ name: '../../etc/shadow', data: 'x' }]), /entry "\.\.\/\.\.\/etc\/shadow": name escapes the layer root/);
  await expectInvalid(makeTar([{ name: '/etc/passwd', data: 'x' }]), /entry "\/etc\/passwd": absolute name/);
  await expectInvalid(makeTar([{ name: 'ok', data: 'x', pax: [['path', Buffer.from('a\0b')]] }]), /NUL byte/);
  await expectInvalid(makeTar([{ name: 'x', pax: [['path', `d/${'n'.repeat(256)}`]], data: 'x' }]), /256 bytes is over the 255-byte limit/);
  await expectInvalid(makeTar([{ name: './', data: 'x' }]), /entry "\.\/": the layer root must be a directory/);
  await expectInvalid(makeTar([{ name: 'h', typeflag: TYPEFLAG.hardlink, linkName: '../x' }]), /entry "h": hardlink target "\.\.\/x": name escapes/);
  await expectInvalid(makeTar([{ name: 's', typeflag: TYPEFLAG.symlink, linkName: '' }]), /symlink with an empty target/);
  await expectInvalid(makeTar([{ name: 'x', data: 'x', pax: [['mtime', 'yesterday']] }]), /invalid PAX mtime "yesterday"/);
  await expectInvalid(makeTar([{ name: 'x', data: 'x', pax: [['uid', '-1']] }]), /invalid PAX uid/);
});

test('unknown entry types (GNU sparse, volume label) are refused by name', async () => {
  await expectInvalid(makeTar([{ name: 'sparse', typeflag: 'S', data: 'x' }]), /entry "sparse": unsupported entry type/);
});

test('truncated tars: inside a body, inside a header, and cut exactly between entries', async () => {
  const tar = makeTar([
    { name: 'a', data: Buffer.alloc(5000, 1) },
    { name: 'b', data: Buffer.alloc(100, 2) },
  ]);
  await expectInvalid(tar.subarray(0, 512 + 3000), /truncated tar/);
  await expectInvalid(tar.subarray(0, 512 + 5120 + 200), /truncated tar/);
  const noMarker = makeTar([{ name: 'a', data: 'x' }], { endMarker: false });
  await expectInvalid(noMarker, /truncated tar \(no end-of-archive marker after entry "a"\)/);
  await expectInvalid(Buffer.alloc(0), /empty/);
  // An extended header (PAX or GNU long name) whose member is missing: the end-of-archive marker comes next.
  const extendedOnly = (typeflag: string, data: Buffer) =>
    Buffer.concat([makeTar([{ name: 'a', data: 'x' }], { endMarker: false }), encodeTarHeader({ name: 'ext', typeflag, sizeBytes: data.length }), data, Buffer.alloc(paddingBytes(data.length)), Buffer.alloc(1024)]);
  await expectInvalid(extendedOnly(TYPEFLAG.paxLocal, encodePaxRecords([['SCHILY.xattr.user.k', Buffer.from('v')]])), /truncated tar \(an extended header after entry "a" has no entry after it\)/);
  await expectInvalid(extendedOnly(TYPEFLAG.gnuLongName, Buffer.from(`${'n'.repeat(150)}\0`)), /truncated tar \(an extended header after entry "a" has no entry after it\)/);
  // A global header waits for no member (git archive writes one that holds only a comment).
  assert.equal((await readAll(extendedOnly(TYPEFLAG.paxGlobal, encodePaxRecords([['comment', Buffer.from('x')]])))).length, 1);
});

test('garbage is not a tar; a corrupt PAX record is named', async () => {
  await expectInvalid(Buffer.alloc(4096, 0x41), /not a tar, or corrupt: invalid header at the start/);
  const good = makeTar([{ name: 'a', data: 'x' }]);
  const corrupt = Buffer.concat([good.subarray(0, 1024), Buffer.alloc(512, 0x42), good.subarray(1024)]);
  await expectInvalid(corrupt, /invalid header after entry "a"/);
  const badPax = makeTar([{ name: 'a', data: 'x', pax: [['mtime', '1']] }]);
  // Break the record's length digits ("10 mtime=1\n" -> "99 mtime=1\n").
  badPax.write('99', 512, 'latin1');
  await expectInvalid(badPax, /malformed PAX record/);
});

test('an error of the underlying stream ends the iteration with that error, unchanged', async () => {
  const tar = makeTar([{ name: 'a', data: Buffer.alloc(100000, 1) }, { name: 'b', data: 'x' }]);
  const failing = new Readable({
    read() {
      this.push(tar.subarray(0, 60000));
      this.destroy(new RangeError('digest says no'));
    },
  });
  await assert.rejects(async () => {
    for await (const entry of readLayerEntries(failing, 'l')) await collect(entry.body).catch(() => {});
  }, (error: unknown) => error instanceof RangeError && error.message === 'digest says no');
});

test('breaking out of the loop early stops reading and releases the stream', async () => {
  const tar = makeTar(Array.from({ length: 50 }, (_, i) => ({ name: `f${i}`, data: Buffer.alloc(10000, i) })));
  const source = readableOf(tar, 4096);
  for await (const entry of readLayerEntries(source, 'l')) {
    if (entry.path === 'f3') break;
  }
  assert.ok(source.destroyed, 'source destroyed when the consumer stops');
});
