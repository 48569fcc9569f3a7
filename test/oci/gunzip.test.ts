import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { crc32, deflateRawSync, gzipSync } from 'node:zlib';
import { parseDigest, isParsedDigest, digestOf } from '../../src/oci/digest.js';
import { InvalidLayerError, InvalidSettingError } from '../../src/oci/errors.js';
import { GUNZIP_ENV, gunzipDecoder, isalGunzip, type GunzipDecoder } from '../../src/oci/gunzip.js';
import { openLayerStream } from '../../src/oci/layerStream.js';
import { runChecked } from '../helpers/exec.js';
import { withTempDir } from '../helpers/tmp.js';
import { collect, readableOf } from './helpers.js';

// Gzip layers are inflated by ISA-L's igzip (native/isal-gunzip) where it is built, by Node's zlib
// otherwise. Every case runs through both, through the layer stream the build reads (digest and
// diff_id checked, errors translated), and both must agree: same bytes, or the same kind of error.

const DECODERS: GunzipDecoder[] = ['isal', 'zlib'];
const SUBJECT = 'layer 1/1 (test)';

test('the ISA-L addon is built here (setup installs libisal-dev): gzip layers use it by default', () => {
  assert.notEqual(isalGunzip(), null, 'native/isal-gunzip did not load: run scripts/setup.sh (libisal-dev, npm install)');
  withEnv(undefined, () => assert.equal(gunzipDecoder(), 'isal'));
  withEnv('zlib', () => assert.equal(gunzipDecoder(), 'zlib'));
  withEnv('pigz', () => assert.throws(() => gunzipDecoder(), (error: unknown) => error instanceof InvalidSettingError && /^MKFS_EROFS_TS_GUNZIP: must be isal or zlib, not "pigz"$/.test(error.message)));
});

function withEnv<T>(value: string | undefined, fn: () => T): T {
  const before = process.env[GUNZIP_ENV];
  if (value === undefined) delete process.env[GUNZIP_ENV];
  else process.env[GUNZIP_ENV] = value;
  try {
    return fn();
  } finally {
    if (before === undefined) delete process.env[GUNZIP_ENV];
    else process.env[GUNZIP_ENV] = before;
  }
}

/** The layer's bytes through `decoder`, the stored bytes given in pieces of `pieceBytes`; `diffOf` is the expected diff_id's content. */
async function inflateWith(decoder: GunzipDecoder, stored: Buffer, options: { pieceBytes?: number; diffOf?: Buffer } = {}): Promise<Buffer> {
  const digest = parseDigest(digestOf(stored));
  const diffId = options.diffOf === undefined ? undefined : parseDigest(digestOf(options.diffOf));
  assert.ok(isParsedDigest(digest) && (diffId === undefined || isParsedDigest(diffId)));
  return withEnv(decoder, () =>
    collect(
      openLayerStream({
        subject: SUBJECT,
        compression: 'gzip',
        open: () => readableOf(stored, options.pieceBytes ?? 65536),
        digest,
        sizeBytes: stored.length,
        ...(diffId === undefined ? {} : { diffId }),
      }),
    ),
  );
}

/** Both decoders fail on `stored` with an InvalidLayerError whose problem matches `problem`. */
async function assertBothRefuse(stored: Buffer, problem: RegExp, pieceBytes?: number): Promise<void> {
  for (const decoder of DECODERS) {
    await assert.rejects(inflateWith(decoder, stored, pieceBytes === undefined ? {} : { pieceBytes }), (error: unknown) => {
      assert.ok(error instanceof InvalidLayerError, `${decoder}: expected InvalidLayerError, got ${String(error)}`);
      assert.ok(error.message.startsWith(`${SUBJECT}: `), `${decoder}: ${error.message}`);
      assert.match(error.problem, problem, `${decoder}: ${error.message}`);
      assert.ok(!error.message.includes('\n'));
      return true;
    });
  }
}

/** Compressible and incompressible bytes, over a MiB: several output batches, long back-references. */
function content(): Buffer {
  return Buffer.concat([Buffer.from(randomBytes(300000).toString('hex')), randomBytes(700000), Buffer.alloc(200000, 0x61)]);
}

test('gzip written by the gzip CLI (with and without a file name in the header, levels 1 and 9) inflates to the same bytes with both decoders', async () => {
  await withTempDir(async (dir) => {
    const original = content();
    const file = join(dir, 'layer.tar');
    await writeFile(file, original);
    for (const args of [['-1', '-n'], ['-9', '-N']]) {
      // latin1 keeps the bytes 1:1.
      const stored = Buffer.from((await runChecked('gzip', [...args, '-c', file], { encoding: 'latin1' })).stdout, 'latin1');
      for (const decoder of DECODERS) {
        for (const pieceBytes of [65536, 4093]) {
          const out = await inflateWith(decoder, stored, { pieceBytes, diffOf: original });
          assert.ok(out.equals(original), `${decoder} gzip ${args.join(' ')} pieces of ${pieceBytes}`);
        }
      }
    }
  });
});

/** A member with every optional header field (RFC 1952: FEXTRA, FNAME, FCOMMENT, FHCRC) around `data` deflated. */
function memberWithAllFields(data: Buffer): Buffer {
  const extra = Buffer.from('AB\x04\x00wxyz', 'latin1');
  const head = Buffer.concat([
    Buffer.from([0x1f, 0x8b, 8, 0x04 | 0x08 | 0x10 | 0x02, 1, 2, 3, 4, 0, 3]),
    Buffer.from([extra.length & 0xff, extra.length >> 8]),
    extra,
    Buffer.from('layer.tar\0comment\0', 'latin1'),
  ]);
  const headerCrc = Buffer.alloc(2);
  headerCrc.writeUInt16LE(crc32(head) & 0xffff);
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc32(data), 0);
  trailer.writeUInt32LE(data.length % 2 ** 32, 4);
  return Buffer.concat([head, headerCrc, deflateRawSync(data), trailer]);
}

test('every optional header field, fed one byte at a time: both decoders parse it and check its header CRC', async () => {
  const original = Buffer.from(randomBytes(20000).toString('base64'));
  const stored = memberWithAllFields(original);
  for (const decoder of DECODERS) {
    const out = await inflateWith(decoder, stored, { pieceBytes: 1, diffOf: original });
    assert.ok(out.equals(original), decoder);
  }
  const badHeaderCrc = Buffer.from(stored);
  const crcAt = stored.indexOf('comment\0', 0, 'latin1') + 'comment\0'.length;
  badHeaderCrc[crcAt] = badHeaderCrc[crcAt]! ^ 0xff;
  await assertBothRefuse(badHeaderCrc, /^corrupt gzip stream \(/);
});

test('members one after another, and zero padding after the last, as zlib reads them', async () => {
  const a = content();
  const b = Buffer.from('second member');
  const twoMembers = Buffer.concat([gzipSync(a), gzipSync(b)]);
  const padded = Buffer.concat([twoMembers, Buffer.alloc(1024)]);
  for (const decoder of DECODERS) {
    for (const pieceBytes of [65536, 7]) {
      assert.ok((await inflateWith(decoder, twoMembers, { pieceBytes, diffOf: Buffer.concat([a, b]) })).equals(Buffer.concat([a, b])), `${decoder} two members`);
      assert.ok((await inflateWith(decoder, padded, { pieceBytes, diffOf: Buffer.concat([a, b]) })).equals(Buffer.concat([a, b])), `${decoder} padded`);
    }
  }
});

test('bad gzip: both decoders refuse it with the same kind of one-line error naming the layer', async () => {
  const original = content();
  const good = gzipSync(original);
  const flip = (at: number, mask = 0xff): Buffer => {
    const copy = Buffer.from(good);
    copy[at] = copy[at]! ^ mask;
    return copy;
  };
  // Cut inside the header, the deflate data and the trailer.
  for (const cut of [5, 600, Math.floor(good.length / 2), good.length - 6, good.length - 1]) {
    await assertBothRefuse(good.subarray(0, cut), /^truncated gzip stream/);
  }
  await assertBothRefuse(Buffer.alloc(0), /^truncated gzip stream/);
  await assertBothRefuse(flip(good.length - 8), /^corrupt gzip stream \(/); // data CRC-32
  await assertBothRefuse(flip(good.length - 1, 0x01), /^corrupt gzip stream \(/); // length (ISIZE)
  await assertBothRefuse(flip(0), /^corrupt gzip stream \(/); // magic
  await assertBothRefuse(flip(2, 0x07), /^corrupt gzip stream \(/); // method other than deflate
  await assertBothRefuse(flip(3, 0x80), /^corrupt gzip stream \(/); // reserved flag
  await assertBothRefuse(Buffer.concat([good, Buffer.from('trailing garbage')]), /^corrupt gzip stream \(/);
  // Damage inside the deflate data: an invalid block, or bytes whose CRC-32 does not match.
  const damaged = Buffer.from(good);
  for (let i = 2000; i < 2064; i++) damaged[i] = damaged[i]! ^ 0x5a;
  await assertBothRefuse(damaged, /^corrupt gzip stream \(/);
});

test('a reserved flag in a later member is refused too, also when its header arrives a byte at a time', async () => {
  const second = gzipSync(Buffer.from('two'));
  second[3] = second[3]! | 0x20;
  await assertBothRefuse(Buffer.concat([gzipSync(Buffer.from('one')), second]), /^corrupt gzip stream \(/, 1);
});

test('compressed pieces go to the decompressing thread uncopied only when the stream owns them', async () => {
  const original = Buffer.from(randomBytes(300_000).toString('base64'));
  const stored = gzipSync(original);
  for (const ownPieces of [false, true]) {
    // Fresh buffers of their own, as file reads give them.
    const pieces: Buffer[] = [];
    for (let at = 0; at < stored.length; at += 65536) {
      const piece = Buffer.alloc(Math.min(65536, stored.length - at));
      stored.copy(piece, 0, at);
      pieces.push(piece);
    }
    const out = await collect(openLayerStream({ subject: SUBJECT, compression: 'gzip', open: () => Readable.from(pieces, { objectMode: false }), ...(ownPieces ? { ownPieces } : {}) }));
    assert.ok(out.equals(original), `ownPieces ${ownPieces}: the layer's bytes`);
    // Handing an ArrayBuffer to another thread detaches it here.
    const detached = pieces.filter((piece) => piece.buffer.byteLength === 0).length;
    if (ownPieces) assert.ok(detached > 0, 'owned pieces were handed over, not copied');
    else assert.equal(detached, 0, 'the caller keeps its buffers');
  }
});
