import { createHash } from 'node:crypto';
import { stat as fsStat } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { ErofsImage, type ErofsStat, type OpenOptions } from '../read/index.js';
import {
  ENTRY_OUT_SIZE_BYTES, FOPEN, FUSE_ROOT_ID, OPCODE, decodeName, decodeReadIn, direntSizeBytes, encodeAttrOut, encodeDev, encodeEntryOut, encodeOpenOut,
  encodeStatfsOut, writeDirent, writeEntryOut, type FuseAttr, type InHeader, type Validity,
} from './protocol.js';
import { FuseErrno, type Reply, type RequestHandler } from './session.js';

const { errno: E } = osConstants;

/** Images never change while served, so the kernel may cache names and attributes for a day. */
const VALIDITY: Validity = { entrySec: 86_400, attrSec: 86_400 };
const MAX_NAME_BYTES = 255;
/** Directories whose name -> nid table is kept, most recently used last. */
const DIR_TABLE_ENTRIES = 4096;
const S_IFDIR = 0o040000;
const W_OK = 2;

/** One image served as a directory of the FUSE root. */
interface ServedImage {
  id: string;
  name: Buffer;
  image: ErofsImage;
  /** Identity of each extra device (index = deviceId - 1): the blob file's tag and inode, so two images reading one store file agree. */
  deviceIdentities: string[];
  removed: boolean;
}

interface Backing {
  served: ServedImage;
  nid: number;
}

interface Node {
  nodeid: bigint;
  /** Shared regular files have one backing per image that holds them; anything else has one. */
  backings: Backing[];
  attr: FuseAttr;
  kind: ErofsStat['kind'] | 'root';
  /**
   * Kernel references (lookups and readdirplus entries minus forgets). At zero the node is dropped:
   * the kernel no longer knows its nodeid (nodeids are never reused), so memory follows what the
   * kernel caches rather than every file ever served.
   */
  lookups: number;
  /** The key of `byContent` that names this node, for a regular file that can be shared. */
  contentKey?: string;
  /** Parent directory's nodeid, for ".." in readdir (directories are never shared, so there is one). */
  parent: bigint;
}

interface DirHandle {
  entries: Array<{ name: Buffer; nodeid?: bigint; nid?: number; fileType: number; served?: ServedImage }>;
  node: Node;
  /**
   * Nodes a plain READDIR of this handle made to give their entries an inode number. The kernel takes
   * no reference to them (it will never FORGET them), so those it has not looked up by the time the
   * handle is released are dropped then.
   */
  unreferenced: Node[];
}

function blocks512(st: ErofsStat, blockSizeBytes: number): number {
  return (Math.ceil(st.sizeBytes / blockSizeBytes) * blockSizeBytes) / 512;
}

/**
 * The file system of one FUSE mount that holds every served image as a subdirectory of its root.
 * Regular files whose data mapping (on the same blob files) and attributes are identical in two
 * images are one node, so the kernel keeps one inode, hence one page cache copy, for both.
 */
export class MultiImageFs implements RequestHandler {
  private nextNodeid = FUSE_ROOT_ID + 1n;
  private nextFh = 1n;
  private readonly nodes = new Map<bigint, Node>();
  private readonly byImageNid = new Map<string, Promise<Node>>();
  private readonly byContent = new Map<string, Node>();
  private readonly images = new Map<string, ServedImage>();
  private readonly dirTables = new Map<string, Map<string, number>>();
  private readonly dirHandles = new Map<bigint, DirHandle>();
  private readonly root: Node;

  constructor(private readonly log: (line: string) => void = () => undefined) {
    const now = BigInt(Math.floor(Date.now() / 1000));
    this.root = {
      nodeid: FUSE_ROOT_ID,
      backings: [],
      kind: 'root',
      lookups: 1,
      parent: FUSE_ROOT_ID,
      attr: { ino: FUSE_ROOT_ID, sizeBytes: 0, blocks512: 0, mtimeSec: now, mtimeNsec: 0, mode: S_IFDIR | 0o555, nlink: 2, uid: 0, gid: 0, rdev: 0, blksizeBytes: 4096 },
    };
    this.nodes.set(FUSE_ROOT_ID, this.root);
  }

  get imageIds(): string[] {
    return [...this.images.keys()];
  }

  async addImage(id: string, metadataImage: string, options: OpenOptions): Promise<void> {
    if (!/^[\w.-]{1,200}$/.test(id) || /^\.+$/.test(id)) throw new Error(`image id "${id}" is not a plain name`);
    if (this.images.has(id)) throw new Error(`image id "${id}" is already served`);
    const image = await ErofsImage.open(metadataImage, options);
    const deviceIdentities: string[] = [];
    for (const device of image.devices) {
      if (device.backing === 'file' && device.path !== undefined) {
        const st = await fsStat(device.path);
        deviceIdentities.push(`${device.tag}@${st.dev}:${st.ino}`);
      } else {
        // Flat or missing devices are this image's own bytes: never shared.
        deviceIdentities.push(`${id}#${device.deviceId}`);
      }
    }
    this.images.set(id, { id, name: Buffer.from(id), image, deviceIdentities, removed: false });
  }

  /** Stops serving an image; returns the kernel notification that drops its name from the root's dentry cache. */
  async removeImage(id: string): Promise<Buffer | undefined> {
    const served = this.images.get(id);
    if (served === undefined) return undefined;
    served.removed = true;
    this.images.delete(id);
    for (const [key, node] of this.nodes) {
      if (node.backings.length === 0) continue;
      node.backings = node.backings.filter((b) => b.served !== served);
      if (node.backings.length === 0) this.nodes.delete(key);
    }
    for (const [key, node] of this.byContent) if (node.backings.length === 0) this.byContent.delete(key);
    for (const key of [...this.byImageNid.keys()]) if (key.startsWith(`${id}\0`)) this.byImageNid.delete(key);
    for (const key of [...this.dirTables.keys()]) if (key.startsWith(`${id}\0`)) this.dirTables.delete(key);
    await served.image.close();
    return served.name;
  }

  async handle(header: InHeader, body: Buffer, context: { interrupted: () => boolean; readdirplus: boolean }): Promise<Reply> {
    switch (header.opcode) {
      case OPCODE.LOOKUP:
        return this.lookup(header.nodeid, decodeName(body));
      case OPCODE.FORGET:
        this.forget(header.nodeid, Number(body.readBigUInt64LE(0)));
        return null;
      case OPCODE.BATCH_FORGET: {
        const count = body.readUInt32LE(0);
        for (let i = 0; i < count && 8 + i * 16 + 16 <= body.length; i++) this.forget(body.readBigUInt64LE(8 + i * 16), Number(body.readBigUInt64LE(16 + i * 16)));
        return null;
      }
      case OPCODE.GETATTR:
        return encodeAttrOut(this.node(header.nodeid).attr, VALIDITY);
      case OPCODE.READLINK: {
        const { served, nid } = this.backing(this.node(header.nodeid));
        return served.image.readlink(nid);
      }
      case OPCODE.OPEN:
        // ENOSYS makes the kernel stop sending OPEN and RELEASE ("zero-message open", FUSE_NO_OPEN_SUPPORT):
        // it then opens with FOPEN_KEEP_CACHE, which is what we would answer, and skips two round trips per file.
        this.node(header.nodeid);
        throw new FuseErrno(E.ENOSYS, 'zero-message open');
      case OPCODE.READ:
        return this.read(header.nodeid, body, context.interrupted);
      case OPCODE.FLUSH:
        // ENOSYS once and the kernel never sends FLUSH again (nothing to flush on a read-only image).
        throw new FuseErrno(E.ENOSYS, 'no flush');
      case OPCODE.RELEASE:
      case OPCODE.FSYNC:
      case OPCODE.FSYNCDIR:
        return Buffer.alloc(0);
      case OPCODE.OPENDIR:
        return this.opendir(header.nodeid);
      case OPCODE.READDIR:
        return this.readdir(body, false);
      case OPCODE.READDIRPLUS:
        return this.readdir(body, true);
      case OPCODE.RELEASEDIR:
        this.releaseDir(body.readBigUInt64LE(0));
        return Buffer.alloc(0);
      case OPCODE.STATFS:
        return this.statfs(header.nodeid);
      case OPCODE.GETXATTR:
        return this.getxattr(header.nodeid, body);
      case OPCODE.LISTXATTR:
        return this.listxattr(header.nodeid, body);
      case OPCODE.ACCESS:
        this.node(header.nodeid);
        if ((body.readUInt32LE(0) & W_OK) !== 0) throw new FuseErrno(E.EROFS, 'write access');
        return Buffer.alloc(0);
      case OPCODE.DESTROY:
        return Buffer.alloc(0);
      case OPCODE.IOCTL:
        throw new FuseErrno(E.ENOTTY, 'no ioctls');
      default:
        throw new FuseErrno(E.ENOSYS, `opcode ${header.opcode}`);
    }
  }

  private node(nodeid: bigint): Node {
    const node = this.nodes.get(nodeid);
    // A node of a removed image: the kernel may still hold it until it forgets.
    if (node === undefined) throw new FuseErrno(E.ESTALE, `unknown node ${nodeid}`);
    return node;
  }

  private backing(node: Node): Backing {
    const backing = node.backings.find((b) => !b.served.removed);
    if (backing === undefined) throw new FuseErrno(E.ESTALE, `node ${node.nodeid} has no image left`);
    return backing;
  }

  private forget(nodeid: bigint, count: number): void {
    const node = this.nodes.get(nodeid);
    if (node === undefined) return;
    node.lookups = Math.max(0, node.lookups - count);
    if (node.lookups === 0) this.drop(node);
  }

  /** Forgets a node the kernel holds no reference to: its nodeid is never used again. */
  private drop(node: Node): void {
    if (node === this.root || this.nodes.get(node.nodeid) !== node) return;
    this.nodes.delete(node.nodeid);
    for (const { served, nid } of node.backings) this.byImageNid.delete(`${served.id}\0${nid}`);
    if (node.contentKey !== undefined && this.byContent.get(node.contentKey) === node) this.byContent.delete(node.contentKey);
  }

  private releaseDir(fh: bigint): void {
    const handle = this.dirHandles.get(fh);
    if (handle === undefined) return;
    this.dirHandles.delete(fh);
    // A node the kernel looked up meanwhile has a reference, and goes when the kernel forgets it.
    for (const node of handle.unreferenced) if (node.lookups === 0) this.drop(node);
  }

  /** Number of nodes the file system holds (the root included). */
  get nodeCount(): number {
    return this.nodes.size;
  }

  /**
   * The node of (image, nid) with one more kernel reference. A node the kernel forgot while it was
   * being looked up (a FORGET handled during an await) is gone from the tables: look it up afresh.
   */
  private async referencedNode(served: ServedImage, nid: number, parent: bigint): Promise<Node> {
    for (;;) {
      const node = await this.nodeFor(served, nid, parent);
      if (this.nodes.get(node.nodeid) === node) {
        node.lookups++;
        return node;
      }
    }
  }

  private attrOf(st: ErofsStat, ino: bigint, blockSizeBytes: number): FuseAttr {
    return {
      ino,
      sizeBytes: st.sizeBytes,
      blocks512: blocks512(st, blockSizeBytes),
      mtimeSec: st.mtimeSec,
      mtimeNsec: st.mtimeNsec,
      mode: st.mode,
      nlink: st.nlink,
      uid: st.uid,
      gid: st.gid,
      rdev: st.rdev === null ? 0 : encodeDev(st.rdev.major, st.rdev.minor),
      blksizeBytes: blockSizeBytes,
    };
  }

  /**
   * What makes two regular files interchangeable: every attribute the kernel reports and the data
   * mapping on the same blob files. Data in the metadata image itself (inline tails, flat layouts on
   * device 0) belongs to that image alone, so such a file is never shared.
   */
  private async contentKey(served: ServedImage, nid: number, st: ErofsStat): Promise<string | undefined> {
    const map = await served.image.chunkMap(nid);
    const hash = createHash('sha256');
    hash.update(`${st.mode} ${st.uid} ${st.gid} ${st.mtimeSec}.${st.mtimeNsec} ${st.nlink} ${st.sizeBytes} ${served.image.blockSizeBytes}\n`);
    // Chunk sizes differ between images built apart (one 1 MiB chunk or several): the identity is
    // the physical runs, so contiguous extents on one device are merged first.
    const bs = served.image.blockSizeBytes;
    let run: { device: string; blkaddr: number | null; lengthBytes: number } | undefined;
    const flush = (): void => {
      if (run !== undefined) hash.update(`${run.device} ${run.blkaddr} ${run.lengthBytes}\n`);
    };
    for (const extent of map) {
      if (extent.deviceId === 0 && !(extent.blkaddr === null && st.dataLayout === 'chunk-based')) return undefined;
      const device = extent.blkaddr === null ? 'hole' : served.deviceIdentities[extent.deviceId - 1];
      if (device === undefined) return undefined;
      const continues =
        run !== undefined && run.device === device && run.lengthBytes % bs === 0 &&
        (run.blkaddr === null ? extent.blkaddr === null : extent.blkaddr === run.blkaddr + run.lengthBytes / bs);
      if (continues) run!.lengthBytes += extent.lengthBytes;
      else {
        flush();
        run = { device, blkaddr: extent.blkaddr, lengthBytes: extent.lengthBytes };
      }
    }
    flush();
    for (const x of (await served.image.listXattrs(nid)).filter((r) => !r.hidden)) {
      hash.update(`${x.name.length}:`).update(x.name).update(`${x.value.length}:`).update(x.value);
    }
    return hash.digest('hex');
  }

  private nodeFor(served: ServedImage, nid: number, parent: bigint): Promise<Node> {
    const key = `${served.id}\0${nid}`;
    let pending = this.byImageNid.get(key);
    if (pending === undefined) {
      pending = this.makeNode(served, nid, parent);
      this.byImageNid.set(key, pending);
      pending.catch(() => this.byImageNid.delete(key));
    }
    return pending;
  }

  private async makeNode(served: ServedImage, nid: number, parent: bigint): Promise<Node> {
    const st = await served.image.stat(nid);
    const contentKey = st.kind === 'reg' ? await this.contentKey(served, nid, st) : undefined;
    if (contentKey !== undefined) {
      const existing = this.byContent.get(contentKey);
      if (existing !== undefined && this.nodes.has(existing.nodeid)) {
        existing.backings.push({ served, nid });
        return existing;
      }
    }
    const nodeid = this.nextNodeid++;
    const node: Node = { nodeid, backings: [{ served, nid }], attr: this.attrOf(st, nodeid, served.image.blockSizeBytes), kind: st.kind, lookups: 0, parent, contentKey };
    this.nodes.set(nodeid, node);
    if (contentKey !== undefined) this.byContent.set(contentKey, node);
    return node;
  }

  private async dirTable(served: ServedImage, nid: number): Promise<Map<string, number>> {
    const key = `${served.id}\0${nid}`;
    const cached = this.dirTables.get(key);
    if (cached !== undefined) {
      this.dirTables.delete(key);
      this.dirTables.set(key, cached);
      return cached;
    }
    const table = new Map<string, number>();
    for (const entry of await served.image.readdir(nid)) table.set(entry.name.toString('latin1'), entry.nid);
    this.dirTables.set(key, table);
    if (this.dirTables.size > DIR_TABLE_ENTRIES) this.dirTables.delete(this.dirTables.keys().next().value!);
    return table;
  }

  private async lookup(parentId: bigint, name: Buffer): Promise<Reply> {
    if (name.length > MAX_NAME_BYTES) throw new FuseErrno(E.ENAMETOOLONG, 'name too long');
    const parent = this.node(parentId);
    let node: Node;
    if (parent.kind === 'root') {
      const served = this.images.get(name.toString('latin1'));
      if (served === undefined) throw new FuseErrno(E.ENOENT, 'no such image');
      node = await this.referencedNode(served, served.image.rootNid, FUSE_ROOT_ID);
    } else {
      if (parent.kind !== 'dir') throw new FuseErrno(E.ENOTDIR, 'lookup in a non-directory');
      const { served, nid } = this.backing(parent);
      const child = (await this.dirTable(served, nid)).get(name.toString('latin1'));
      if (child === undefined) throw new FuseErrno(E.ENOENT, 'no such entry');
      node = await this.referencedNode(served, child, parent.nodeid);
    }
    return encodeEntryOut(node.nodeid, node.attr, VALIDITY);
  }

  private async read(nodeid: bigint, body: Buffer, interrupted: () => boolean): Promise<Reply> {
    const node = this.node(nodeid);
    const request = decodeReadIn(body);
    const sizeBytes = node.attr.sizeBytes;
    if (request.offsetBytes >= BigInt(sizeBytes)) return Buffer.alloc(0);
    const offsetBytes = Number(request.offsetBytes);
    const lengthBytes = Math.min(request.sizeBytes, sizeBytes - offsetBytes);
    if (interrupted()) return null;
    const { served, nid } = this.backing(node);
    return served.image.read(nid, offsetBytes, lengthBytes);
  }

  private async opendir(nodeid: bigint): Promise<Reply> {
    const node = this.node(nodeid);
    let entries: DirHandle['entries'];
    if (node.kind === 'root') {
      entries = [...this.images.values()].map((served) => ({ name: served.name, fileType: 4, served }));
    } else if (node.kind === 'dir') {
      const { served, nid } = this.backing(node);
      entries = (await served.image.readdir(nid)).map((e) => ({ name: e.name, nid: e.nid, fileType: e.fileType, served }));
    } else {
      throw new FuseErrno(E.ENOTDIR, 'opendir of a non-directory');
    }
    const fh = this.nextFh++;
    this.dirHandles.set(fh, {
      node,
      unreferenced: [],
      entries: [{ name: Buffer.from('.'), nodeid: node.nodeid, fileType: 4 }, { name: Buffer.from('..'), nodeid: node.parent, fileType: 4 }, ...entries],
    });
    // CACHE_DIR: the kernel keeps the listing in its page cache; KEEP_CACHE: across opens too.
    // The root's listing changes as images come and go; an image's never does.
    return encodeOpenOut(fh, node.kind === 'root' ? 0 : FOPEN.KEEP_CACHE | FOPEN.CACHE_DIR);
  }

  /** EROFS dirent file types (FT_*) to the DT_* values readdir reports. */
  private static dtype(fileType: number): number {
    return [0, 8, 4, 2, 6, 1, 12, 10][fileType] ?? 0;
  }

  private async readdir(body: Buffer, plus: boolean): Promise<Reply> {
    const request = decodeReadIn(body);
    const handle = this.dirHandles.get(request.fh);
    if (handle === undefined) throw new FuseErrno(E.EBADF, 'unknown directory handle');
    const out = Buffer.alloc(request.sizeBytes);
    let used = 0;
    for (let index = Number(request.offsetBytes); index < handle.entries.length; index++) {
      const entry = handle.entries[index]!;
      const need = direntSizeBytes(entry.name.length, plus);
      if (used + need > out.length) break;
      let nodeid = entry.nodeid;
      let node: Node | undefined;
      const dot = entry.nodeid !== undefined;
      if (nodeid === undefined && entry.served !== undefined) {
        const nid = entry.nid ?? entry.served.image.rootNid;
        // readdirplus hands the kernel a reference; plain readdir only an inode number.
        if (plus) {
          node = await this.referencedNode(entry.served, nid, handle.node.nodeid);
        } else {
          node = await this.nodeFor(entry.served, nid, handle.node.nodeid);
          if (node.lookups === 0) handle.unreferenced.push(node);
        }
        nodeid = node.nodeid;
      }
      if (plus) {
        // "." and ".." carry nodeid 0: the kernel skips them and they count no lookup.
        if (dot || node === undefined) out.fill(0, used, used + ENTRY_OUT_SIZE_BYTES);
        else writeEntryOut(out, used, node.nodeid, node.attr, VALIDITY);
        writeDirent(out, used + ENTRY_OUT_SIZE_BYTES, nodeid ?? 0n, BigInt(index + 1), entry.name, MultiImageFs.dtype(entry.fileType));
      } else {
        writeDirent(out, used, nodeid ?? 0n, BigInt(index + 1), entry.name, MultiImageFs.dtype(entry.fileType));
      }
      used += need;
    }
    return out.subarray(0, used);
  }

  private statfs(nodeid: bigint): Reply {
    const node = this.nodes.get(nodeid);
    const backing = node?.backings.find((b) => !b.served.removed);
    if (backing === undefined) return encodeStatfsOut({ blocks: 0, files: 0, blockSizeBytes: 4096, nameMaxBytes: MAX_NAME_BYTES });
    const image = backing.served.image;
    const deviceBlocks = image.devices.reduce((sum, d) => sum + d.blocks, 0);
    return encodeStatfsOut({ blocks: image.superblock.blocks + deviceBlocks, files: Number(image.superblock.inos), blockSizeBytes: image.blockSizeBytes, nameMaxBytes: MAX_NAME_BYTES });
  }

  private async visibleXattrs(nodeid: bigint): Promise<Array<{ name: Buffer; value: Buffer }>> {
    const node = this.node(nodeid);
    if (node.kind === 'root') return [];
    const { served, nid } = this.backing(node);
    // Names the kernel has no handler for are invisible through a kernel mount: keep them so here.
    return (await served.image.listXattrs(nid)).filter((x) => !x.hidden);
  }

  /** The getxattr/listxattr size protocol: size 0 asks for the length, too small a buffer is ERANGE. */
  private static sized(value: Buffer, sizeBytes: number): Reply {
    if (sizeBytes === 0) {
      const out = Buffer.alloc(8);
      out.writeUInt32LE(value.length, 0);
      return out;
    }
    if (value.length > sizeBytes) throw new FuseErrno(E.ERANGE, 'xattr buffer too small');
    return value;
  }

  private async getxattr(nodeid: bigint, body: Buffer): Promise<Reply> {
    const sizeBytes = body.readUInt32LE(0);
    const name = decodeName(body, 8);
    const found = (await this.visibleXattrs(nodeid)).find((x) => x.name.equals(name));
    if (found === undefined) throw new FuseErrno(E.ENODATA, 'no such xattr');
    return MultiImageFs.sized(found.value, sizeBytes);
  }

  private async listxattr(nodeid: bigint, body: Buffer): Promise<Reply> {
    const sizeBytes = body.readUInt32LE(0);
    const names = (await this.visibleXattrs(nodeid)).map((x) => Buffer.concat([x.name, Buffer.from([0])]));
    return MultiImageFs.sized(Buffer.concat(names), sizeBytes);
  }
}
