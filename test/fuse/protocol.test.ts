import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ATTR_OUT_SIZE_BYTES, ENTRY_OUT_SIZE_BYTES, FuseProtocolError, IN_HEADER_SIZE_BYTES, INIT_OUT_SIZE_BYTES, decodeInHeader, decodeName, direntSizeBytes,
  encodeAttrOut, encodeDev, encodeEntryOut, encodeInitOut, encodeInvalEntry, encodeOpenOut, encodeStatfsOut,
} from '../../src/fuse/protocol.js';

const attr = { ino: 7n, sizeBytes: 5, blocks512: 8, mtimeSec: 1700000000n, mtimeNsec: 5, mode: 0o100644, nlink: 1, uid: 1, gid: 2, rdev: 0, blksizeBytes: 4096 };

test('record sizes match include/uapi/linux/fuse.h', () => {
  assert.equal(encodeEntryOut(2n, attr, { entrySec: 1, attrSec: 1 }).length, ENTRY_OUT_SIZE_BYTES);
  assert.equal(ENTRY_OUT_SIZE_BYTES, 128);
  assert.equal(encodeAttrOut(attr, { entrySec: 1, attrSec: 1 }).length, ATTR_OUT_SIZE_BYTES);
  assert.equal(ATTR_OUT_SIZE_BYTES, 104);
  assert.equal(INIT_OUT_SIZE_BYTES, 64);
  assert.equal(encodeOpenOut(1n, 2).length, 16);
  assert.equal(encodeStatfsOut({ blocks: 1, files: 1, blockSizeBytes: 4096, nameMaxBytes: 255 }).length, 80);
  assert.equal(encodeInitOut({ minor: 31, maxReadaheadBytes: 0, flags: 0, maxBackground: 1, congestionThreshold: 1, maxWriteBytes: 1, timeGranNs: 1, maxPages: 256 }).readUInt16LE(28), 256);
});

test('attributes land at their offsets', () => {
  const out = encodeEntryOut(9n, attr, { entrySec: 86400, attrSec: 60 });
  assert.equal(out.readBigUInt64LE(0), 9n);
  assert.equal(out.readBigUInt64LE(16), 86400n);
  assert.equal(out.readBigUInt64LE(24), 60n);
  assert.equal(out.readBigUInt64LE(40), 7n, 'ino');
  assert.equal(out.readBigUInt64LE(48), 5n, 'size');
  assert.equal(out.readBigUInt64LE(72), 1700000000n, 'mtime');
  assert.equal(out.readUInt32LE(40 + 60), 0o100644, 'mode');
  assert.equal(out.readUInt32LE(40 + 80), 4096, 'blksize');
});

test('dev_t, dirent padding, names, headers', () => {
  assert.equal(encodeDev(1, 3), 0x103);
  assert.equal(encodeDev(259, 0x12345), (0x45 | (259 << 8) | (0x12300 << 12)) >>> 0);
  assert.equal(direntSizeBytes(1, false), 32);
  assert.equal(direntSizeBytes(8, false), 32);
  assert.equal(direntSizeBytes(9, false), 40);
  assert.equal(direntSizeBytes(1, true), 160);
  assert.deepEqual(decodeName(Buffer.from('abc\0def\0')), Buffer.from('abc'));
  assert.throws(() => decodeName(Buffer.from('abc')), FuseProtocolError);
  const header = Buffer.alloc(IN_HEADER_SIZE_BYTES);
  header.writeUInt32LE(IN_HEADER_SIZE_BYTES, 0);
  header.writeUInt32LE(3, 4);
  assert.equal(decodeInHeader(header, IN_HEADER_SIZE_BYTES).opcode, 3);
  assert.throws(() => decodeInHeader(header, 20), { code: 'ERR_FUSE_PROTOCOL' });
  assert.throws(() => decodeInHeader(header, 48), { code: 'ERR_FUSE_PROTOCOL' });
  const inval = encodeInvalEntry(1n, Buffer.from('img'));
  assert.equal(inval.readUInt32LE(0), inval.length);
  assert.equal(inval.readInt32LE(4), 3);
});
