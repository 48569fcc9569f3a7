import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32cRaw } from '../../src/format/crc32c.js';
import { xxh32 } from '../../src/format/xxh32.js';
import { xattrFilterBit, splitXattrName } from '../../src/format/xattr.js';
import { XATTR_INDEX } from '../../src/format/constants.js';

// Vectors from the CRC catalogue (CRC-32C check value) and the xxHash reference implementation.
test('crc32c matches the published check value', () => {
  const raw = crc32cRaw(0xffffffff, Buffer.from('123456789'));
  assert.equal(raw, 0x1cf96d7c);
  assert.equal((raw ^ 0xffffffff) >>> 0, 0xe3069283);
});

test('xxh32 matches reference vectors', () => {
  assert.equal(xxh32(Buffer.alloc(0), 0), 0x02cc5d05);
  assert.equal(xxh32(Buffer.from('abc'), 0), 0x32d153ff);
  assert.equal(xxh32(Buffer.from('Nobody inspects the spammish repetition'), 0), 0xe2293b2f);
});

// Bits verified against kernel getxattr behaviour and erofs-utils 1.9.3 images (format notes 8.5).
test('xattr filter bits agree with the kernel-verified examples', () => {
  const bit = (name: string) => {
    const split = splitXattrName(Buffer.from(name));
    return xattrFilterBit(split.nameIndex, split.suffix);
  };
  assert.equal(bit('user.foo'), 12);
  assert.equal(bit('user.shared'), 27);
  assert.equal(bit('trusted.overlay.opaque'), 20);
  assert.equal(bit('trusted.overlay.origin'), 18);
  assert.equal(splitXattrName(Buffer.from('system.posix_acl_access')).nameIndex, XATTR_INDEX.POSIX_ACL_ACCESS);
  assert.throws(() => splitXattrName(Buffer.from('system.other')), /no namespace/);
});
