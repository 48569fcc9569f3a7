import { Readable } from 'node:stream';
import tarStream, { type Extract, type Header } from 'tar-stream';
import { InvalidLayerError, isOciError, showName, TarFormatError } from './errors.js';
import { decodePaxRecords, paddedBytes } from './tarHeader.js';

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
   * The entry's data. Consume it fully (or not at all) before asking the iterator for the next
   * entry: the tar is one stream, so the next header comes after this body. A body not consumed (or
   * destroyed early) when the iterator advances is drained and discarded. Chunks may be views into
   * larger buffers: copy what you keep.
   */
  body: Readable;
}

export interface ReadLayerEntriesOptions {
  /** Told about tolerated oddities (e.g. an entry type we skip). Default: ignored. */
  onWarning?: (message: string) => void;
}

/** Longest file name component (Linux NAME_MAX, and EROFS's limit). */
const MAX_COMPONENT_BYTES = 255;

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

/** tar-stream's header, with the internals we rely on (see {@link capturePax}). */
interface StreamHeader extends Omit<Header, 'type'> {
  /** null for typeflags tar-stream does not know (GNU sparse, volume labels...). */
  type: Header['type'] | null;
  /** Offset of the entry's data in the tar stream (set by tar-stream 3's extract). */
  byteOffset?: number;
  /** Our raw PAX records for this entry (local over global). */
  rawPax?: Map<string, Buffer>;
}

interface ExtractInternals {
  _decodeLongHeader(buf: Buffer): void;
  _header: { type?: string | null } | null;
}

/**
 * tar-stream decodes PAX records as UTF-8 text and applies only path, linkpath and size, so binary
 * xattr values and non-UTF-8 names would be mangled. We wrap its (internal, tar-stream 3.x) long
 * header decoder to keep the raw records, and attach them to the next entry's header in an 'entry'
 * listener registered before the iterator's (both run synchronously on the same emit).
 */
function capturePax(extract: Extract, layer: string): void {
  const internals = extract as unknown as ExtractInternals;
  if (typeof internals._decodeLongHeader !== 'function') {
    throw new Error('tar-stream internals changed: _decodeLongHeader is gone (pinned to tar-stream 3.x); readLayerEntries needs updating');
  }
  const original = internals._decodeLongHeader;
  let global = new Map<string, Buffer>();
  let local: Map<string, Buffer> | undefined;
  internals._decodeLongHeader = function (this: ExtractInternals, buf: Buffer): void {
    const type = this._header?.type;
    if (type === 'pax-header' || type === 'pax-global-header') {
      let records: Map<string, Buffer>;
      try {
        records = decodePaxRecords(buf, 0);
      } catch (error) {
        throw new InvalidLayerError(layer, error instanceof TarFormatError ? error.problem : String(error));
      }
      if (type === 'pax-global-header') global = new Map([...global, ...records]);
      else local = records;
    }
    original.call(this, buf);
  };
  extract.on('entry', (streamHeader) => {
    const header = streamHeader as StreamHeader;
    header.rawPax = local === undefined ? global : new Map([...global, ...local]);
    local = undefined;
  });
}

function entryType(type: StreamHeader['type']): LayerEntryType | undefined {
  switch (type) {
    case 'file':
    case 'contiguous-file':
      return 'file';
    case 'directory':
      return 'dir';
    case 'symlink':
      return 'symlink';
    case 'link':
      return 'hardlink';
    case 'character-device':
      return 'chr';
    case 'block-device':
      return 'blk';
    case 'fifo':
      return 'fifo';
    default:
      return undefined;
  }
}

const XATTR_PREFIXES = ['SCHILY.xattr.', 'LIBARCHIVE.xattr.'] as const;

/** Xattrs from PAX records. libarchive's form percent-encodes the name and base64-encodes the value; SCHILY's wins when both are present. */
function xattrsOf(records: Map<string, Buffer>): Map<string, Buffer> {
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

function buildEntry(header: StreamHeader, layer: string): Built {
  const records = header.rawPax ?? new Map<string, Buffer>();
  // tar-stream applied PAX path/linkpath as UTF-8 text; the raw bytes replace them.
  const rawName = records.get('path')?.toString('latin1') ?? header.name;
  const fail = (problem: string): never => {
    throw new InvalidLayerError(layer, problem, showName(rawName));
  };
  const type = entryType(header.type);
  if (type === undefined) return fail(`unsupported entry type ${JSON.stringify(header.type ?? 'unknown')} (not a file, directory, link, device or fifo)`);
  const normalized = normalizeEntryPath(rawName);
  if ('problem' in normalized) return fail(normalized.problem);
  const path = normalized.path;
  if (path === '' && type !== 'dir') fail('the layer root must be a directory');

  let uid = header.uid ?? 0;
  let gid = header.gid ?? 0;
  const paxUid = records.get('uid');
  if (paxUid !== undefined) uid = parsePaxId(paxUid.toString('latin1')) ?? fail(`invalid PAX uid ${JSON.stringify(paxUid.toString('latin1'))}`);
  const paxGid = records.get('gid');
  if (paxGid !== undefined) gid = parsePaxId(paxGid.toString('latin1')) ?? fail(`invalid PAX gid ${JSON.stringify(paxGid.toString('latin1'))}`);

  const headerMtimeMs = header.mtime?.getTime() ?? 0;
  if (!Number.isFinite(headerMtimeMs)) fail('invalid mtime');
  let mtimeSec = BigInt(Math.floor(headerMtimeMs / 1000));
  let mtimeNsec = 0;
  const paxMtime = records.get('mtime');
  if (paxMtime !== undefined) {
    const parsed = parsePaxTime(paxMtime.toString('latin1')) ?? fail(`invalid PAX mtime ${JSON.stringify(paxMtime.toString('latin1'))}`);
    mtimeSec = parsed.sec;
    mtimeNsec = parsed.nsec;
  }

  const entry: Built = {
    path,
    pathBytes: Buffer.from(path, 'latin1'),
    type,
    mode: (header.mode ?? 0) & 0o7777,
    uid,
    gid,
    uname: records.get('uname')?.toString('utf8') ?? header.uname ?? '',
    gname: records.get('gname')?.toString('utf8') ?? header.gname ?? '',
    mtimeSec,
    mtimeNsec,
    xattrs: xattrsOf(records),
    sizeBytes: header.size ?? 0,
  };

  const rawLink = records.get('linkpath')?.toString('latin1') ?? header.linkname ?? '';
  if (type === 'symlink') {
    if (rawLink === '') fail('symlink with an empty target');
    if (rawLink.includes('\0')) fail('symlink target contains a NUL byte');
    entry.linkTargetBytes = Buffer.from(rawLink, 'latin1');
  } else if (type === 'hardlink') {
    const target = normalizeEntryPath(rawLink);
    if ('problem' in target) fail(`hardlink target ${showName(rawLink)}: ${target.problem}`);
    else if (target.path === '') fail('hardlink to the layer root');
    else entry.linkTargetBytes = Buffer.from(target.path, 'latin1');
  } else if (type === 'chr' || type === 'blk') {
    entry.devMajor = header.devmajor ?? 0;
    entry.devMinor = header.devminor ?? 0;
  }
  if (entry.linkTargetBytes !== undefined) entry.linkTarget = entry.linkTargetBytes.toString('utf8');
  entry.path = entry.pathBytes.toString('utf8');
  return entry;
}

/** What tar-stream's async iterator yields (its `Source` type is not exported). */
type EntryStream = Extract extends AsyncIterable<infer T> ? T : never;

/** The streamx readable tar-stream hands out per entry (only what we use of it). */
interface EntrySource {
  on(event: 'data', listener: (chunk: Buffer) => void): void;
  on(event: 'end' | 'close', listener: () => void): void;
  on(event: 'error', listener: (error: Error) => void): void;
  pause(): void;
  resume(): void;
}

/**
 * A node Readable over tar-stream's entry stream. Destroying it must not destroy the entry stream
 * (that tears down the whole extract), so a destroyed body switches to discarding the rest.
 */
class EntryBody {
  readonly body: Readable;
  private discard = false;
  private readonly finished: Promise<void>;

  constructor(source: EntrySource, translate: (error: unknown) => unknown) {
    this.body = new Readable({
      highWaterMark: 256 * 1024,
      read: () => source.resume(),
      destroy: (error, callback) => {
        this.discard = true;
        source.resume();
        callback(error);
      },
    });
    // Errors also reach the iterator; without a listener a body nobody reads would crash the process.
    this.body.on('error', () => {});
    source.on('data', (chunk) => {
      if (this.discard) return;
      if (!this.body.push(chunk)) source.pause();
    });
    source.on('error', (error) => this.body.destroy(translate(error) as Error));
    this.finished = new Promise((resolve) => {
      source.on('end', () => {
        if (!this.discard) this.body.push(null);
        resolve();
      });
      source.on('close', resolve);
    });
  }

  /** Waits until the entry's data has gone by, discarding it if the consumer did not read it. */
  async finish(): Promise<void> {
    if (this.body.readableFlowing !== true && !this.body.readableEnded) this.body.destroy();
    await this.finished;
  }
}

/** Turns tar-stream's plain errors into one-line typed ones naming the layer and where it broke. */
function translateTarError(error: unknown, layer: string, lastEntry: string | undefined): unknown {
  if (isOciError(error)) return error;
  if (!(error instanceof Error) || (error as NodeJS.ErrnoException).code !== undefined) return error;
  const after = lastEntry === undefined ? 'at the start' : `after entry ${showName(lastEntry)}`;
  if (error.message === 'Unexpected end of data') {
    return new InvalidLayerError(layer, lastEntry === undefined ? 'truncated tar (ends inside the first header)' : `truncated tar (ends inside or right after entry ${showName(lastEntry)})`);
  }
  if (error.message.startsWith('Invalid tar header')) return new InvalidLayerError(layer, `not a tar, or corrupt: invalid header ${after}`);
  if (error.message === 'Header exceeds max size') return new InvalidLayerError(layer, `extended header over 4 MiB ${after}`);
  if (error.message === 'Invalid header') return new InvalidLayerError(layer, `invalid entry size ${after}`);
  return error;
}

/** Waits until a streamx writable can take more, or is gone. */
function drainedOrClosed(writable: Extract): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      writable.off('drain', done);
      writable.off('close', done);
      resolve();
    };
    writable.on('drain', done);
    writable.on('close', done);
  });
}

/**
 * Iterates over a layer's tar entries, normalized and checked (see {@link LayerEntry}). Anything
 * wrong with the tar (truncated, corrupt header, bad name, unknown entry type) rejects with
 * {@link InvalidLayerError} naming `layerName`, the entry and the problem; errors of `tarStream`
 * itself (a digest mismatch of a verified layer stream) come through unchanged. The iteration ends
 * only after `tarStream` has ended cleanly, so a completed loop means a verified layer.
 *
 * Memory: bodies are streamed, never buffered; what is held is one entry's headers.
 */
export async function* readLayerEntries(tarBytes: Readable, layerName: string, options: ReadLayerEntriesOptions = {}): AsyncGenerator<LayerEntry, void, undefined> {
  // latin1 keeps name bytes 1:1 (we decode UTF-8 ourselves); v7 tars have no magic but valid checksums.
  const extract = tarStream.extract({ filenameEncoding: 'latin1', allowUnknownFormat: true } as Parameters<typeof tarStream.extract>[0]);
  capturePax(extract, layerName);
  let inputBytes = 0;
  let inputEnded = false;
  const pump = (async (): Promise<void> => {
    try {
      for await (const chunk of tarBytes) {
        if (extract.destroyed || (extract as unknown as { destroying: boolean }).destroying) return;
        inputBytes += (chunk as Buffer).length;
        if (!extract.write(chunk)) await drainedOrClosed(extract);
      }
      inputEnded = true;
      extract.end(undefined);
    } catch (error) {
      extract.destroy(error as Error);
    }
  })();
  const iterator = extract[Symbol.asyncIterator]();
  let current: EntryBody | undefined;
  let lastEntry: string | undefined;
  let lastDataEndBytes = 0;
  let completed = false;
  try {
    for (;;) {
      if (current !== undefined) await current.finish();
      let step: IteratorResult<EntryStream>;
      try {
        step = await iterator.next();
      } catch (error) {
        throw translateTarError(error, layerName, lastEntry);
      }
      if (step.done === true) break;
      const source = step.value;
      const header = source.header as StreamHeader;
      const entryName = header.rawPax?.get('path')?.toString('latin1') ?? header.name;
      lastEntry = entryName;
      if (header.byteOffset !== undefined) lastDataEndBytes = header.byteOffset + paddedBytes(header.size ?? 0);
      const built = buildEntry(header, layerName);
      current = new EntryBody(source as unknown as EntrySource, (error) => translateTarError(error, layerName, entryName));
      if (built.type !== 'file' && built.sizeBytes > 0) options.onWarning?.(`${layerName}: entry ${showName(entryName)}: ${built.type} carries ${built.sizeBytes} bytes of data; ignored`);
      yield { ...built, body: current.body };
    }
    await pump;
    if (!inputEnded) throw new InvalidLayerError(layerName, 'tar stream stopped before its end');
    if (inputBytes === 0) throw new InvalidLayerError(layerName, 'empty stream (0 bytes), not a tar: even an empty layer has an end-of-archive marker');
    // tar-stream accepts a tar cut exactly between two entries; a complete one has at least one
    // zero block (the end-of-archive marker) after the last entry's data.
    if (lastEntry !== undefined && inputBytes <= lastDataEndBytes) {
      throw new InvalidLayerError(layerName, `truncated tar (no end-of-archive marker after entry ${showName(lastEntry)})`);
    }
    completed = true;
  } finally {
    if (!completed) {
      extract.destroy(undefined as unknown as Error);
      tarBytes.destroy();
      await pump.catch(() => {});
    }
  }
}
