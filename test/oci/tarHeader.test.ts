import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TarFormatError } from '../../src/oci/errors.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { readLayerEntries } from '../../src/oci/tarEntries.js';
import { scanTarFile } from '../../src/oci/tarIndex.js';
import {
  ExtendedHeaders,
  TAR_BLOCK_BYTES,
  TYPEFLAG,
  decodePaxRecords,
  decodeTarHeader,
  encodePaxRecords,
  encodeTarHeader,
  firstMemberName,
  isZeroBlock,
  looksLikeTarHeader,
  paddingBytes,
} from '../../src/oci/tarHeader.js';
import { makeTar } from './helpers.js';

test('a header is one 512-byte block; padding rounds data up to blocks', () => {
  assert.equal(TAR_BLOCK_BYTES, 512);
  assert.equal(encodeTarHeader({ name: 'a', typeflag: TYPEFLAG.file }).length, 512);
  assert.deepEqual([0, 1, 511, 512, 513].map(paddingBytes), [0, 511, 1, 0, 511]);
  assert.ok(isZeroBlock(Buffer.alloc(512)));
  assert.ok(!isZeroBlock(Buffer.alloc(511)));
});

test('encode/decode round trip, with ustar prefix split and base-256 numbers', () => {
  const name = `${'p'.repeat(120)}/${'n'.repeat(90)}`;
  const input = { name, typeflag: TYPEFLAG.chr, mode: 0o4755, uid: 70000, gid: 3_000_000, sizeBytes: 9 * 1024 ** 3, mtimeSec: -5, linkName: 'target', uname: 'u', gname: 'g', devMajor: 4, devMinor: 64 };
  const decoded = decodeTarHeader(encodeTarHeader(input), 0);
  assert.deepEqual(
    { name: decoded.name, typeflag: decoded.typeflag, mode: decoded.mode, uid: decoded.uid, gid: decoded.gid, sizeBytes: decoded.sizeBytes, mtimeSec: decoded.mtimeSec, linkName: decoded.linkName, uname: decoded.uname, gname: decoded.gname, devMajor: decoded.devMajor, devMinor: decoded.devMinor },
    input,
  );
  assert.equal(decoded.format, 'ustar');
  assert.throws(() => encodeTarHeader({ name: 'x'.repeat(101), typeflag: '0' }), /needs a PAX record/);
});

test('a wrong checksum is a TarFormatError with the offset; looksLikeTarHeader says no', () => {
  const block = encodeTarHeader({ name: 'a', typeflag: '0' });
  block[0] = 0x62;
  assert.throws(() => decodeTarHeader(block, 1024), (error: unknown) => error instanceof TarFormatError && error.offsetBytes === 1024 && /checksum/.test(error.message));
  assert.equal(looksLikeTarHeader(block), false);
  assert.equal(looksLikeTarHeader(Buffer.from('hello')), false);
  block[0] = 0x61;
  assert.equal(looksLikeTarHeader(block), true);
});

test('PAX records are binary-safe both ways, with lengths that count their own digits', () => {
  const value = Buffer.from([0, 1, 2, 0x0a, 0x3d, 0xff]);
  const records = encodePaxRecords([
    ['SCHILY.xattr.security.capability', value],
    ['path', 'ü'.repeat(50)],
    ['mtime', '1.5'],
  ]);
  const decoded = decodePaxRecords(records, 0);
  assert.deepEqual(decoded.get('SCHILY.xattr.security.capability'), value);
  assert.equal(decoded.get('path')!.toString('utf8'), 'ü'.repeat(50));
  assert.equal(decoded.get('mtime')!.toString(), '1.5');
  // "9 a=1234\n" is 9 bytes: the length includes itself.
  assert.equal(encodePaxRecords([['a', '1234']]).toString(), '9 a=1234\n');
  assert.equal(encodePaxRecords([['a', '12345']]).toString(), '11 a=12345\n');
  assert.throws(() => decodePaxRecords(Buffer.from('50 a=1\n'), 0), TarFormatError);
  assert.throws(() => decodePaxRecords(Buffer.from('6 ab1\n'), 0), /no '='/);
  assert.deepEqual(decodePaxRecords(Buffer.concat([Buffer.from('6 a=1\n'), Buffer.alloc(10)]), 0).get('a'), Buffer.from('1'));
});

test('extended headers: PAX path over a GNU long name in either order; globals last, locals end with their member; PAX size checked', () => {
  const header = decodeTarHeader(encodeTarHeader({ name: 'short', typeflag: TYPEFLAG.symlink, linkName: 'link', sizeBytes: 0 }), 0);
  const pax = (records: [string, string][]) => encodePaxRecords(records);
  const longName = (text: string) => Buffer.from(`${text}\0`, 'latin1');

  const extended = new ExtendedHeaders();
  assert.equal(extended.memberName(header), 'short');
  assert.equal(extended.memberLinkName(header), 'link');
  // PAX path wins over a GNU long name whichever comes first.
  extended.add(TYPEFLAG.paxLocal, pax([['path', 'from-pax']]), 0);
  extended.add(TYPEFLAG.gnuLongName, longName('from-gnu'), 512);
  assert.equal(extended.memberName(header), 'from-pax');
  extended.endMember();
  extended.add(TYPEFLAG.gnuLongName, longName('from-gnu'), 0);
  extended.add(TYPEFLAG.paxLocal, pax([['path', 'from-pax']]), 512);
  assert.equal(extended.memberName(header), 'from-pax');
  extended.endMember();
  // A GNU long link alone; nothing carried over from the member before.
  extended.add(TYPEFLAG.gnuLongLink, longName('a/long/target'), 0);
  assert.equal(extended.memberName(header), 'short');
  assert.equal(extended.memberLinkName(header), 'a/long/target');
  extended.endMember();
  assert.equal(extended.memberLinkName(header), 'link');

  // Global records last until overridden; a later global overrides an earlier one; locals win for one member.
  extended.add(TYPEFLAG.paxGlobal, pax([['uname', 'g1'], ['gname', 'g1']]), 0);
  extended.add(TYPEFLAG.paxGlobal, pax([['uname', 'g2']]), 512);
  extended.add(TYPEFLAG.paxLocal, pax([['gname', 'local']]), 1024);
  assert.equal(extended.records.get('uname')?.toString(), 'g2');
  assert.equal(extended.records.get('gname')?.toString(), 'local');
  extended.endMember();
  assert.equal(extended.records.get('uname')?.toString(), 'g2');
  assert.equal(extended.records.get('gname')?.toString(), 'g1');

  // Size: PAX size replaces the header's; a malformed one is a TarFormatError.
  assert.equal(extended.memberSizeBytes(header, 0), 0);
  extended.add(TYPEFLAG.paxLocal, pax([['size', '8589934592']]), 0);
  assert.equal(extended.memberSizeBytes(header, 0), 8589934592);
  extended.endMember();
  extended.add(TYPEFLAG.paxLocal, pax([['size', '12e3']]), 4096);
  assert.throws(() => extended.memberSizeBytes(header, 4096), (error: unknown) => error instanceof TarFormatError && /invalid PAX size "12e3"/.test(error.message) && error.offsetBytes === 4096);
  // Malformed records themselves.
  assert.throws(() => extended.add(TYPEFLAG.paxLocal, Buffer.from('99 path=x\n'), 8192), TarFormatError);
});

test('firstMemberName, the archive index and the layer reader agree on names behind extended headers', async () => {
  const tar = makeTar([
    { name: 'a'.repeat(150), data: 'pax path' },
    { name: `dir/${'b'.repeat(120)}`, gnuLongName: true, data: 'gnu long name' },
    { name: 'plain', data: 'ustar' },
  ]);
  assert.equal(firstMemberName(tar), 'a'.repeat(150));
  const dir = await mkdtemp(join(tmpdir(), 'tar-names-'));
  try {
    await writeFile(join(dir, 'x.tar'), tar);
    const indexed: string[] = [];
    await scanTarFile(join(dir, 'x.tar'), (member) => void indexed.push(member.name));
    const read: string[] = [];
    for await (const entry of readLayerEntries(Readable.from([tar]), 'test layer')) read.push(entry.path);
    assert.deepEqual(indexed, ['a'.repeat(150), `dir/${'b'.repeat(120)}`, 'plain']);
    assert.deepEqual(read, indexed);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
