import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { TarFormatError } from './errors.js';
import { ExtendedHeaders, MAX_PAX_BYTES, TAR_BLOCK_BYTES, TYPEFLAG, decodeTarHeader, isZeroBlock, paddedBytes } from './tarHeader.js';

/** One member of an archive, where its data starts in the file. */
export interface TarMember {
  /** Normalized byte string: no './' or '/' in front, no trailing '/', no empty or '.' components. */
  name: string;
  typeflag: string;
  linkName: string;
  dataOffsetBytes: number;
  sizeBytes: number;
}

/**
 * Normalizes an archive member name or link target: drops leading '/' and './', empty and '.'
 * components and a trailing '/'. `..` resolves lexically; one that climbs above the archive root
 * yields undefined (such a name never matches a layout path).
 */
export function normalizeArchivePath(name: string): string | undefined {
  const parts: string[] = [];
  for (const component of name.split('/')) {
    if (component === '' || component === '.') continue;
    if (component === '..') {
      if (parts.length === 0) return undefined;
      parts.pop();
      continue;
    }
    parts.push(component);
  }
  return parts.join('/');
}

/** Size of the window read at a time while walking headers: many small members come in one read. */
const SCAN_WINDOW_BYTES = 256 * 1024;

/**
 * Reads a tar file's headers in order, skipping member data by offset (a multi-gigabyte archive of
 * a few blobs costs a few reads). PAX `path`/`linkpath`/`size` and GNU long names apply to the next
 * member, as in any tar reader. Stops at the first zero block, at the end of the file, or when
 * `onMember` returns false.
 */
export async function scanTarFile(archivePath: string, onMember: (member: TarMember) => boolean | void): Promise<void> {
  const handle = await open(archivePath, 'r');
  try {
    const fileBytes = (await handle.stat()).size;
    const window = new ScanWindow(handle, fileBytes);
    let offsetBytes = 0;
    const extended = new ExtendedHeaders();
    while (offsetBytes + TAR_BLOCK_BYTES <= fileBytes) {
      const block = await window.read(offsetBytes, TAR_BLOCK_BYTES);
      if (isZeroBlock(block)) break;
      const header = decodeTarHeader(block, offsetBytes);
      const dataOffsetBytes = offsetBytes + TAR_BLOCK_BYTES;
      if (ExtendedHeaders.isExtendedHeader(header.typeflag)) {
        if (header.sizeBytes > MAX_PAX_BYTES) throw new TarFormatError(`extended header of ${header.sizeBytes} bytes is over the ${MAX_PAX_BYTES}-byte limit`, offsetBytes);
        if (dataOffsetBytes + header.sizeBytes > fileBytes) throw new TarFormatError('archive is truncated inside an extended header', offsetBytes);
        extended.add(header.typeflag, await window.read(dataOffsetBytes, header.sizeBytes), offsetBytes);
        offsetBytes = dataOffsetBytes + paddedBytes(header.sizeBytes);
        continue;
      }
      const sizeBytes = extended.memberSizeBytes(header, offsetBytes);
      const memberName = extended.memberName(header);
      if (dataOffsetBytes + sizeBytes > fileBytes) throw new TarFormatError(`archive is truncated: member ${JSON.stringify(memberName)} of ${sizeBytes} bytes ends ${dataOffsetBytes + sizeBytes - fileBytes} bytes past the end of the file`, offsetBytes);
      const name = normalizeArchivePath(memberName);
      if (name !== undefined && onMember({ name, typeflag: header.typeflag, linkName: extended.memberLinkName(header), dataOffsetBytes, sizeBytes }) === false) return;
      extended.endMember();
      // Skip the data the size field announces (links and directories normally announce none).
      offsetBytes = dataOffsetBytes + paddedBytes(sizeBytes);
    }
    // At the end-of-archive marker or the end of the file, an extended header must not still wait for its member.
    if (extended.awaitingMember) throw new TarFormatError('archive is truncated: an extended header has no member after it', offsetBytes);
  } finally {
    await handle.close();
  }
}

/** Buffered positional reads over the archive, so consecutive small headers cost one read. */
class ScanWindow {
  private buffer = Buffer.alloc(0);
  private startBytes = 0;

  constructor(private readonly handle: FileHandle, private readonly fileBytes: number) {}

  async read(offsetBytes: number, lengthBytes: number): Promise<Buffer> {
    if (offsetBytes >= this.startBytes && offsetBytes + lengthBytes <= this.startBytes + this.buffer.length) {
      return this.buffer.subarray(offsetBytes - this.startBytes, offsetBytes - this.startBytes + lengthBytes);
    }
    const wantBytes = Math.min(Math.max(lengthBytes, SCAN_WINDOW_BYTES), this.fileBytes - offsetBytes);
    const buffer = Buffer.allocUnsafe(wantBytes);
    let filled = 0;
    while (filled < wantBytes) {
      const { bytesRead } = await this.handle.read(buffer, filled, wantBytes - filled, offsetBytes + filled);
      if (bytesRead === 0) break;
      filled += bytesRead;
    }
    if (filled < lengthBytes) throw new TarFormatError('archive is truncated', offsetBytes);
    this.buffer = buffer.subarray(0, filled);
    this.startBytes = offsetBytes;
    return this.buffer.subarray(0, lengthBytes);
  }
}

/** Hops followed through symlinks and hard links inside an archive before giving up (a loop). */
const MAX_LINK_HOPS = 16;

/**
 * Random access into a tar file: the members' data offsets recorded once, then any member read as
 * a byte range of the file. Nothing is extracted to disk.
 */
export class TarIndex {
  private constructor(
    readonly archivePath: string,
    private readonly members: Map<string, TarMember>,
  ) {}

  static async open(archivePath: string): Promise<TarIndex> {
    const members = new Map<string, TarMember>();
    // A later member of the same name replaces an earlier one, as extraction would.
    await scanTarFile(archivePath, (member) => {
      members.set(member.name, member);
    });
    return new TarIndex(archivePath, members);
  }

  names(): IterableIterator<string> {
    return this.members.keys();
  }

  /**
   * The regular-file member a name leads to, following symlinks (relative to the link's directory)
   * and hard links (relative to the archive root): `docker save` and skopeo write `ID/layer.tar` as a
   * symlink to the blob. Undefined when absent, not a file, escaping, or looping.
   */
  lookup(name: string): TarMember | undefined {
    let current = normalizeArchivePath(name);
    for (let hop = 0; current !== undefined && hop <= MAX_LINK_HOPS; hop++) {
      const member = this.members.get(current);
      if (member === undefined) return undefined;
      switch (member.typeflag) {
        case TYPEFLAG.file:
        case TYPEFLAG.oldFile:
        case TYPEFLAG.contiguous:
          return member;
        case TYPEFLAG.hardlink:
          current = normalizeArchivePath(member.linkName);
          break;
        case TYPEFLAG.symlink: {
          const slash = current.lastIndexOf('/');
          const base = member.linkName.startsWith('/') || slash < 0 ? '' : current.slice(0, slash + 1);
          current = normalizeArchivePath(base + member.linkName);
          break;
        }
        default:
          return undefined;
      }
    }
    return undefined;
  }

  createReadStream(member: TarMember, highWaterMark: number): Readable {
    if (member.sizeBytes === 0) return Readable.from([], { objectMode: false });
    return createReadStream(this.archivePath, {
      start: member.dataOffsetBytes,
      end: member.dataOffsetBytes + member.sizeBytes - 1,
      highWaterMark,
    });
  }

  async read(member: TarMember, lengthBytes = member.sizeBytes): Promise<Buffer> {
    const wantBytes = Math.min(lengthBytes, member.sizeBytes);
    const handle = await open(this.archivePath, 'r');
    try {
      const buffer = Buffer.alloc(wantBytes);
      let filled = 0;
      while (filled < wantBytes) {
        const { bytesRead } = await handle.read(buffer, filled, wantBytes - filled, member.dataOffsetBytes + filled);
        if (bytesRead === 0) throw new TarFormatError(`archive is truncated inside member ${JSON.stringify(member.name)}`, member.dataOffsetBytes);
        filled += bytesRead;
      }
      return buffer;
    } finally {
      await handle.close();
    }
  }
}
