import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TarFormatError } from '../../src/oci/errors.js';
import { TAR_BLOCK_BYTES, TYPEFLAG, decodePaxRecords, decodeTarHeader, encodePaxRecords, encodeTarHeader, isZeroBlock, looksLikeTarHeader, paddingBytes } from '../../src/oci/tarHeader.js';

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
