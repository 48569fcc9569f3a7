import { read, writevSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import {
  FUSE_KERNEL_VERSION, FUSE_MIN_MINOR, FUSE_OUR_MINOR, IN_HEADER_SIZE_BYTES, INIT_FLAG, MAX_READ_BYTES, OPCODE,
  OUT_HEADER_SIZE_BYTES, REQUEST_BUFFER_BYTES, WRITE_OPCODES, decodeInHeader, decodeInitIn, encodeInitOut, encodeOutHeader, type InHeader,
} from './protocol.js';

const { errno: E } = osConstants;

/** A reply body, or an errno (positive) to answer with. */
export type Reply = Buffer | Buffer[] | { errno: number } | null;

/** What serves the requests (the file system); `null` means "no reply" (FORGET). */
export interface RequestHandler {
  handle(header: InHeader, body: Buffer, context: { interrupted: () => boolean; readdirplus: boolean }): Promise<Reply>;
}

/** An error the handler throws to answer with a specific errno. */
export class FuseErrno extends Error {
  readonly code = 'ERR_FUSE_ERRNO';
  constructor(readonly errno: number, message: string) {
    super(message);
    this.name = 'FuseErrno';
  }
}

export interface SessionOptions {
  /**
   * Reads kept outstanding on /dev/fuse. Each blocks a libuv thread until a request arrives, so this
   * many requests can be taken while others are still being served (the pool must be larger).
   */
  readsInFlight?: number;
  log?: (line: string) => void;
}

/**
 * One FUSE connection: reads requests from the device fd, runs them concurrently through the
 * handler, writes one reply per request (a single writev, as the device requires). Ends when the
 * kernel says the connection is gone (ENODEV after unmount).
 */
export class FuseSession {
  private readonly inFlight = new Map<bigint, { interrupted: boolean }>();
  private negotiatedMinor = 0;
  private readdirplus = false;
  private ended = false;
  private endResolve!: () => void;
  readonly done: Promise<void> = new Promise((resolve) => (this.endResolve = resolve));
  private readonly log: (line: string) => void;

  constructor(private readonly fd: number, private readonly handler: RequestHandler, private readonly options: SessionOptions = {}) {
    this.log = options.log ?? (() => undefined);
  }

  start(): void {
    const count = this.options.readsInFlight ?? 8;
    for (let i = 0; i < count; i++) this.readLoop(Buffer.allocUnsafe(REQUEST_BUFFER_BYTES));
  }

  private end(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    this.log(`session ended: ${reason}`);
    this.endResolve();
  }

  private readLoop(buffer: Buffer): void {
    if (this.ended) return;
    read(this.fd, buffer, 0, buffer.length, null, (err, bytesRead) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // ENOENT: the request was interrupted before we read it; EINTR/EAGAIN: just try again.
        if (code === 'ENOENT' || code === 'EINTR' || code === 'EAGAIN') return this.readLoop(buffer);
        return this.end(code === 'ENODEV' ? 'unmounted' : `read failed: ${err.message}`);
      }
      if (bytesRead === 0) return this.end('end of file');
      // Copy out so the buffer can take the next request while this one is served.
      const request = Buffer.from(buffer.subarray(0, bytesRead));
      this.readLoop(buffer);
      this.dispatch(request).catch((e: unknown) => this.log(`request failed: ${String(e)}`));
    });
  }

  private async dispatch(request: Buffer): Promise<void> {
    let header: InHeader;
    try {
      header = decodeInHeader(request, request.length);
    } catch (e) {
      this.log(String(e));
      return;
    }
    const body = request.subarray(IN_HEADER_SIZE_BYTES, request.length - header.extLengthBytes);
    if (header.opcode === OPCODE.INIT) return this.init(header, body);
    if (header.opcode === OPCODE.INTERRUPT) {
      // The interrupted request gets EINTR now unless it already answered; its late reply is dropped.
      if (body.length >= 8) {
        const target = body.readBigUInt64LE(0);
        const state = this.inFlight.get(target);
        if (state !== undefined && !state.interrupted) {
          state.interrupted = true;
          this.send(target, E.EINTR, []);
        }
      }
      return;
    }
    if (header.opcode === OPCODE.FORGET || header.opcode === OPCODE.BATCH_FORGET) {
      await this.handler.handle(header, body, { interrupted: () => false, readdirplus: this.readdirplus });
      return;
    }
    if (WRITE_OPCODES.has(header.opcode)) return this.send(header.unique, E.EROFS, []);
    const state = { interrupted: false };
    this.inFlight.set(header.unique, state);
    let reply: Reply;
    try {
      reply = await this.handler.handle(header, body, { interrupted: () => state.interrupted, readdirplus: this.readdirplus });
    } catch (e) {
      const errno = e instanceof FuseErrno ? e.errno : E.EIO;
      if (!(e instanceof FuseErrno)) this.log(`op ${header.opcode} on node ${header.nodeid}: ${e instanceof Error ? e.message : String(e)}`);
      reply = { errno };
    } finally {
      this.inFlight.delete(header.unique);
    }
    if (state.interrupted || reply === null) return;
    if (Buffer.isBuffer(reply)) this.send(header.unique, 0, [reply]);
    else if (Array.isArray(reply)) this.send(header.unique, 0, reply);
    else this.send(header.unique, reply.errno, []);
  }

  private init(header: InHeader, body: Buffer): void {
    const init = decodeInitIn(body);
    if (init.major !== FUSE_KERNEL_VERSION || init.minor < FUSE_MIN_MINOR) {
      this.log(`kernel speaks FUSE ${init.major}.${init.minor}; we need ${FUSE_KERNEL_VERSION}.${FUSE_MIN_MINOR}+`);
      return this.send(header.unique, E.EPROTO, []);
    }
    this.negotiatedMinor = Math.min(init.minor, FUSE_OUR_MINOR);
    const wanted = INIT_FLAG.ASYNC_READ | INIT_FLAG.BIG_WRITES | INIT_FLAG.MAX_PAGES | INIT_FLAG.PARALLEL_DIROPS | INIT_FLAG.CACHE_SYMLINKS | INIT_FLAG.DO_READDIRPLUS | INIT_FLAG.READDIRPLUS_AUTO;
    const flags = (init.flags & wanted) >>> 0;
    this.readdirplus = (flags & INIT_FLAG.DO_READDIRPLUS) !== 0;
    this.log(`INIT: kernel ${init.major}.${init.minor}, using 7.${this.negotiatedMinor}, flags 0x${flags.toString(16)}`);
    this.send(header.unique, 0, [
      encodeInitOut({
        minor: this.negotiatedMinor,
        maxReadaheadBytes: init.maxReadaheadBytes,
        flags,
        maxBackground: 64,
        congestionThreshold: 48,
        maxWriteBytes: MAX_READ_BYTES,
        timeGranNs: 1,
        maxPages: MAX_READ_BYTES / 4096,
      }),
    ]);
  }

  /** Writes kernel notifications (already framed). Errors mean the connection is gone. */
  notify(message: Buffer): void {
    try {
      writevSync(this.fd, [message]);
    } catch (e) {
      this.log(`notify failed: ${String(e)}`);
    }
  }

  private send(unique: bigint, errno: number, parts: Buffer[]): void {
    let total = OUT_HEADER_SIZE_BYTES;
    for (const p of parts) total += p.length;
    try {
      writevSync(this.fd, [encodeOutHeader(total, errno, unique), ...parts]);
    } catch (e) {
      // ENOENT: the kernel already dropped the request (interrupted); anything else ends nothing.
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') this.log(`reply to ${unique} failed: ${String(e)}`);
    }
  }
}

