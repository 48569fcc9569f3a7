import type { ChunkIndex } from '../format/chunk.js';
import type { FileKind } from '../format/inode.js';

/**
 * The in-memory file tree a metadata image is written from. Names and xattr names are raw bytes;
 * map keys hold them as latin1 strings (one char per byte), so sorting keys sorts the bytes.
 * Hardlinks are one node object reachable under several names.
 */
export interface NodeAttrs {
  /** Permission bits including setuid, setgid and sticky (mode & 0o7777). */
  permissions: number;
  uid: number;
  gid: number;
  mtimeSec: bigint;
  mtimeNsec: number;
  /** Full xattr name (latin1 key) to value. */
  xattrs: Map<string, Buffer>;
}

/** Where a regular file's data lives. */
export type RegularData =
  /** Bytes stored in the metadata image itself (flat layout, tail inline when it fits). */
  | { kind: 'inline'; bytes: Buffer }
  /** Chunks already placed in blob devices; null blkaddr means a hole. */
  | { kind: 'chunks'; sizeBytes: number; chunkBits: number; chunks: ChunkIndex[] };

export interface DirNode extends NodeAttrs {
  kind: 'dir';
  children: Map<string, TreeNode>;
}
export interface RegNode extends NodeAttrs {
  kind: 'reg';
  data: RegularData;
}
export interface SymlinkNode extends NodeAttrs {
  kind: 'lnk';
  target: Buffer;
}
export interface DeviceNode extends NodeAttrs {
  kind: 'chr' | 'blk';
  rdevMajor: number;
  rdevMinor: number;
}
export interface SpecialNode extends NodeAttrs {
  kind: 'fifo' | 'sock';
}
export type TreeNode = DirNode | RegNode | SymlinkNode | DeviceNode | SpecialNode;

export function nameKey(name: Uint8Array): string {
  return Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString('latin1');
}

export function nameBytes(key: string): Buffer {
  return Buffer.from(key, 'latin1');
}

export function regularSizeBytes(data: RegularData): number {
  return data.kind === 'inline' ? data.bytes.length : data.sizeBytes;
}

export function defaultAttrs(overrides: Partial<NodeAttrs> = {}): NodeAttrs {
  return { permissions: 0o755, uid: 0, gid: 0, mtimeSec: 0n, mtimeNsec: 0, xattrs: new Map(), ...overrides };
}

export function makeDir(attrs: Partial<NodeAttrs> = {}): DirNode {
  return { kind: 'dir', children: new Map(), ...defaultAttrs(attrs) };
}

export type { FileKind };
