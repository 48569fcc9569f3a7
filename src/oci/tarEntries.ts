import type { Readable } from 'node:stream';
import { InvalidLayerError, showName, TarFormatError } from './errors.js';
import { ExtendedHeaders, MAX_PAX_BYTES, TAR_BLOCK_BYTES, TYPEFLAG, decodeTarHeader, isZeroBlock, paddingBytes, type TarHeader } from './tarHeader.js';

export type LayerEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'chr' | 'blk' | 'fifo';

/**
 * One entry of a layer tar, normalized. Names are checked (see {@link normalizeEntryPath}) and
 * whiteouts (`.wh.NAME`, `.wh..wh..opq`) pass through unchanged: applying them is the tree's job.
 */
export interface LayerEntry {
  /**
   * '/'-separated, relative, no './' or '/' in front, no trailing '/', no '.' or '..' components;
   * '' for the root directory itself (the tar's './'). Decoded as UTF-8: exact for every name that is
   * valid UTF-8; use {@link pathBytes} for the bytes themselves.
   */
  path: string;
  /** The normalized name as the tar stores it (file names are bytes, not text). */
  pathBytes: Buffer;
  type: LayerEntryType;
  /** Permission bits including setuid, setgid and sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Owner names, informational (owners are numeric in images); '' when absent. */
  uname: string;
  gname: string;
  mtimeSec: bigint;
  /** 0..999999999; PAX `mtime` gives sub-second precision, the ustar field whole seconds. */
  mtimeNsec: number;
  /**
   * Symlink: the target as stored (not normalized, may be absolute or contain '..'). Hardlink: the
   * normalized path of the entry it links to (same rules as {@link path}). UTF-8 decoded.
   */
  linkTarget?: string;
  linkTargetBytes?: Buffer;
  devMajor?: number;
  devMinor?: number;
  /**
   * From PAX `SCHILY.xattr.NAME` (and `LIBARCHIVE.xattr.NAME`). Keys are byte strings (latin1, one char
   * per byte, like the tree's xattr keys); values are the raw bytes.
   */
  xattrs: Map<string, Buffer>;
  /** Bytes of data the entry carries: the file size for files, 0 for everything else in practice. */
  sizeBytes: number;
  /**
   * The entry's data. Read it (or part of it, or nothing) before asking the iterator for the next
   * entry: the tar is one stream, so the next header comes after this body. What is left unread
   * when the iterator advances is skipped.
   */
  body: EntryBody;
}

/** An entry's data, read in order straight from the layer stream. */
export interface EntryBody extends AsyncIterable<Buffer> {
  /**
   * Copies the next bytes of the body into `target` (at most `lengthBytes`) and returns how many:
   * 0 only at the end of the body. Bytes already received are copied at once (a number is
   * returned); otherwise a promise waits for the stream. A tar that ends inside the body fails
   * with InvalidLayerError.
   */
  read(target: Uint8Array, offsetInTarget: number, lengthBytes: number): number | Promise<number>;
}

export interface ReadLayerEntriesOptions {
  /** Told about tolerated oddities (e.g. an entry type we skip). Default: ignored. */
  onWarning?: (message: string) => void;
}

/** Longest file name component (Linux NAME_MAX, and EROFS's limit). */
const MAX_COMPONENT_BYTES = 255;
const DOT_COMPONENT = /(?:^|\/)\.\.?(?:\/|$)/;

/**
 * Checks and normalizes an entry name (a byte string). Returns the problem instead of throwing, so
 * the caller can name the layer and entry.
 *
 * `./` in front is what most layer writers emit and is accepted. A leading '/' is refused rather
 * than stripped: Docker, BuildKit, umoci and skopeo never write one, so it means a tar made with
 * absolute paths (`tar -P`, or of `/` itself), and silently relocating its entries would build an
 * image different from the one the tar describes. `..` is resolved lexically (containerd does the
 * same) and refused only when it climbs above the root; resolving never follows symlinks because
 * entries are created at lexical paths.
 */
export function normalizeEntryPath(name: string): { path: string } | { problem: string } {
  if (name === '') return { problem: 'empty name' };
  if (name.includes('\0')) return { problem: 'name contains a NUL byte' };
  if (name.startsWith('/')) return { problem: 'absolute name (layer entries must be relative to the root)' };
  // Fast path, most names of a layer ("./usr/bin/env", "etc/"): past a leading "./" and without a
  // trailing '/', single '/' separators, no '.' or '..' component, nothing over the component limit.
  const rest = name.startsWith('./') ? name.slice(2) : name;
  const body = rest.endsWith('/') ? rest.slice(0, -1) : rest;
  if (body !== '' && body.length <= MAX_COMPONENT_BYTES && body[0] !== '/' && !body.endsWith('/') && !body.includes('//') && !DOT_COMPONENT.test(body)) return { path: body };
  const parts: string[] = [];
  for (const component of name.split('/')) {
    if (component === '' || component === '.') continue;
    if (component === '..') {
      if (parts.length === 0) return { problem: "name escapes the layer root through '..'" };
      parts.pop();
      continue;
    }
    if (component.length > MAX_COMPONENT_BYTES) return { problem: `name component of ${component.length} bytes is over the ${MAX_COMPONENT_BYTES}-byte limit` };
    parts.push(component);
  }
  return { path: parts.join('/') };
}

/** Seconds and nanoseconds from a PAX time (`1700000000.123456789`, `-1.5`). */
export function parsePaxTime(text: string): { sec: bigint; nsec: number } | undefined {
  const match = /^(-?)([0-9]{1,20})(?:\.([0-9]*))?$/.exec(text);
  if (match === null) return undefined;
  const whole = BigInt(match[2] ?? '0');
  const fraction = Number(((match[3] ?? '') + '000000000').slice(0, 9));
  if (match[1] !== '-') return { sec: whole, nsec: fraction };
  // Negative times: keep nanoseconds positive (struct timespec), so -1.25 is -2 s + 750000000 ns.
  return fraction === 0 ? { sec: -whole, nsec: 0 } : { sec: -whole - 1n, nsec: 1_000_000_000 - fraction };
}

function parsePaxId(text: string): number | undefined {
  if (!/^[0-9]{1,10}$/.test(text)) return undefined;
  const value = Number(text);
  return value <= 0xffffffff ? value : undefined;
}

const TYPE_OF_FLAG: Record<string, LayerEntryType> = {
  [TYPEFLAG.file]: 'file',
  [TYPEFLAG.oldFile]: 'file',
  [TYPEFLAG.contiguous]: 'file',
  [TYPEFLAG.dir]: 'dir',
  [TYPEFLAG.symlink]: 'symlink',
  [TYPEFLAG.hardlink]: 'hardlink',
  [TYPEFLAG.chr]: 'chr',
  [TYPEFLAG.blk]: 'blk',
  [TYPEFLAG.fifo]: 'fifo',
};

/** Names of the typeflags a layer may not use, for the message that refuses them. */
const UNSUPPORTED_TYPE_NAMES: Record<string, string> = {
  S: 'GNU sparse file',
  V: 'GNU volume label',
  M: 'GNU multi-volume continuation',
  D: 'GNU dump directory',
  N: 'old GNU long name',
};

const XATTR_PREFIXES = ['SCHILY.xattr.', 'LIBARCHIVE.xattr.'] as const;

/** Xattrs from PAX records. libarchive's form percent-encodes the name and base64-encodes the value; SCHILY's wins when both are present. */
function xattrsOf(records: ReadonlyMap<string, Buffer>): Map<string, Buffer> {
  const xattrs = new Map<string, Buffer>();
  for (const [key, value] of records) {
    if (key.startsWith(XATTR_PREFIXES[1])) {
      const name = Buffer.from(decodeURIComponent(Buffer.from(key.slice(XATTR_PREFIXES[1].length), 'latin1').toString('utf8')), 'utf8').toString('latin1');
      if (!xattrs.has(name)) xattrs.set(name, Buffer.from(value.toString('latin1'), 'base64'));
    }
  }
  for (const [key, value] of records) {
    if (key.startsWith(XATTR_PREFIXES[0])) xattrs.set(key.slice(XATTR_PREFIXES[0].length), value);
  }
  return xattrs;
}

type Built = Omit<LayerEntry, 'body'>;

function buildEntry(header: TarHeader, extended: ExtendedHeaders, layer: string): Built {
  const records = extended.records;
  const rawName = extended.memberName(header);
  const fail = (problem: string): never => {
    throw new InvalidLayerError(layer, problem, showName(rawName));
  };
  const flagType = TYPE_OF_FLAG[header.typeflag];
  if (flagType === undefined) {
    const known = UNSUPPORTED_TYPE_NAMES[header.typeflag];
    return fail(`unsupported entry type ${JSON.stringify(header.typeflag)}${known === undefined ? '' : ` (${known})`}: not a file, directory, link, device or fifo`);
  }
  let type: LayerEntryType = flagType;
  // Pre-POSIX (v7) tars mark directories only by the trailing '/' of a regular-file entry.
  if (type === 'file' && header.format === 'v7' && rawName.endsWith('/')) type = 'dir';
  const normalized = normalizeEntryPath(rawName);
  if ('problem' in normalized) return fail(normalized.problem);
  const pathBytes = Buffer.from(normalized.path, 'latin1');
  if (pathBytes.length === 0 && type !== 'dir') fail('the layer root must be a directory');

  let uid = header.uid;
  let gid = header.gid;
  let mtimeSec = BigInt(header.mtimeSec);
  let mtimeNsec = 0;
  let sizeBytes = header.sizeBytes;
  let uname = header.uname;
  let gname = header.gname;
  if (records.size > 0) {
    const paxUid = records.get('uid');
    if (paxUid !== undefined) uid = parsePaxId(paxUid.toString('latin1')) ?? fail(`invalid PAX uid ${JSON.stringify(paxUid.toString('latin1'))}`);
    const paxGid = records.get('gid');
    if (paxGid !== undefined) gid = parsePaxId(paxGid.toString('latin1')) ?? fail(`invalid PAX gid ${JSON.stringify(paxGid.toString('latin1'))}`);
    const paxMtime = records.get('mtime');
    if (paxMtime !== undefined) {
      const parsed = parsePaxTime(paxMtime.toString('latin1')) ?? fail(`invalid PAX mtime ${JSON.stringify(paxMtime.toString('latin1'))}`);
      mtimeSec = parsed.sec;
      mtimeNsec = parsed.nsec;
    }
    try {
      sizeBytes = extended.memberSizeBytes(header, 0);
    } catch (error) {
      if (error instanceof TarFormatError) fail(error.problem);
      throw error;
    }
    uname = records.get('uname')?.toString('latin1') ?? uname;
    gname = records.get('gname')?.toString('latin1') ?? gname;
  }

  const entry: Built = {
    path: pathBytes.toString('utf8'),
    pathBytes,
    type,
    mode: header.mode & 0o7777,
    uid,
    gid,
    uname: latin1ToUtf8(uname),
    gname: latin1ToUtf8(gname),
    mtimeSec,
    mtimeNsec,
    xattrs: records.size > 0 ? xattrsOf(records) : new Map(),
    sizeBytes,
  };

  if (type === 'symlink' || type === 'hardlink') {
    const rawLink = extended.memberLinkName(header);
    if (type === 'symlink') {
      if (rawLink === '') fail('symlink with an empty target');
      if (rawLink.includes('\0')) fail('symlink target contains a NUL byte');
      entry.linkTargetBytes = Buffer.from(rawLink, 'latin1');
    } else {
      const target = normalizeEntryPath(rawLink);
      if ('problem' in target) fail(`hardlink target ${showName(rawLink)}: ${target.problem}`);
      else if (target.path === '') fail('hardlink to the layer root');
      else entry.linkTargetBytes = Buffer.from(target.path, 'latin1');
    }
    entry.linkTarget = entry.linkTargetBytes?.toString('utf8');
  } else if (type === 'chr' || type === 'blk') {
    entry.devMajor = header.devMajor;
    entry.devMinor = header.devMinor;
  }
  return entry;
}

function latin1ToUtf8(text: string): string {
  // Owner names are nearly always ASCII, which reads the same either way.
  return /^[\x00-\x7f]*$/.test(text) ? text : Buffer.from(text, 'latin1').toString('utf8');
}

const EMPTY = Buffer.alloc(0);

/**
 * The layer stream as bytes read in order. Hands out views of the stream's own chunks where it
 * can (bodies are copied once, into the reader's buffer), and copies only headers that straddle
 * two chunks.
 */
class StreamBytes {
  private chunk: Buffer = EMPTY;
  private at = 0;
  /** The next chunk, asked for before it is needed. */
  private prefetched: Promise<IteratorResult<unknown>> | undefined;
  /** The stream's own error, kept: every later read fails with it, unchanged. */
  private failure: { error: unknown } | undefined;
  /** Bytes received from the stream so far. */
  receivedBytes = 0;
  ended = false;

  constructor(private readonly iterator: AsyncIterator<unknown>) {}

  /** Offset in the stream of the next byte handed out. */
  get positionBytes(): number {
    return this.receivedBytes - (this.chunk.length - this.at);
  }

  /** True when a byte is ready to take; waits for the next chunk only when none is. */
  async more(): Promise<boolean> {
    while (this.at >= this.chunk.length) {
      if (this.failure !== undefined) throw this.failure.error;
      if (this.ended) return false;
      let next: IteratorResult<unknown>;
      try {
        next = await (this.prefetched ?? this.iterator.next());
      } catch (error) {
        this.failure = { error };
        throw error;
      } finally {
        this.prefetched = undefined;
      }
      if (next.done === true) {
        this.ended = true;
        return false;
      }
      const value = next.value as Uint8Array;
      this.chunk = Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
      this.at = 0;
      this.receivedBytes += this.chunk.length;
      // Ask for the next chunk now: the stream reads it while this one is parsed (a stream asked
      // only when its buffer is empty does nothing meanwhile, as parsing never yields). Its failure
      // is seen when it is awaited.
      this.prefetched = this.iterator.next();
      this.prefetched.catch(() => undefined);
    }
    return true;
  }

  /** Bytes ready to take without waiting. */
  ready(): number {
    return this.chunk.length - this.at;
  }

  /** Up to `maxBytes` of what is ready, as a view (call {@link more} first). */
  take(maxBytes: number): Buffer {
    const end = Math.min(this.chunk.length, this.at + maxBytes);
    const view = this.chunk.subarray(this.at, end);
    this.at = end;
    return view;
  }

  /** Exactly `lengthBytes`, or fewer if the stream ends first. */
  async exactly(lengthBytes: number): Promise<Buffer> {
    if (this.chunk.length - this.at >= lengthBytes) return this.take(lengthBytes);
    const out = Buffer.allocUnsafe(lengthBytes);
    let filled = 0;
    while (filled < lengthBytes && (await this.more())) {
      const view = this.take(lengthBytes - filled);
      out.set(view, filled);
      filled += view.length;
    }
    return out.subarray(0, filled);
  }

  /** Skips `lengthBytes` if they are all ready (true); otherwise skips nothing (false: use {@link skip}). */
  skipReady(lengthBytes: number): boolean {
    if (this.chunk.length - this.at < lengthBytes) return false;
    this.at += lengthBytes;
    return true;
  }

  /** Skips up to `lengthBytes`; returns how many were there. */
  async skip(lengthBytes: number): Promise<number> {
    let skipped = 0;
    while (skipped < lengthBytes && (await this.more())) skipped += this.take(lengthBytes - skipped).length;
    return skipped;
  }
}

/** One entry's body over the layer stream: at most `sizeBytes`, in order. */
class StreamEntryBody implements EntryBody {
  private leftBytes: number;

  constructor(
    private readonly bytes: StreamBytes,
    sizeBytes: number,
    private readonly truncated: () => InvalidLayerError,
  ) {
    this.leftBytes = sizeBytes;
  }

  read(target: Uint8Array, offsetInTarget: number, lengthBytes: number): number | Promise<number> {
    const wanted = Math.min(lengthBytes, this.leftBytes);
    if (wanted === 0) return 0;
    if (this.bytes.ready() === 0) {
      return this.bytes.more().then((more) => {
        if (!more) throw this.truncated();
        return this.read(target, offsetInTarget, lengthBytes);
      });
    }
    const view = this.bytes.take(wanted);
    target.set(view, offsetInTarget);
    this.leftBytes -= view.length;
    return view.length;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    while (this.leftBytes > 0) {
      if (!(await this.bytes.more())) throw this.truncated();
      // A copy: the view would change under a consumer that keeps it past the next read.
      const view = Buffer.from(this.bytes.take(Math.min(this.leftBytes, 1 << 20)));
      this.leftBytes -= view.length;
      yield view;
    }
  }

  /**
   * Skips what was not read, then the padding to the next header. A promise only when the stream
   * has to be waited for (see readLayerEntries on why the ready case avoids one).
   */
  finish(paddingAfterBytes: number): Promise<void> | undefined {
    if (this.leftBytes === 0 && this.bytes.skipReady(paddingAfterBytes)) return undefined;
    return this.finishWaiting(paddingAfterBytes);
  }

  private async finishWaiting(paddingAfterBytes: number): Promise<void> {
    if (this.leftBytes > 0 && (await this.bytes.skip(this.leftBytes)) < this.leftBytes) throw this.truncated();
    this.leftBytes = 0;
    // A tar may end right after the last body's padding is due; the header read reports it.
    await this.bytes.skip(paddingAfterBytes);
  }
}

/**
 * Iterates over a layer's tar entries, normalized and checked (see {@link LayerEntry}). Anything
 * wrong with the tar (truncated, corrupt header, bad name, unknown entry type) rejects with
 * {@link InvalidLayerError} naming `layerName`, the entry and the problem; errors of `tarStream`
 * itself (a digest mismatch of a verified layer stream) come through unchanged. The iteration ends
 * only after `tarStream` has ended cleanly (what follows the end-of-archive marker is read and
 * discarded), so a completed loop means a verified layer.
 *
 * The parser is our own rather than tar-stream's: tar-stream hands out a stream object per entry
 * and decodes PAX records as text, and for layers of thousands of small files that per-entry
 * machinery cost more than chunking, hashing and writing their data (profiled).
 *
 * Memory: bodies are streamed, never buffered; what is held is one entry's headers.
 */
export async function* readLayerEntries(tarBytes: Readable, layerName: string, options: ReadLayerEntriesOptions = {}): AsyncGenerator<LayerEntry, void, undefined> {
  const bytes = new StreamBytes(tarBytes[Symbol.asyncIterator]());
  const invalid = (problem: string, entry?: string): InvalidLayerError => new InvalidLayerError(layerName, problem, entry);
  let lastEntry: string | undefined;
  const after = (): string => (lastEntry === undefined ? 'at the start' : `after entry ${showName(lastEntry)}`);
  const extended = new ExtendedHeaders();
  let completed = false;
  try {
    for (;;) {
      const headerOffset = bytes.positionBytes;
      // Bytes already received are taken without an await: a layer of tens of thousands of small
      // files passes several awaits per entry otherwise, each a turn of the microtask queue on the
      // busiest thread of a conversion.
      const block = bytes.ready() >= TAR_BLOCK_BYTES ? bytes.take(TAR_BLOCK_BYTES) : await bytes.exactly(TAR_BLOCK_BYTES);
      if (block.length < TAR_BLOCK_BYTES) {
        if (bytes.receivedBytes === 0) throw invalid('empty stream (0 bytes), not a tar: even an empty layer has an end-of-archive marker');
        if (block.length === 0 && lastEntry !== undefined) throw invalid(`truncated tar (no end-of-archive marker after entry ${showName(lastEntry)})`);
        throw invalid(lastEntry === undefined ? 'truncated tar (ends inside the first header)' : `truncated tar (ends inside or right after entry ${showName(lastEntry)})`);
      }
      if (isZeroBlock(block)) {
        if (extended.awaitingMember) throw invalid(`truncated tar (an extended header ${after()} has no entry after it)`);
        break;
      }
      let header: TarHeader;
      try {
        header = decodeTarHeader(block, headerOffset);
      } catch (error) {
        if (error instanceof TarFormatError) throw invalid(`not a tar, or corrupt: invalid header ${after()}`);
        throw error;
      }
      if (ExtendedHeaders.isExtendedHeader(header.typeflag)) {
        if (header.sizeBytes > MAX_PAX_BYTES) throw invalid(`extended header over ${MAX_PAX_BYTES / 2 ** 20} MiB ${after()}`);
        const data = bytes.ready() >= header.sizeBytes ? bytes.take(header.sizeBytes) : await bytes.exactly(header.sizeBytes);
        const padding = paddingBytes(header.sizeBytes);
        if (data.length < header.sizeBytes || (!bytes.skipReady(padding) && (await bytes.skip(padding)) < padding)) {
          throw invalid(`truncated tar (ends inside an extended header ${after()})`);
        }
        try {
          extended.add(header.typeflag, data, headerOffset);
        } catch (error) {
          if (error instanceof TarFormatError) throw invalid(error.problem);
          throw error;
        }
        continue;
      }
      const entryName = extended.memberName(header);
      lastEntry = entryName;
      const built = buildEntry(header, extended, layerName);
      extended.endMember();
      if (built.type !== 'file' && built.sizeBytes > 0) options.onWarning?.(`${layerName}: entry ${showName(entryName)}: ${built.type} carries ${built.sizeBytes} bytes of data; ignored`);
      const body = new StreamEntryBody(bytes, built.sizeBytes, () => invalid(`truncated tar (ends inside or right after entry ${showName(entryName)})`));
      const entry = built as LayerEntry;
      entry.body = body;
      yield entry;
      const finishing = body.finish(paddingBytes(built.sizeBytes));
      if (finishing !== undefined) await finishing;
    }
    // The end-of-archive marker (and the record padding after it) is read to the end: the stream's
    // own checks (digest, size, diff_id) run when it ends.
    while (await bytes.more()) bytes.take(Number.MAX_SAFE_INTEGER);
    completed = true;
  } finally {
    if (!completed) tarBytes.destroy();
  }
}
