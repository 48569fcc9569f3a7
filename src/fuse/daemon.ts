import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { MultiImageFs } from './filesystem.js';
import { FUSE_SOURCE, fuseMountOptions, fusePaths } from './paths.js';
import { encodeInvalEntry, FUSE_ROOT_ID } from './protocol.js';
import { FuseSession } from './session.js';

/** A control request, one JSON object per line on the daemon's unix socket. */
export type ControlRequest =
  | { op: 'ping' }
  | { op: 'add'; id: string; metadataImage: string; blobDirs?: string[] }
  | { op: 'remove'; id: string };

export interface ControlResponse {
  ok: boolean;
  error?: string;
  images?: string[];
  pid?: number;
  /** Nodes the file system holds (ping): grows with what the kernel caches, shrinks as it forgets. */
  nodes?: number;
}

function runChild(command: string, args: readonly string[], extraFd?: number): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const stdio: Array<'ignore' | 'pipe' | number> = ['ignore', 'pipe', 'pipe'];
    if (extraFd !== undefined) stdio.push(extraFd);
    const child = spawn(command, args, { stdio });
    let output = '';
    child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', (e) => resolve({ code: 127, output: e.message }));
    child.on('close', (code) => resolve({ code: code ?? 1, output }));
  });
}

/** Readahead of the FUSE root's bdi: the kernel caps FUSE at 128 KiB; 1 MiB halves round trips of a cold sequential read. */
const READAHEAD_KIB = 1024;

async function raiseReadahead(root: string, log: (line: string) => void): Promise<void> {
  try {
    const dev = (await stat(root)).dev;
    // Anonymous superblocks (FUSE) use major 0; the bdi is named fuse-... or 0:N depending on the kernel.
    const minor = dev & 0xff | ((dev >> 12) & 0xfff00);
    for (const name of [`0:${minor}`, `fuse-0:${minor}`]) {
      try {
        await writeFile(`/sys/class/bdi/${name}/read_ahead_kb`, `${READAHEAD_KIB}\n`);
        return;
      } catch {
        // try the next naming
      }
    }
    log(`could not raise readahead for device 0:${minor}`);
  } catch (e) {
    log(`could not raise readahead: ${String(e)}`);
  }
}

/**
 * The daemon: one FUSE mount at RUNTIME/fuse/root whose subdirectories are the served images, a
 * control socket to add and remove them, and an exit (unmounting the root) when the last one goes.
 */
export async function runDaemon(runtimeDir: string): Promise<void> {
  const paths = fusePaths(runtimeDir);
  const log = (line: string): void => void process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  await mkdir(paths.root, { recursive: true });
  const fd = openSync('/dev/fuse', 'r+');
  // The child sees the device as fd 3 (its fourth stdio slot), which is what fd= names: the kernel
  // resolves it in the calling process. -i: no /sbin/mount.fuse helper, the kernel does it all.
  const mounted = await runChild('mount', ['-i', '-t', 'fuse', '-o', fuseMountOptions(3), FUSE_SOURCE, paths.root], fd);
  if (mounted.code !== 0) {
    closeSync(fd);
    throw new Error(`mount of the FUSE root failed: ${mounted.output.trim()}`);
  }
  const fs = new MultiImageFs(log);
  const session = new FuseSession(fd, fs, { log, readsInFlight: 8 });
  session.start();
  // After start: stat() of the root is itself a FUSE request that only a running session answers.
  await raiseReadahead(paths.root, log);

  let shuttingDown = false;
  const shutdown = async (): Promise<void> => {
    if (shuttingDown) return;
    shuttingDown = true;
    const r = await runChild('umount', [paths.root]);
    // Busy (something still open through the root): detach it; the kernel finishes when released.
    if (r.code !== 0) await runChild('umount', ['-l', paths.root]);
    await Promise.race([session.done, new Promise((resolve) => setTimeout(resolve, 2000))]);
    closeSync(fd);
    // Stop accepting; the connection that asked for the shutdown still gets its answer.
    server.close();
    await unlink(paths.socket).catch(() => undefined);
    await unlink(paths.pid).catch(() => undefined);
    log('daemon exits');
  };

  const handle = async (request: ControlRequest): Promise<ControlResponse> => {
    switch (request.op) {
      case 'ping':
        return { ok: true, images: fs.imageIds, pid: process.pid, nodes: fs.nodeCount };
      case 'add':
        await fs.addImage(request.id, request.metadataImage, request.blobDirs === undefined ? {} : { blobDirs: request.blobDirs });
        log(`serving ${request.metadataImage} as ${request.id}`);
        return { ok: true, images: fs.imageIds };
      case 'remove': {
        const name = await fs.removeImage(request.id);
        if (name !== undefined) session.notify(encodeInvalEntry(FUSE_ROOT_ID, name));
        log(`stopped serving ${request.id}`);
        if (fs.imageIds.length === 0) await shutdown();
        return { ok: true, images: fs.imageIds };
      }
    }
  };

  await rm(paths.socket, { force: true });
  const server: Server = createServer((socket: Socket) => {
    let pending = '';
    socket.on('data', (data: Buffer) => {
      pending += data.toString();
      let newline: number;
      while ((newline = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        handle(JSON.parse(line) as ControlRequest)
          .catch((e: unknown): ControlResponse => ({ ok: false, error: e instanceof Error ? e.message : String(e) }))
          .then((response) => {
            socket.end(`${JSON.stringify(response)}\n`, () => {
              if (shuttingDown) process.exit(0);
            });
          });
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(paths.socket, resolve);
  });
  await writeFile(paths.pid, `${process.pid}\n`);
  log(`daemon ${process.pid} serving FUSE root ${paths.root}`);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => void shutdown().then(() => process.exit(0)));
  }
  // The kernel ends the session when the root is unmounted behind our back (umount -l by a cleanup).
  void session.done.then(() => {
    if (!shuttingDown) void shutdown().then(() => process.exit(0));
  });
}
