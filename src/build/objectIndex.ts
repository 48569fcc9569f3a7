import type { ChunkIndex } from '../format/chunk.js';
import { writeMetadataImage } from './metadata.js';
import { defaultAttrs, makeDir, type DirNode } from './tree.js';

/**
 * Object indexes: page cache sharing on kernels without EROFS sharing (6.5+), through overlayfs
 * data-only lower layers. Each blob gets one small EROFS image (mounted once per host) listing every
 * file object whose data lives in that blob as `/<2 hex>/<sha256 hex of the content>`, mapped onto the
 * blob (its only device) by chunk indexes. Metadata images mark each eligible file with overlayfs
 * metacopy + redirect xattrs naming its object, so a sharing mount reads (and mmaps) the data through
 * the object's inode: one page cache for every image holding the file.
 */
export { OVERLAY_METACOPY_XATTR, OVERLAY_REDIRECT_XATTR } from '../format/constants.js';

export function objectPath(contentSha256Hex: string): string {
  return `/${contentSha256Hex.slice(0, 2)}/${contentSha256Hex}`;
}

export interface ObjectEntry {
  contentSha256Hex: string;
  sizeBytes: number;
  chunkBits: number;
  /** Chunk indexes with every data chunk on device 1 (the blob). */
  chunks: ChunkIndex[];
}

/** The object index image of one blob. */
export function buildObjectIndex(blobDigest: string, blobBlocks: number, objects: readonly ObjectEntry[], blockSizeBits: number): Buffer {
  const root = makeDir({ permissions: 0o755 });
  // Hex digests are ASCII, so they are their own latin1 keys.
  for (const object of objects) {
    const prefix = object.contentSha256Hex.slice(0, 2);
    let dir = root.children.get(prefix) as DirNode | undefined;
    if (dir === undefined) {
      dir = makeDir({ permissions: 0o755 });
      root.children.set(prefix, dir);
    }
    dir.children.set(object.contentSha256Hex, {
      kind: 'reg',
      ...defaultAttrs({ permissions: 0o444 }),
      data: { kind: 'chunks', sizeBytes: object.sizeBytes, chunkBits: object.chunkBits, chunks: object.chunks },
    });
  }
  return writeMetadataImage(root, { blockSizeBits, devices: [{ tag: blobDigest, blocks: blobBlocks }], volumeName: 'erofs-objects', uuid: Buffer.from(blobDigest.slice(0, 32), 'hex') });
}
