import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BufferSource, ErofsImage, PathNotFoundError } from '../../src/read/index.js';
import { CorruptImageError, UnsupportedFeatureError, decodeDirectoryBlock } from '../../src/format/index.js';
import { makeSmallTree } from '../helpers/fixtures.js';
import { TEMP_DIR_PREFIX } from '../helpers/tmp.js';
import { fixSuperblockChecksum, mkfsErofs } from './mkfsImages.js';

/**
 * One crafted defect per rule of the reader's hostility list (the fuzz in corruption.test.ts covers
 * the space; these pin down the specific checks and their messages).
 */

const NAME = 'crafted.erofs';
let dir = '';
let pristine: Buffer;

async function open(bytes: Buffer, options: { maxDepth?: number } = {}): Promise<ErofsImage> {
  return ErofsImage.fromSources(new BufferSource(NAME, bytes), options);
}

async function walkAll(image: ErofsImage): Promise<number> {
  let n = 0;
  for await (const _ of image.walk()) n++;
  return n;
}

/** Byte offset of the nid field of `name`'s dirent in directory `dirPath` (inline or first block). */
async function direntNidOffset(dirPath: string, name: string): Promise<number> {
  const image = await open(pristine);
  try {
    const st = await image.stat(await image.lookup(dirPath));
    const dataStart = st.startBlkaddr !== null ? st.startBlkaddr * image.blockSizeBytes : st.inodeOffsetBytes + st.inodeSizeBytes + st.xattrIbodySizeBytes;
    const length = Math.min(image.blockSizeBytes, st.sizeBytes);
    const entries = decodeDirectoryBlock(pristine.subarray(dataStart, dataStart + length), length, st.nid, 0);
    const index = entries.findIndex((e) => e.name.toString() === name);
    assert.ok(index >= 0, `${name} is not in the first block of ${dirPath}`);
    return dataStart + index * 12;
  } finally {
    await image.close();
  }
}

async function statOf(path: string): Promise<{ nid: number; inodeOffsetBytes: number; sizeBytes: number }> {
  const image = await open(pristine);
  try {
    return await image.stat(await image.lookup(path));
  } finally {
    await image.close();
  }
}

function patched(edit: (bytes: Buffer) => void): Buffer {
  const bytes = Buffer.from(pristine);
  edit(bytes);
  fixSuperblockChecksum(bytes);
  return bytes;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), TEMP_DIR_PREFIX));
  await makeSmallTree(join(dir, 'src'));
  pristine = await readFile((await mkfsErofs(dir, 'plain', join(dir, 'src'))).image);
});

after(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true, maxRetries: 3 });
});

describe('crafted defects', () => {
  test('a directory entry pointing back at the root is a loop', async () => {
    const at = await direntNidOffset('.', 'dir');
    const image = await open(patched((b) => b.writeBigUInt64LE(BigInt(b.readUInt32LE(1024 + 0x0e) & 0xffff), at)));
    try {
      await assert.rejects(walkAll(image), (err: unknown) => err instanceof CorruptImageError && /reachable twice/.test(err.message) && err.message.startsWith(NAME));
    } finally {
      await image.close();
    }
  });

  test('a nid beyond the image', async () => {
    const at = await direntNidOffset('.', 'hello.txt');
    const image = await open(patched((b) => b.writeBigUInt64LE(1n << 40n, at)));
    try {
      await assert.rejects(walkAll(image), /nid 1099511627776 lies beyond the image/);
      await assert.rejects(image.stat(2 ** 53), CorruptImageError);
    } finally {
      await image.close();
    }
  });

  test('depth limits for walk and lookup', async () => {
    const image = await open(pristine, { maxDepth: 1 });
    try {
      await assert.rejects(walkAll(image), /deeper than 1 levels/);
      await assert.rejects(image.lookup('dir/nested/file'), PathNotFoundError);
    } finally {
      await image.close();
    }
  });

  test('a compressed layout is an unsupported feature, named', async () => {
    const { inodeOffsetBytes, nid } = await statOf('data.bin');
    // i_format bits 1-3 = 1: COMPRESSED_FULL.
    const image = await open(patched((b) => b.writeUInt16LE((b.readUInt16LE(inodeOffsetBytes) & ~0x0e) | (1 << 1), inodeOffsetBytes)));
    try {
      assert.equal((await image.stat(nid)).dataLayout, 'compressed-full');
      await assert.rejects(image.read(nid, 0, 10), (err: unknown) => err instanceof UnsupportedFeatureError && /compressed data layout compressed-full/.test(err.message) && err.image === NAME);
    } finally {
      await image.close();
    }
  });

  test('an inline tail that would cross a block boundary', async () => {
    const { inodeOffsetBytes, nid } = await statOf('hello.txt');
    // Still one (inline) block, but 4000 bytes starting mid-block cannot fit.
    const image = await open(patched((b) => b.writeUInt32LE(4000, inodeOffsetBytes + 8)));
    try {
      await assert.rejects(image.read(nid, 0, 10), /crosses a block boundary/);
    } finally {
      await image.close();
    }
  });

  test('an i_size far beyond the image fails before anything is allocated for it', async () => {
    const { inodeOffsetBytes, nid } = await statOf('data.bin');
    // data.bin is an extended inode (uid 70000): a 64-bit size of 2^50 on a flat layout.
    const image = await open(patched((b) => b.writeBigUInt64LE(1n << 50n, inodeOffsetBytes + 8)));
    try {
      assert.equal((await image.stat(nid)).sizeBytes, 2 ** 50);
      await assert.rejects(image.read(nid, 2 ** 49, 4096), /outside the primary image/);
      await assert.rejects(image.read(nid, 0, 2 ** 40), RangeError); // the caller's length is capped, not the image's
    } finally {
      await image.close();
    }
  });
});
