import { MAX_XATTR_VALUE_BYTES } from '../format/constants.js';
import { FormatLimitError } from '../format/errors.js';
import { encodeRdev } from '../format/inode.js';
import { splitXattrName } from '../format/xattr.js';
import type { StoredFile } from './imageBuilder.js';
import { nameBytes, nameKey, type DirNode, type NodeAttrs, type TreeNode } from './tree.js';

/** One entry of a layer tar, normalized (what src/oci yields). Paths are '/'-separated, relative. */
export interface LayerEntry {
  path: string;
  /** The exact name bytes (names need not be UTF-8); `path` is used when absent. */
  pathBytes?: Buffer;
  /** The exact bytes of `linkTarget`. */
  linkTargetBytes?: Buffer;
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'chr' | 'blk' | 'fifo';
  mode: number;
  uid: number;
  gid: number;
  mtimeSec: bigint;
  mtimeNsec: number;
  /** Symlink target (raw), or the normalized path a hardlink points at. */
  linkTarget?: string;
  devMajor?: number;
  devMinor?: number;
  xattrs: Map<string, Buffer>;
  sizeBytes: number;
  /** The data, read by the `regularData` callback of `apply` (layers.ts does not look at it). */
  body?: unknown;
}

export class LayerApplyError extends Error {
  readonly code = 'ERR_INVALID_LAYER';
  constructor(readonly layer: string, readonly entryPath: string, problem: string) {
    super(`${layer}: entry "${entryPath}": ${problem}`);
    this.name = 'LayerApplyError';
  }
}

const WHITEOUT_PREFIX = '.wh.';

function regularNode(attrs: NodeAttrs, { data, xattrs }: StoredFile): TreeNode {
  for (const [xattrName, value] of xattrs) attrs.xattrs.set(xattrName, value);
  return { kind: 'reg', data, ...attrs };
}

/** Path components as tree keys (latin1 strings of the raw bytes), without empty or '.' parts. */
function splitPath(path: Buffer): string[] {
  return nameKey(path)
    .split('/')
    .filter((c) => c !== '' && c !== '.');
}
const OPAQUE_MARKER = '.wh..wh..opq';

/**
 * Applies layers to one merged tree with the OCI image-spec rules: `.wh.NAME` deletes NAME from
 * lower layers, `.wh..wh..opq` hides everything lower layers put in its directory, later entries
 * replace earlier ones (a file replacing a directory drops the directory's subtree, a directory
 * over a directory keeps the children and takes the new attributes), hardlinks may point at files
 * of lower layers. Whiteouts are consumed: the merged tree is what a container sees.
 */
export class LayerApplier {
  /** Nodes created by the layer being applied: whiteouts and opaque markers spare them. */
  private currentLayer = new Set<TreeNode>();
  private layerName = '';
  /** Xattr names already found storable (see {@link checkStorable}). */
  private readonly storableXattrNames = new Set<string>();

  /** `maxSymlinkBytes`: the longest symlink target the image can hold (its block size less one). */
  constructor(
    readonly root: DirNode,
    private readonly maxSymlinkBytes = 4095,
  ) {}

  beginLayer(layerName: string): void {
    this.layerName = layerName;
    this.currentLayer = new Set();
  }

  /**
   * Applies one entry. `regularData` turns a file entry's body into stored data; it is called only
   * for entries that end up in the tree (whiteouts and markers have no body to store).
   */
  apply<E extends LayerEntry>(entry: E, regularData: (entry: E) => StoredFile | Promise<StoredFile>): void | Promise<void> {
    const components = splitPath(entry.pathBytes ?? Buffer.from(entry.path));
    if (components.length === 0) {
      if (entry.type !== 'dir') throw this.error(entry, 'the root must be a directory');
      Object.assign(this.root, this.attrsOf(entry));
      return;
    }
    const name = components.pop()!;
    const parent = this.parentDir(entry, components);
    if (name === OPAQUE_MARKER) {
      for (const [key, child] of parent.children) if (!this.currentLayer.has(child)) parent.children.delete(key);
      return;
    }
    if (name.startsWith(WHITEOUT_PREFIX)) {
      const target = name.slice(WHITEOUT_PREFIX.length);
      const existing = parent.children.get(target);
      if (existing !== undefined && !this.currentLayer.has(existing)) parent.children.delete(target);
      return;
    }
    const key = name;
    const existing = parent.children.get(key);
    this.checkStorable(entry);
    let node: TreeNode;
    switch (entry.type) {
      case 'dir':
        if (existing?.kind === 'dir') {
          Object.assign(existing, this.attrsOf(entry));
          this.currentLayer.add(existing);
          return;
        }
        node = { kind: 'dir', children: new Map(), ...this.attrsOf(entry) };
        break;
      case 'hardlink': {
        const target = this.lookup(entry, entry.linkTargetBytes ?? Buffer.from(entry.linkTarget ?? ''));
        if (target === undefined) throw this.error(entry, `hardlink target "${entry.linkTarget}" does not exist`);
        if (target.kind === 'dir') throw this.error(entry, `hardlink target "${entry.linkTarget}" is a directory`);
        node = target;
        break;
      }
      case 'file': {
        const attrs = this.attrsOf(entry);
        // A promise only when storing had to wait (for the stream or a free buffer): most files of a
        // layer are applied without one (see readLayerEntries on why that matters).
        const stored = regularData(entry);
        if (stored instanceof Promise) return stored.then((ready) => this.place(parent, key, regularNode(attrs, ready)));
        node = regularNode(attrs, stored);
        break;
      }
      case 'symlink':
        if (!entry.linkTarget) throw this.error(entry, 'symlink without a target');
        // Linux symlinks always have mode 0777 (the tar's mode bits mean nothing for them), and
        // every tool that unpacks a layer onto a file system ends up with that.
        node = { kind: 'lnk', target: Buffer.from(entry.linkTargetBytes ?? Buffer.from(entry.linkTarget)), ...this.attrsOf(entry), permissions: 0o777 };
        break;
      case 'chr':
      case 'blk':
        node = { kind: entry.type, rdevMajor: entry.devMajor ?? 0, rdevMinor: entry.devMinor ?? 0, ...this.attrsOf(entry) };
        break;
      case 'fifo':
        node = { kind: 'fifo', ...this.attrsOf(entry) };
        break;
    }
    this.place(parent, key, node);
  }

  /**
   * Refuses, here where the entry can be named, what EROFS cannot store and the metadata image would
   * only meet at the end of the build: xattrs outside its namespaces or over its limits, a symlink
   * target longer than a block, a device number beyond the 32-bit dev_t.
   */
  private checkStorable(entry: LayerEntry): void {
    for (const [xattrName, value] of entry.xattrs) {
      // A layer repeats a few names on many entries (security.selinux on every file): each is split once.
      if (!this.storableXattrNames.has(xattrName)) {
        this.withinLimits(entry, () => splitXattrName(nameBytes(xattrName)));
        this.storableXattrNames.add(xattrName);
      }
      if (value.length > MAX_XATTR_VALUE_BYTES) throw this.error(entry, `xattr "${Buffer.from(xattrName, 'latin1').toString()}" has a value of ${value.length} bytes, over ${MAX_XATTR_VALUE_BYTES}`);
    }
    if (entry.type === 'chr' || entry.type === 'blk') this.withinLimits(entry, () => encodeRdev(entry.devMajor ?? 0, entry.devMinor ?? 0));
    if (entry.type === 'symlink') {
      const targetBytes = entry.linkTargetBytes?.length ?? Buffer.byteLength(entry.linkTarget ?? '');
      if (targetBytes > this.maxSymlinkBytes) throw this.error(entry, `symlink target of ${targetBytes} bytes, over the ${this.maxSymlinkBytes} an EROFS image with this block size holds`);
    }
  }

  /** Runs a format encoder's check; its FormatLimitError becomes this entry's error. */
  private withinLimits(entry: LayerEntry, check: () => unknown): void {
    try {
      check();
    } catch (error) {
      if (error instanceof FormatLimitError) throw this.error(entry, error.message);
      throw error;
    }
  }

  private place(parent: DirNode, key: string, node: TreeNode): void {
    parent.children.set(key, node);
    this.currentLayer.add(node);
  }

  private attrsOf(entry: LayerEntry): NodeAttrs {
    return { permissions: entry.mode & 0o7777, uid: entry.uid, gid: entry.gid, mtimeSec: entry.mtimeSec, mtimeNsec: entry.mtimeNsec, xattrs: new Map(entry.xattrs) };
  }

  /**
   * The directory holding an entry. Missing parents are created (tars may omit them); a parent that
   * is a symlink is refused, since following it could leave the root.
   */
  private parentDir(entry: LayerEntry, components: readonly string[]): DirNode {
    let dir = this.root;
    for (const key of components) {
      const child = dir.children.get(key);
      if (child === undefined) {
        const created: DirNode = { kind: 'dir', children: new Map(), permissions: 0o755, uid: 0, gid: 0, mtimeSec: entry.mtimeSec, mtimeNsec: entry.mtimeNsec, xattrs: new Map() };
        dir.children.set(key, created);
        this.currentLayer.add(created);
        dir = created;
      } else if (child.kind === 'dir') {
        dir = child;
      } else if (child.kind === 'lnk') {
        throw this.error(entry, `parent "${Buffer.from(key, 'latin1').toString()}" is a symlink (entries may not be written through symlinks)`);
      } else {
        throw this.error(entry, `parent "${Buffer.from(key, 'latin1').toString()}" is not a directory`);
      }
    }
    return dir;
  }

  private lookup(entry: LayerEntry, path: Buffer): TreeNode | undefined {
    let node: TreeNode = this.root;
    for (const key of splitPath(path)) {
      if (node.kind !== 'dir') {
        if (node.kind === 'lnk') throw this.error(entry, `hardlink target path goes through a symlink before "${Buffer.from(key, 'latin1').toString()}"`);
        return undefined;
      }
      const child: TreeNode | undefined = node.children.get(key);
      if (child === undefined) return undefined;
      node = child;
    }
    return node;
  }

  private error(entry: LayerEntry, problem: string): LayerApplyError {
    return new LayerApplyError(this.layerName, entry.path, problem);
  }
}
