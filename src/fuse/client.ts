import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants, openSync, closeSync } from 'node:fs';
import { access, mkdir, open, readFile, realpath, rename, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { basename, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatCommand, runTool } from '../mount/exec.js';
import { acquireLock } from '../mount/lock.js';
import { readMountinfo } from '../mount/mountinfo.js';
import { KernelCommandError, MountBusyError, MountpointError, NotMountedError } from '../mount/errors.js';
import { requireRoot } from '../mount/mount.js';
import type { ControlRequest, ControlResponse } from './daemon.js';
import { FuseDaemonError, FuseUnavailableError } from './errors.js';
import { fusePaths, type FusePaths } from './paths.js';
import { moduleUrl } from '../paths.js';

/** One image the daemon serves, bind-mounted at a user's mountpoint. */
export interface FuseMountRecord {
  mountpoint: string;
  id: string;
  metadataImage: string;
}

interface FuseState {
  mounts: FuseMountRecord[];
}

export interface FuseMountOptions {
  runtimeDir: string;
  /** Store holding blobs/sha256/ (default: the image's directory). */
  store?: string;
}

export interface FuseMountResult {
  metadataImage: string;
  mountpoint: string;
  mechanism: 'fuse';
  /** Where the daemon serves this image (a subdirectory of the shared FUSE root). */
  servedAt: string;
  daemonPid: number;
  /** The daemon was already running for other images (true) or started now (false). */
  reusedDaemon: boolean;
  /** Stale mounts of a dead daemon that this command unmounted first. */
  cleanedUp: string[];
}

export interface FuseUnmountResult {
  mountpoint: string;
  mechanism: 'fuse';
  /** The daemon stopped because no image was left. */
  daemonStopped: boolean;
  cleanedUp: string[];
}

const DAEMON_START_TIMEOUT_MS = 10_000;
const DAEMON_REPLY_TIMEOUT_MS = 60_000;

async function readState(paths: FusePaths): Promise<FuseState> {
  const text = await readFile(paths.state, 'utf8').catch(() => undefined);
  if (text === undefined) return { mounts: [] };
  try {
    const parsed = JSON.parse(text) as FuseState;
    return Array.isArray(parsed.mounts) ? parsed : { mounts: [] };
  } catch {
    // A torn write cannot happen (rename), so this is someone's edit: start over, cleanup handles mounts.
    return { mounts: [] };
  }
}

async function writeState(paths: FusePaths, state: FuseState): Promise<void> {
  const temp = `${paths.state}.tmp-${process.pid}`;
  await writeFile(temp, `${JSON.stringify(state, null, 2)}\n`);
  await rename(temp, paths.state);
}

/** Sends one request to the daemon; undefined when no daemon answers on the socket. */
export async function askDaemon(runtimeDir: string, request: ControlRequest): Promise<ControlResponse | undefined> {
  const paths = fusePaths(runtimeDir);
  return new Promise((resolvePromise) => {
    const socket = connect(paths.socket);
    let received = '';
    let settled = false;
    const done = (value: ControlResponse | undefined): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      resolvePromise(value);
    };
    const timer = setTimeout(() => done(undefined), DAEMON_REPLY_TIMEOUT_MS);
    timer.unref();
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on('data', (data: Buffer) => {
      received += data.toString();
      const newline = received.indexOf('\n');
      if (newline >= 0) {
        clearTimeout(timer);
        try {
          done(JSON.parse(received.slice(0, newline)) as ControlResponse);
        } catch {
          done(undefined);
        }
      }
    });
    socket.on('error', () => done(undefined));
    socket.on('close', () => done(undefined));
  });
}

async function mountedTargets(): Promise<Set<string>> {
  return new Set((await readMountinfo()).map((entry) => entry.target));
}

/**
 * With no daemon answering, every recorded bind mount and the FUSE root are dead (ENOTCONN): they
 * are detached (lazily: a process may still sit in one) and the records dropped.
 */
async function cleanupDeadDaemon(paths: FusePaths, state: FuseState): Promise<string[]> {
  const targets = await mountedTargets();
  const cleaned: string[] = [];
  for (const record of state.mounts) {
    if (targets.has(record.mountpoint)) {
      await runTool('umount', ['-l', record.mountpoint]);
      cleaned.push(record.mountpoint);
    }
  }
  if (targets.has(paths.root)) {
    await runTool('umount', ['-l', paths.root]);
    cleaned.push(paths.root);
  }
  state.mounts = [];
  return cleaned;
}

async function startDaemon(paths: FusePaths, runtimeDir: string): Promise<number> {
  try {
    closeSync(openSync('/dev/fuse', constants.O_RDWR));
  } catch (e) {
    throw new FuseUnavailableError(`cannot open /dev/fuse: ${(e as Error).message}`);
  }
  const script = fileURLToPath(moduleUrl('fuse/daemonMain.js'));
  const log = await open(paths.log, 'a');
  // A thread per outstanding /dev/fuse read plus the image reads: the default pool of 4 is too small.
  const child = spawn(process.execPath, [script, runtimeDir], {
    // Its own session, and cwd / so that it never keeps the caller's directory (maybe a mount) busy.
    detached: true,
    cwd: '/',
    stdio: ['ignore', log.fd, log.fd],
    env: { ...process.env, UV_THREADPOOL_SIZE: '32' },
  });
  await log.close();
  let exited: number | null = null;
  child.on('exit', (code) => (exited = code ?? 1));
  child.unref();
  const deadline = Date.now() + DAEMON_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const reply = await askDaemon(runtimeDir, { op: 'ping' });
    if (reply?.ok === true && reply.pid !== undefined) return reply.pid;
    if (exited !== null) break;
    await sleep(50);
  }
  const logText = await readFile(paths.log, 'utf8').catch(() => '');
  const lastLine = logText.trim().split('\n').pop() ?? '';
  if (exited === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
  throw new FuseDaemonError(runtimeDir, `did not start: ${lastLine || 'no output'}`);
}

function imageId(metadataImage: string, mountpoint: string): string {
  const name = basename(metadataImage).replace(/\.erofs$/, '').replace(/[^\w.-]/g, '_').slice(0, 100) || 'image';
  return `${name}-${createHash('sha256').update(mountpoint).digest('hex').slice(0, 12)}`;
}

/** Whether `mountpoint` is one of ours (recorded by mountFuse). */
export async function isFuseMount(mountpoint: string, runtimeDir: string): Promise<boolean> {
  const target = resolve(mountpoint);
  const state = await readState(fusePaths(runtimeDir));
  return state.mounts.some((m) => m.mountpoint === target);
}

export async function listFuseMounts(runtimeDir: string): Promise<FuseMountRecord[]> {
  return (await readState(fusePaths(runtimeDir))).mounts;
}

/**
 * Serves `metadataImage` from the host's FUSE daemon (started if none runs) and bind-mounts its
 * directory of the shared FUSE root on `mountpoint`. One FUSE superblock for every image is what lets
 * equal files be one kernel inode, hence one page cache copy.
 */
export async function mountFuse(metadataImage: string, mountpoint: string, options: FuseMountOptions): Promise<FuseMountResult> {
  requireRoot('erofs mount --fuse');
  const paths = fusePaths(options.runtimeDir);
  const image = await realpath(metadataImage).catch(() => resolve(metadataImage));
  await access(image, constants.R_OK);
  const target = resolve(mountpoint);
  const st = await stat(target).catch(() => undefined);
  if (st === undefined || !st.isDirectory()) throw new MountpointError(target, 'is not an existing directory');
  await mkdir(paths.dir, { recursive: true });
  const release = await acquireLock(paths.lock);
  try {
    const state = await readState(paths);
    if (state.mounts.some((m) => m.mountpoint === target) || (await mountedTargets()).has(target)) {
      throw new MountpointError(target, 'is already a mount point');
    }
    let cleanedUp: string[] = [];
    let ping = await askDaemon(options.runtimeDir, { op: 'ping' });
    const reusedDaemon = ping?.ok === true;
    if (!reusedDaemon) {
      cleanedUp = await cleanupDeadDaemon(paths, state);
      await writeState(paths, state);
      await startDaemon(paths, options.runtimeDir);
      ping = await askDaemon(options.runtimeDir, { op: 'ping' });
    }
    const id = imageId(image, target);
    const blobDirs = options.store === undefined ? undefined : [join(resolve(options.store), 'blobs', 'sha256'), resolve(options.store)];
    const added = await askDaemon(options.runtimeDir, { op: 'add', id, metadataImage: image, ...(blobDirs === undefined ? {} : { blobDirs }) });
    if (added?.ok !== true) {
      if (!reusedDaemon) await askDaemon(options.runtimeDir, { op: 'remove', id });
      throw new FuseDaemonError(options.runtimeDir, added?.error ?? 'no answer to add');
    }
    const servedAt = join(paths.root, id);
    const bind = await runTool('mount', ['--bind', servedAt, target]);
    if (bind.code !== 0) {
      await askDaemon(options.runtimeDir, { op: 'remove', id });
      throw new KernelCommandError(formatCommand('mount', ['--bind', servedAt, target]), bind.stderr + bind.stdout);
    }
    state.mounts.push({ mountpoint: target, id, metadataImage: image });
    await writeState(paths, state);
    return { metadataImage: image, mountpoint: target, mechanism: 'fuse', servedAt, daemonPid: ping?.pid ?? 0, reusedDaemon, cleanedUp };
  } finally {
    await release();
  }
}

/** Unmounts a FUSE-served image; the daemon unmounts its root and exits when it was the last. */
export async function unmountFuse(mountpoint: string, options: { runtimeDir: string }): Promise<FuseUnmountResult> {
  requireRoot('erofs umount');
  const paths = fusePaths(options.runtimeDir);
  const target = resolve(mountpoint);
  await mkdir(paths.dir, { recursive: true });
  const release = await acquireLock(paths.lock);
  try {
    const state = await readState(paths);
    const record = state.mounts.find((m) => m.mountpoint === target);
    if (record === undefined) throw new NotMountedError(target, options.runtimeDir);
    const alive = (await askDaemon(options.runtimeDir, { op: 'ping' }))?.ok === true;
    if (!alive) {
      const cleanedUp = await cleanupDeadDaemon(paths, state);
      await writeState(paths, state);
      return { mountpoint: target, mechanism: 'fuse', daemonStopped: true, cleanedUp };
    }
    if ((await mountedTargets()).has(target)) {
      const r = await runTool('umount', [target]);
      if (r.code !== 0) {
        if (/busy/i.test(r.stderr)) throw new MountBusyError(target);
        throw new KernelCommandError(formatCommand('umount', [target]), r.stderr + r.stdout);
      }
    }
    const removed = await askDaemon(options.runtimeDir, { op: 'remove', id: record.id });
    state.mounts = state.mounts.filter((m) => m !== record);
    await writeState(paths, state);
    const daemonStopped = removed?.ok === true && removed.images?.length === 0;
    return { mountpoint: target, mechanism: 'fuse', daemonStopped, cleanedUp: [] };
  } finally {
    await release();
  }
}
